"""The add-on's plain-Python core (``blender_movie_director.storyboard``), without Blender: nothing here imports bpy."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from blender_movie_director import storyboard

PANEL = {"prompt": "a red fox", "negative_prompt": "  ", "model": " t2v_1.3B ", "resolution": "832x480 ",
         "seconds": 2.0004, "steps": 0, "seed": -1, "guidance_scale": 0.0}


def test_importing_it_imports_neither_bpy_nor_the_client():
    code = ("import sys; import blender_movie_director.storyboard; "
            "print(sorted(m for m in ('bpy', 'gradio_client', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_panel_settings_to_a_request_and_back():
    request = storyboard.shot_request(PANEL)
    # Zero steps and guidance: the model's defaults, not sent; an empty negative prompt is not sent either.
    assert request == {"model": "t2v_1.3B", "prompt": "a red fox", "resolution": "832x480", "seconds": 2.0,
                       "seed": -1}
    request = storyboard.shot_request({**PANEL, "steps": 12, "guidance_scale": 5.55555, "negative_prompt": "blur"})
    assert (request["num_inference_steps"], request["guidance_scale"], request["negative_prompt"]) == (12, 5.5556,
                                                                                                       "blur")
    stored = {"prompt": "a fox asleep", "model_type": "i2v", "num_inference_steps": 30, "seed": 77,
              "guidance_scale": 6.0, "resolution": "480x832", "video_length": 33}
    shot = storyboard.shot_from_settings(stored, PANEL)
    assert shot == {**PANEL, "prompt": "a fox asleep", "negative_prompt": "", "model": "i2v", "steps": 30,
                    "seed": 77, "guidance_scale": 6.0, "resolution": "480x832"}
    assert set(shot) == set(storyboard.SHOT_FIELDS)
    # Settings a shot does not carry keep the panel's values.
    assert storyboard.shot_from_settings({"prompt": "p"}, PANEL)["model"] == PANEL["model"]


def test_rerun_keeps_the_seed_and_a_variation_changes_it():
    stored = {"prompt": "p", "seed": 5, "client_id": "bmd-old", "model_type": "t2v_1.3B"}
    again = storyboard.rerun_request(stored, variation=False)
    assert again == {"__wangp__": {"prompt": "p", "seed": 5, "model_type": "t2v_1.3B"}}  # not the old job's id
    rng = random.Random(0)
    seeds = {storyboard.rerun_request(stored, variation=True, rng=rng)["__wangp__"]["seed"] for _ in range(20)}
    assert 5 not in seeds and len(seeds) == 20
    assert storyboard.request_summary(again) == ("p", "t2v_1.3B")
    assert storyboard.quick_check({"prompt": "  ", "model": "m"}) == "The prompt is empty: describe the shot"
    assert storyboard.quick_check({"prompt": "p", "model": ""}) == "No model is chosen"
    assert storyboard.quick_check(storyboard.shot_request(PANEL)) is None


def test_frame_arithmetic():
    assert storyboard.span_seconds(10, 43, 16) == 2.0  # 33 frames: 2 s of a 4n+1 clip
    assert storyboard.timeline_length(17, 16, 24, "STRETCH") == 26
    assert storyboard.timeline_length(17, 16, 24, "KEEP") == 17
    assert storyboard.timeline_length(17, 16, 16.0000001, "STRETCH") == 17
    assert storyboard.timeline_length(17, None, 24, "STRETCH") == 17  # unknown clip rate: as it comes
    assert storyboard.fps_differs(16, 24) and not storyboard.fps_differs(None, 24)


def test_free_channels_count_strips_and_shots_on_their_way():
    strips = [(2, 1, 18), (3, 10, 30)]
    assert storyboard.first_free_channel(strips, 2, 1, 18) == 3 + 1  # 2 taken at 1-18, 3 at 10-30
    assert storyboard.first_free_channel(strips, 2, 18, 30) == 2  # [1, 18) ends where this starts
    assert storyboard.first_free_channel(strips, 1, 1, 5, height=2) == 3  # two in a row: 3 and 4
    assert storyboard.nearest_free_channel(strips, 2, 5, 8) == 3  # upwards first on a tie
    assert storyboard.nearest_free_channel(strips, 2, 12, 15) == 1  # 3 is taken there too
    assert storyboard.nearest_free_channel(strips, 2, 40, 50) == 2
    assert storyboard.empty_channel([128, 127, 5]) == 126
    full = [(c, 0, 100) for c in range(1, storyboard.MAX_CHANNEL + 1)]
    with pytest.raises(RuntimeError, match="no free channel"):
        storyboard.first_free_channel(full, 1, 10, 20)


def test_records_and_strip_metadata_round_trip():
    record = {"job_id": "j1", "files": ["a.mp4", "b.png"], "settings": {"prompt": "p", "seed": 3}, "fps": 16}
    meta = storyboard.strip_metadata(record, kind="extend", addon_version="0.1.0", created=12.5)
    assert "files" not in meta and meta["format"] == storyboard.METADATA_FORMAT and meta["kind"] == "extend"
    text = storyboard.dumps(meta)
    assert json.loads(text) == meta and storyboard.metadata_from_text(text) == meta
    assert storyboard.metadata_from_text("[1, 2]") is None  # not a shot's
    assert storyboard.metadata_from_text("{broken") is None and storyboard.loads("") is None


def test_progress_and_batch_text():
    job = SimpleNamespace(status="running", phase="Denoising", step=3, total=10, queue_position=-1, eta=75.0)
    assert storyboard.progress_text(job) == "Denoising · 3/10 · ETA 1 min 15 s"
    queued = SimpleNamespace(status="queued", phase="", step=0, total=0, queue_position=1, eta=-1.0)
    assert storyboard.progress_text(queued) == "Queued · #2 in queue"
    assert storyboard.progress_text(SimpleNamespace(status="lost")) == "Lost"
    items = [SimpleNamespace(status=s, fraction=f) for s, f in
             (("completed", 1.0), ("lost", 0.0), ("cancelled", 0.2), ("running", 0.5))]
    counts = storyboard.batch_counts(items)
    assert (counts["completed"], counts["failed"], counts["cancelled"], counts["active"]) == (1, 1, 1, 1)
    assert counts["fraction"] == pytest.approx(3.5 / 4)
    assert storyboard.batch_text(counts) == "Batch: 1/4 done, 1 failed, 1 cancelled"
    assert storyboard.format_eta(7300) == "2 h 01 min"
