"""A job saved with to_record() is tracked again by a new client (a restarted program) through its session."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from quiet import wait_until

from blender_movie_director.backend.wan2gp import JobFailedError, JobStatus, Wan2GPClient, Wan2GPError
from blender_movie_director.backend.wan2gp._config import Timeouts

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30, resume_wait=30)


_FIRST_PROGRAM = """
import json, sys, time
from blender_movie_director.backend.wan2gp import Wan2GPClient, JobStatus
client = Wan2GPClient(sys.argv[1], output_dir=sys.argv[2])
job = client.submit(prompt="resume me [[slow]]", frames=9, steps=8)
while job.status() != JobStatus.RUNNING and not job.done():
    time.sleep(0.02)
print(json.dumps(job.to_record() if not job.done() else {"error": str(job.exception())}), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_resume_a_running_job_in_a_new_client(make_emulator, flavour, out_dir):
    # A private server: a client killed mid-job leaves WanGP's status poller of that session running, which
    # WanGP 6 can't reset and which would hold up the progress of later tests on a shared server.
    emulator = make_emulator(flavour)
    # The first program submits, then dies mid-generation (as when Blender is closed or crashes).
    first = subprocess.Popen([sys.executable, "-c", _FIRST_PROGRAM, emulator.url, str(out_dir)],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = first.stdout.readline()
    finally:
        first.kill()
        first.wait(10)
    record = json.loads(line)
    assert "error" not in record, record
    assert record["session_hash"] and record["task_queued"]

    with Wan2GPClient(emulator.url, output_dir=out_dir, timeouts=FAST) as second:
        resumed = second.resume_job(record)
        result = resumed.result(timeout=60)
    assert resumed.id == record["job_id"] and result.video_path.exists()
    assert result.settings.seed == record["sent_settings"]["seed"]
    events = [e for e in emulator.events() if e["session"] == record["session_hash"]]
    # Gradio stops a session's running event when its stream disconnects (the first program died), while
    # WanGP keeps the task in the session's queue: the resumed job runs that same task, never a second one.
    assert len({e["task_id"] for e in events if e["event"] == "started"}) == 1
    assert len([e for e in events if e["event"] == "queued"]) == 1
    assert len([e for e in events if e["event"] == "completed"]) == 1


def test_resume_a_finished_job_fetches_its_output(emulator_v12, out_dir):
    """Into the folder the job was started with (its record says it), whatever the new client's; or into the
    folder the resume names."""
    started_in = out_dir / "started"
    with Wan2GPClient(emulator_v12.url, output_dir=out_dir, timeouts=FAST) as client:
        job = client.submit(prompt="finished while away", frames=5, steps=1, output_dir=started_in)
        assert job.result(timeout=60).video_path.parent == started_in
        record = job.to_record()
    assert record["output_dir"] == str(started_in)
    other, named = out_dir / "other-client", out_dir / "named"
    with Wan2GPClient(emulator_v12.url, output_dir=other, timeouts=FAST) as client:
        result = client.resume_job(record).result(timeout=60)
        again = client.resume_job(record, output_dir=named).result(timeout=60)
    assert result.video_path.parent == started_in and result.video_path.exists()
    assert again.video_path.parent == named and again.video_path.exists()
    assert not other.exists()


def test_resume_a_job_the_server_no_longer_has(emulator_v12, out_dir):
    with Wan2GPClient(emulator_v12.url, output_dir=out_dir, timeouts=FAST) as client:
        job = client.submit(prompt="will be forgotten", frames=5, steps=1)
        job.result(timeout=60)
        record = job.to_record()
        record["session_hash"] = "0" * 32  # a session the server never had (as after a restart)
        with pytest.raises(JobFailedError, match="lost"):
            client.resume_job(record).result(timeout=60)


def test_detach_lets_go_at_once_and_the_job_goes_on_on_the_server(emulator_v12, out_dir):
    with Wan2GPClient(emulator_v12.url, output_dir=out_dir, timeouts=FAST) as first:
        job = first.submit(prompt="detach me [[slow]]", frames=9, steps=6)
        assert wait_until(lambda: job.status() == JobStatus.RUNNING)
        record = job.to_record()
        started = time.monotonic()
        assert job.detach()
        with pytest.raises(Wan2GPError, match="detached"):
            job.result(timeout=5)
        assert time.monotonic() - started < 1.0
        assert job.status() == JobStatus.RUNNING  # not cancelled: nothing was stopped on the server
    assert not [e for e in emulator_v12.events() if e["event"] == "aborted" and e["session"] == record["session_hash"]]
    with Wan2GPClient(emulator_v12.url, output_dir=out_dir, timeouts=FAST) as second:
        assert second.resume_job(record).result(timeout=60).video_path.exists()


def _next_shot(url: str, out_dir) -> tuple[list[int], float, JobStatus]:
    """A shot from a new client that knows nothing of earlier programs: its steps as shown, and its wall time."""
    steps: list[int] = []
    started = time.monotonic()
    with Wan2GPClient(url, output_dir=out_dir, timeouts=FAST) as client:
        job = client.submit(prompt="the next shot", frames=5, steps=20)
        job.add_progress_callback(lambda job, p: p.step and steps.append(p.step))
        job.result(timeout=60)
    return steps, time.monotonic() - started, job.status()


# Killed while denoising: WanGP's status text no longer changes then, so the session's status loop never
# yields again and Gradio never drops it (killed earlier, a new status text lets Gradio drop it at its yield).
_DIES_WHILE_DENOISING = """
import json, sys, time
from blender_movie_director.backend.wan2gp import Wan2GPClient
client = Wan2GPClient(sys.argv[1], output_dir=sys.argv[2])
job = client.submit(prompt="killed while denoising [[slow]]", frames=9, steps=12)
while (job.progress.step or 0) < 2 and not job.done():
    time.sleep(0.02)
print(json.dumps(job.to_record() if not job.done() else {"error": str(job.exception())}), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("flavour", ["v12", "v9", "v6"])
def test_a_program_killed_mid_shot_leaves_the_server_healthy(make_emulator, flavour, out_dir):
    # Issue 10 §3b: Gradio stops the dead program's process_tasks at its next yield, so WanGP never clears that
    # session's status flag, and its status loop holds Gradio's one status-stream slot for every later shot. The
    # register (shared by our programs) lets the next client release that session once its task is done.
    emulator = make_emulator(flavour)
    first = subprocess.Popen([sys.executable, "-c", _DIES_WHILE_DENOISING, emulator.url, str(out_dir)],
                             stdout=subprocess.PIPE, text=True)
    try:
        record = json.loads(first.stdout.readline())
    finally:
        first.kill()
        first.wait(10)
    assert "error" not in record, record
    assert emulator.sessions()[record["session_hash"]]["status_display"]  # the dead session's status loop runs
    # The first shot after it waits for the dead one to leave the GPU; meanwhile the client keeps looking, and
    # releases the dead session once its task is done (some of this shot's steps may come before that).
    _steps, _seconds, status = _next_shot(emulator.url, out_dir)
    assert status == JobStatus.COMPLETED
    for _ in range(2):  # the next one releases it before its run, and shows its steps; so does the one after
        steps, _seconds, _ = _next_shot(emulator.url, out_dir)
        assert max(steps, default=0) >= 15 and len(set(steps)) >= 5, steps
    # released: its status loop no longer holds every later shot's status stream (a wall-time check flaked)
    assert not emulator.sessions()[record["session_hash"]]["status_display"]
    # the dead program's shot was generated once and is still in the register, to be collected
    dead = [e for e in emulator.events() if e["session"] == record["session_hash"]]
    assert len([e for e in dead if e["event"] == "completed"]) == 1
