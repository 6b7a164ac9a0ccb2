"""Control videos, masks and reference images (VACE models) over WanGP's MCP server, against its emulator.

The same client calls as over the web UI (test_control.py), on each MCP contract (the ``mcp_emulator`` fixture:
12.60's API v1, 13.x's API v1 and API v2): the control files go up through upload tickets, the modes come from
the model schema's declared choices, and what the model's rules refuse is refused before anything is sent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from blender_movie_director.backend.wan2gp import Wan2GPClient, Wan2GPValidationError
from blender_movie_director.backend.wan2gp._config import Timeouts
from blender_movie_director.backend.wan2gp._mcp.transport import wangp_settings

from .test_control import square_video

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from follow import follow_score  # noqa: E402

pytestmark = pytest.mark.timeout(120)

FAST = Timeouts(connect=5, call=20, job=90, reconnect=10)


def _client(server, out_dir: Path) -> Wan2GPClient:
    return Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST)


def _uploads(server) -> list[Path]:
    """The files the server received through upload tickets (the emulator keeps them under mcp_uploads/)."""
    return sorted(p for p in Path(server.output_dir).rglob("*") if p.is_file() and "mcp_uploads" in p.parts)


def test_a_vace_shot_follows_its_uploaded_control_video(mcp_emulator, out_dir, tmp_path):
    control = square_video(tmp_path / "right.mp4")
    other = square_video(tmp_path / "left.mp4", direction=-1)
    with _client(mcp_emulator, out_dir) as client:
        assert client.transport == "mcp"
        modes = client.get_model_info("vace_1.3B").control_modes
        assert ("Transfer Depth", "DV") in modes["video_guide"] and ("Masked Area", "A") in modes["video_mask"]
        assert client.get_model_info("t2v_1.3B").control_modes == {}
        result = client.generate(prompt="a white box slides right", model="vace_1.3B", steps=2, seed=5,
                                 video_guide=control, control_mode="Transfer Depth")
    # frames, size and fps come from the control video when not given
    assert (result.frames, result.width, result.height, result.fps) == (17, 832, 480, 16)
    assert result.sent_settings["video_prompt_type"] == "DV"
    # Kept in the record as on the web UI (Regenerate sends the mode again); never sent to WanGP.
    assert result.sent_settings["movie_director"] == {"control_mode": "Transfer Depth"}
    assert "movie_director" not in wangp_settings(result.settings, media={})
    assert [p.read_bytes() for p in _uploads(mcp_emulator)] == [control.read_bytes()]
    own, against = follow_score(result.video_path, control), follow_score(result.video_path, other)
    assert own > 0.8 and against < 0.2, (own, against)


def test_mask_and_reference_images_are_uploaded_and_used(mcp_emulator, out_dir, tmp_path):
    control = square_video(tmp_path / "control.mp4")
    mask = square_video(tmp_path / "mask.mp4")  # the mask: only where the square is
    refs = [tmp_path / "red.png", tmp_path / "green.png"]
    Image.new("RGB", (200, 200), (250, 20, 20)).save(refs[0])
    Image.new("RGB", (200, 200), (20, 250, 20)).save(refs[1])
    with _client(mcp_emulator, out_dir) as client:
        result = client.generate(prompt="a red fox", model="vace_1.3B", steps=1, seed=2, video_guide=control,
                                 control_mode="DV", video_mask=mask, mask_mode="Masked Area",
                                 image_refs=refs, refs_mode="People / Objects")
    assert set(result.sent_settings["video_prompt_type"]) == set("DVAI")
    assert len(_uploads(mcp_emulator)) == 4  # the control video, its mask, both reference images
    with av.open(str(result.video_path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    red, green = (first[8:60, x - 100:x].reshape(-1, 3).mean(axis=0) for x in (-8, -116))
    assert red[0] > 180 and red[1] < 80 and green[1] > 180 and green[0] < 80, (red, green)  # thumbnails, top right
    assert follow_score(result.video_path, control) > 0.8


def test_a_model_without_control_video_is_refused_before_anything_is_sent(mcp_emulator, out_dir, tmp_path):
    control = square_video(tmp_path / "control.mp4")
    ref = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (250, 20, 20)).save(ref)
    with _client(mcp_emulator, out_dir) as client:
        with pytest.raises(ValueError, match="takes no control video.*VACE"):
            client.submit(prompt="x", model="t2v_1.3B", steps=1, video_guide=control, control_mode="UV")
        with pytest.raises(Wan2GPValidationError, match="vace_ditto_14B takes no control video.*VACE"):
            client.generate(prompt="x", model="vace_ditto_14B", steps=1, video_guide=control, control_mode="UV")
        with pytest.raises(Wan2GPValidationError, match="t2v_1.3B takes no reference images"):
            client.generate(prompt="x", model="t2v_1.3B", steps=1, image_refs=[ref], refs_mode="I")
    assert mcp_emulator.jobs() == [] and _uploads(mcp_emulator) == []


def test_a_control_video_of_the_wrong_length_is_refused(mcp_emulator, out_dir, tmp_path):
    control = square_video(tmp_path / "control.mp4", frames=18)
    with _client(mcp_emulator, out_dir) as client:
        with pytest.raises(Wan2GPValidationError, match="18 frames, which does not fit vace_1.3B.*use 17"):
            client.generate(prompt="x", model="vace_1.3B", steps=1, video_guide=control, control_mode="UV")
    assert mcp_emulator.jobs() == [] and _uploads(mcp_emulator) == []


@pytest.mark.parametrize(("video", "kwargs", "match"), [
    ({}, {"frames": 21}, "control video has 17 frames but the shot has 21"),
    ({"fps": 24}, {}, "runs at 24 fps but vace_1.3B makes 16 fps"),
    ({}, {"control_mode": "XYZ"}, "not one of vace_1.3B's modes.*'DV' \\(Transfer Depth\\)"),
    ({}, {"mask_mode": "A"}, "needs video_mask"),
])
def test_control_settings_are_checked_against_the_schema(make_mcp_emulator, out_dir, tmp_path, video, kwargs,
                                                         match):
    server = make_mcp_emulator("v13", mcp_api_version=2)
    control = square_video(tmp_path / "control.mp4", **video)
    settings = {"prompt": "x", "model": "vace_1.3B", "steps": 1, "video_guide": control, "control_mode": "UV",
                **kwargs}
    with _client(server, out_dir) as client:
        with pytest.raises(Wan2GPValidationError, match=match):
            client.generate(**settings)
    assert server.jobs() == [] and _uploads(server) == []


def test_a_schema_with_a_control_role_but_no_modes_is_refused_with_the_reason(tmp_path):
    """A server whose schema has the control role but declares no modes (the captures hold no VACE schema)."""
    from blender_movie_director.backend.wan2gp import GenerationSettings
    from blender_movie_director.backend.wan2gp._mcp._contract import ModelSchema
    from blender_movie_director.backend.wan2gp._mcp.transport import schema_form

    meta = {"model_type": "vace_1.3B", "media_inputs": {"video": {"control": True, "mask": True}}, "fps": 16,
            "frames_minimum": 5, "frames_steps": 4, "frames_maximum": 97}
    schema = ModelSchema.parse({"metadata": meta}, {"video_length": 17})
    settings = GenerationSettings(prompt="x", model="vace_1.3B", video_guide=square_video(tmp_path / "c.mp4"),
                                  control_mode="UV")
    with pytest.raises(Wan2GPValidationError, match="declares none of its control modes"):
        schema_form(schema, settings)
    declared = {**meta, "guide_preprocessing": {"selection": ["", "UV", "DV"]}}  # WanGP's other form: values
    form = schema_form(ModelSchema.parse({"metadata": declared}, {"video_length": 17}), settings)
    assert form.control_choices == {"video_guide": [("UV", "UV"), ("DV", "DV")]}
