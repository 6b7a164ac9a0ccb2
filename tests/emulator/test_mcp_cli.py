"""``python -m wan2gp_emulator --mcp``: flags, the URL it prints, and a crash mid-job (a server process that dies)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from wan2gp_emulator.__main__ import main


def spawn(out_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "wan2gp_emulator", "--port", "0", "--output-dir", str(out_dir),
                             "--step-seconds", "0.05", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return proc, line.strip().split("=", 1)[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the emulator did not print its URL")


@pytest.mark.parametrize("argv, message", [
    (["--flavour", "v13"], "--flavour v13 is emulated only as an MCP server"),
    (["--mcp-async"], "need --mcp"),
    (["--mcp", "--flavour", "v11"], "--mcp serves flavours v12"),
    (["--mcp", "--mcp-api-version", "2"], "12.60 serves only MCP API v1"),
])
def test_bad_flag_combinations_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_crash_mid_job_kills_the_server_and_the_client_sees_it(tmp_path: Path) -> None:
    proc, url = spawn(tmp_path, "--mcp", "--flavour", "v13", "--mcp-api-version", "1", "--crash-after-steps", "3")
    try:
        assert url.endswith("/mcp")

        async def scenario() -> tuple[dict, type[BaseException] | None]:
            async with streamablehttp_client(url) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    job = (await session.call_tool("wangp_generate", {"source": {
                        "model_type": "t2v_1.3B", "prompt": "crash", "resolution": "832x480", "video_length": 17,
                        "num_inference_steps": 20, "seed": 1}})).structuredContent
            # The process dies during the job: the next call cannot reach it.
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            try:
                async with streamablehttp_client(url) as (read, write, _):
                    async with ClientSession(read, write) as session:
                        await asyncio.wait_for(session.initialize(), 10)
            except BaseException as exc:  # noqa: BLE001 - the SDK raises an ExceptionGroup of connect errors
                return job, type(exc)
            return job, None

        job, error = asyncio.run(scenario())
        assert job["done"] is False and len(job["job_id"]) == 32
        assert proc.wait(timeout=30) == 70  # os._exit(70): no cleanup, no answer
        assert error is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_restarted_server_has_forgotten_its_jobs(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13")
    port, server_url = server.port, server.url

    async def submit_and_ask(url: str, job_id: str | None) -> object:
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                if job_id is None:
                    return (await session.call_tool("wangp_generate", {"action": "generate", "arguments": {
                        "source": {"model_type": "t2v_1.3B", "prompt": "x", "resolution": "832x480",
                                   "video_length": 17, "num_inference_steps": 2, "seed": 1}}})).structuredContent
                return await session.call_tool("wangp_session", {"action": "get_job", "arguments": {
                    "job_id": job_id}})

    job = asyncio.run(submit_and_ask(server.url, None))
    assert job["done"] is True
    server.stop()
    restarted = make_mcp_emulator("v13", port=port)  # the same address, as WanGP restarted with its --mcp-port
    assert restarted.url == server_url
    answer = asyncio.run(submit_and_ask(restarted.url, job["job_id"]))
    assert answer.isError
    assert answer.content[0].text == f"Error executing tool wangp_session: 'Unknown WanGP job_id: {job['job_id']}'"


def test_sigterm_stops_the_mcp_server(tmp_path: Path) -> None:
    proc, url = spawn(tmp_path, "--mcp")
    try:
        redirect = httpx.post(url, json={}, trust_env=False)
        assert redirect.status_code == 307  # it serves
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
