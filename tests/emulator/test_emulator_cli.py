"""``python -m wan2gp_emulator`` in a subprocess: serves, stops on SIGTERM, and crashes on demand."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from wangp_route import Route


def spawn(out_dir: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "wan2gp_emulator", "--port", "0", "--output-dir", str(out_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def ready(proc: subprocess.Popen) -> str:
    """The URL the emulator prints when it serves."""
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return line.strip().split("=", 1)[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the emulator did not print its URL")


def port_is_free(url: str) -> bool:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory):
    """Both subprocesses start together: their imports overlap, the module takes one start-up, not two."""
    base = tmp_path_factory.mktemp("cli")
    procs = {
        "plain": (spawn(base / "plain", "--flavour", "v6", "--step-seconds", "0"), base / "plain"),
        "crash": (spawn(base / "crash", "--flavour", "v12", "--step-seconds", "0.05", "--crash-after-steps", "2"),
                  base / "crash"),
    }
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_serves_until_sigterm(processes) -> None:
    proc, _ = processes["plain"]
    url = ready(proc)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        config = httpx.get(url + "config", timeout=10).json()
        assert config["title"] == "WanGP" and "v6.31" in config["components"][0]["props"]["value"]
        assert httpx.get(url + "wangp_api/download/unknown", timeout=10).status_code == 404
        assert httpx.get(url + "emulator/events", timeout=10).status_code == 404  # only with --inspect
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert port_is_free(url)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_crash_after_steps_kills_the_process_mid_generation(processes) -> None:
    proc, out_dir = processes["crash"]
    url = ready(proc)
    try:
        route = Route(Client(url, verbose=False))
        route.select_model("t2v_1.3B")
        route.add("t2v_1.3B", prompt="This run will not finish", video_length=5, num_inference_steps=6)
        route.client.predict(api_name="/activate_status")
        job = route.client.submit(api_name="/process_tasks")
        with pytest.raises(Exception):  # noqa: B017 - CancelledError or a connection error, by client version
            job.result(timeout=20)
        assert proc.wait(timeout=15) == 70
        assert not list(out_dir.glob("*.mp4"))  # died before writing the video
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_command_line_takes_every_release_and_the_timing_and_state_flags() -> None:
    from wan2gp_emulator.__main__ import build_parser

    for flavour in ("v6", "v8", "v9", "v11", "v12"):
        args = build_parser().parse_args(["--flavour", flavour, "--load-seconds", "2.5", "--state-dir", "/tmp/s"])
        assert (args.flavour, args.load_seconds, args.state_dir) == (flavour, 2.5, "/tmp/s")
    defaults = build_parser().parse_args([])
    assert (defaults.flavour, defaults.load_seconds, defaults.state_dir) == ("v12", 0.0, None)


def test_in_process_server_starts_stops_twice_and_frees_its_port() -> None:
    from wan2gp_emulator import EmulatorServer

    with EmulatorServer("v6", step_seconds=0) as server:
        url, output_dir = server.url, server.output_dir
        assert url == f"http://127.0.0.1:{server.port}/" and server.version == "6.31"
        assert httpx.get(url + "config", timeout=10).json()["title"] == "WanGP"
        assert output_dir is not None and output_dir.is_dir()
    assert server.url is None and port_is_free(url)
    assert not output_dir.exists()  # the temporary output directory it made is removed
    server.stop()  # idempotent
    assert server.sessions() == {} and server.events() == []


def test_a_taken_port_is_said_plainly_with_what_to_do(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "wan2gp_emulator", "--port", str(port), "--output-dir",
                               str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {port}" in done.stderr and "--port 0" in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout


def test_inspect_serves_the_events_sessions_and_mcp_jobs_a_test_reads_from_another_process() -> None:
    from wan2gp_emulator import EmulatorServer

    with EmulatorServer("v6", step_seconds=0, inspect=True) as server:
        Client(server.url, verbose=False).predict(api_name="/refresh_status_async")  # makes a session
        assert httpx.get(server.url + "emulator/info", timeout=10).json() == {"flavour": "v6", "version": "6.31"}
        assert httpx.get(server.url + "emulator/events", timeout=10).json() == server.events()
        assert httpx.get(server.url + "emulator/sessions", timeout=10).json() == server.sessions() != {}
    with EmulatorServer("v13", mcp=True, inspect=True, step_seconds=0) as server:
        info = httpx.get(server.base_url + "emulator/info", timeout=10).json()
        assert info == {"flavour": "v13", "version": "13.01", "api_version": 2}
        assert httpx.get(server.base_url + "emulator/jobs", timeout=10).json() == server.jobs() == []


def test_a_server_built_where_asyncio_run_left_no_event_loop_still_streams() -> None:
    """Gradio 5.29 in a thread without a current loop makes apps whose every event stream fails with HTTP 500."""
    import asyncio

    from wan2gp_emulator import EmulatorServer

    asyncio.run(asyncio.sleep(0))  # as the MCP SDK's tests do: this thread has no current event loop after it
    with EmulatorServer("v6", step_seconds=0) as server:
        Client(server.url, verbose=False).predict(api_name="/refresh_status_async")  # queue/join + its stream
