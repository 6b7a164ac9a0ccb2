"""Batches over several real emulators: a server stopped halfway, a program killed and resumed, the CLI entry."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from quiet import wait_until

from blender_movie_director.backend.batch import (
    Journal,
    ShotState,
    add_batch_arguments,
    load_shots,
    resume_batch,
    run_batch_cli,
    submit_batch,
)
from blender_movie_director.backend.pool import DEFAULT_LOST_AFTER, ServerPool
from blender_movie_director.backend.wan2gp import Timeouts, Wan2GPValidationError

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30, resume_wait=30)


def _pool(urls, tmp_path: Path, **options) -> ServerPool:
    options.setdefault("health_period", 0.5)
    options.setdefault("lost_after", 2.0)
    return ServerPool(urls, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", timeouts=FAST, **options)


def _events(servers, kind: str) -> Counter:
    return Counter(e["client_id"] for s in servers for e in s.events() if e["event"] == kind)


def test_batch_over_three_servers_accounts_for_every_shot_when_one_stops_halfway(make_emulator, tmp_path):
    servers = [make_emulator("v12") for _ in range(3)]
    journal = tmp_path / "film.journal.jsonl"
    shots = [{"prompt": f"shot {i}", "frames": 5, "steps": 6} for i in range(12)]
    with _pool([s.url for s in servers], tmp_path) as pool:
        assert pool.wait_for_servers(3, timeout=10)
        batch = submit_batch(pool, shots, journal=journal, retries=1, max_in_flight=5)
        assert wait_until(lambda: batch.progress.done >= 4, timeout=60)
        victim = servers[0]
        victim_url = victim.url
        victim.stop()  # halfway: whatever it was running is lost, its queue moves on
        assert batch.wait(timeout=90)
        progress = batch.progress
        assert progress.total == 12 and progress.done == 12, [(s.server, s.error) for s in batch.failures()]
        assert all(r is not None and r.video_path.exists() for r in batch.results())
        late = [s for s in batch.shots if s.server != victim_url]
        assert len(late) >= 12 - 4 - 1  # after the stop, the shots went to the two others
    # the journal says the same, and each shot was generated once (a lost one at most twice, with a retry)
    _, states = Journal.read(journal)
    assert sorted(states) == list(range(12)) and {s["state"] for s in states.values()} == {"done"}
    completed = _events(servers[1:], "completed") + Counter(
        {s.settings.client_id: 1 for s in batch.shots if s.server == victim_url})
    assert all(completed[s.settings.client_id] == 1 for s in batch.shots)


_KILLED_PROGRAM = textwrap.dedent("""
    import sys, time
    from blender_movie_director.backend.pool import ServerPool
    from blender_movie_director.backend.batch import submit_batch
    from blender_movie_director.backend.wan2gp import Timeouts
    urls, out, journal = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
    pool = ServerPool(urls, output_dir=out, cache_dir=out + "/cache", health_period=0.5,
                      timeouts=Timeouts(connect=5, call=30, job=120, stall=60, download=30))
    shots = [{"prompt": f"resumable {i}" + (" [[slow]]" if i >= 2 else ""), "frames": 5, "steps": 4}
             for i in range(6)]
    batch = submit_batch(pool, shots, journal=journal, max_in_flight=4)
    print("started", flush=True)
    time.sleep(120)  # killed long before
""")


def test_a_killed_batch_resumes_without_doing_any_work_twice(make_emulator, tmp_path):
    servers = [make_emulator("v12"), make_emulator("v12")]
    journal = tmp_path / "resume.journal.jsonl"
    out = tmp_path / "out"
    program = subprocess.Popen([sys.executable, "-c", _KILLED_PROGRAM, ",".join(s.url for s in servers),
                                str(out), str(journal)], stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None and program.stdout.readline().strip() == "started"

        def states() -> Counter:
            try:
                return Counter(s["state"] for s in Journal.read(journal)[1].values())
            except (OSError, ValueError):
                return Counter()

        # kill it once two shots are done and two others are generating on the servers
        assert wait_until(lambda: states()["done"] >= 2 and states()["running"] >= 2, timeout=60)
    finally:
        program.kill()
        program.wait(10)
    before = states()
    done_before = {i for i, s in Journal.read(journal)[1].items() if s["state"] == "done"}

    # Both servers stay up: the pool's default patience for a server that is down (30 s), and a health check
    # of 2 s (a 0.4 s check and 2 s of patience once made a loaded CI machine give up a shot as lost).
    with _pool([s.url for s in servers], tmp_path, health_period=2.0, lost_after=DEFAULT_LOST_AFTER) as pool:
        batch = resume_batch(pool, journal)
        assert {s.index for s in batch.shots if s.state is ShotState.DONE} == done_before
        assert batch.wait(timeout=90)
        assert batch.progress.done == 6, [(s.index, s.state.value, s.error) for s in batch.shots]
        assert all(r is not None and r.video_path.exists() for r in batch.results())
    # No shot was queued twice on a server or completed twice: done shots were not touched, running ones
    # were re-attached to their own task (an interrupted generation restarts that same task).
    queued, completed = _events(servers, "queued"), _events(servers, "completed")
    client_ids = [s.settings.client_id for s in batch.shots]
    assert all(queued[c] == 1 for c in client_ids), (before, queued)
    assert all(completed[c] == 1 for c in client_ids), (before, completed)
    tasks = Counter((s.url, e["client_id"], e["task_id"]) for s in servers for e in s.events()
                    if e["event"] == "started")
    assert len({key[1] for key in tasks}) == 6 and len(tasks) == 6  # one task per shot, never a second one


_DIES_AFTER_QUEUEING = textwrap.dedent("""
    import sys, time
    from blender_movie_director.backend.wan2gp import JobStatus, Wan2GPClient
    client = Wan2GPClient(sys.argv[1], output_dir=sys.argv[2])
    job = client.submit(prompt="queued before the journal heard of it [[slow]]", frames=5, steps=6,
                        client_id=sys.argv[3])
    deadline = time.monotonic() + 60
    while job.status() != JobStatus.RUNNING and not job.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    print(job.status().value if not job.done() else f"done: {job.exception()!r}", flush=True)
    time.sleep(60)
""")


def test_a_shot_queued_before_its_journal_line_re_attaches_from_the_register(make_emulator, tmp_path):
    """A batch killed between a shot reaching WanGP's queue and the journal's line about it: the journal says
    nothing of the shot, the register of jobs has its record, and the resume re-attaches instead of queueing
    it a second time."""
    server = make_emulator("v12")
    journal = tmp_path / "gap.journal.jsonl"
    shot = {"prompt": "queued before the journal heard of it [[slow]]", "frames": 5, "steps": 6,
            "client_id": "bmd-gap-0000"}
    written = Journal(journal)  # what submit_batch writes first: the shots, no line about any of them yet
    written.open({"type": "batch", "version": 1, "id": "gap", "created": time.time(), "shots": [shot],
                  "options": {}})
    written.close()
    program = subprocess.Popen([sys.executable, "-c", _DIES_AFTER_QUEUEING, server.url, str(tmp_path / "dead"),
                                shot["client_id"]], stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None
        said = program.stdout.readline().strip()  # within 60 s: the program says where its shot is
        assert said == "running", said
    finally:
        program.kill()
        program.wait(10)
    with _pool([server.url], tmp_path) as pool:
        batch = resume_batch(pool, journal)
        assert batch.wait(timeout=90) and batch.progress.done == 1, batch.summary()
        assert batch.results()[0].video_path.exists()
    assert _events([server], "queued")["bmd-gap-0000"] == 1  # re-attached, never queued again
    assert _events([server], "completed")["bmd-gap-0000"] == 1


def test_cancel_all_and_resume_runs_only_what_is_unfinished(make_emulator, tmp_path):
    server = make_emulator("v12")
    journal = tmp_path / "cancel.journal.jsonl"
    with _pool([server.url], tmp_path) as pool:
        batch = submit_batch(pool, [{"prompt": "quick 0", "frames": 5, "steps": 2},
                                    {"prompt": "long 1 [[slow]]", "frames": 5, "steps": 12},
                                    {"prompt": "quick 2", "frames": 5, "steps": 2}], journal=journal, max_in_flight=2)
        assert wait_until(lambda: batch.progress.done == 1 and any(e["event"] == "started" and "long" in e["detail"]
                                                       for e in server.events()), timeout=60)
        # The long shot runs 6 s: 30 fast steps (1.5 s) could end before a loaded machine got here to cancel it.
        assert batch.cancel() == 2  # the running long shot (stopped on the server) and the queued one
        assert batch.wait(timeout=30)
        p = batch.progress
        assert (p.done, p.cancelled, p.running, p.pending) == (1, 2, 0, 0)
        # The abort lands at the end of the step running then (0.5 s; longer on a loaded machine), and the job's
        # cancel gives the server only a bounded time before it goes on trying in the background: wait for it.
        aborted = wait_until(lambda: any(e["event"] == "aborted" for e in server.events()), timeout=30)
        assert aborted, ([(e["event"], e.get("detail")) for e in server.events()],
                         [(s.to_dict(), s.job.history if s.job else None) for s in batch.shots])
        resumed = resume_batch(pool, journal)
        assert [s.state for s in resumed.shots][0] is ShotState.DONE
        assert resumed.wait(timeout=60) and resumed.progress.done == 3, resumed.summary()
    completed = _events([server], "completed")
    assert [completed[s.settings.client_id] for s in batch.shots] == [1, 1, 1]


def test_load_shots_accepts_settings_wangp_files_and_defaults(tmp_path):
    image = tmp_path / "frames" / "start.png"
    image.parent.mkdir()
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    (tmp_path / "wangp.json").write_text(json.dumps({"model_type": "t2v", "prompt": "from WanGP",
                                                     "video_length": 33, "settings_version": 2.3,
                                                     "tea_cache_setting": 0}))
    shots_file = tmp_path / "shots.json"
    shots_file.write_text(json.dumps({"defaults": {"steps": 8, "seed": 5}, "shots": [
        {"prompt": "a fox", "frames": 17},
        "wangp.json",
        {"prompt": "from an image", "model": "i2v", "image_start": "frames/start.png"},
    ]}))
    shots = load_shots(shots_file)
    assert [s.prompt for s in shots] == ["a fox", "from WanGP", "from an image"]
    assert shots[0].num_inference_steps == 8 and shots[0].seed == 5 and shots[0].video_length == 17
    assert shots[1].model == "t2v" and shots[1].extra == {"tea_cache_setting": 0}
    assert shots[2].image_start == image.resolve()
    shots_file.write_text(json.dumps([{"prompt": "ok"}, {"prompt": "bad", "steps": 0}]))
    with pytest.raises(Wan2GPValidationError, match="shot 2"):
        load_shots(shots_file)


class _Out:
    def __init__(self) -> None:
        self.json, self.quiet = True, True
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def result(self, data: dict[str, Any], text: str | None = None) -> None:
        self.results.append(data)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def warn(self, message: str) -> None:
        self.notes.append(message)


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default=None)
    add_batch_arguments(parser)
    return parser.parse_args(argv)


def test_cli_entry_runs_refuses_to_overwrite_and_resumes(emulator_v12, tmp_path):
    shots_file = tmp_path / "shots.json"
    shots_file.write_text(json.dumps([{"prompt": f"cli {i}", "frames": 5, "steps": 2} for i in range(3)]))
    common = [str(shots_file), "--servers", emulator_v12.url, "-o", str(tmp_path / "out"),
              "--cache-dir", str(tmp_path / "cache")]
    out = _Out()
    assert run_batch_cli(_cli(common), out) == 0
    summary = out.results[-1]
    assert summary["done"] == 3 and all(Path(s["video"]).exists() for s in summary["shots"])
    assert (tmp_path / "shots.journal.jsonl").exists()
    with pytest.raises(Wan2GPValidationError, match="journal"):
        run_batch_cli(_cli(common), _Out())
    started = len([e for e in emulator_v12.events() if e["event"] == "started"])
    out = _Out()
    assert run_batch_cli(_cli(common + ["--resume"]), out) == 0
    assert out.results[-1]["done"] == 3
    assert len([e for e in emulator_v12.events() if e["event"] == "started"]) == started  # nothing ran again
