"""Every captured WanGP release on the emulator: cold connect beside plain gradio_client, and a long wait.

    python benchmarks/releases.py [--repeat 5] [--long-seconds 80]

Prints a table and saves benchmarks/results/releases.json. Figures (targets from issue 10):
- cold connect per flavour: ``Wan2GPClient.connect()`` (reads /config and the API description once, resolves the
  chain and the model switch) beside ``gradio_client.Client(url)``, median of ``--repeat``, interleaved in one
  run, each in a fresh process state (no cache); target <= 1.0x
- a long wait: a shot queued behind a longer one whose run lasts longer than ``Timeouts.stall`` completes. A real
  14B shot takes about 20 minutes against the default stall of 15 minutes; here both are scaled down together
  (the long shot's run lasts ``--long-seconds``, stall is 3/4 of that), with the emulator's ``--step-seconds``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import start_emulator_process  # noqa: E402

from blender_movie_director.backend.wan2gp import Wan2GPClient  # noqa: E402
from blender_movie_director.backend.wan2gp._config import Timeouts  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FLAVOURS = {"v6": "6.31", "v8": "8.11", "v9": "9.81", "v11": "11.66", "v12": "12.60"}


def cold_connects(url: str, repeat: int) -> dict:
    from gradio_client import Client

    ours, plain = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        client = Client(url, verbose=False, download_files=False)
        plain.append(time.perf_counter() - started)
        client.close()
        started = time.perf_counter()
        with Wan2GPClient(url, output_dir=tempfile.mkdtemp()) as ours_client:
            ours_client.connect()
            ours.append(time.perf_counter() - started)
    return {"ours_s": round(statistics.median(ours), 3), "gradio_client_s": round(statistics.median(plain), 3),
            "ratio": round(statistics.median(ours) / statistics.median(plain), 2),
            "ours_all": [round(x, 3) for x in ours], "gradio_client_all": [round(x, 3) for x in plain]}


def long_wait(long_seconds: float, out: Path) -> dict:
    steps = 40
    proc, url = start_emulator_process("v12", out, step_seconds=long_seconds / steps)
    try:
        stall = 0.75 * long_seconds
        timeouts = Timeouts(stall=stall, job=10 * long_seconds)
        with Wan2GPClient(url, output_dir=out, timeouts=timeouts) as client:
            long = client.submit(prompt="the long shot", frames=5, steps=steps, seed=1)
            while long.status().value != "running":
                time.sleep(0.05)
            queued_at = time.monotonic()
            behind = client.submit(prompt="the shot behind it", frames=5, steps=2, seed=2)
            started_at: list[float] = []
            behind.add_progress_callback(
                lambda job, p: p.step and not started_at and started_at.append(time.monotonic()))
            long.result()
            long_done = time.monotonic()
            result = behind.result()
            done = time.monotonic()
        return {"stall_s": stall, "long_shot_run_s": long_seconds, "steps": steps,
                "queued_wait_s": round((started_at[0] if started_at else long_done) - queued_at, 1),
                "behind_total_s": round(done - queued_at, 1), "completed": result.video_path.is_file()}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--long-seconds", type=float, default=80.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-releases-"))
    connects = {}
    for flavour, version in FLAVOURS.items():
        proc, url = start_emulator_process(flavour, tmp / flavour)
        try:
            connects[version] = cold_connects(url, args.repeat)
        finally:
            proc.terminate()
            proc.wait(10)
        row = connects[version]
        print(f"WanGP {version:>5}: connect {row['ours_s']:.3f} s vs gradio_client {row['gradio_client_s']:.3f} s "
              f"({row['ratio']}x)")
    wait = long_wait(args.long_seconds, tmp / "long")
    print(f"queued behind a {wait['long_shot_run_s']:.0f} s run, stall {wait['stall_s']:.0f} s: waited "
          f"{wait['queued_wait_s']} s, completed: {wait['completed']}")
    document = {"python": platform.python_version(), "cpus": os.cpu_count(), "when": time.strftime("%F %T"),
                "cold_connect": connects, "long_wait": wait}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "releases.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"saved {RESULTS / 'releases.json'}")


if __name__ == "__main__":
    main()
