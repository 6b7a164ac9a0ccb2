"""The background runner's files and decisions (handoff.py), without Blender; the runner itself runs for real."""

from __future__ import annotations

import json
import os
import time

import pytest

from blender_movie_director import handoff
from blender_movie_director.backend.batch import JOURNAL_VERSION, Journal


def _journal(p: handoff.Paths, states: dict[int, str]) -> None:
    writer = Journal(p.journal)
    writer.open({"type": "batch", "version": JOURNAL_VERSION, "id": "b", "created": time.time(),
                 "shots": [{"prompt": f"shot {i}", "model": "t2v_1.3B"} for i in range(len(states))]},
                {i: {"type": "shot", "index": i, "state": s} for i, s in states.items()})
    writer.close()


def _started(p: handoff.Paths, ago: float, pid: int = 999_999_999) -> None:
    p.pid.parent.mkdir(parents=True, exist_ok=True)
    p.pid.write_text(f"{pid} {time.time() - ago:.3f}\n")


def test_a_jobs_journal_path_gives_back_every_file_of_its_batch(tmp_path):
    p = handoff.paths(tmp_path, "ab12cd34")
    assert p.journal == tmp_path / ".movie_director" / "ab12cd34.journal.jsonl"
    assert handoff.paths_of(str(p.journal)) == p


def test_the_shots_file_is_written_whole_and_an_empty_batch_is_refused(tmp_path):
    p = handoff.paths(tmp_path, "b")
    with pytest.raises(ValueError, match="at least one shot"):
        handoff.write_shots(p.shots, [])
    assert not p.shots.exists()
    handoff.write_shots(p.shots, [{"prompt": "a fox", "video_length": 17}])
    assert json.loads(p.shots.read_text()) == [{"prompt": "a fox", "video_length": 17}]
    assert [f.name for f in p.shots.parent.iterdir()] == [p.shots.name]  # no temporary file left


def test_when_the_runner_is_started_again(tmp_path):
    p = handoff.paths(tmp_path, "b")
    handoff.write_shots(p.shots, [{"prompt": "a fox"}, {"prompt": "a hare"}])
    _started(p, ago=5)
    assert handoff.needs_restart(p, None) is None  # just started: it is still starting up
    _started(p, ago=handoff.START_GRACE + 1)
    assert handoff.needs_restart(p, None) == "fresh"  # long gone without a journal
    _started(p, ago=handoff.START_GRACE + 1, pid=os.getpid())
    assert handoff.needs_restart(p, None) is None  # its process still lives
    _started(p, ago=handoff.START_GRACE + 1)
    _journal(p, {0: "done", 1: "running"})
    shots = [handoff.ShotState(0, "done"), handoff.ShotState(1, "running")]
    assert handoff.needs_restart(p, shots) == "resume"  # died with a shot unfinished, nobody holds the journal
    assert handoff.needs_restart(p, [handoff.ShotState(0, "done"), handoff.ShotState(1, "failed")]) is None
    held = Journal(p.journal)
    held._take_lock()  # a runner has it
    try:
        assert handoff.runner_holds(p) and handoff.needs_restart(p, shots) is None
    finally:
        held.close()
    p.exit.write_text("0\n")
    assert handoff.needs_restart(p, shots) is None  # it ended by itself: what it left is final
    p.exit.unlink()
    assert handoff.stop(p) is False  # nothing to stop, but the run is marked cancelled
    assert handoff.needs_restart(p, shots) is None  # a cancelled run is never started again


def test_a_runner_given_a_bad_shot_stops_and_says_why(tmp_path):
    p = handoff.paths(tmp_path / "shots", "bad")
    handoff.write_shots(p.shots, [{"prompt": "a fox", "model": "t2v_1.3B", "video_length": "many"}])
    handoff.start(p, "http://127.0.0.1:9", str(tmp_path / "shots"))
    deadline = time.monotonic() + 60
    while handoff.exit_code(p) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handoff.exit_code(p) == 2, p.log.read_text()
    assert not p.journal.exists() and handoff.read(p) is None
    assert handoff.failure(p).startswith("shot 1: --frames: Input should be a valid integer")
    assert handoff.needs_restart(p, None, now=time.time() + 3600) is None


def test_a_done_shot_whose_result_the_journal_lacks_is_said_failed_not_silently_finished(tmp_path):
    p = handoff.paths(tmp_path, "b")
    _journal(p, {0: "done", 1: "running"})
    shots = handoff.read(p)
    assert shots is not None and [s.state for s in shots] == ["failed", "running"]
    assert "does not say where" in shots[0].error and shots[0].result is None


def _record(key: str, *, queued: bool = True) -> dict:
    settings = {"model": "t2v_1.3B", "prompt": f"shot {key}", "video_length": 17, "client_id": f"bmd-blender-{key}"}
    return {"job_id": f"job-{key}", "client_id": settings["client_id"], "session_hash": f"session-{key}",
            "server": "http://127.0.0.1:9", "settings": settings, "sent_settings": {**settings, "seed": 7},
            "status": "queued", "task_queued": queued, "processing_started": False, "app_id": "app"}


def test_shots_handed_over_at_quit_make_a_journal_that_resumes_each_on_its_own_task(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(handoff, "start", lambda p, server, out, **kw: started.append((p, server, kw)) or 1)
    p = handoff.hand_over(str(tmp_path), "http://127.0.0.1:9", [("k1", _record("k1")), ("k2", _record("k2"))])
    assert started == [(p, "http://127.0.0.1:9", {"auth": None, "after": os.getpid()})]  # waits for Blender
    assert handoff.handed_over(str(tmp_path), "k1") == (str(p.journal), 0)
    assert handoff.handed_over(str(tmp_path), "k2") == (str(p.journal), 1)
    assert handoff.handed_over(str(tmp_path), "k3") is None
    assert [s["client_id"] for s in json.loads(p.shots.read_text())] == ["bmd-blender-k1", "bmd-blender-k2"]

    handoff._adopt(p)  # what the runner does first
    header, states = Journal.read(p.journal)
    assert [s["prompt"] for s in header["shots"]] == ["shot k1", "shot k2"]
    assert {i: (s["state"], s["record"]["job"]["session_hash"]) for i, s in states.items()} == \
        {0: ("running", "session-k1"), 1: ("running", "session-k2")}
    assert not handoff.runner_holds(p)  # the lock is let go: the CLI's resume takes it
    shots = handoff.read(p)  # Blender reads it as any runner's journal
    assert shots is not None and [s.state for s in shots] == ["running", "running"]


def test_the_runner_waits_for_blender_to_be_gone_before_it_starts(tmp_path):
    """--after-pid: the runner's work (imports, connecting) does not share the CPU with Blender's exit."""
    import subprocess
    import sys

    blender = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    p = handoff.paths(tmp_path / "shots", "after")
    handoff.write_shots(p.shots, [{"prompt": "a fox", "model": "t2v_1.3B", "video_length": "many"}])  # fails fast
    handoff.start(p, "http://127.0.0.1:9", str(tmp_path / "shots"), after=blender.pid)
    blender.wait()
    gone = time.time()
    deadline = time.monotonic() + 60
    while handoff.exit_code(p) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handoff.exit_code(p) == 2, p.log.read_text()
    assert p.exit.stat().st_mtime >= gone - 0.1  # it did its work (and failed) only once "Blender" was gone
