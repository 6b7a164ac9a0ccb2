"""The client against the WanGP emulator (both flavours), over real HTTP with the real gradio_client."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from quiet import wait_worker_ended

from blender_movie_director.backend.wan2gp import (
    JobCancelledError,
    JobFailedError,
    JobStatus,
    UnsupportedServerError,
    Wan2GPClient,
    Wan2GPConnectionError,
    Wan2GPValidationError,
)
from blender_movie_director.backend.wan2gp._config import Retries, Timeouts

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30)


def _client(server, out_dir: Path, **kw) -> Wan2GPClient:
    return Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST, **kw)


def _video(path: Path) -> tuple[int, int, int, float, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), stream.width, stream.height, float(stream.average_rate), frames[0]


def _events(server, kind: str, session: str | None = None) -> list[dict]:
    return [e for e in server.events() if e["event"] == kind and (session is None or e["session"] == session)]


def test_text_to_video_settings_reach_the_server(emulator, out_dir):
    before = len(emulator.events())
    with _client(emulator, out_dir) as client:
        result = client.generate(prompt="a red fox running through snow", frames=17, steps=4, seed=123,
                                 resolution="832x480")
    assert result.video_path.parent == out_dir and result.video_path.suffix == ".mp4"
    frames, width, height, fps, _ = _video(result.video_path)
    assert (frames, width, height) == (17, 832, 480)
    assert fps == result.fps == 16
    assert result.settings.seed == 123 and result.wangp_version == emulator.version
    steps = [e for e in emulator.events()[before:] if e["event"] == "step"]
    assert steps and {e["total"] for e in steps} == {4}  # num_inference_steps reached the server
    assert not list(out_dir.glob(".*.part"))  # no temporary file left


def test_random_seed_is_drawn_by_the_client_and_recorded(emulator_v12, out_dir):
    with _client(emulator_v12, out_dir) as client:
        result = client.generate(prompt="seed check", frames=5, steps=1)
    assert 0 <= result.settings.seed < 2**31
    assert f"_s{result.settings.seed}_" in result.video_path.name


def test_image_to_video_start_image_is_the_first_frame(emulator, out_dir, tmp_path):
    image = tmp_path / "start.png"
    Image.new("RGB", (832, 480), (200, 30, 40)).save(image)
    with _client(emulator, out_dir) as client:
        result = client.generate(prompt="the red card starts moving", model="i2v", frames=9, steps=2,
                                 image_start=image)
    _, width, height, _, first = _video(result.video_path)
    assert (width, height) == (832, 480)
    mean = first.reshape(-1, 3).mean(axis=0)
    assert abs(mean[0] - 200) < 25 and abs(mean[1] - 30) < 25 and abs(mean[2] - 40) < 25, mean


def test_a_start_image_of_another_aspect_gives_wangps_size_and_the_settings_say_it(emulator_v12, out_dir, tmp_path):
    """WanGP fits the shot to the start image's aspect (832x480 asked, a 1920x1080 picture: 848x480 made); the
    result's settings hold the size made, so that a strip stores what WanGP used."""
    image = tmp_path / "wide.png"
    Image.new("RGB", (1920, 1080), (30, 160, 60)).save(image)
    with _client(emulator_v12, out_dir) as client:
        result = client.generate(prompt="a wide start", model="i2v", frames=9, steps=1, image_start=image,
                                 resolution="832x480")
    _, width, height, _, _ = _video(result.video_path)
    assert (width, height) == (848, 480) == (result.width, result.height)
    assert result.settings.resolution == "848x480"


def test_image_to_video_without_start_image_is_refused_before_sending(emulator_v12, out_dir):
    with _client(emulator_v12, out_dir) as client:
        before = len(emulator_v12.events())
        job = client.submit(prompt="no image", model="i2v", frames=9, steps=2)
        with pytest.raises(Wan2GPValidationError, match="start image"):
            job.result(timeout=30)
        assert not [e for e in emulator_v12.events()[before:] if e["event"] == "queued"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"frames": 18}, "does not fit"),
    ({"resolution": "1000x1000"}, "does not take resolution"),
    ({"model": "t2v_13B"}, "did you mean"),
    ({"extra": {"num_inference_step": 3}}, "did you mean"),
])
def test_model_rules_come_from_the_server_form(emulator, out_dir, kwargs, match):
    with _client(emulator, out_dir) as client:
        with pytest.raises(Wan2GPValidationError, match=match):
            client.generate(prompt="x", **{"steps": 1, **kwargs})


def test_model_info_and_catalog(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        info = client.get_model_info("t2v_1.3B")
        assert (info.fps, info.frames_step, info.frames_minimum) == (16, 4, 5)
        assert "832x480" in info.resolutions
        models = client.list_models()
        assert "t2v_1.3B" in {m.model_type for m in models}
        i2v = client.list_models(category="image_to_video")
        assert i2v and all("image_to_video" in m.categories for m in i2v)


def test_progress_is_real_and_ordered(emulator, out_dir):
    seen: list = []
    with _client(emulator, out_dir) as client:
        job = client.submit(prompt="progress", frames=9, steps=6)
        job.add_progress_callback(lambda j, p: seen.append(p))
        result = job.result(timeout=60)
    assert result.video_path.exists()
    # Gradio sends progress at most every 100 ms, later updates overwriting earlier ones: with 50 ms steps some
    # steps are never reported, but what arrives is in order and carries the requested total.
    steps = [p.step for p in seen if p.total == 6 and p.step is not None]
    assert len(set(steps)) >= 2 and steps == sorted(steps)
    statuses = [p.status for p in seen]
    assert JobStatus.RUNNING in statuses and statuses[-1] == JobStatus.COMPLETED
    fractions = [p.fraction for p in seen]
    assert fractions[-1] == 1.0 and max(fractions[:-1]) < 1.0


def test_missing_weights_failure_is_reported_with_what_to_do(make_emulator, out_dir):
    server = make_emulator("v12", missing_weights=True)
    with _client(server, out_dir) as client:
        with pytest.raises(JobFailedError, match="cannot find the requested files") as caught:
            client.generate(prompt="no weights", frames=5, steps=1)
    assert "internet access" in str(caught.value)
    assert not list(out_dir.iterdir())


def test_server_side_failure_marker(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        with pytest.raises(JobFailedError):
            client.generate(prompt="[[fail]] this shot", frames=5, steps=1)
        # the client is still usable
        assert client.generate(prompt="after failure", frames=5, steps=1).video_path.exists()


def test_cancel_running_job_stops_the_server_work(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        submitted = time.monotonic()
        job = client.submit(prompt="long shot [[slow]]", frames=9, steps=30)
        deadline = time.monotonic() + 30
        while (job.progress.step or 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.status() == JobStatus.RUNNING
        assert job.cancel()
        with pytest.raises(JobCancelledError):
            job.result(timeout=30)
        session = job.session_hash
        wait_worker_ended(emulator, session, submitted)  # the session's run is over: nothing more can come
        aborted = _events(emulator, "aborted", session)
        assert aborted, "WanGP's abort was not called"
        assert not [e for e in _events(emulator, "step", session) if e["t"] > aborted[-1]["t"]]
        assert not _events(emulator, "completed", session)
        assert client.generate(prompt="next one", frames=5, steps=1).video_path.exists()
    assert not list(out_dir.glob("long_shot*"))


def test_cancel_queued_job_removes_it_on_the_server(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        first = client.submit(prompt="first [[slow]]", frames=9, steps=12)
        deadline = time.monotonic() + 30
        while first.status() != JobStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
        second = client.submit(prompt="second waits", frames=5, steps=1)
        deadline = time.monotonic() + 30
        while second.progress.queue_position is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert second.status() == JobStatus.QUEUED
        second.cancel()
        with pytest.raises(JobCancelledError):
            second.result(timeout=30)
        assert first.result(timeout=60).video_path.exists()
    sessions = emulator.sessions()
    assert not [t for s in sessions.values() for t in s["queue"] if t["prompt"] == "second waits"]
    assert not [e for e in emulator.events() if e["event"] == "started" and "second waits" in e.get("detail", "")]


def test_jobs_from_several_threads(emulator, out_dir):
    results, errors = [], []
    with _client(emulator, out_dir) as client:
        def worker(i: int) -> None:
            try:
                results.append(client.generate(prompt=f"shot {i}", frames=5, steps=1, seed=i))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors
    assert sorted(r.settings.seed for r in results) == [0, 1, 2, 3]
    assert len({r.video_path for r in results}) == 4


def test_generic_call_is_checked_against_the_servers_api(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        assert "/process_tasks" in client.endpoints
        with pytest.raises(Wan2GPValidationError, match="no endpoint"):
            client.call("/proces_tasks")
        add = client._require_api().chain.add_tasks
        with pytest.raises(Wan2GPValidationError, match="has no parameter"):
            client.call(add, modl_choice="t2v")
        client.call(client._require_api().chain.clear_queue)  # a real call goes through


def test_status_and_queue(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        status = client.get_server_status()
        assert status.reachable and status.wangp_version == emulator.version
        assert status.gradio_version == "5.29.0" and status.endpoint_count > 20
        job = client.submit(prompt="queued one [[slow]]", frames=9, steps=20)
        deadline = time.monotonic() + 30
        while job.status() != JobStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
        queue = client.get_queue_status()
        assert [q.job_id for q in queue] == [job.id]
        assert client.get_server_status().busy
        assert client.clear_queue() == 1
        with pytest.raises(JobCancelledError):
            job.result(timeout=30)
        assert client.get_queue_status() == []


def test_unreachable_server_fails_fast(out_dir):
    client = Wan2GPClient("http://127.0.0.1:9", output_dir=out_dir, timeouts=FAST,
                          retries=Retries(attempts=2, backoff=0.01))
    started = time.monotonic()
    with pytest.raises(Wan2GPConnectionError, match="cannot reach"):
        client.connect()
    assert time.monotonic() - started < 5
    assert not client.get_server_status().reachable


def test_a_gradio_app_that_is_not_wangp(out_dir):
    import gradio as gr

    with gr.Blocks(title="Other app") as demo:
        gr.Textbox().submit(lambda s: s, gr.Textbox(), gr.Textbox())
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with pytest.raises(UnsupportedServerError, match="not a WanGP"):
            Wan2GPClient(demo.local_url, output_dir=out_dir, timeouts=FAST).connect()
    finally:
        demo.close()


def test_env_configuration(monkeypatch, emulator_v12, out_dir):
    monkeypatch.setenv("WAN2GP_URL", emulator_v12.url)
    monkeypatch.setenv("WAN2GP_OUTPUT_DIR", str(out_dir))
    client = Wan2GPClient()
    assert client.settings.output_dir == out_dir
    assert Wan2GPClient("http://127.0.0.1:1").settings.url == "http://127.0.0.1:1"  # arguments win
    with client:
        assert client.get_server_status().reachable


def test_duration_in_seconds_becomes_the_models_frame_count(emulator_v12, out_dir):
    with _client(emulator_v12, out_dir) as client:
        result = client.generate(prompt="two seconds", seconds=2, steps=1)
    assert result.frames == 33 and result.settings.video_length == 33  # 16 fps, 4n+1
    assert result.settings.seconds is None


def test_max_jobs_bounds_the_jobs_set_up_on_the_server_at_once(make_emulator, out_dir):
    server = make_emulator("v12")  # private: its events are only these jobs'
    with _client(server, out_dir, max_jobs=2) as client:
        jobs = [client.submit(prompt=f"bounded {i} [[slow]]", frames=5, steps=4) for i in range(4)]
        assert all(job.result(timeout=60).video_path.exists() for job in jobs)
    kinds = [e["event"] for e in server.events() if e["event"] in ("queued", "completed")]
    assert kinds.count("queued") == 4 and kinds.count("completed") == 4
    # never more than two set up at once: a third reaches WanGP's queue only after one has ended
    third = [i for i, kind in enumerate(kinds) if kind == "queued"][2]
    assert "completed" in kinds[:third], kinds


def test_a_shot_queued_behind_a_longer_one_waits_longer_than_stall(make_emulator, out_dir):
    # WanGP runs one process_tasks at a time for all sessions: the second shot hears only gradio's heartbeats
    # (and its queue rank) until the first one ends. Waiting is not dying: it must not fail after `stall`.
    server = make_emulator("v12")
    # heartbeat longer than the wait: as on a real server, where gradio's heartbeats keep the stream fresh
    quick = Timeouts(connect=5, call=30, job=120, stall=0.5, heartbeat=30, download=30)
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=quick) as client:
        long = client.submit(prompt="the long shot", frames=5, steps=60, seed=1)
        deadline = time.monotonic() + 20
        while not _events(server, "started") and time.monotonic() < deadline:
            time.sleep(0.02)
        queued_at = time.monotonic()
        short = client.submit(prompt="the shot behind it", frames=5, steps=2, seed=2)
        assert short.result(timeout=60).video_path.is_file()
        assert long.result(timeout=60).video_path.is_file()
    started = {e["detail"].split(": ", 1)[1]: e["t"] for e in _events(server, "started")}
    completed = {e["session"]: e["t"] for e in _events(server, "completed")}
    long_done = completed[long.session_hash]
    assert started["the shot behind it"] >= long_done  # one at a time: it waited for the whole long shot
    assert started["the shot behind it"] - queued_at > 4 * quick.stall  # and that wait was longer than `stall`


def test_shots_of_one_client_start_in_the_order_submitted(make_emulator, out_dir):
    server = make_emulator("v12")
    with _client(server, out_dir) as client:
        # Each job's chain runs on its own thread; without an order the quicker chains overtook earlier ones.
        jobs = [client.submit(prompt=f"shot {n}", frames=5, steps=1, seed=n) for n in range(5)]
        for job in jobs:
            job.result(timeout=60)
    started = [e["detail"].split(": ", 1)[1] for e in _events(server, "started")]
    assert started == [f"shot {n}" for n in range(5)]


def test_the_result_holds_the_settings_wangp_used(emulator_v12, out_dir):
    # Only prompt, frames and steps are asked: the rest is WanGP's, read back from its queue and the file.
    with _client(emulator_v12, out_dir) as client:
        result = client.generate(prompt="reproduce me", frames=9, steps=2)
    used = result.settings
    assert used.resolution == f"{result.width}x{result.height}" == "832x480"
    assert used.guidance_scale is not None and used.flow_shift is not None and used.sample_solver
    assert (used.num_inference_steps, used.video_length) == (2, 9) and used.seed >= 0


def test_progress_callbacks_of_a_job_come_one_at_a_time_and_in_order(emulator_v12, out_dir):
    inside, overlaps, seen = [0], [], []
    lock = threading.Lock()

    def callback(job, p):
        with lock:
            inside[0] += 1
            if inside[0] > 1:
                overlaps.append(p.step)
        time.sleep(0.002)  # a slow consumer (a GUI): updates from the stream reader and the job's thread pile up
        seen.append((p.updated_at, p.fraction))
        with lock:
            inside[0] -= 1

    with _client(emulator_v12, out_dir) as client:
        job = client.submit(prompt="callbacks in order", frames=5, steps=30)
        job.add_progress_callback(callback)
        job.result(timeout=60)
        deadline = time.monotonic() + 5  # result() returns as the job ends; its last callback follows at once
        while (not seen or seen[-1][1] != 1.0) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert not overlaps
    assert len(seen) > 10
    assert [t for t, _ in seen] == sorted(t for t, _ in seen)  # never an older snapshot after a newer one
    assert seen[-1][1] == 1.0  # the last one is the finished job


def test_a_silent_model_load_longer_than_stall_is_waited_for(make_emulator, out_dir):
    # The first use of a model on a real WanGP downloads its weights with no status at all, for minutes.
    server = make_emulator("v12", load_seconds=2.0)
    quick = Timeouts(connect=5, call=30, job=120, stall=0.5, heartbeat=30, download=30)
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=quick) as client:
        started = time.monotonic()
        result = client.generate(prompt="after a long silent load", frames=5, steps=2)
    assert result.video_path.is_file()
    assert time.monotonic() - started > 4 * quick.stall  # the silence really was longer than `stall`
