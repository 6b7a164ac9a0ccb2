"""Benchmark: the server pool, batches and caches, against WanGP emulators in their own processes on loopback.

    python benchmarks/pool.py [--shots 100] [--servers 4] [--steps 10] [--step-seconds 0.1] [--repeat 10]

Measured, not asserted. Prints a summary and saves ``benchmarks/results/pool.json``. Figures (targets from
issue 7):

- throughput: ``--shots`` shots of a fixed emulated duration (``--steps`` x ``--step-seconds`` of sleep per
  shot, so that on this 2-core machine a shot is mostly waiting, as on a GPU, not CPU) in one batch, on one
  server and on ``--servers`` servers: shots per second, and the ratio (target >= 3.5x);
- a server killed halfway: the same batch on ``--servers`` servers, one emulator process killed (SIGKILL)
  when half the shots are done, ``retries=1``: every shot accounted for (done + failed == total);
- reconnect: ``Wan2GPClient.connect()`` to a known server with the API cache warm (in memory; from disk in a
  new process's cache; after the server restarted, i.e. a new app id with the same /config) against a cold
  connect, medians of ``--repeat`` (target warm <= 0.3x cold);
- cache hit: ``pool.submit(shot).result()`` for a fixed-seed shot made before: median and max of 50 (target
  <= 20 ms), and ``ResultCache.lookup`` alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from blender_movie_director.backend.batch import submit_batch  # noqa: E402
from blender_movie_director.backend.pool import ServerPool  # noqa: E402
from blender_movie_director.backend.wan2gp import GenerationSettings, Timeouts, Wan2GPClient  # noqa: E402
from blender_movie_director.backend.wan2gp._cache import ApiCache  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "pool.json"
TIMEOUTS = Timeouts(connect=5, call=60, job=600, stall=120, download=60)
TARGETS = {"throughput_ratio": 3.5, "reconnect_warm_ratio": 0.3, "cache_hit_ms": 20.0}


class Emulator:
    """``python -m wan2gp_emulator`` in its own process (a real WanGP is a process of its own too)."""

    def __init__(self, step_seconds: float, out: Path, port: int = 0) -> None:
        self.step_seconds, self.out = step_seconds, out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wan2gp_emulator", "--port", str(port), "--step-seconds", str(step_seconds),
             "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("WAN2GP_EMULATOR_URL="):
                self.url = line.split("=", 1)[1].strip()
                break
        else:
            raise RuntimeError("the emulator did not start")
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_emulators(count: int, step_seconds: float, root: Path) -> list[Emulator]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: Emulator(step_seconds, root / f"emulator-{i}"), range(count)))


def shots(count: int, steps: int, tag: str) -> list[dict]:
    return [{"prompt": f"{tag} shot {i}", "frames": 5, "steps": steps} for i in range(count)]


def run_batch(urls: list[str], count: int, steps: int, root: Path, tag: str, *, kill: Emulator | None = None,
              retries: int = 0) -> dict:
    with ServerPool(urls, output_dir=root / f"out-{tag}", cache_dir=root / f"cache-{tag}", timeouts=TIMEOUTS,
                    health_period=1.0, lost_after=5.0) as pool:
        assert pool.wait_for_servers(len(urls), timeout=30), pool.view()
        started = time.perf_counter()
        batch = submit_batch(pool, shots(count, steps, tag), journal=root / f"{tag}.journal.jsonl", retries=retries)
        killed_at = None
        if kill is not None:
            while batch.progress.done < count // 2:
                time.sleep(0.05)
            killed_at = batch.progress.done
            kill.kill()
        batch.wait()
        elapsed = time.perf_counter() - started
        p = batch.progress
        per_server = {s.url: s.completed for s in pool.view().servers}
    return {"servers": len(urls), "shots": count, "elapsed_s": round(elapsed, 2),
            "shots_per_s": round(count / elapsed, 3), "done": p.done, "failed": p.failed,
            "cancelled": p.cancelled, "accounted": p.done + p.failed + p.cancelled == count,
            "killed_when_done": killed_at, "completed_per_server": per_server,
            "failures": [s.error for s in batch.failures()][:5]}


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def _connect(url: str, cache: ApiCache | None, out: Path) -> float:
    client = Wan2GPClient(url, output_dir=out, timeouts=TIMEOUTS)
    client.api_cache = cache
    started = time.perf_counter()
    client.connect()
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def reconnect(emulator: Emulator, repeat: int, root: Path) -> dict:
    out = root / "out-connect"
    cache_dir = root / "cache-connect"
    _connect(emulator.url, None, out)  # the server's first answers are slower (lazy imports, caches)
    cold = [_connect(emulator.url, None, out) for _ in range(repeat)]
    memory = ApiCache(cache_dir)
    _connect(emulator.url, memory, out)  # remembers the server
    warm = [_connect(emulator.url, memory, out) for _ in range(repeat)]
    disk = [_connect(emulator.url, ApiCache(cache_dir), out) for _ in range(repeat)]  # as a new program
    index_path = cache_dir / "api" / "index.json"
    restarted = []
    for _ in range(repeat):  # as after a server restart: a new app id, the same /config
        index = json.loads(index_path.read_text())
        for entry in index.values():
            entry["app_id"] = "an-earlier-process"
        index_path.write_text(json.dumps(index))
        fresh = ApiCache(cache_dir)
        restarted.append(_connect(emulator.url, fresh, out))
        assert fresh.stats["config"] == 1, fresh.stats
    # And one real restart of the server process on the same port.
    port = emulator.port
    emulator.stop()
    again = Emulator(emulator.step_seconds, emulator.out, port=port)
    real = ApiCache(cache_dir)
    real_restart = _connect(again.url, real, out)
    again.stop()
    cold_ms = _median_ms(cold)
    return {
        "cold_ms": cold_ms, "warm_memory_ms": _median_ms(warm), "warm_disk_ms": _median_ms(disk),
        "restarted_config_only_ms": _median_ms(restarted),
        "real_restart_ms": round(real_restart * 1000, 2), "real_restart_kind": max(real.stats, key=real.stats.get),
        "warm_memory_ratio": round(statistics.median(warm) / statistics.median(cold), 3),
        "warm_disk_ratio": round(statistics.median(disk) / statistics.median(cold), 3),
        "restarted_ratio": round(statistics.median(restarted) / statistics.median(cold), 3),
        "repeat": repeat,
    }


def cache_hits(url: str, root: Path, count: int = 50) -> dict:
    shot = {"prompt": "a lighthouse in a storm", "frames": 5, "steps": 2, "seed": 1234}
    with ServerPool([url], output_dir=root / "out-hits", cache_dir=root / "cache-hits", timeouts=TIMEOUTS,
                    health_period=5.0) as pool:
        first = pool.submit(shot).result(timeout=120)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            job = pool.submit(shot)
            job.result(timeout=5)
            times.append(time.perf_counter() - started)
            assert job.cached
        assert pool.result_cache is not None
        settings = GenerationSettings(**shot)
        lookups = []
        for _ in range(count):
            started = time.perf_counter()
            assert pool.result_cache.lookup(settings, first.wangp_version) is not None
            lookups.append(time.perf_counter() - started)
    return {"hits": count, "submit_hit_median_ms": _median_ms(times),
            "submit_hit_max_ms": round(max(times) * 1000, 2), "lookup_median_ms": _median_ms(lookups)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per shot")
    parser.add_argument("--step-seconds", type=float, default=0.1, help="the emulators' time per step")
    parser.add_argument("--repeat", type=int, default=10, help="connects per reconnect figure")
    parser.add_argument("--skip-kill", action="store_true", help="skip the killed-server batch")
    args = parser.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()},
                     "shot": {"steps": args.steps, "step_seconds": args.step_seconds,
                              "emulated_seconds": args.steps * args.step_seconds, "frames": 5},
                     "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="bmd-pool-bench-") as tmp:
        root = Path(tmp)
        emulators = start_emulators(args.servers, args.step_seconds, root)
        try:
            print(f"{args.servers} emulators up; {args.shots} shots of {args.steps} x {args.step_seconds} s",
                  flush=True)
            one = run_batch([emulators[0].url], args.shots, args.steps, root, "one")
            print(f"1 server:  {one['elapsed_s']:.1f} s, {one['shots_per_s']:.3f} shots/s", flush=True)
            many = run_batch([e.url for e in emulators], args.shots, args.steps, root, "many")
            print(f"{args.servers} servers: {many['elapsed_s']:.1f} s, {many['shots_per_s']:.3f} shots/s",
                  flush=True)
            results["throughput"] = {"one": one, "many": many,
                                     "ratio": round(many["shots_per_s"] / one["shots_per_s"], 3)}
            results["cache_hit"] = cache_hits(emulators[0].url, root)
            print(f"cache hit: {results['cache_hit']}", flush=True)
            if not args.skip_kill:
                killed = run_batch([e.url for e in emulators], args.shots, args.steps, root, "kill",
                                   kill=emulators[-1], retries=1)
                results["killed_halfway"] = killed
                print(f"one of {args.servers} killed halfway: {killed['done']} done, {killed['failed']} failed, "
                      f"accounted={killed['accounted']}", flush=True)
            results["reconnect"] = reconnect(emulators[0], args.repeat, root)
            print(f"reconnect: {results['reconnect']}", flush=True)
        finally:
            for emulator in emulators:
                emulator.stop()
    t, r, h = results["throughput"], results["reconnect"], results["cache_hit"]
    results["verdict"] = {
        "throughput_ratio": t["ratio"] >= TARGETS["throughput_ratio"],
        "reconnect_warm_ratio": r["warm_disk_ratio"] <= TARGETS["reconnect_warm_ratio"]
        and r["warm_memory_ratio"] <= TARGETS["reconnect_warm_ratio"],
        "cache_hit_ms": h["submit_hit_median_ms"] <= TARGETS["cache_hit_ms"],
        "killed_halfway_accounted": results.get("killed_halfway", {}).get("accounted"),
    }
    print()
    print(f"throughput  1 -> {args.servers} servers: {t['ratio']:.2f}x  (target >= {TARGETS['throughput_ratio']}x)")
    print(f"reconnect   cold {r['cold_ms']:.0f} ms; warm {r['warm_memory_ms']:.1f} ms (memory, "
          f"{r['warm_memory_ratio']:.2f}x), {r['warm_disk_ms']:.1f} ms (disk, {r['warm_disk_ratio']:.2f}x); "
          f"restarted server {r['restarted_config_only_ms']:.1f} ms ({r['restarted_ratio']:.2f}x)  "
          f"(target <= {TARGETS['reconnect_warm_ratio']}x)")
    print(f"cache hit   {h['submit_hit_median_ms']:.2f} ms median, {h['submit_hit_max_ms']:.2f} ms max "
          f"(target <= {TARGETS['cache_hit_ms']:.0f} ms)")
    if "killed_halfway" in results:
        k = results["killed_halfway"]
        print(f"killed      {k['done']}/{k['shots']} done, {k['failed']} failed, "
              f"every shot accounted: {k['accounted']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
