"""Wan2GPClient over WanGP's MCP server: the same public API as over the web UI, on each MCP contract.

Run against the MCP emulator (``wan2gp_emulator/_mcp.py``): 12.60's API v1, 13.x's API v1 and 13.x's API v2 (the
``mcp_emulator`` fixture runs each test on the three). The low-level connection has its own tests
(test_mcp_connection.py); these check the client, its jobs, their records and the output folder.
"""

from __future__ import annotations

import threading
import time

import pytest

from blender_movie_director.backend.wan2gp import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    JobStatus,
    Timeouts,
    Wan2GPClient,
    Wan2GPValidationError,
)
from blender_movie_director.backend.wan2gp._mp4 import probe

pytestmark = pytest.mark.timeout(120)

FAST = Timeouts(connect=5, call=20, job=90, reconnect=10)


def _client(server, out_dir, **options) -> Wan2GPClient:
    return Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST, **options)


def _running(job, step: int = 1, timeout: float = 30) -> None:
    seen = threading.Event()
    job.add_progress_callback(lambda j, p: (p.step or 0) >= step and seen.set())
    if (job.progress.step or 0) < step:
        assert seen.wait(timeout), f"job never reached step {step}: {job.progress}"


def test_a_shot_is_generated_with_progress_into_the_output_folder(mcp_emulator, out_dir):
    with _client(mcp_emulator, out_dir) as client:
        assert client.transport == "mcp"
        steps: list[int] = []
        job = client.submit(prompt="a red fox in snow [[slow]]", model="t2v_1.3B", frames=17, steps=6, seed=7)
        job.add_progress_callback(lambda j, p: p.step and steps.append(p.step))
        result = job.result(timeout=90)
        assert client.get_server_status().transport.startswith("mcp")
    info = probe(result.video_path)
    assert (info.frames, info.width, info.height) == (17, 832, 480)
    assert (result.frames, result.settings.seed, result.settings.resolution) == (17, 7, "832x480")
    assert steps and steps == sorted(steps) and max(steps) >= 3  # polled: not every step, but in order
    assert [p.name for p in out_dir.iterdir()] == [result.video_path.name]  # nothing half-written beside it
    assert job.status() is JobStatus.COMPLETED


def test_an_image_to_video_shot_uploads_its_start_image(make_mcp_emulator, out_dir, tmp_path):
    from PIL import Image

    server = make_mcp_emulator("v13", mcp_api_version=2, mcp_async=True)
    start = tmp_path / "first_frame.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(start)
    with _client(server, out_dir) as client:
        result = client.generate(prompt="the fox turns its head", model="i2v", image_start=start,
                                 frames=17, steps=2, timeout=90)
    assert probe(result.video_path).frames == 17
    assert str(tmp_path) not in str(server.events()) + str(server.jobs())  # a media id went, never our path


def test_bad_settings_are_refused_before_anything_is_sent(mcp_emulator, out_dir):
    with _client(mcp_emulator, out_dir) as client:
        with pytest.raises(Wan2GPValidationError, match="frames does not fit"):
            client.submit(prompt="wrong length", model="t2v_1.3B", frames=18)
        with pytest.raises(Wan2GPValidationError, match="no model"):
            client.submit(prompt="no such model", model="t2v_99B")
    assert not mcp_emulator.jobs()


def test_cancel_stops_the_job_on_the_server(mcp_emulator, out_dir):
    with _client(mcp_emulator, out_dir) as client:
        job = client.submit(prompt="cancelled [[slow]]", model="t2v_1.3B", frames=17, steps=40)
        _running(job)
        job.cancel()
        with pytest.raises(JobCancelledError):
            job.result(timeout=30)
    jobs = mcp_emulator.jobs()
    assert len(jobs) == 1 and jobs[0]["done"] and jobs[0]["cancel_requested"]
    assert not list(out_dir.iterdir())


def test_a_failed_generation_carries_wangps_stage_and_message(mcp_emulator, out_dir):
    with _client(mcp_emulator, out_dir) as client:
        job = client.submit(prompt="this one fails [[fail]]", model="t2v_1.3B", frames=17, steps=2)
        with pytest.raises(JobFailedError) as caught:
            job.result(timeout=60)
    assert "[[fail]] marker" in caught.value.message and getattr(caught.value, "stage", None) == "generation"
    assert job.status() is JobStatus.FAILED


def test_shots_of_one_client_wait_their_turn_on_our_side(make_mcp_emulator, out_dir):
    server = make_mcp_emulator("v13", mcp_api_version=2, mcp_async=True)  # the server refuses a second job
    with _client(server, out_dir) as client:
        jobs = [client.submit(prompt=f"shot {i}", model="t2v_1.3B", frames=17, steps=3) for i in range(3)]
        results = [job.result(timeout=90) for job in jobs]
    assert len({r.video_path for r in results}) == 3
    assert len(server.jobs()) == 3  # each sent once, one after the other


def test_a_job_is_collected_after_our_program_restarts(mcp_emulator, out_dir):
    """Into the folder it was started with (its record keeps it), not the later program's."""
    with _client(mcp_emulator, out_dir) as client:
        job = client.submit(prompt="overnight [[slow]]", model="t2v_1.3B", frames=17, steps=6,
                            output_dir=out_dir / "overnight")
        _running(job)
        assert job.detach()
        record = job.to_record()
    assert record["transport"] == "mcp" and record["remote_job_id"]
    with _client(mcp_emulator, out_dir / "later") as later:  # another program, the same record
        result = later.resume_job(record).result(timeout=90)
    assert probe(result.video_path).frames == 17 and result.video_path.parent == out_dir / "overnight"
    assert len(mcp_emulator.jobs()) == 1  # collected, never submitted again


def test_a_job_of_a_server_that_restarted_is_lost_with_the_reason(make_mcp_emulator, out_dir):
    server = make_mcp_emulator("v13", mcp_api_version=2, mcp_async=True)
    with _client(server, out_dir) as client:
        job = client.submit(prompt="gone with the server [[slow]]", model="t2v_1.3B", frames=17, steps=40)
        _running(job)
        job.detach()
        record = job.to_record()
    server.stop()
    server.start()  # WanGP keeps jobs in memory: the new process does not know it
    record["server"] = server.url
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST) as later:
        with pytest.raises(JobLostError, match="no longer has"):
            later.resume_job(record).result(timeout=60)


def test_what_mcp_cannot_do_says_so(mcp_emulator, out_dir):
    with _client(mcp_emulator, out_dir) as client:
        with pytest.raises(Wan2GPValidationError, match="no Gradio endpoints"):
            client.call("/refresh_gallery")
        started = time.monotonic()
        assert client.get_queue_status() == []  # this client's own jobs: none
        assert time.monotonic() - started < 1


def test_a_duration_in_seconds_and_a_random_seed_are_sent_as_frames_and_a_seed_kept(make_mcp_emulator, out_dir):
    server = make_mcp_emulator("v12")
    with _client(server, out_dir) as client:
        result = client.generate(prompt="one second", model="t2v_1.3B", seconds=1, steps=2, timeout=60)
    assert probe(result.video_path).frames == 17  # 16 fps: 16 frames and the first one, as the model's rule says
    assert result.settings.video_length == 17 and result.settings.seconds is None
    assert result.settings.seed >= 0  # the seed WanGP used: the shot can be made again
    sent = server.jobs()[0]
    assert str(result.settings.seed) in str(sent)


@pytest.mark.parametrize("args", [("--flavour", "v12"), ("--flavour", "v13", "--mcp-api-version", "2", "--mcp-async"),
                                  ("--flavour", "v13", "--mcp-api-version", "2")],
                         ids=["v12-api1", "v13-api2-async", "v13-api2-blocking"])
def test_a_server_crash_fails_the_job_at_once_and_leaves_nothing_half_written(args, out_dir, tmp_path):
    """API v2 without --mcp-async blocks the submission until the job runs a while: a crash then cuts the request
    before the job id came back, and the client can only say that it lost the server."""
    from blender_movie_director.backend.wan2gp import ServerRestartedError, Wan2GPConnectionError
    from wan2gp_emulator.process import EmulatorProcess

    server = EmulatorProcess("--mcp", *args, "--port", "0", "--step-seconds", "0.05", "--crash-after-steps", "3",
                             output_dir=tmp_path / "server")
    try:
        with _client(server, out_dir) as client:
            job = client.submit(prompt="the server dies under me", model="t2v_1.3B", frames=17, steps=20)
            server.process.wait(30)  # os._exit(70) after 3 steps
            crashed = time.monotonic()
            blocking = "--mcp-async" not in args and "v13" in args
            expected = ((Wan2GPConnectionError, "stopped during the submission") if blocking
                        else (ServerRestartedError, "stopped"))
            with pytest.raises(expected[0], match=expected[1]) as caught:
                job.result(timeout=30)
            assert time.monotonic() - crashed < 5, "the crash was not noticed within seconds"
            assert caught.value.job_id in (job.id, None) and job.status() is JobStatus.FAILED
            assert blocking or caught.value.job_id == job.id  # our job's id, not the server's
    finally:
        server.stop()
    assert not list(out_dir.iterdir())  # no partial file, no temporary file
