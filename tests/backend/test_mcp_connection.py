"""McpConnection against a live WanGP MCP server over real HTTP, with the official SDK: API v1 (12.x and 13+)
and v2 (with and without --mcp-async).

The server is the project's MCP emulator (``EmulatorServer(mcp=True)``, the ``make_mcp_emulator`` fixture's)
when this checkout has it, else ``mcp_standin.StandIn``, a small stand-in with the same introspection
(``jobs()``); ``MCP_TEST_SERVER=standin`` forces the stand-in. Crashes: the emulator runs in its own process
with ``--crash-after-steps``; the stand-in stops at once.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from backend.mcp_standin import StandIn, free_port
from blender_movie_director.backend.wan2gp._config import Retries, Timeouts
from blender_movie_director.backend.wan2gp._errors import (
    JobCancelledError,
    JobFailedError,
    ServerBusyError,
    ServerRestartedError,
    Wan2GPConnectionError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
)
from blender_movie_director.backend.wan2gp._mcp import Contract, McpConnection
from blender_movie_director.backend.wan2gp._mp4 import probe


def _emulator_class():
    if os.environ.get("MCP_TEST_SERVER") == "standin":
        return None
    try:
        from wan2gp_emulator import EmulatorServer
    except ImportError:
        return None
    return EmulatorServer if "mcp" in inspect.signature(EmulatorServer).parameters else None


EMULATOR = _emulator_class()
# (flavour, api version, --mcp-async): the three contracts, and v2 with async allowed
SERVERS = {"v1-12": ("v12", 1, False), "v1-13": ("v13", 1, False), "v2": ("v13", 2, False),
           "v2-async": ("v13", 2, True)}
FAST = Timeouts(connect=5, call=10, download=30, reconnect=2)
SHOT = {"prompt": "a red fox running through snow", "video_length": 17, "num_inference_steps": 4, "seed": 7}
FAIL = "[[fail]]"  # the emulator's fault switch: the generation fails


@pytest.fixture
def serve(tmp_path: Path):
    started: list = []

    def start(kind: str = "v2", *, step_seconds: float = 0.05, port: int | None = None, token: str | None = None):
        flavour, api, mcp_async = SERVERS[kind]
        root = tmp_path / f"wangp-{len(started)}"
        if EMULATOR is not None:
            server = EMULATOR(flavour, mcp=True, mcp_api_version=api, mcp_async=mcp_async, mcp_auth=token,
                              step_seconds=step_seconds, port=port, output_dir=root)
            server.start()
        else:
            server = StandIn(api_version=api, flavour=flavour, mcp_async=mcp_async, step_seconds=step_seconds,
                             port=port, root=root, token=token).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def crashing(tmp_path: Path):
    """A server whose process dies during the job's 4th step; yields a function giving its MCP URL."""
    processes: list[subprocess.Popen] = []

    def start(kind: str):
        flavour, api, mcp_async = SERVERS[kind]
        port = free_port()
        if EMULATOR is None:
            server = StandIn(api_version=api, flavour=flavour, mcp_async=mcp_async, step_seconds=0.2, port=port,
                             root=tmp_path / "crashing").start()
            threading.Timer(0.7, lambda: server.stop(crash=True)).start()
            return server.url
        command = [sys.executable, "-m", "wan2gp_emulator", "--mcp", "--flavour", flavour, "--mcp-api-version",
                   str(api), "--port", str(port), "--step-seconds", "0.2", "--crash-after-steps", "3",
                   "--output-dir", str(tmp_path / "crashing")]
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}/mcp"
            time.sleep(0.1)
        raise RuntimeError("the crashing emulator did not start")

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _open(server_or_url, **options) -> McpConnection:
    options.setdefault("timeouts", FAST)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("retries", Retries(attempts=2, backoff=0.05))
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    return McpConnection.open(url, **options)


def _job_ids(server) -> list[str]:
    return [job["job_id"] for job in server.jobs()]


def _job_done(server, job_id: str) -> bool:
    return next(job["done"] for job in server.jobs() if job["job_id"] == job_id)


@pytest.mark.parametrize("kind", SERVERS)
def test_generate_with_progress_and_download_a_checked_video(serve, kind, tmp_path):
    server = serve(kind, step_seconds=0.15)
    with _open(server) as mcp:
        assert mcp.contract is {"v1-12": Contract.V1_12, "v1-13": Contract.V1_13}.get(kind, Contract.V2)
        assert mcp.url.endswith("/mcp/")  # POST /mcp answered 307: the connection moved to /mcp/
        seen: list[tuple[int | None, str]] = []
        job_id = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 10})
        final = mcp.wait(job_id, 30, on_progress=lambda s: seen.append((s.progress.step if s.progress else None,
                                                                          s.state)))
        steps = [step for step, _ in seen if step is not None]
        assert len(set(steps)) >= 3 and steps == sorted(steps) and seen[-1][1] == "completed"
        [output] = mcp.outputs(final)
        video = mcp.download(output, tmp_path / "shots" / "fox.mp4", check=lambda p: probe(p))
        info = probe(video)
        assert (info.frames, info.width, info.height) == (17, 832, 480)
        assert list((tmp_path / "shots").iterdir()) == [video]  # nothing partial left beside it
    if isinstance(server, StandIn):
        redirected = [i for i, entry in enumerate(server.http_log) if entry[2] == 307]
        assert redirected == [0, 2]  # initialize and its notification; every later request went to /mcp/


@pytest.mark.parametrize("kind", ["v1-12", "v2"])
def test_i2v_with_an_uploaded_start_image(serve, kind, tmp_path):
    server = serve(kind)
    image = tmp_path / "start frame.png"
    with av.open(str(image), "w") as container:  # a real PNG
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
            container.mux(packet)
    with _open(server) as mcp:
        media_id = mcp.upload(image)
        assert media_id.startswith("visual:")
        settings = {**SHOT, "image_start": media_id, "image_prompt_type": "S"}
        with pytest.raises(Wan2GPValidationError, match="takes no start image") as info:
            mcp.submit("t2v_1.3B", settings)  # checked against the model's media roles, before sending
        assert info.value.field == "image_start"
        assert _job_ids(server) == []
        final = mcp.wait(mcp.submit("i2v", settings), 30)
        assert final.state == "completed" and len(mcp.outputs(final)) == 1


def test_settings_are_checked_against_the_servers_schema_before_anything_is_sent(serve, tmp_path):
    server = serve("v2")
    with _open(server) as mcp:
        cases = [
            ({"video_length": 18}, "video_length", "17 or 21"),
            ({"resolution": "huge"}, "resolution", "832x480"),
            ({"seed": -5}, "seed", "-1"),
            ({"num_inference_steps": 0}, "num_inference_steps", "1 to 1000"),
            ({"guidance_scale": "high"}, "guidance_scale", "number"),
            ({"image_start": str(tmp_path / "x.png"), "image_prompt_type": "S"}, "image_start", "upload"),
            ({"sample_solver": 3}, "sample_solver", "text"),
            ({"image_refs": [tmp_path]}, "image_refs", "not a JSON value"),
            ({"guidance_scale": float("nan")}, "guidance_scale", "not a JSON value"),
        ]
        for change, field, words in cases:
            with pytest.raises(Wan2GPValidationError, match=words) as info:
                mcp.submit("t2v_1.3B", {**SHOT, **change})
            assert info.value.field == field
        with pytest.raises(Wan2GPValidationError, match="did you mean") as info:
            mcp.submit("t2v_1.3b", SHOT)
        assert info.value.field == "model_type"
        with pytest.raises(Wan2GPValidationError, match="image_prompt_type"):
            mcp.validate("i2v", {**SHOT, "image_start": "visual:0123456789ab", "image_prompt_type": ""})
        ltx = mcp.validate("ltxv_13B", {**SHOT, "video_length": 17})  # LTX: 8n+1
        assert ltx.frames_step == 8
    assert _job_ids(server) == []


@pytest.mark.parametrize("kind", ["v1-12", "v2"])
def test_cancel_stops_the_job_on_the_server(serve, kind):
    server = serve(kind, step_seconds=0.2)
    with _open(server) as mcp:
        job_id = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 40})
        while (mcp.snapshot(job_id).progress or None) is None:
            time.sleep(0.05)
        asked = mcp.cancel(job_id)
        assert asked.cancel_requested
        started = time.monotonic()
        with pytest.raises(JobCancelledError):
            mcp.wait(job_id, 10)
        assert time.monotonic() - started < 2  # stopped within the current step, not after 40
        assert _job_done(server, job_id)
        assert mcp.snapshot(job_id).state == "cancelled"


@pytest.mark.parametrize("kind", ["v1-13", "v2"])
def test_a_failed_job_raises_with_wangps_stage_and_message(serve, kind):
    server = serve(kind)
    with _open(server) as mcp:
        job_id = mcp.submit("t2v_1.3B", {**SHOT, "prompt": f"a fox {FAIL}"})
        with pytest.raises(JobFailedError, match="at its generation stage: .+") as info:
            mcp.wait(job_id, 30)
        assert info.value.stage == "generation" and info.value.job_id == job_id and info.value.server_message


@pytest.mark.parametrize("kind", ["v1-12", "v2"])
def test_refused_calls_become_the_errors_they_mean(serve, kind):
    server = serve(kind, step_seconds=0.2)
    with _open(server) as mcp, _open(server) as other:
        with pytest.raises(ServerRestartedError, match="does not know job") as info:
            mcp.snapshot("0" * 32)
        assert info.value.job_id == "0" * 32
        job_id = other.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 20})  # another client's job
        source = mcp.prepare("t2v_1.3B", SHOT)
        raw = {"source": source, "wait": False} if kind != "v2" else \
            {"action": "generate", "arguments": {"source": source, "wait": True, "timeout_s": 0}}
        with pytest.raises(ServerBusyError, match="nothing was submitted"):
            mcp.call("wangp_generate", raw, idempotent=False)
        # through submit, a busy server is waited for (here: less than the job) and nothing else is sent
        with pytest.raises(Wan2GPTimeoutError, match="not sent"):
            mcp.submit("t2v_1.3B", SHOT, queue_timeout=0.5)
        other.cancel(job_id)


@pytest.mark.parametrize("kind", ["v1-12", "v2"])
def test_a_server_crash_during_a_job_is_reported_lost_at_once(crashing, kind):
    with _open(crashing(kind)) as mcp:
        job_id = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 40})
        started = time.monotonic()
        with pytest.raises(ServerRestartedError, match="stopped while job") as info:
            mcp.wait(job_id, 30)
        assert info.value.job_id == job_id and time.monotonic() - started < 5


def test_a_restarted_server_reports_the_old_job_lost(serve):
    server = serve("v2", step_seconds=0.2)
    with _open(server) as mcp:
        job_id = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 40})
        port = server.port
        server.stop()
        serve("v2", port=port)  # WanGP again, on the same port, with an empty job store
        with pytest.raises(ServerRestartedError, match="restarted since") as info:
            mcp.wait(job_id, 10)
        assert info.value.job_id == job_id
        final = mcp.wait(mcp.submit("t2v_1.3B", SHOT), 30)  # the connection carries on with the new server
        assert final.state == "completed"


@pytest.mark.parametrize("kind", ["v1-13", "v2-async"])
def test_a_job_is_collected_by_its_id_after_our_restart(serve, kind, tmp_path):
    server = serve(kind, step_seconds=0.1)
    first = _open(server)
    job_id = first.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 10})
    first.close()  # our program stops; the job goes on on the server
    with _open(server) as again:
        assert again.snapshot(job_id).state == "running"
        ids: list[str] = []
        waiting = threading.Thread(target=lambda: ids.append(again.submit("t2v_1.3B", SHOT)))
        waiting.start()
        final = again.wait(job_id, 30)
        assert final.state == "completed"
        assert again.download(again.outputs(final)[0], tmp_path / "collected.mp4").stat().st_size > 0
        waiting.join(30)
        # the collected job held the server: the new one was sent once it was done (WanGP refuses a second)
        after = again.wait(ids[0], 30)
        assert after.raw["created_at"] >= final.raw["updated_at"] - 0.05
    assert _job_ids(server) == [job_id, ids[0]]


@pytest.mark.parametrize("kind", ["v1-12", "v2"])
def test_a_second_submit_waits_on_our_side_while_one_runs(serve, kind):
    server = serve(kind, step_seconds=0.1)
    with _open(server) as mcp:
        ids: list[str] = []
        threads = [threading.Thread(target=lambda: ids.append(mcp.submit("t2v_1.3B", SHOT))) for _ in range(2)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(30)
        assert len(ids) == 2
        first, second = (mcp.wait(job_id, 30) for job_id in ids)
        assert first.state == second.state == "completed"
        assert second.raw["created_at"] >= first.raw["updated_at"] - 0.05  # sent once the first was done
    assert _job_ids(server) == ids
    if isinstance(server, StandIn):
        assert server.refused == 0  # the server never had to refuse one


def test_a_queued_submit_can_be_given_up_before_anything_is_sent(serve):
    server = serve("v2", step_seconds=0.2)
    with _open(server) as mcp:
        running = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 20})
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        with pytest.raises(JobCancelledError, match="nothing reached the server"):
            mcp.submit("t2v_1.3B", SHOT, stop=stop)
        assert _job_ids(server) == [running]
        mcp.cancel(running)


@pytest.mark.parametrize("kind", ["v1-12", "v2"])
def test_a_wait_longer_than_the_request_deadline(serve, kind):
    # request_deadline 6 s: the server may hold a call 1 s at most; the job takes over 3 s
    server = serve(kind, step_seconds=0.25)
    with _open(server, request_deadline=6) as mcp:
        started = time.monotonic()
        job_id = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 12}, block=30)
        # the id came back before the job was done: v2 without --mcp-async waited on the server, cut below the
        # deadline (1 s); v1 never waits on the server (its timed-out wait loses the job id)
        assert time.monotonic() - started < 2.5 and not _job_done(server, job_id)
        with pytest.raises(Wan2GPTimeoutError, match="still runs") as info:
            mcp.wait(job_id, 0.3)
        assert info.value.job_id == job_id
        assert mcp.wait(job_id, 30).state == "completed"
        assert time.monotonic() - started > 3


def test_v2_with_mcp_async_submits_without_waiting(serve):
    server = serve("v2-async", step_seconds=0.2)
    with _open(server) as mcp:
        assert mcp.async_allowed
        started = time.monotonic()
        job_id = mcp.submit("t2v_1.3B", SHOT)
        assert time.monotonic() - started < 0.7 and not _job_done(server, job_id)
        mcp.wait(job_id, 30)
    if isinstance(server, StandIn):
        described = [args for tool, args in server.calls if args.get("action") and args.get("arguments") is None]
        assert {a["action"] for a in described} >= {"generate", "get_job"}  # each action's schema read first


def test_a_bearer_token_is_required_and_sent_on_tickets_too(serve, tmp_path):
    server = serve("v2", token="s3cret-token")
    with pytest.raises(Wan2GPConnectionError, match="refused access") as info:
        _open(server)
    assert "s3cret" not in str(info.value)
    with _open(server, token="s3cret-token") as mcp:
        final = mcp.wait(mcp.submit("t2v_1.3B", SHOT), 30)
        assert mcp.download(mcp.outputs(final)[0], tmp_path / "a.mp4").stat().st_size > 0


def test_a_server_off_this_machine_without_a_token_is_warned_about():
    mcp = McpConnection("http://192.0.2.10:7866/mcp")  # nothing is sent on construction
    try:
        assert any("not this machine" in w for w in mcp.security_warnings)
        assert any("anyone who reaches it" in w for w in mcp.security_warnings)
    finally:
        mcp.close()
    with pytest.raises(Wan2GPValidationError, match="http://") as info:
        McpConnection("ftp://127.0.0.1/mcp")
    assert info.value.field == "url"
    local = McpConnection("http://127.0.0.1:7866/mcp")
    assert local.security_warnings == []
    local.close()


def test_nothing_listening_is_a_clear_connection_error():
    with pytest.raises(Wan2GPConnectionError, match="cannot reach"):
        McpConnection.open(f"http://127.0.0.1:{free_port()}/mcp", timeouts=FAST)


def test_closing_the_connection_ends_the_submits_waiting_their_turn(serve):
    server = serve("v2", step_seconds=0.2)
    mcp = _open(server)
    running = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 20})
    errors: list[Exception] = []

    def queued() -> None:
        try:
            mcp.submit("t2v_1.3B", SHOT)
        except Exception as exc:  # noqa: BLE001 - looked at below
            errors.append(exc)

    waiting = threading.Thread(target=queued)
    waiting.start()
    time.sleep(0.3)
    started = time.monotonic()
    mcp.close()
    waiting.join(5)
    assert not waiting.is_alive() and time.monotonic() - started < 3
    assert isinstance(errors[0], Wan2GPConnectionError) and "before the job was sent" in str(errors[0])
    assert _job_ids(server) == [running]  # the running job goes on; a new connection can still collect it
    with _open(server) as again:
        again.cancel(running)


def test_every_page_of_the_catalog_and_the_same_roles_from_maps_and_lists(serve):
    catalogs, roles = {}, {}
    for kind in ("v1-12", "v1-13", "v2"):  # pages of 10 by offset; of a few by offset; by cursor (next_call)
        with _open(serve(kind)) as mcp:
            models = [m.model_type for m in mcp.models()]
            assert len(models) == len(set(models))
            catalogs[kind] = set(models)
            roles[kind] = mcp.model_schema("i2v").record.media_inputs  # 12.60: boolean maps; v2: name lists
    assert catalogs["v1-12"] == catalogs["v1-13"] == catalogs["v2"] and len(catalogs["v2"]) >= 5
    assert roles["v1-12"] == roles["v1-13"] == roles["v2"] and "start" in roles["v2"]["image"]


def test_an_answer_cut_off_mid_way_fails_the_call_at_once_and_the_job_is_still_collected(serve):
    """The SDK hands an answer it cannot read to no request: without care, the poll waits its whole deadline."""
    from reliability.hostile import HostileGateway

    server = serve("v1-12", step_seconds=0.1)
    cut = threading.Event()
    cuts: list[float] = []

    def cut_next_call(path: str, body: bytes | None) -> bool:
        if cut.is_set() and b'"tools/call"' in (body or b""):
            cut.clear()
            cuts.append(time.monotonic())
            return True
        return False

    with HostileGateway(server.url.rsplit("/mcp", 1)[0]) as gateway:
        gateway.cut_answer = cut_next_call
        with _open(gateway.url.rstrip("/") + "/mcp") as mcp:
            job_id = mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 10})
            cut.set()  # the next poll's answer breaks off half-way
            final = mcp.wait(job_id, 30)
            done = time.monotonic()
    assert cuts, "no answer was cut"
    assert final.state == "completed" and final.job_id == job_id  # the server lives: the job is collected
    # the cut poll failed at once and was tried again, well before one call's deadline (10 s) had passed
    assert done - cuts[0] < FAST.call / 2
