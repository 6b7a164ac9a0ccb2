"""The command line through ``main(argv)``, against real emulators on loopback."""

from __future__ import annotations

import argparse
import json
import re
import socket
from pathlib import Path

import av
import pytest
from PIL import Image

from blender_movie_director import cli
from blender_movie_director.backend import discovery
from blender_movie_director.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, _err = _run(capsys, *argv, "--json")
    return code, json.loads(out)  # exactly one JSON document, nothing else on stdout


def _frames(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), stream.width, stream.height


@pytest.fixture(autouse=True)
def _no_accidental_discovery(monkeypatch) -> None:
    """Without --server, discovery scans only a closed port here (never the developer's own WanGP)."""
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", (_free_port(),))
    discovery.clear_cache()


def test_generate_saves_the_named_file_and_shows_progress(emulator, tmp_path, capsys) -> None:
    target = tmp_path / "shots" / "fox.mp4"
    code, out, err = _run(capsys, "generate", "a red fox in snow", "--frames", "9", "--steps", "3", "--seed", "5",
                          "--server", emulator.url, "-o", str(target))
    assert code == 0, err
    assert target.exists() and _frames(target) == (9, 832, 480)
    assert f"saved {target}" in out
    lines = err.splitlines()  # not a terminal: plain progress lines
    assert any(line.startswith("[running]") and re.search(r"step \d/3\b", line) for line in lines), err
    assert any("[downloading]" in line for line in lines)
    steps = [e for e in emulator.events() if e["event"] == "step" and e.get("total") == 3]
    assert steps


def test_generate_json_and_image_start(emulator_v12, tmp_path, capsys) -> None:
    image = tmp_path / "start.png"
    Image.new("RGB", (832, 480), (200, 30, 40)).save(image)
    code, doc = _json(capsys, "generate", "the card moves", "--model", "i2v", "--frames", "9", "--steps", "2",
                      "--image-start", str(image), "--server", emulator_v12.url, "-o", str(tmp_path / "out"))
    assert code == 0, doc
    assert Path(doc["video_path"]).parent == tmp_path / "out" and Path(doc["video_path"]).exists()
    assert doc["model"] == "i2v" and doc["frames"] == 9 and doc["wangp_version"] == emulator_v12.version
    assert doc["settings"]["image_start"] == str(image.resolve())


def test_settings_round_trip(emulator, tmp_path, capsys) -> None:
    settings = tmp_path / "shot.json"
    code, out, _ = _run(capsys, "export-settings", "a lighthouse at night", "--frames", "13", "--steps", "2",
                        "--seed", "77", "--negative", "blurry", "-o", str(settings))
    assert code == 0 and settings.exists()
    exported = json.loads(settings.read_text())
    assert exported["video_length"] == 13 and exported["num_inference_steps"] == 2 and exported["mode"] == ""
    # the file drives a generation; an option on the command line overrides it
    code, doc = _json(capsys, "generate", "--settings", str(settings), "--steps", "3", "--server", emulator.url,
                      "-o", str(tmp_path / "out"))
    assert code == 0, doc
    assert doc["frames"] == 13 and doc["settings"]["seed"] == 77
    assert doc["settings"]["prompt"] == "a lighthouse at night"
    assert doc["settings"]["negative_prompt"] == "blurry"
    assert doc["sent_settings"]["num_inference_steps"] == 3
    # without -o the settings document is printed
    code, out, _ = _run(capsys, "export-settings", "x", "--seconds", "2")
    assert code == 0 and json.loads(out)["prompt"] == "x"


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_every_command_prints_one_json_document(flavour, request, capsys) -> None:
    emulator = request.getfixturevalue(f"emulator_{flavour}")
    server = ["--server", emulator.url]

    code, doc = _json(capsys, "status", *server)
    assert code == 0 and doc["reachable"] and doc["wangp_version"] == emulator.version
    assert doc["state"] == "up"  # WanGP can't say it is idle: another session may be generating

    code, doc = _json(capsys, "models", "--category", "image_to_video", *server)
    assert code == 0 and doc["count"] == len(doc["models"]) > 0
    assert all("image_to_video" in m["categories"] for m in doc["models"])

    code, doc = _json(capsys, "endpoints", "--grep", "process_tasks", *server)
    assert code == 0 and "/process_tasks" in doc["endpoints"] and doc["count"] == len(doc["endpoints"])

    code, doc = _json(capsys, "queue", *server)
    assert code == 0 and doc["jobs"] == [] and doc["server_waiting"] == 0

    for command, key in (("abort", "aborted"), ("clear", "cleared")):
        code, doc = _json(capsys, command, *server)
        assert code == 0 and doc[key] == 0 and "private queue" in doc["note"]

    code, doc = _json(capsys, "discover", "--no-scan", emulator.url)
    assert code == 0 and doc["selected"] == emulator.url and doc["services"][0]["kind"] == "wangp"

    # a period long enough to read a real-size /config (2.6 MB; each check gets 0.8 of the period)
    code, doc = _json(capsys, "status", "--watch", "--period", "1", "--count", "2", *server)
    assert code == 0 and doc["checks"] == 2 and [e["event"] for e in doc["events"]] == ["up"]


def test_text_output_of_commands(emulator_v12, capsys) -> None:
    code, out, _ = _run(capsys, "status", "--server", emulator_v12.url)
    assert code == 0 and f"WanGP {emulator_v12.version}" in out and out.startswith("up")
    code, out, _ = _run(capsys, "endpoints", "--grep", "abort", "--server", emulator_v12.url)
    assert code == 0 and "/abort_generation(" in out
    code, out, _ = _run(capsys, "discover", "--port", str(_port(emulator_v12.url)))
    assert code == 0 and "wangp" in out and emulator_v12.version in out


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_status_names_the_model_the_server_starts_with(flavour, make_emulator, tmp_path, capsys) -> None:
    """WanGP 8.11 and later start on the model they last used (wgp_config.json); 6.31 always on its own. After a
    shot on another model and a restart, `status` names the model the server starts with, without a client."""
    state = tmp_path / "wgp-state"
    first = make_emulator(flavour, state_dir=state)
    code, doc = _json(capsys, "status", "--server", first.url)
    started_on = doc["current_model"]
    assert code == 0 and started_on
    other = "t2v_1.3B" if started_on != "t2v_1.3B" else "t2v"
    code, _out, err = _run(capsys, "generate", "a lighthouse", "--model", other, "--frames", "5", "--steps", "1",
                           "--server", first.url, "-o", str(tmp_path / "shot.mp4"))
    assert code == 0, err
    first.stop()
    again = make_emulator(flavour, state_dir=state)
    code, doc = _json(capsys, "status", "--server", again.url)
    expected = started_on if flavour == "v6" else other
    assert code == 0 and doc["current_model"] == expected
    code, out, _ = _run(capsys, "status", "--server", again.url)
    assert f"model {expected} (at its start)" in out


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def test_exit_codes(emulator_v12, tmp_path, capsys, monkeypatch) -> None:
    closed = f"http://127.0.0.1:{_free_port()}"
    # 2: usage and validation; nothing is sent
    assert main([]) == 2
    assert main(["generate", "x", "--frames", "9", "--seconds", "1"]) == 2  # mutually exclusive
    code, doc = _json(capsys, "generate", "x", "--resolution", "wide", "--server", closed)
    assert code == 2 and doc["error"]["type"] == "Wan2GPValidationError" and doc["error"]["exit_code"] == 2
    code, doc = _json(capsys, "generate", "x", "--image-start", str(tmp_path / "missing.png"), "--server", closed)
    assert code == 2 and "not found" in doc["error"]["message"]
    code, doc = _json(capsys, "generate", "--settings", str(tmp_path / "none.json"))
    assert code == 2 and doc["error"]["field"] == "settings"
    code, doc = _json(capsys, "bogus")
    assert code == 2 and doc["error"]["type"] == "UsageError"
    # 3: nothing listens
    code, doc = _json(capsys, "status", "--server", closed)
    assert code == 3 and doc["reachable"] is False
    code, out, err = _run(capsys, "models", "--server", closed)
    assert code == 3 and out == "" and "error: cannot reach" in err and "Traceback" not in err
    # 5: the job failed on the server; the client's message, no traceback
    code, out, err = _run(capsys, "generate", "[[fail]] x", "--frames", "5", "--steps", "1",
                          "--server", emulator_v12.url, "-o", str(tmp_path))
    assert code == 5 and "error:" in err and "Traceback" not in err
    # --help is not an error
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_unsupported_server_exit_code(capsys) -> None:
    import gradio as gr

    with gr.Blocks(title="Echo app", analytics_enabled=False) as app:
        box = gr.Textbox()
        box.submit(lambda s: s, box, box, api_name="echo")
    app.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        code, doc = _json(capsys, "models", "--server", app.local_url)
        assert code == 4 and doc["error"]["type"] == "UnsupportedServerError"
        code, doc = _json(capsys, "status", "--server", app.local_url)
        assert code == 4 and doc["reachable"] and doc["kind"] == "gradio"
    finally:
        app.close()


def test_server_default_is_env_then_discovery_then_7860(emulator_v12, emulator_v6, monkeypatch, capsys) -> None:
    ns = argparse.Namespace(server=None)
    out = cli._Output()
    # nothing configured, nothing found: WanGP's default
    assert cli._resolve_server(ns, out) == "http://127.0.0.1:7860"
    # discovery finds a WanGP on a scanned port
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", (_free_port(), _port(emulator_v6.url)))
    discovery.clear_cache()
    assert cli._resolve_server(ns, out) == emulator_v6.url
    # WAN2GP_URL wins over discovery; --server over both
    monkeypatch.setenv("WAN2GP_URL", emulator_v12.url)
    assert cli._resolve_server(ns, out) == emulator_v12.url
    assert cli._resolve_server(argparse.Namespace(server="http://127.0.0.1:9"), out) == "http://127.0.0.1:9"
    code, doc = _json(capsys, "status")
    assert code == 0 and doc["wangp_version"] == emulator_v12.version
    assert "warning" not in capsys.readouterr().err


def test_plain_http_to_another_machine_warns(capsys) -> None:
    out = cli._Output()
    # resolving only: nothing is contacted
    cli._resolve_server(argparse.Namespace(server="http://192.0.2.20:7860"), out)
    err = capsys.readouterr().err
    assert "warning:" in err and "not encrypted" in err and "SSH tunnel" in err
    cli._resolve_server(argparse.Namespace(server="http://192.0.2.20:7860"), out)
    assert capsys.readouterr().err == ""  # once per process, however many commands resolve it
    cli._resolve_server(argparse.Namespace(server="https://192.0.2.20"), out)
    cli._resolve_server(argparse.Namespace(server="http://localhost:7860"), out)
    assert capsys.readouterr().err == ""


def test_exit_code_mapping() -> None:
    from blender_movie_director.backend.wan2gp import (
        JobCancelledError,
        JobFailedError,
        UnsupportedServerError,
        Wan2GPConnectionError,
        Wan2GPError,
        Wan2GPServerError,
        Wan2GPTimeoutError,
        Wan2GPValidationError,
    )

    assert [cli.exit_code_for(e) for e in (
        Wan2GPValidationError("x"), Wan2GPConnectionError("x"), Wan2GPTimeoutError("x"),
        UnsupportedServerError("x"), Wan2GPServerError("x"), JobFailedError("x"), JobCancelledError("x"),
        KeyboardInterrupt(), Wan2GPError("x"), RuntimeError("x"))] == [2, 3, 3, 4, 5, 5, 130, 130, 1, 1]


def test_demo_through_main(tmp_path, capsys) -> None:
    code, doc = _json(capsys, "demo", "-o", str(tmp_path / "outputs"), "--steps", "3", "--step-seconds", "0.02")
    assert code == 0, doc
    video = Path(doc["video_path"])
    assert video.parent == tmp_path / "outputs" and video.exists()
    assert _frames(video) == (33, 832, 480)  # 2 s at 16 fps: 4n+1 frames
    assert doc["demo"]["emulator_flavour"] == "v12"


def test_demo_without_the_emulator_extra(monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wan2gp_emulator", None)  # as if `pip install -e .` without [emulator]
    code, out, err = _run(capsys, "demo")
    assert code == 1 and out == ""
    assert 'pip install -e ".[emulator]"' in err and "Traceback" not in err


def test_global_options_before_the_command_and_watch_text(emulator_v6, capsys) -> None:
    code, out, _ = _run(capsys, "--json", "--server", emulator_v6.url, "status")
    assert code == 0 and json.loads(out)["wangp_version"] == emulator_v6.version
    code, out, err = _run(capsys, "status", "--watch", "--count", "1", "--period", "0.2", "--server", emulator_v6.url)
    assert code == 0 and out.split()[1] == "up" and emulator_v6.version in out
    assert "watching" in err


def test_batch_runs_every_shot_and_resume_does_nothing_twice(emulator_v12, tmp_path, capsys) -> None:
    shots = tmp_path / "shots.json"
    shots.write_text(json.dumps([{"prompt": f"batch shot {i}", "frames": 5, "steps": 1, "seed": i} for i in range(3)]))
    out = tmp_path / "out"
    cache = ["--cache-dir", str(tmp_path / "cache")]  # not the user-wide result cache
    code, doc = _json(capsys, "batch", str(shots), "--servers", emulator_v12.url, "-o", str(out), *cache)
    assert code == 0, doc
    assert len(list(out.glob("*.mp4"))) == 3
    queued = [e for e in emulator_v12.events() if e["event"] == "queued" and "batch shot" in e["detail"]]
    assert len(queued) == 3
    code, doc = _json(capsys, "batch", str(shots), "--resume", "--servers", emulator_v12.url, "-o", str(out), *cache)
    assert code == 0, doc
    again = [e for e in emulator_v12.events() if e["event"] == "queued" and "batch shot" in e["detail"]]
    assert len(again) == 3 and len(list(out.glob("*.mp4"))) == 3


@pytest.mark.parametrize(("argv", "flag"), [
    (["--frames", "18"], "--frames"),
    (["--steps", "0"], "--steps"),
    (["--model", "t2v_1.3bb"], "movie-director models"),
    (["--model", "i2v", "--frames", "9"], "--image-start"),
    (["--image-start", "/nonexistent/start.png", "--model", "i2v", "--frames", "9"], "--image-start"),
    (["--image-end", "/nonexistent/end.png", "--frames", "9"], "--image-"),
])
def test_errors_name_the_commands_own_flags(emulator_v12, capsys, argv, flag) -> None:
    code, out, err = _run(capsys, "generate", "a bad shot", *argv, "--server", emulator_v12.url)
    assert code == 2, (code, out, err)
    err = "\n".join(line for line in err.splitlines() if line.startswith(("error:", "  hint:")))  # ours only
    assert flag in err, err
    library_names = re.findall(r"\b(num_inference_steps|video_length|image_start|image_end|negative_prompt|"
                               r"model_type|list_models|resume_job)\b", err)
    assert not library_names, err
