"""Fault figures: how long the client takes to notice and settle each fault, through our fault proxy.

    python benchmarks/faults.py

Saves benchmarks/results/faults.json. Measured with short client timeouts (those of tests/reliability:
heartbeat 1.5 s, connect 2 s, reconnect 4 s, call 5 s) so that the bounds can be read off directly; with the
defaults (20, 10, 30, 120 s) the same steps take proportionally longer. Emulator: WanGP 12, 0.05 s per step
(0.5 s for the [[slow]] shots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from faultproxy import FaultProxy  # noqa: E402

from blender_movie_director.backend.wan2gp import Retries, Timeouts, Wan2GPClient, Wan2GPError  # noqa: E402
from wan2gp_emulator import EmulatorServer  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TIMEOUTS = Timeouts(connect=2, describe=10, call=5, job=120, stall=30, download=10, heartbeat=1.5, reconnect=4,
                    resume_wait=20)


def _client(url: str, out: Path) -> Wan2GPClient:
    client = Wan2GPClient(url, output_dir=out, timeouts=TIMEOUTS, retries=Retries(attempts=3, backoff=0.1))
    client.poll_interval = 0.05
    return client


def _running(job, step: int = 1) -> None:
    deadline = time.monotonic() + 30
    while (job.progress.step or 0) < step and not job.done() and time.monotonic() < deadline:
        time.sleep(0.01)


def _outcome(job, since: float) -> tuple[str, float]:
    try:
        job.result(timeout=120)
        name = "completed"
    except Wan2GPError as exc:
        name = type(exc).__name__
    return name, round(time.monotonic() - since, 2)


def main() -> int:
    figures: dict[str, object] = {"timeouts": TIMEOUTS.model_dump()}
    with tempfile.TemporaryDirectory() as tmp, EmulatorServer("v12", step_seconds=0.05) as server:
        out = Path(tmp)

        with FaultProxy(server.url) as proxy, _client(proxy.url, out) as client:
            started = time.monotonic()
            client.generate(prompt="baseline", frames=9, steps=4)
            figures["plain_job_s"] = round(time.monotonic() - started, 2)

            proxy.latency, proxy.bandwidth = 0.2, 1024 * 1024
            started = time.monotonic()
            client.generate(prompt="slow link", frames=9, steps=4)
            figures["latency_200ms_1MBps_job_s"] = round(time.monotonic() - started, 2)
            proxy.latency, proxy.bandwidth = 0.0, None

            job = client.submit(prompt="drop [[slow]]", frames=9, steps=6)
            _running(job, 2)
            remaining = (6 - (job.progress.step or 0)) * 0.5  # the run's own remaining steps, at 0.5 s each
            dropped = time.monotonic()
            proxy.drop("/queue/data")
            outcome, took = _outcome(job, dropped)
            figures["drop_then_collect"] = {"outcome": outcome, "seconds_after_drop": took,
                                            "run_remaining_s": remaining}

            job = client.submit(prompt="freeze [[slow]]", frames=9, steps=40)
            _running(job, 1)
            frozen = time.monotonic()
            proxy.freeze()
            outcome, took = _outcome(job, frozen)
            figures["frozen_server"] = {"outcome": outcome, "seconds_after_freeze": took}
            proxy.thaw()

            job = client.submit(prompt="cancel while frozen [[slow]]", frames=9, steps=40)
            _running(job, 1)
            proxy.freeze()
            cancelled = time.monotonic()
            job.cancel()
            outcome, took = _outcome(job, cancelled)
            proxy.thaw()
            session = job.session_hash
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not [e for e in server.events()
                                                       if e["session"] == session and e["event"] == "aborted"]:
                time.sleep(0.02)
            figures["cancel_while_frozen"] = {"outcome": outcome, "seconds_to_cancelled": took,
                                              "aborted_on_server_s_after_thaw": round(time.monotonic() - cancelled
                                                                                      - took, 2)}

        port = server.port
        with FaultProxy(server.url) as proxy, _client(proxy.url, out) as client:
            job = client.submit(prompt="restart [[slow]]", frames=9, steps=40)
            _running(job, 1)
            stopped = time.monotonic()
            server.stop()
            server2 = EmulatorServer("v12", port=port, step_seconds=0.05)
            server2.start()
            try:
                outcome, took = _outcome(job, stopped)
                figures["server_restarted"] = {"outcome": outcome, "seconds_after_stop": took}
                started = time.monotonic()
                client.generate(prompt="after restart", frames=5, steps=1)
                figures["next_job_after_restart_s"] = round(time.monotonic() - started, 2)
            finally:
                server2.stop()

        # A real crash: the emulator process exits (os._exit) after 3 denoising steps.
        crashing = subprocess.Popen(
            [sys.executable, "-m", "wan2gp_emulator", "--port", "0", "--step-seconds", "0.05",
             "--crash-after-steps", "3", "--output-dir", str(out / "crashing")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert crashing.stdout is not None
            url = next(line for line in crashing.stdout if line.startswith("WAN2GP_EMULATOR_URL=")).split("=", 1)[1]
            with _client(url.strip(), out / "crash-shots") as client:
                job = client.submit(prompt="crash", frames=9, steps=20)
                crashing.wait(60)
                died = time.monotonic()
                outcome, took = _outcome(job, died)
                figures["server_crash"] = {"outcome": outcome, "seconds_after_the_process_died": took,
                                           "files_left": len(list((out / "crash-shots").glob("*")))}
        finally:
            crashing.kill()
            crashing.wait(10)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
