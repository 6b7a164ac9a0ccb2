"""The command line as users run it: the installed console script and ``python -m``, in subprocesses."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from quiet import wait_worker_ended

SCRIPT = shutil.which("movie-director", path=str(Path(sys.executable).parent)) or "movie-director"


def _env() -> dict[str, str]:
    # the tests' own job register (conftest), never the user's
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN2GP_") or k == "WAN2GP_STATE_DIR"}
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    return env


def test_demo_console_script(tmp_path) -> None:
    started = time.monotonic()
    done = subprocess.run([SCRIPT, "demo", "--json", "--steps", "6"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    video = Path(doc["video_path"])
    assert video.parent == tmp_path / "outputs" and video.stat().st_size > 0  # ./outputs by default
    assert doc["frames"] == 33 and (doc["width"], doc["height"]) == (832, 480)
    assert re.search(r"\[running\] .*step \d/6", done.stderr)  # progress shown (plain lines: no terminal)
    assert "emulator" in done.stderr
    assert elapsed < 30, elapsed


def test_python_m_status_and_json_error(emulator_v6) -> None:
    ok = subprocess.run([sys.executable, "-m", "blender_movie_director", "status", "--json",
                         "--server", emulator_v6.url], env=_env(), capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["wangp_version"] == emulator_v6.version
    bad = subprocess.run([sys.executable, "-m", "blender_movie_director", "generate", "x", "--steps", "0",
                          "--json"], env=_env(), capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["field"] == "num_inference_steps"


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_ctrl_c_cancels_the_job_on_the_server(flavour, request, tmp_path) -> None:
    emulator = request.getfixturevalue(f"emulator_{flavour}")
    before = len(emulator.events())
    process = subprocess.Popen(
        [SCRIPT, "generate", "interrupted shot [[slow]]", "--frames", "9", "--steps", "100",
         "--server", emulator.url, "-o", str(tmp_path)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        steps: list[dict] = []
        while time.monotonic() < deadline and process.poll() is None:
            steps = [e for e in emulator.events()[before:] if e["event"] == "step" and e.get("total") == 100]
            if steps:
                break
            time.sleep(0.05)
        assert steps, "the job never started on the server"
        session = steps[0]["session"]
        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "cancelling the job on the server" in err and "Traceback" not in err
    assert out == ""
    mine = [e for e in emulator.events()[before:] if e.get("session") == session]
    aborted = [e for e in mine if e["event"] == "aborted"]
    assert aborted, [e["event"] for e in mine]
    assert not [e for e in mine if e["event"] == "completed"]
    # the abort reached the server soon after Ctrl-C (bounded), and the server stopped stepping then
    assert aborted[0]["t"] - interrupted_at < 3.0, aborted[0]["t"] - interrupted_at
    wait_worker_ended(emulator, session, aborted[0]["t"])  # that session's run is over: nothing more can come
    late = [e for e in emulator.events() if e.get("session") == session and e["event"] == "step"
            and e["t"] > aborted[0]["t"]]
    assert not late
    assert max(e["step"] for e in mine if e["event"] == "step") < 100
    assert not list(tmp_path.glob("*.mp4"))
