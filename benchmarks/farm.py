"""Benchmark: a storyboard through OpenJD (`openjd run`, one per worker) against `movie-director batch`.

    python benchmarks/farm.py [--shots 8] [--servers 4] [--steps 40] [--step-seconds 0.25] [--rounds 2]

Measured, not asserted. Prints a summary and saves ``benchmarks/results/farm.json``. Figures (target from
issue 15): the wall time of ``--shots`` shots as an OpenJD bundle, each of ``--servers`` "workers" (an emulator
in its own process, one ``openjd run`` with its share of the tasks, all at once) against ``movie-director
batch`` of the same shots over the same servers (target: farm <= 1.2x batch, per-task start-up included); and
the per-task start-up: ``movie-director shot`` of a shot done already (a process start, nothing sent), and the
same through ``openjd run`` (its session set-up too). Batch and farm runs alternate (``--rounds``, medians kept),
and the machine's load average is saved with them: the farm path starts more processes, so on a small machine
shared with other work it pays more for that load than the batch does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pool import start_emulators  # noqa: E402  (benchmarks/pool.py: emulators in their own processes)

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
TARGET_RATIO = 1.2


def _timed(commands: list[list[str]]) -> float:
    started = time.perf_counter()
    running = [subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for c in commands]
    for process, command in zip(running, commands, strict=True):
        _, err = process.communicate(timeout=1200)
        if process.returncode != 0:
            raise RuntimeError(f"{command[:3]} exited {process.returncode}: {err[-400:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-seconds", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=2, help="batch and farm runs, interleaved (medians kept)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="md-bench-farm-"))
    os.environ["WAN2GP_STATE_DIR"] = ENV["WAN2GP_STATE_DIR"] = str(root / "state")  # not the user's register
    emulators = start_emulators(args.servers, args.step_seconds, root)
    urls = [e.url for e in emulators]
    try:
        def write(tag: str) -> Path:
            path = root / f"{tag}.json"
            path.write_text(json.dumps([{"prompt": f"{tag} shot {i}", "frames": 5, "steps": args.steps}
                                        for i in range(args.shots)]), encoding="utf-8")
            return path

        load_before = os.getloadavg()[0]
        shares = [list(range(i, args.shots, len(urls))) for i in range(len(urls))]
        batch_runs, farm_runs = [], []
        for n in range(args.rounds):  # interleaved: the machine's other load falls on both alike
            batch_runs.append(_timed([[str(BIN / "movie-director"), "-q", "batch", str(write(f"batch{n}")),
                                       "--no-cache", "--cache-dir", str(root / "cache"), "-o",
                                       str(root / f"batch-out{n}"), "--servers", *urls]]))
            bundle = root / f"bundle{n}"
            subprocess.run([str(BIN / "movie-director"), "-q", "batch", str(write(f"farm{n}")), "--openjd",
                            str(bundle)], env=ENV, check=True, stdout=subprocess.DEVNULL)
            base = [shutil.which("openjd", path=str(BIN)) or "openjd", "run", str(bundle / "template.yaml"),
                    "-p", f"ShotsFile={bundle / 'shots.json'}", "-p", f"OutputDir={bundle / 'output'}"]
            farm_runs.append(_timed([base + ["-p", f"WanGPServer={url}", "--tasks",
                                             json.dumps([{"Shot": s} for s in share])]
                                     for url, share in zip(urls, shares, strict=True)]))
        batch_s, farm_s = statistics.median(batch_runs), statistics.median(farm_runs)
        shot_start = statistics.median(_timed([[str(BIN / "movie-director"), "shot", str(bundle / "shots.json"),
                                                "--shots", "0", "-o", str(bundle / "output")]]) for _ in range(3))
        openjd_start = statistics.median(_timed([base + ["-p", f"WanGPServer={urls[0]}", "--tasks",
                                                         json.dumps([{"Shot": 0}])]]) for _ in range(3))
    finally:
        for emulator in emulators:
            emulator.stop()
        shutil.rmtree(root, ignore_errors=True)
    result = {"shots": args.shots, "servers": args.servers, "shot_seconds": args.steps * args.step_seconds,
              "batch_s": round(batch_s, 2), "farm_s": round(farm_s, 2), "ratio": round(farm_s / batch_s, 3),
              "target_ratio": TARGET_RATIO, "task_startup_shot_s": round(shot_start, 2),
              "task_startup_openjd_run_s": round(openjd_start, 2), "rounds": args.rounds,
              "batch_runs_s": [round(t, 2) for t in batch_runs], "farm_runs_s": [round(t, 2) for t in farm_runs],
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
              "cpus": os.cpu_count()}
    print(f"{args.shots} shots over {args.servers} servers ({result['shot_seconds']:.0f} s a shot): "
          f"batch {batch_s:.1f} s, OpenJD {farm_s:.1f} s, ratio {result['ratio']:.2f} (target <= {TARGET_RATIO})")
    print(f"per-task start-up: movie-director shot {shot_start:.2f} s; through openjd run {openjd_start:.2f} s")
    print(f"runs: batch {result['batch_runs_s']}, OpenJD {result['farm_runs_s']}; load average "
          f"{load_before:.1f} before, {result['load_average_after']:.1f} after, on {os.cpu_count()} CPUs")
    out = Path(__file__).parent / "results" / "farm.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
