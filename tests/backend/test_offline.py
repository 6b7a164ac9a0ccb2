"""Client parts that need no server: endpoint resolution on the captured real configs, settings, names, MP4."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import av
import captures
import numpy as np
import pytest

from blender_movie_director.backend import wan2gp
from blender_movie_director.backend.wan2gp import GenerationSettings, Wan2GPValidationError
from blender_movie_director.backend.wan2gp._enums import FrameRule, ModelCategory, categories_of
from blender_movie_director.backend.wan2gp._errors import UnsupportedServerError
from blender_movie_director.backend.wan2gp._files import output_name, safe_name
from blender_movie_director.backend.wan2gp._mp4 import NotAVideo, probe
from blender_movie_director.backend.wan2gp._webui.endpoints import ServerApi


def _real_api(prefix: str) -> ServerApi:
    return ServerApi(copy.deepcopy(captures.load(f"{prefix}_config.json")),
                     copy.deepcopy(captures.load(f"{prefix}_gradio_api_info.json")), "http://real")


def test_public_surface_is_pinned():
    assert wan2gp.__all__ == sorted(wan2gp.__all__)
    assert {"Wan2GPClient", "Wan2GPJob", "GenerationSettings", "get_wan2gp_client"} <= set(wan2gp.__all__)
    # What the package exports is exactly __all__: every module is private (as httpx's test_exported_members).
    exported = {name for name in dir(wan2gp) if not name.startswith("_")}
    assert exported == set(wan2gp.__all__), (exported - set(wan2gp.__all__), set(wan2gp.__all__) - exported)
    for name in wan2gp.__all__:
        assert getattr(wan2gp, name).__module__.startswith("blender_movie_director.backend.wan2gp._"), name


@pytest.mark.parametrize(
    ("prefix", "version", "count", "expected"),
    [
        ("head-2026-08", "12.60", 608, {"save_inputs": "/save_inputs_15", "validate": "/validate_wizard_prompt_15",
                                        "fill": "/fill_inputs", "gallery_index": 1,
                                        "abort_by_client_id": "/abort_generation_1",
                                        "model_switch": ["/goto_model_type_with_filter", "/change_model_from_target"]}),
        ("2025-06", "6.31", 108, {"save_inputs": "/save_inputs_5", "validate": "/validate_wizard_prompt_7",
                                  "fill": "/fill_inputs_1", "gallery_index": 0, "abort_by_client_id": None,
                                  "model_switch": ["/change_model"]}),
    ],
)
def test_chain_resolves_on_the_real_servers(prefix, version, count, expected):
    api = _real_api(prefix)
    assert api.wangp_version == version
    assert len(api.endpoints) == count
    for role, name in expected.items():
        assert getattr(api.chain, role) == name, role
    save = api.endpoints[api.chain.save_inputs]
    # every save_inputs parameter but the hidden target is filled from the form
    assert set(api.chain.form_index) == {p.name for p in save.parameters} - {"target"}


# How each release's web UI switches the model (the captures' versions_model_switch.json, as the real browsers'
# event chains and the API probes showed it), and how many models its configuration tab lists.
SWITCHES = {
    "6.31": (None, None, "/change_model", 31),
    "8.11": (None, "/change_model_family", "/change_model", 51),
    "9.81": ("/goto_model_type", None, "/change_model", 97),
    "11.66": ("/goto_model_type", None, "/change_model", 176),
    "12.60": ("/goto_model_type_with_filter", None, "/change_model_from_target", 213),
}


@pytest.mark.parametrize("release", sorted(SWITCHES))
def test_the_model_switch_is_found_by_role_on_every_release(release):
    api = _real_api(captures.RELEASES[release])
    group, family, select, n_models = SWITCHES[release]
    switch = api.chain.switch
    assert (switch.group, switch.family, switch.select) == (group, family, select)
    assert len(api.models) == n_models
    # the server's own list holds far more than the start-up group of its model dropdown (4 models on 9.x+)
    assert set(api.model_dropdown_choices()) <= set(api.models)
    assert {"t2v_1.3B", "i2v"} <= set(api.models)
    probe = captures.load("versions_model_switch.json")[release]
    captured = {e["api_name"] for e in probe["switch_endpoints"].values()}
    assert set(switch.endpoints) <= captured


def test_the_8x_family_step_names_the_families_the_server_offers():
    api = _real_api("v8.11")
    startup = captures.load("versions_model_switch.json")["8.11"]["startup_dropdowns"]
    assert api.families() == [c[1] for c in startup["model_family"]["choices"]]


def test_a_gradio_app_that_is_not_wangp_is_refused():
    config = copy.deepcopy(captures.load("2025-06_config.json"))
    config["title"] = "Some other app"
    config["components"] = [c for c in config["components"] if c["id"] != 1]
    with pytest.raises(UnsupportedServerError, match="not a WanGP"):
        ServerApi(config, {"named_endpoints": {}}, "http://x")


def test_a_wangp_whose_chain_is_broken_names_what_is_missing():
    config = copy.deepcopy(captures.load("2025-06_config.json"))
    for dep in config["dependencies"]:  # the chain is resolved from /config: its graph is what breaks it
        if str(dep.get("api_name")).startswith("process_tasks"):
            dep["api_name"] = "run_" + dep["api_name"]
    with pytest.raises(UnsupportedServerError) as caught:
        ServerApi(config, None, "http://x")  # refused without the API description
    assert "process_tasks" in caught.value.missing


def test_endpoint_bind_checks_names_types_and_required():
    api = _real_api("head-2026-08")
    add = api.endpoints["/process_prompt_and_add_tasks"]
    assert add.bind({"model_choice": "t2v_1.3B"}) == [0, "t2v_1.3B"]
    with pytest.raises(Wan2GPValidationError, match="did you mean \"model_choice\""):
        add.bind({"model_choise": "x"})
    with pytest.raises(Wan2GPValidationError, match="takes a number"):
        add.bind({"current_gallery_tab": "zero", "model_choice": "t2v"})
    with pytest.raises(Wan2GPValidationError, match="'client_id' is required"):
        api.endpoints["/abort_generation_1"].bind({})


def test_settings_aliases_and_wangp_json_round_trip(tmp_path):
    s = GenerationSettings(prompt="fox", model="t2v_1.3B", frames=33, steps=8, seed=7, negative="blur",
                           extra={"NAG_scale": 1.5})
    assert (s.video_length, s.num_inference_steps, s.negative_prompt) == (33, 8, "blur")
    data = s.to_wangp_json()
    assert data["mode"] == "" and data["model_type"] == "t2v_1.3B" and data["NAG_scale"] == 1.5
    back = GenerationSettings.from_wangp_json(json.loads(json.dumps(data)))
    assert back.video_length == 33 and back.seed == 7 and back.extra == {"NAG_scale": 1.5}


def test_reads_wangp_own_export_file():
    export = copy.deepcopy(captures.load("head_export_settings_t2v_1.3B.json"))
    if "url" in export:  # the capture may hold the endpoint's answer rather than the file
        pytest.skip("capture holds the download link, not the file")
    s = GenerationSettings.from_wangp_json(export)
    assert s.model == "t2v_1.3B"
    assert s.video_length == export["video_length"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "x", "frames": 0}, "greater than or equal to 1"),
        ({"prompt": "x", "steps": -3}, "greater than or equal to 1"),
        ({"prompt": "x", "resolution": "wide"}, "832x480"),
        ({"prompt": "x", "seed": -2}, "greater than or equal to -1"),
        ({"prompt": "x", "frames": 33, "seconds": 2}, "not both"),
        ({"prompt": "x", "guidance_scale": float("nan")}, "finite|less than or equal"),
        ({"prompt": "x", "image_start": "/no/such/file.png"}, "file not found"),
    ],
)
def test_bad_settings_are_refused_before_sending(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**kwargs)


def test_media_files_must_be_files_of_the_right_kind(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="is a folder"):
        GenerationSettings(prompt="x", image_start=tmp_path)
    with pytest.raises(ValueError, match="is empty"):
        GenerationSettings(prompt="x", image_start=tmp_path / "empty.png")
    with pytest.raises(ValueError, match="does not contain image data"):
        GenerationSettings(prompt="x", image_start=tmp_path / "text.png")


def test_frame_rules():
    wan = FrameRule(fps=16, step=4, minimum=5, maximum=97)
    assert [f for f in range(1, 20) if wan.is_valid(f)] == [5, 9, 13, 17]
    assert wan.frames_for_seconds(2) == 33 and wan.frames_for_seconds(100) == 97
    ltx = FrameRule(fps=24, step=8, minimum=9, maximum=257)
    assert ltx.is_valid(97) and not ltx.is_valid(33 + 2)
    assert ltx.frames_for_seconds(1) == 25


def test_categories():
    assert ModelCategory.IMAGE_TO_VIDEO in categories_of("i2v")
    assert ModelCategory.TEXT_TO_VIDEO not in categories_of("i2v")
    assert ModelCategory.FAST in categories_of("ltx2_22B_distilled")
    assert ModelCategory.LTX in categories_of("ltx2_22B_distilled")
    assert ModelCategory.CONTROLNET in categories_of("vace_14B")
    assert ModelCategory.HIGH_QUALITY in categories_of("t2v")


@pytest.mark.parametrize("prompt", ["../../etc/passwd", "/abs/path", "a\\b:c*?<>|", "日本語 only", "", "x" * 500])
def test_output_names_stay_inside_the_folder(prompt):
    name = output_name(prompt, "../t2v", -1, "../../j", "/../../x.mp4")
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert name.endswith(".mp4") and len(name) < 160
    assert safe_name(prompt)


def _write_mp4(path: Path, frames: int, fps: int, size: tuple[int, int]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), i * 9 % 255, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize(("frames", "fps", "size"), [(17, 16, (832, 480)), (25, 24, (320, 192)), (9, 30, (64, 64))])
def test_mp4_probe_reads_frames_size_fps(tmp_path, frames, fps, size):
    path = tmp_path / "v.mp4"
    _write_mp4(path, frames, fps, size)
    info = probe(path)
    assert (info.frames, (info.width, info.height), info.fps) == (frames, size, fps)


def test_mp4_probe_refuses_truncated_and_non_video(tmp_path):
    path = tmp_path / "v.mp4"
    _write_mp4(path, 17, 16, (64, 64))
    data = path.read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mp4").write_text("<html>not found</html>")
    for bad in ("half.mp4", "text.mp4"):
        with pytest.raises(NotAVideo):
            probe(tmp_path / bad)


@pytest.mark.parametrize("release", sorted(SWITCHES))
def test_the_chain_comes_from_config_alone_and_the_description_is_read_only_for_names(release):
    prefix = captures.RELEASES[release]
    described = _real_api(prefix)
    asked: list[int] = []

    def describe() -> dict:
        asked.append(1)
        return copy.deepcopy(captures.load(f"{prefix}_gradio_api_info.json"))

    lazy = ServerApi(copy.deepcopy(captures.load(f"{prefix}_config.json")), None, "http://real", describe=describe)
    by_name = {"form_index", "control_index"}  # both come from parameter names: the description
    chain = {k: v for k, v in vars(lazy.chain).items() if k not in by_name}
    assert chain == {k: v for k, v in vars(described.chain).items() if k not in by_name}
    assert lazy.models == described.models and lazy.endpoint_count == len(described.endpoints)
    assert lazy.model_dropdown_choices() == described.model_dropdown_choices() and not asked
    assert lazy.endpoints.keys() == described.endpoints.keys() and asked == [1]  # read once, when names are needed
    assert lazy.chain.form_index == described.chain.form_index
    lazy.endpoints  # noqa: B018
    assert asked == [1]
    # what a cache keeps (the parameter table) gives the same API
    kept = ServerApi(copy.deepcopy(captures.load(f"{prefix}_config.json")),
                     {"parameter_table": described.parameter_table()}, "http://real")
    assert kept.endpoints == described.endpoints and kept.chain.form_index == described.chain.form_index
