"""The CLI over WanGP's MCP server, as over its web UI: generate, status, models, a shot whose program died
collected or cancelled from another, and one batch over a mixed pool (an MCP server and a web UI)."""

from __future__ import annotations

import json
from pathlib import Path

from .test_register import _dies_mid_shot, _json


def test_generate_status_models_and_jobs_over_mcp(make_mcp_emulator, out_dir, capsys):
    server = make_mcp_emulator("v13", mcp_api_version=2)
    code, status = _json(capsys, "status", "--server", server.url)
    assert code == 0 and status["kind"] == "wangp-mcp" and status["reachable"], status
    code, models = _json(capsys, "models", "--server", server.url)
    assert code == 0 and "t2v_1.3B" in {m["model_type"] for m in models["models"]}
    code, shot = _json(capsys, "generate", "--server", server.url, "a fox over MCP", "--frames", "9",
                       "--steps", "2", "--output", str(out_dir))
    assert code == 0 and Path(shot["video_path"]).parent == out_dir and shot["frames"] == 9, shot
    assert [j["done"] for j in server.jobs()] == [True]  # one job on the server, finished
    code, listed = _json(capsys, "jobs")
    entry = next(j for j in listed["jobs"] if j["job_id"] == shot["job_id"])
    assert entry["state"] == "completed" and entry["progress"] == 1.0 and entry["record"]["transport"] == "mcp"


def test_a_shot_whose_program_died_is_collected_or_cancelled_over_mcp(make_mcp_emulator, out_dir, capsys):
    server = make_mcp_emulator("v13", mcp_api_version=2)
    collected_id = _dies_mid_shot(server.url, out_dir, "collect me later [[slow]]", 6)
    cancelled_id = _dies_mid_shot(server.url, out_dir, "cancel me [[slow]]", 60)  # waits: one job at a time
    code, collected = _json(capsys, "collect", collected_id)  # into the folder the dead program had said
    assert code == 0 and Path(collected["video_path"]).is_file() and collected["frames"] == 9, collected
    assert Path(collected["video_path"]).parent == out_dir
    code, cancelled = _json(capsys, "cancel", cancelled_id)
    assert code == 0, cancelled
    jobs = server.jobs()
    assert len(jobs) == 2, jobs  # each shot sent once: collected, not generated again
    assert jobs[0]["done"] and jobs[0]["result"]["success"]
    assert jobs[1]["cancel_requested"], jobs[1]  # WanGP's own cancel, from another program
    code, listed = _json(capsys, "jobs")
    states = {j["job_id"]: j["state"] for j in listed["jobs"]}
    assert states[collected_id] == "completed" and states[cancelled_id] == "cancelled", states


def test_a_batch_over_a_pool_of_an_mcp_server_and_a_web_ui(make_mcp_emulator, emulator_v12, tmp_path, capsys):
    mcp = make_mcp_emulator("v13", mcp_api_version=2)
    shots = tmp_path / "shots.json"
    shots.write_text(json.dumps([{"prompt": f"shot {i} [[slow]]", "frames": 9, "steps": 3} for i in range(4)]))
    code, report = _json(capsys, "batch", str(shots), "--servers", mcp.url, emulator_v12.url,
                         "--output", str(tmp_path / "out"))
    assert code == 0 and report["done"] == 4 and report["failed"] == 0, report
    used = {s["server"].rstrip("/") for s in report["shots"]}
    assert used == {mcp.url.rstrip("/"), emulator_v12.url.rstrip("/")}, used  # both kinds did work
    assert all(Path(s["video"]).is_file() for s in report["shots"])
    assert len(mcp.jobs()) == sum(1 for s in report["shots"] if s["server"].rstrip("/") == mcp.url.rstrip("/"))
