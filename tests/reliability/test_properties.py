"""Property-based tests (hypothesis): settings validation, the frame-rule helpers, names and output paths.

Fast and offline: no server. ``database=None`` keeps hypothesis from writing into the repository.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_movie_director.backend.wan2gp import GenerationSettings, Wan2GPValidationError
from blender_movie_director.backend.wan2gp._client import _as_settings
from blender_movie_director.backend.wan2gp._enums import FrameRule
from blender_movie_director.backend.wan2gp._files import (
    OUTPUT_SUFFIXES,
    UnsafeOutputError,
    checked_url,
    gallery_files,
    output_name,
    safe_name,
)
from blender_movie_director.backend.wan2gp._form import ModelForm, check_settings

pytestmark = pytest.mark.timeout(120)
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frame_rules(draw: st.DrawFn) -> FrameRule:
    step = draw(st.integers(1, 16))
    minimum = draw(st.integers(1, 64))
    maximum = minimum + step * draw(st.integers(1, 200)) + draw(st.integers(0, step - 1))
    return FrameRule(fps=draw(st.integers(1, 60)), step=step, minimum=minimum, maximum=maximum)


# --- frame rules ---------------------------------------------------------------------------------------------


@FAST
@given(frame_rules(), st.integers(-10**6, 10**6))
def test_nearest_is_always_a_frame_count_the_model_takes(rule, frames):
    assert rule.is_valid(rule.nearest(frames))


@FAST
@given(frame_rules(), st.data())
def test_a_valid_frame_count_is_its_own_nearest(rule, data):
    k = data.draw(st.integers(0, (rule.maximum - rule.minimum) // rule.step))
    frames = rule.minimum + k * rule.step
    assert rule.is_valid(frames) and rule.nearest(frames) == frames


@FAST
@given(frame_rules(), st.integers(-1000, 5000), st.integers(0, 5000))
def test_nearest_is_monotonic_and_close(rule, frames, more):
    assert rule.nearest(frames) <= rule.nearest(frames + more)
    last = rule.maximum - (rule.maximum - rule.minimum) % rule.step
    if rule.minimum <= frames <= last:
        assert abs(rule.nearest(frames) - frames) <= rule.step / 2


@FAST
@given(frame_rules(), st.floats(min_value=0.01, max_value=600, allow_nan=False))
def test_seconds_become_a_frame_count_the_model_takes(rule, seconds):
    frames = rule.frames_for_seconds(seconds)
    assert rule.is_valid(frames)


@FAST
@given(frame_rules(), st.integers(1, 10_000))
def test_the_model_check_refuses_exactly_the_invalid_counts_and_suggests_valid_ones(rule, frames):
    form = ModelForm("t2v_1.3B", values={}, rule=rule, resolutions=["832x480"])
    request = GenerationSettings(prompt="x", frames=frames)
    if rule.is_valid(frames):
        check_settings(request, form, ["prompt", "video_length"], "12.60")
        return
    with pytest.raises(Wan2GPValidationError) as caught:
        check_settings(request, form, ["prompt", "video_length"], "12.60")
    assert caught.value.field == "video_length"
    suggested = [int(n) for n in re.findall(r"use (\d+)(?: or (\d+))?$", str(caught.value))[0] if n]
    assert suggested and all(rule.is_valid(n) for n in suggested), (str(caught.value), rule)


# --- settings validation --------------------------------------------------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=30),
                    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
_KEYS = st.sampled_from(["prompt", "frames", "video_length", "seconds", "steps", "seed", "guidance", "flow_shift",
                         "resolution", "model", "negative", "repeat_generation", "loras", "client_id", "extra",
                         "sample_solver", "stepz", "", "image_start"])


@FAST
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_settings_are_accepted_consistently_or_refused_with_a_validation_error(data):
    try:
        result = _as_settings(data, {})
    except Wan2GPValidationError as exc:
        assert str(exc)  # a message, never a bare exception from pydantic or below
        return
    assert result.prompt.strip() and len(result.prompt) <= 20_000
    assert result.video_length is None or 1 <= result.video_length <= 10_000
    assert result.num_inference_steps is None or 1 <= result.num_inference_steps <= 1000
    assert -1 <= result.seed <= 2**32 - 1
    for value in (result.guidance_scale, result.flow_shift, result.seconds):
        assert value is None or math.isfinite(value)
    assert not (result.seconds is not None and result.video_length is not None)


@FAST
@given(prompt=st.text(min_size=1, max_size=80).filter(str.strip), frames=st.integers(1, 10_000),
       steps=st.integers(1, 1000), seed=st.integers(-1, 2**32 - 1),
       guidance=st.floats(0, 100, allow_nan=False))
def test_settings_round_trip_through_wangp_json(prompt, frames, steps, seed, guidance):
    original = GenerationSettings(prompt=prompt, frames=frames, steps=steps, seed=seed, guidance=guidance)
    again = GenerationSettings.from_wangp_json(original.to_wangp_json())
    assert again.model_dump(exclude={"extra"}) == original.model_dump(exclude={"extra"})


# --- names and paths ------------------------------------------------------------------------------------------


@FAST
@given(st.text(), st.integers(1, 100))
def test_safe_name_is_a_portable_word_and_idempotent(text, max_length):
    name = safe_name(text, max_length)
    assert re.fullmatch(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)*", name), name
    assert len(name) <= max_length
    assert safe_name(name, max_length) == name


@FAST
@given(st.text(), st.text(), st.integers(-1, 2**32), st.text(), st.text())
def test_output_names_stay_in_the_output_folder(prompt, model, seed, job_id, suffix):
    name = output_name(prompt, model, seed, job_id, suffix)
    folder = Path("/tmp/shots")
    assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
    assert Path(name).suffix in OUTPUT_SUFFIXES
    assert len(name.encode()) < 255  # a file name, on every file system
    assert (folder / name).resolve().parent == folder


_BASE = "http://127.0.0.1:7860/gradio_api/"


@FAST
@given(st.text(max_size=200))
def test_a_gallery_path_is_fetched_from_the_server_itself_or_refused(path):
    gallery = [{"video": {"path": path, "url": None, "orig_name": path}, "caption": None}]
    parts = re.split(r"[/\\]", path)
    try:
        files = gallery_files(gallery, _BASE)
    except UnsafeOutputError:
        return
    assert ".." not in parts
    for remote in files:
        assert remote.url.startswith("http://127.0.0.1:7860/")


_HOSTS = st.sampled_from(["127.0.0.1:7860", "127.0.0.1:7861", "localhost:7860", "203.0.113.9", "[::1]:7860",
                          "127.0.0.1:7860@203.0.113.9", "evil.example:7860"])


@FAST
@given(st.sampled_from(["http", "https", "file", "ftp", ""]), _HOSTS, st.text(max_size=60))
def test_an_output_url_is_on_the_server_or_refused(scheme, host, path):
    url = f"{scheme}://{host}/{path}" if scheme else f"/{path}"
    try:
        absolute = checked_url(url, _BASE)
    except UnsafeOutputError:
        return
    parts = urlsplit(absolute)
    assert (parts.scheme, parts.hostname, parts.port) == ("http", "127.0.0.1", 7860)
    assert ".." not in re.split(r"[/\\]", unquote(unquote(parts.path)))
