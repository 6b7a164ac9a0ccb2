"""Generating shots from the operators, in background mode, against the emulator; the timer is pumped."""

from __future__ import annotations

from pathlib import Path

import pytest

from blender_movie_director import storyboard
from blender_movie_director.ui import vse

from .conftest import before_render, bpy, close_to, connect, prefs, select, video_frames, wait_done, write_clip


def _strip(scene, item):
    strip = vse.find_strip(scene, item.strip_name)
    assert strip is not None, (item.strip_name, item.status, item.error)  # what became of the job
    return strip


def test_generate_places_the_shot_at_the_chosen_frame_and_channel(blend):
    connect(blend)
    blend.scene.frame_current = 10
    assert bpy.ops.movie_director.generate() == {"FINISHED"}
    item = blend.scene.movie_director.jobs[-1]
    assert (item.channel, item.frame_start, item.expected_length) == (2, 10, 17)  # decided at submit
    item = wait_done(blend.scene)
    assert item.status == "completed", item.error
    strip = _strip(blend.scene, item)
    assert strip.type == "MOVIE" and strip.channel == 2 and vse.strip_start(strip) == 10
    assert vse.strip_duration(strip) == 17  # 1 s at 16 fps, 4n+1 frames
    path = Path(bpy.path.abspath(strip.filepath))
    assert path.parent == blend.out and path.is_file()  # written to the output folder before the strip existed
    assert not list(blend.out.glob(".*part*"))  # no half file
    meta = vse.get_shot_metadata(strip)
    assert meta["settings"]["prompt"] == "a red fox running through snow"
    assert meta["settings"]["num_inference_steps"] == 2 and meta["settings"]["model_type"] == "t2v_1.3B"
    assert meta["seed"] == meta["settings"]["seed"] >= 0  # the seed actually used
    assert meta["wangp_version"] == blend.server.version and meta["fps"] == 16 and meta["frames"] == 17
    assert item.fraction == 1.0 and item.message == ""


def test_shots_of_two_output_folders_share_the_servers_client_and_each_lands_in_its_own(blend, tmp_path):
    from blender_movie_director.ui import pump

    connect(blend)
    bpy.ops.movie_director.generate()
    wait_done(blend.scene)
    prefs().output_folder = str(tmp_path / "second")
    blend.scene.frame_current = 100
    bpy.ops.movie_director.generate()
    wait_done(blend.scene)
    jobs = blend.scene.movie_director.jobs
    assert [j.status for j in jobs] == ["completed", "completed"], [j.error for j in jobs]
    folders = [Path(bpy.path.abspath(_strip(blend.scene, j).filepath)).parent for j in jobs]
    assert folders == [blend.out, tmp_path / "second"]
    assert len(pump.state().clients) == 1  # one per server: the folder is the job's, not the client's


def test_fps_mismatch_time_stretch_or_keep_frames_with_a_notice(blend):
    blend.scene.render.fps = 24
    connect(blend)
    blend.shot.fps_policy = "STRETCH"
    blend.scene.frame_current = 1
    bpy.ops.movie_director.generate()
    assert blend.scene.movie_director.jobs[-1].expected_length == 26  # 17 frames of 16 fps at 24 fps
    blend.shot.fps_policy = "KEEP"
    blend.scene.frame_current = 100
    bpy.ops.movie_director.generate()
    stretched = wait_done(blend.scene, 0)
    kept = wait_done(blend.scene, 1)

    assert stretched.status == kept.status == "completed"
    strip = _strip(blend.scene, stretched)
    assert vse.strip_duration(strip) == 26
    speed = [s for s in vse.all_strips(blend.scene) if s.type == "SPEED"]
    assert len(speed) == 1 and speed[0].input_1 == strip and speed[0].speed_control == "STRETCH"
    assert speed[0].channel == strip.channel + 1
    assert "time-stretched" in stretched.message and "16 fps" in stretched.message
    assert vse.strip_duration(_strip(blend.scene, kept)) == 17
    assert "kept its 17 frames" in kept.message and "1.50x" in kept.message


def test_a_slot_taken_since_submit_goes_to_the_nearest_free_channel(blend):
    blend.scene.frame_current = 1
    bpy.ops.movie_director.generate()
    item = blend.scene.movie_director.jobs[-1]
    assert item.channel == 2
    blocker = vse.top_strips(blend.scene).new_effect(name="blocker", type="COLOR", channel=2, frame_start=1,
                                                     **_effect_length(blend.scene, 1, 100))
    assert blocker.channel == 2
    item = wait_done(blend.scene)
    assert item.status == "completed", item.error
    strip = _strip(blend.scene, item)
    assert strip.channel in (1, 3) and vse.strip_start(strip) == 1
    assert "channel 2 was taken" in item.message

    # Two shots queued at the same frame don't pick the same channel.
    bpy.ops.movie_director.generate()
    bpy.ops.movie_director.generate()
    first, second = blend.scene.movie_director.jobs[-2:]
    assert first.channel != second.channel
    wait_done(blend.scene, -2)
    wait_done(blend.scene, -1)


def _effect_length(scene, start, end):
    params = vse.top_strips(scene).bl_rna.functions["new_effect"].parameters.keys()
    return {"length": end - start} if "length" in params else {"frame_end": end}


def test_image_to_video_from_a_rendered_frame(blend):
    # The scene's picture at frame 5 is a red color strip: From Frame renders it as the start image.
    red = vse.top_strips(blend.scene).new_effect(name="red", type="COLOR", channel=1, frame_start=1,
                                                 **_effect_length(blend.scene, 1, 50))
    red.color = (1.0, 0.0, 0.0)
    blend.scene.view_settings.view_transform = "Standard"
    blend.scene.frame_current = 5
    blend.shot.model = "i2v"
    before_render(blend)  # the new model's rules are read first (see there)
    assert bpy.ops.movie_director.generate_from_frame() == {"FINISHED"}
    item = wait_done(blend.scene)
    assert item.status == "completed", item.error
    assert item.kind == "from_frame" and item.frame_start == 5
    meta = vse.get_shot_metadata(_strip(blend.scene, item))
    start_image = Path(meta["settings"]["image_start"])
    assert start_image.is_file() and start_image.parent == blend.out / "inputs"
    _, _, first, _ = video_frames(item.video_path)
    assert close_to(first.reshape(-1, 3).mean(axis=0), (255, 0, 0), tolerance=40)

    # A selected image strip is used as it is.
    image = bpy.data.images.new("green", 320, 192)
    image.pixels[:] = [0.0, 1.0, 0.0, 1.0] * (320 * 192)
    image.filepath_raw = str(blend.tmp / "green.png")
    image.file_format = "PNG"
    image.save()
    strip = vse.top_strips(blend.scene).new_image(name="green", filepath=str(blend.tmp / "green.png"),
                                                  channel=5, frame_start=60)
    select(blend.scene, strip)
    blend.scene.frame_current = 60
    bpy.ops.movie_director.generate_from_frame()
    item = wait_done(blend.scene)
    assert item.status == "completed", item.error
    assert convert_request(item)["image_start"] == str(blend.tmp / "green.png")
    _, _, first, _ = video_frames(item.video_path)
    assert close_to(first.reshape(-1, 3).mean(axis=0), (0, 255, 0), tolerance=40)


def convert_request(item):
    return storyboard.loads(item.request)


def test_extend_starts_from_the_last_frame_and_goes_right_after(blend):
    clip = write_clip(blend.tmp / "source.mp4", [(200, 200, 200)] * 8 + [(0, 0, 255)])  # ends blue
    source = vse.top_strips(blend.scene).new_movie(name="source", filepath=str(clip), channel=3, frame_start=20)
    select(blend.scene, source)
    blend.shot.model = "i2v"
    before_render(blend)  # the new model's rules are read first (see there)
    blend.shot.prompt = ""  # nothing typed and no stored prompt: refused with a message
    with pytest.raises(RuntimeError, match="The prompt is empty"):  # operators' errors are reported
        bpy.ops.movie_director.extend()
    blend.shot.prompt = "the blue light grows"
    assert bpy.ops.movie_director.extend() == {"FINISHED"}
    item = wait_done(blend.scene)
    assert item.status == "completed", item.error
    strip = _strip(blend.scene, item)
    assert (strip.channel, vse.strip_start(strip)) == (3, vse.strip_end(source))  # right after it
    _, _, first, _ = video_frames(item.video_path)
    assert close_to(first.reshape(-1, 3).mean(axis=0), (0, 0, 255), tolerance=40)

    # Extend needs a movie strip.
    vse.select_only(blend.scene, vse.top_strips(blend.scene).new_effect(
        name="c", type="COLOR", channel=9, frame_start=1, **_effect_length(blend.scene, 1, 5)))
    assert not bpy.ops.movie_director.extend.poll()


def test_regenerate_and_variation_from_strip_metadata(blend):
    blend.scene.frame_current = 30
    bpy.ops.movie_director.generate()
    original = wait_done(blend.scene)
    strip = _strip(blend.scene, original)
    meta = vse.get_shot_metadata(strip)
    select(blend.scene, strip)

    assert bpy.ops.movie_director.regenerate(variation=False) == {"FINISHED"}
    again = wait_done(blend.scene)
    assert again.status == "completed", again.error and again.kind == "regenerate"
    same = vse.get_shot_metadata(_strip(blend.scene, again))
    assert same["seed"] == meta["seed"]
    assert {k: v for k, v in same["settings"].items() if k != "client_id"} == \
        {k: v for k, v in meta["settings"].items() if k != "client_id"}
    assert vse.strip_start(_strip(blend.scene, again)) == 30 and _strip(blend.scene, again).channel == 3

    select(blend.scene, strip)
    assert bpy.ops.movie_director.regenerate(variation=True) == {"FINISHED"}
    variation = wait_done(blend.scene)
    assert variation.status == "completed", variation.error
    other = vse.get_shot_metadata(_strip(blend.scene, variation))
    assert other["seed"] != meta["seed"] and other["settings"]["prompt"] == meta["settings"]["prompt"]

    # The panel can take the settings back from a strip.
    blend.shot.prompt = "something else"
    select(blend.scene, strip)
    bpy.ops.movie_director.load_strip_settings()
    assert blend.shot.prompt == meta["settings"]["prompt"] and blend.shot.seed == meta["seed"]



def test_generate_against_wangp_6(blend, emulator_v6):
    from .conftest import prefs

    prefs().servers[0].url = emulator_v6.url.rstrip("/")
    bpy.ops.movie_director.generate()
    item = wait_done(blend.scene)
    assert item.status == "completed", item.error
    meta = vse.get_shot_metadata(vse.find_strip(blend.scene, item.strip_name))
    assert meta["wangp_version"] == emulator_v6.version and meta["frames"] == 17
