"""The register of shots across processes: a shot whose program died is listed, collected or cancelled from
another one, through the CLI (``main(argv)``), and several processes write the register at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from blender_movie_director.backend.wan2gp._register import JobRegister
from blender_movie_director.cli import main

_DYING_PROGRAM = """
import json, sys, time
from blender_movie_director.backend.wan2gp import Wan2GPClient, JobStatus
client = Wan2GPClient(sys.argv[1], output_dir=sys.argv[2])
job = client.submit(prompt=sys.argv[3], frames=9, steps=int(sys.argv[4]))
while job.status() != JobStatus.RUNNING and not job.done():
    time.sleep(0.02)
print(json.dumps({"job_id": job.id, "done": job.done()}), flush=True)
time.sleep(60)
"""


def _dies_mid_shot(url: str, out: Path, prompt: str, steps: int) -> str:
    program = subprocess.Popen([sys.executable, "-c", _DYING_PROGRAM, url, str(out), prompt, str(steps)],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = json.loads(program.stdout.readline())
    finally:
        program.kill()
        program.wait(10)
    assert not line["done"], line
    return line["job_id"]


def _json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_shot_whose_program_died_is_listed_and_collected_from_another(make_emulator, out_dir, capsys):
    server = make_emulator("v12")
    job_id = _dies_mid_shot(server.url, out_dir, "collect me later [[slow]]", 6)
    code, listed = _json(capsys, "jobs")
    mine = [j for j in listed["jobs"] if j["job_id"] == job_id]
    assert code == 0 and len(mine) == 1 and mine[0]["state"] in ("sent", "running")
    assert mine[0]["server"] == server.url.rstrip("/")
    code, collected = _json(capsys, "collect", job_id[:6], "--output", str(out_dir / "later"))
    assert code == 0 and Path(collected["video_path"]).is_file() and collected["frames"] == 9
    assert Path(collected["video_path"]).parent == out_dir / "later"  # -o DIR: not the folder it started with
    runs = [e for e in server.events() if e["event"] == "started" and e["session"] == mine[0]["session_hash"]]
    assert len(runs) == 1  # collected, not generated again
    code, listed = _json(capsys, "jobs")
    entry = next(j for j in listed["jobs"] if j["job_id"] == job_id)
    assert entry["state"] == "completed" and entry["progress"] == 1.0, entry
    code, again = _json(capsys, "collect", job_id)  # a second collect finds the file, asks nothing
    assert code == 0 and again["path"] == collected["video_path"]
    code, same = _json(capsys, "resume", job_id)  # resume JOB is collect JOB
    assert code == 0 and same == again


def _aborted(server, session_hash: str) -> bool:
    return any(e["event"] == "aborted" and e["session"] == session_hash for e in server.events())


def test_a_shot_whose_program_died_is_cancelled_on_the_server_from_another(make_emulator, out_dir, capsys):
    server = make_emulator("v12")
    job_id = _dies_mid_shot(server.url, out_dir, "cancel me from elsewhere [[slow]]", 40)
    code, done = _json(capsys, "cancel", job_id)
    assert code == 0 and done["stopped"]
    entry = JobRegister(Path(__import__("os").environ["WAN2GP_STATE_DIR"])).find(job_id)
    assert entry["state"] == "cancelled"
    # WanGP's abort reached the dead program's session: its worker stops at the next denoising step
    deadline = time.monotonic() + 10
    while not _aborted(server, entry["session_hash"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _aborted(server, entry["session_hash"]), server.events()
    code, _ = _json(capsys, "cancel", "no-such-job")
    assert code == 2
    code, again = _json(capsys, "abort", job_id[:8])  # abort JOB is cancel JOB: nothing left to stop
    assert code == 0 and again == {"job_id": job_id, "stopped": False, "state": "cancelled"}


_WRITER = """
import sys
from blender_movie_director.backend.wan2gp._register import JobRegister
register = JobRegister(sys.argv[1])
for n in range(int(sys.argv[3])):
    register.write({"job_id": f"{sys.argv[2]}-{n}", "server": "http://127.0.0.1:1"}, state="sent")
    register.set_state(f"{sys.argv[2]}-{n}", "completed")
"""


def test_three_processes_write_the_register_at_once(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), f"p{i}", "150"],
                                stderr=subprocess.PIPE, text=True) for i in range(3)]
    for writer in writers:
        assert writer.wait(60) == 0
        assert "job register" not in writer.stderr.read()  # no write was lost to a locked database
    entries = JobRegister(tmp_path).entries()
    assert len(entries) == 450 and {e["state"] for e in entries} == {"completed"}


def test_a_register_written_by_an_earlier_version_gains_the_new_columns(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "jobs.sqlite3")
    old.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, server TEXT NOT NULL, app_id TEXT, session_hash TEXT,"
                " state TEXT NOT NULL, pid INTEGER NOT NULL, record TEXT NOT NULL, output TEXT, message TEXT,"
                " created REAL NOT NULL, updated REAL NOT NULL)")
    old.commit()
    old.close()
    register = JobRegister(tmp_path)
    register.write({"job_id": "j1", "server": "http://127.0.0.1:1"}, state="running", progress=0.25)
    assert register.find("j1")["progress"] == 0.25
