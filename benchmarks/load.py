"""Load benchmark: many short jobs through ONE client from several threads, against one emulator process.

    python benchmarks/load.py [--jobs 200] [--threads 8] [--flavour v12]

Checks, and saves in benchmarks/results/load.json:
- every job accounted for: completed, or failed with an explicit error (none silently lost or hanging);
- every output a valid video with the frames asked, in the output folder, one file per completed job, no
  duplicate and no missing file, no temporary file left;
- the client's memory and thread count flat across the run: first 50 vs last 50 jobs (no per-job leak). Memory
  is measured twice: the process's RSS, and the Python heap (``sys.getallocatedblocks()``), because RSS also
  carries the C allocator's slowly settling fragmentation (measured: growth per job falls from ~25 KB to ~7 KB
  between jobs 100 and 1200 while the Python heap stays flat, ~0.5 KB per job under tracemalloc).

The emulator runs in its own process (``--step-seconds 0``), so the figures are the client's alone.
``tests/reliability/test_load.py`` runs :func:`run_load` with fewer jobs and asserts the same.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import psutil  # noqa: E402

from blender_movie_director.backend.wan2gp import Timeouts, Wan2GPClient, Wan2GPError  # noqa: E402
from blender_movie_director.backend.wan2gp._mp4 import NotAVideo, probe  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FRAMES = 5  # the shortest Wan 2.1 clip (4n+1): the load is on the client, not on video writing


def start_emulator(flavour: str, out: Path) -> tuple[subprocess.Popen, str]:
    """``python -m wan2gp_emulator --port 0 --step-seconds 0``; returns (process, url)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan2gp_emulator", "--flavour", flavour, "--port", "0", "--step-seconds", "0",
         "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return proc, line.split("=", 1)[1].strip()
    proc.kill()
    raise RuntimeError("the emulator did not start")


def run_load(url: str, *, jobs: int, threads: int, out_dir: Path, window: int = 50,
             timeout: float = 600.0) -> dict[str, Any]:
    """Run ``jobs`` shots through one client from ``threads`` threads; returns figures and the checks' results."""
    process = psutil.Process()
    timeouts = Timeouts(connect=10, call=60, job=300, stall=120, download=60)
    client = Wan2GPClient(url, output_dir=out_dir, timeouts=timeouts, max_jobs=threads)
    client.connect()
    lock = threading.Lock()
    outcomes: dict[int, dict[str, Any]] = {}
    samples: list[tuple[int, float, int, int]] = []  # (jobs done, RSS MB, threads, Python heap blocks) per job

    def worker(ids: list[int]) -> None:
        for i in ids:
            started = time.perf_counter()
            try:
                result = client.generate(prompt=f"load shot {i}", frames=FRAMES, steps=1, seed=i)
                outcome: dict[str, Any] = {"status": "completed", "path": str(result.video_path),
                                           "seed": result.settings.seed}
            except Wan2GPError as exc:
                outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            outcome["seconds"] = time.perf_counter() - started
            with lock:
                outcomes[i] = outcome
                samples.append((len(outcomes), process.memory_info().rss / 2**20, process.num_threads(),
                                sys.getallocatedblocks()))

    ids = list(range(jobs))
    workers = [threading.Thread(target=worker, args=(ids[k::threads],), name=f"load-{k}") for k in range(threads)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    deadline = time.monotonic() + timeout
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - started
    hung = sum(t.is_alive() for t in workers)
    client.close()
    gc.collect()

    completed = {i: o for i, o in outcomes.items() if o["status"] == "completed"}
    failed = {i: o for i, o in outcomes.items() if o["status"] == "failed"}
    paths = [Path(o["path"]) for o in completed.values()]
    invalid = []
    for i, o in completed.items():
        try:
            frames = probe(o["path"]).frames
            if frames != FRAMES or o["seed"] != i or f"_s{i}_" not in Path(o["path"]).name:
                invalid.append(f"{i}: {frames} frames, seed {o['seed']}, {Path(o['path']).name}")
        except (NotAVideo, OSError) as exc:
            invalid.append(f"{i}: {exc}")
    on_disk = {p for p in out_dir.iterdir() if not p.name.startswith(".")}
    leftovers = [p.name for p in out_dir.iterdir() if p.name.startswith(".")]
    first, last = samples[:window], samples[-window:]
    seconds = sorted(o["seconds"] for o in outcomes.values())
    return {
        "jobs": jobs,
        "threads": threads,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(len(outcomes) / wall, 2) if wall else None,
        "job_s_median": round(statistics.median(seconds), 3) if seconds else None,
        "job_s_p95": round(seconds[int(0.95 * (len(seconds) - 1))], 3) if seconds else None,
        "accounted": len(outcomes),
        "completed": len(completed),
        "failed": len(failed),
        "failures": sorted({o["error"] for o in failed.values()})[:10],
        "hung_threads": hung,
        "invalid_outputs": invalid[:10],
        "duplicate_paths": len(paths) - len(set(paths)),
        "missing_files": sorted(str(p) for p in set(paths) - on_disk)[:10],
        "unexpected_files": sorted(p.name for p in on_disk - set(paths))[:10],
        "temporary_files_left": leftovers[:10],
        "window": len(first),
        "rss_MB_first": round(statistics.mean(s[1] for s in first), 1),
        "rss_MB_last": round(statistics.mean(s[1] for s in last), 1),
        "threads_first": round(statistics.mean(s[2] for s in first), 1),
        "threads_last": round(statistics.mean(s[2] for s in last), 1),
        "threads_max": max(s[2] for s in samples),
        "rss_MB_max": round(max(s[1] for s in samples), 1),
        "heap_blocks_first": round(statistics.mean(s[3] for s in first)),
        "heap_blocks_last": round(statistics.mean(s[3] for s in last)),
    }


def problems(figures: dict[str, Any], *, rss_growth_MB: float, thread_growth: float,
             object_growth: float = 0.10) -> list[str]:
    """What is wrong with a run's figures (empty: all invariants hold)."""
    found = []
    if figures["accounted"] != figures["jobs"] or figures["hung_threads"]:
        found.append(f"{figures['jobs'] - figures['accounted']} jobs unaccounted, {figures['hung_threads']} hung")
    if figures["failed"]:
        found.append(f"{figures['failed']} failed: {figures['failures']}")
    for key in ("invalid_outputs", "missing_files", "unexpected_files", "temporary_files_left"):
        if figures[key]:
            found.append(f"{key}: {figures[key]}")
    if figures["duplicate_paths"]:
        found.append(f"{figures['duplicate_paths']} duplicate output paths")
    if figures["rss_MB_last"] - figures["rss_MB_first"] > rss_growth_MB:
        found.append(f"RSS grew {figures['rss_MB_first']} -> {figures['rss_MB_last']} MB")
    if figures["threads_last"] - figures["threads_first"] > thread_growth:
        found.append(f"threads grew {figures['threads_first']} -> {figures['threads_last']}")
    if figures["heap_blocks_last"] > figures["heap_blocks_first"] * (1 + object_growth):
        found.append(f"the Python heap grew {figures['heap_blocks_first']} -> {figures['heap_blocks_last']} blocks")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--flavour", choices=["v12", "v6"], default="v12")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        emulator_out, out_dir = Path(tmp) / "emulator", Path(tmp) / "shots"
        out_dir.mkdir()
        proc, url = start_emulator(args.flavour, emulator_out)
        try:
            figures = run_load(url, jobs=args.jobs, threads=args.threads, out_dir=out_dir)
        finally:
            proc.terminate()
            proc.wait(10)
    # Flat: Python heap within 10 %, threads within 2, and RSS within 15 MB over the 150 jobs between the two
    # windows (a leak of one 100 KB output per job would show as +15 MB; allocator settling measures ~9 MB).
    found = problems(figures, rss_growth_MB=15.0, thread_growth=2.0)
    figures.update(flavour=args.flavour, python=sys.version.split()[0], cpus=os.cpu_count(), ok=not found,
                   problems=found)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())
