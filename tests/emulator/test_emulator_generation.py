"""End-to-end generations through the chain (reference §4 route A) with plain gradio_client, checked with PyAV."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from wangp_route import Route

from wan2gp_emulator import EmulatorServer


def probe(path: str) -> tuple[int, int, int, float, np.ndarray]:
    """(frames, width, height, fps, first frame RGB) of a video file."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), stream.codec_context.width, stream.codec_context.height, float(stream.average_rate), \
            frames[0]


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_text_to_video_through_the_chain(request: pytest.FixtureRequest, flavour: str) -> None:
    server = request.getfixturevalue(f"emulator_{flavour}")
    client = Client(server.url, verbose=False)
    route = Route(client)
    route.select_model("t2v_1.3B")
    extra = {"client_id": "e2e-1"} if flavour == "v12" else {}
    queue_answer = route.add("t2v_1.3B", prompt="A red fox running through snow", video_length=17,
                             num_inference_steps=4, seed=42, resolution="832x480", **extra)
    session = client.session_hash
    assert [t["prompt"] for t in server.sessions()[session]["queue"]] == ["A red fox running through snow"]
    if flavour == "v12":  # one task: "Queue is empty." (item 0 is the current one), as the real Html says
        assert "Queue is empty." in queue_answer["value"]
    result, statuses = route.run()
    assert statuses and statuses[-1].startswith("Total Generation Time: ")
    if flavour == "v12":
        assert len(result) == 3
        client.predict(api_name="/finalize_generation")
    files = route.gallery()
    assert len(files) == 1 and files[0].endswith(".mp4")
    frames, width, height, fps, _ = probe(files[0])
    assert (frames, width, height, fps) == (17, 832, 480, 16.0)
    own = server.sessions()[session]
    assert own["queue"] == [] and len(own["gallery"]) == 1 and Path(own["gallery"][0]).is_file()
    events = [e for e in server.events() if e["session"] == session]
    kinds = [e["event"] for e in events]
    # worker_ended: the queue worker's last word, sent before process_tasks returns
    assert kinds == ["queued", "started", "step", "step", "step", "step", "completed", "worker_ended"]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert all(e["client_id"] == extra.get("client_id", "") for e in events)
    client.close()


def test_start_image_is_the_first_frame(emulator_v12, tmp_path: Path) -> None:
    picture = np.zeros((480, 832, 3), dtype=np.uint8)
    picture[:, :416] = (220, 40, 40)
    picture[:, 416:] = (30, 90, 200)
    picture[200:280, 300:530] = (250, 250, 250)
    start = tmp_path / "start.png"
    Image.fromarray(picture).save(start)
    client = Client(emulator_v12.url, verbose=False)
    route = Route(client)
    route.select_model("i2v")
    route.add("i2v", prompt="The picture comes alive", video_length=17, num_inference_steps=2, seed=1,
              resolution="832x480", image_prompt_type="S",
              image_start=[{"image": handle_file(str(start)), "caption": None}])
    route.run()
    files = route.gallery()
    frames, width, height, fps, first = probe(files[-1])
    assert (frames, width, height, fps) == (17, 832, 480, 16.0)
    assert np.abs(first.astype(int) - picture.astype(int)).mean() < 6
    client.close()


def test_same_inputs_give_the_same_pictures(emulator_v12) -> None:
    """Content is deterministic in (model, prompt, seed, settings). One add, three tasks: each paragraph of the
    prompt is a task (multi_prompts_gen_type "PG")."""
    client = Client(emulator_v12.url, verbose=False)
    route = Route(client)
    route.select_model("t2v_1.3B")
    route.add("t2v_1.3B", prompt="Determinism check\n\nDeterminism check\n\nAnother prompt", video_length=5,
              num_inference_steps=1, seed=5, resolution="832x480", multi_prompts_gen_type="PG")
    assert len(emulator_v12.sessions()[client.session_hash]["queue"]) == 3
    route.run()  # process_tasks runs the whole session queue, one task at a time
    files = emulator_v12.sessions()[client.session_hash]["gallery"]
    assert len(files) == 3
    decoded = []
    for path in files:
        with av.open(path) as container:
            decoded.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int))
    assert np.abs(decoded[0] - decoded[1]).mean() < 1.0
    assert np.abs(decoded[0] - decoded[2]).mean() > 3.0
    client.close()


def test_status_stream_and_progress(tmp_path: Path) -> None:
    """refresh_status_async streams WanGP's status texts; gr.Progress carries (step, total) and the phase."""
    with EmulatorServer("v12", output_dir=tmp_path, step_seconds=0.15) as server:
        _status_stream_and_progress(server)


def _status_stream_and_progress(server: EmulatorServer) -> None:
    client = Client(server.url, verbose=False)
    route = Route(client)
    route.select_model("t2v_1.3B")
    route.add("t2v_1.3B", prompt="Progress check", video_length=9, num_inference_steps=4, seed=3)
    client.predict(api_name="/activate_status")
    status = client.submit(api_name="/refresh_status_async")
    seen: list = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            data = status.status().progress_data
            if data:
                seen.extend(p.__dict__ if hasattr(p, "__dict__") else p for p in data)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    client.submit(api_name="/process_tasks").result(timeout=30)
    status.result(timeout=30)
    stop.set()
    watcher.join(2)
    texts = [str(s) for s in status.outputs()]
    assert "Loading model Wan2.1 Text2video 1.3B..." in texts
    assert texts[-1].startswith("Total Generation Time: ")
    steps = [(p.get("index"), p.get("length"), p.get("desc")) for p in seen if p.get("length")]
    assert steps, "no step progress seen"
    assert all(length == 4 and desc.startswith(("Denoising | ", "VAE Decoding | ")) for _, length, desc in steps)
    assert {index for index, _, _ in steps} & {1, 2, 3}
    client.close()
