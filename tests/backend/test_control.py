"""Control videos, masks and reference images (VACE models) on the web-UI transport, against the emulator."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from blender_movie_director.backend.wan2gp import Wan2GPClient, Wan2GPValidationError
from blender_movie_director.backend.wan2gp._config import Timeouts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from follow import follow_score  # noqa: E402

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30)


def _client(server, out_dir: Path) -> Wan2GPClient:
    return Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST)


def square_video(path: Path, *, frames: int = 17, fps: int = 16, size: tuple[int, int] = (832, 480),
                 direction: int = 1, grey: bool = False) -> Path:
    """A white square moving across black (left to right, or back with ``direction=-1``)."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            t = i / max(1, frames - 1)
            x = int((t if direction > 0 else 1 - t) * (width - width // 4))
            rgb[height // 3: 2 * height // 3, x: x + width // 4] = 128 if grey else 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _queued(server, before: int) -> list[dict]:
    return [e for e in server.events()[before:] if e["event"] == "queued"]


def test_the_form_states_each_models_control_modes(emulator, out_dir):
    with _client(emulator, out_dir) as client:
        vace = client.get_model_info("vace_1.3B").control_modes
        assert ("Transfer Depth", "DV") in vace["video_guide"]
        assert any(v == "UV" for _, v in vace["video_guide"])  # keep unchanged: a depth video sent as it is
        assert ("Masked Area", "A") in vace["video_mask"]
        assert any("I" in v for _, v in vace["image_refs"])
        assert client.get_model_info("t2v_1.3B").control_modes == {}


@pytest.mark.parametrize("flavour", ["v8", "v9", "v11"])
def test_control_modes_on_the_other_releases(make_emulator, out_dir, flavour, tmp_path):
    server = make_emulator(flavour)
    control = square_video(tmp_path / "control.mp4")
    with _client(server, out_dir) as client:
        assert ("Transfer Depth", "DV") in client.get_model_info("vace_1.3B").control_modes["video_guide"]
        result = client.generate(prompt="a cube", model="vace_1.3B", steps=1, seed=1, video_guide=control,
                                 control_mode="Keep Control Video Unchanged")
    assert result.frames == 17 and follow_score(result.video_path, control) > 0.8


def test_a_shot_follows_its_control_video(emulator, out_dir, tmp_path):
    control = square_video(tmp_path / "right.mp4")
    other = square_video(tmp_path / "left.mp4", direction=-1)
    with _client(emulator, out_dir) as client:
        result = client.generate(prompt="a white box slides right", model="vace_1.3B", steps=2, seed=5,
                                 video_guide=control, control_mode="UV")
    # frames, size and fps come from the control video when not given
    assert (result.frames, result.width, result.height, result.fps) == (17, 832, 480, 16)
    assert result.sent_settings["video_prompt_type"] == "UV"
    own, against = follow_score(result.video_path, control), follow_score(result.video_path, other)
    assert own > 0.8 and against < 0.2, (own, against)


def test_mode_by_label_mask_and_reference_images(emulator_v12, out_dir, tmp_path):
    control = square_video(tmp_path / "control.mp4")
    mask = tmp_path / "mask.mp4"
    square_video(mask)  # the mask: only where the square is
    ref = tmp_path / "ref.png"
    Image.new("RGB", (200, 200), (250, 20, 20)).save(ref)
    with _client(emulator_v12, out_dir) as client:
        result = client.generate(prompt="a red fox", model="vace_1.3B", steps=1, seed=2, video_guide=control,
                                 control_mode="Transfer Depth", video_mask=mask, mask_mode="A",
                                 image_refs=[ref], refs_mode="People / Objects")
    assert set(result.sent_settings["video_prompt_type"]) == set("DVAI")
    with av.open(str(result.video_path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    corner = first[4:60, -108:-4].reshape(-1, 3).mean(axis=0)
    assert corner[0] > 180 and corner[1] < 80, corner  # the reference image shows, top right
    assert follow_score(result.video_path, control) > 0.8


def test_a_model_without_control_video_is_refused_before_anything_is_sent(emulator_v12, out_dir, tmp_path):
    control = square_video(tmp_path / "control.mp4")
    with _client(emulator_v12, out_dir) as client:
        before = len(emulator_v12.events())
        with pytest.raises(ValueError, match="takes no control video.*VACE"):
            client.submit(prompt="x", model="t2v_1.3B", steps=1, video_guide=control, control_mode="UV")
        with pytest.raises(Wan2GPValidationError, match="takes no control video"):  # the server's form says so
            client.generate(prompt="x", model="vace_ditto_14B", steps=1, video_guide=control, control_mode="UV")
        assert not _queued(emulator_v12, before)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"frames": 21}, "control video has 17 frames but the shot has 21"),
    ({"resolution": "480x832"}, "control video is 832x480 but the shot is 480x832"),
    ({"control_mode": "XYZ"}, "not one of vace_1.3B's modes.*'DV' \\(Transfer Depth\\)"),
    ({"control_mode": None}, "choose how vace_1.3B uses it with control_mode"),
    ({"mask_mode": "A"}, "needs video_mask"),
])
def test_control_settings_are_checked_against_the_form(emulator_v12, out_dir, tmp_path, kwargs, match):
    control = square_video(tmp_path / "control.mp4")
    settings = {"prompt": "x", "model": "vace_1.3B", "steps": 1, "video_guide": control, "control_mode": "UV",
                **kwargs}
    settings = {k: v for k, v in settings.items() if v is not None}
    with _client(emulator_v12, out_dir) as client:
        before = len(emulator_v12.events())
        with pytest.raises(Wan2GPValidationError, match=match):
            client.generate(**settings)
        assert not _queued(emulator_v12, before)


@pytest.mark.parametrize(("video", "match"), [
    ({"frames": 18}, "18 frames, which does not fit"),
    ({"fps": 24}, "runs at 24 fps but vace_1.3B makes 16 fps"),
    ({"size": (640, 360)}, "640x360, which vace_1.3B does not make"),
])
def test_a_control_video_of_the_wrong_shape_is_refused(emulator_v12, out_dir, tmp_path, video, match):
    control = square_video(tmp_path / "control.mp4", **video)
    with _client(emulator_v12, out_dir) as client:
        with pytest.raises(Wan2GPValidationError, match=match):
            client.generate(prompt="x", model="vace_1.3B", steps=1, video_guide=control, control_mode="UV")


def test_control_settings_round_trip_through_a_settings_file(tmp_path):
    from blender_movie_director.backend.wan2gp import GenerationSettings

    control = square_video(tmp_path / "control.mp4")
    settings = GenerationSettings(prompt="x", model="vace_1.3B", video_guide=control, control_mode="DV")
    data = settings.to_wangp_json()
    assert "control_mode" not in data and data["movie_director"] == {"control_mode": "DV"}
    again = GenerationSettings.from_wangp_json(data)
    assert again.control_mode == "DV" and again.video_guide == control.resolve()
    with pytest.raises(ValueError, match="video_mask needs a control video"):
        GenerationSettings(prompt="x", model="vace_1.3B", video_mask=control)


@pytest.mark.parametrize("release", ["6.31", "8.11", "9.81", "11.66", "12.60"])
def test_the_real_forms_control_dropdowns_are_found(release):
    """On each captured real server: fill_inputs writes the three dropdowns the control handlers read."""
    import copy

    import captures

    from blender_movie_director.backend.wan2gp._webui.endpoints import ServerApi

    prefix = captures.RELEASES[release]
    api = ServerApi(copy.deepcopy(captures.load(f"{prefix}_config.json")),
                    copy.deepcopy(captures.load(f"{prefix}_gradio_api_info.json")), "http://real")
    assert set(api.chain.control_index) == {"video_guide", "video_mask", "image_refs"}
    fill = api.endpoints[api.chain.fill]
    outputs = api._api_outputs(fill)
    for role, index in api.chain.control_index.items():
        assert api.component(outputs[index])["type"] == "dropdown", role
    if release not in ("6.31", "8.11"):  # labelled from 9.81 on
        label = api.component(outputs[api.chain.control_index["video_guide"]])["props"]["label"]
        assert label == "Control Video"
