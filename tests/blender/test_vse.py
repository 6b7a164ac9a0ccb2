"""The sequencer API of each Blender line, on the real bpy: the handles API of 5.1+ (no deprecated name used),
the sequencer scene of 5.0+, meta strips, and Speed effects, meta and scene strips as Extend sees them."""

from __future__ import annotations

import contextlib
import warnings

import pytest

from blender_movie_director.ui import vse

from .conftest import bpy, close_to, connect, select, video_frames, wait_done, write_clip


def _in_sequencer(scene):
    """Blender's own sequencer operators look at ``context.sequencer_scene`` in 5.0+ (none in background mode)."""
    if hasattr(bpy.context, "sequencer_scene"):
        return bpy.context.temp_override(sequencer_scene=scene)
    return contextlib.nullcontext()


def _first_colour(item):
    _, _, first, _ = video_frames(item.video_path)
    return first.reshape(-1, 3).mean(axis=0)


def test_a_shot_lands_where_asked_with_this_blenders_frame_api(blend):
    assert vse.HANDLES == (bpy.app.version >= (5, 1, 0))
    blend.scene.render.fps = 24  # a stretched shot: its duration is set, and a Speed effect made
    connect(blend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blend.scene.frame_current = 12
        blend.shot.channel = 4
        assert bpy.ops.movie_director.generate() == {"FINISHED"}
        item = wait_done(blend.scene)
        assert item.status == "completed", item.error
        strip = vse.find_strip(blend.scene, item.strip_name)
        select(blend.scene, strip)
        blend.shot.model = "i2v"
        assert bpy.ops.movie_director.extend() == {"FINISHED"}
        extended = wait_done(blend.scene)
    assert extended.status == "completed", extended.error
    assert (strip.channel, vse.strip_start(strip), vse.strip_duration(strip)) == (4, 12, 26)  # 17 frames at 24 fps
    after = vse.find_strip(blend.scene, extended.strip_name)
    assert (after.channel, vse.strip_start(after), vse.strip_duration(after)) == (4, 38, 26)
    old_names = [str(w.message) for w in caught if "Blender 6.0" in str(w.message)]
    assert old_names == []  # 5.1+: frame_final_* and the like warn that they go in 6.0


@pytest.mark.skipif(not hasattr(bpy.context, "sequencer_scene"), reason="Blender 5.0+: a sequencer scene per workspace")
def test_the_shot_goes_to_the_sequencer_scene_not_the_windows(blend):
    edit = bpy.data.scenes.new("Edit")
    edit.render.fps = 16
    shot = edit.movie_director
    shot.prompt, shot.model, shot.seconds, shot.steps, shot.channel = "the edit's shot", "t2v_1.3B", 1.0, 2, 3
    edit.frame_current = 7
    with bpy.context.temp_override(sequencer_scene=edit):
        assert bpy.context.scene != edit and bpy.context.sequencer_scene == edit
        assert bpy.ops.movie_director.generate() == {"FINISHED"}
    assert len(blend.scene.movie_director.jobs) == 0
    item = wait_done(edit)
    assert item.status == "completed", item.error
    strip = vse.find_strip(edit, item.strip_name)
    assert (strip.channel, vse.strip_start(strip)) == (3, 7) and vse.all_strips(blend.scene) == []


def test_a_meta_strip_open_for_editing_gets_the_shot(blend):
    scene = blend.scene
    meta = vse.top_strips(scene).new_meta(name="Act 1", channel=1, frame_start=1)
    vse.new_effect(vse.level_strips(scene, "Act 1"), "backdrop", "COLOR", 1, 1, 60)
    select(scene, meta)
    with _in_sequencer(scene):
        assert bpy.ops.sequencer.meta_toggle() == {"FINISHED"}  # into the meta strip, as Tab does
    assert vse.editing_meta(scene) == "Act 1"
    scene.frame_current = 5
    assert bpy.ops.movie_director.generate() == {"FINISHED"}
    item = scene.movie_director.jobs[-1]
    assert (item.meta, item.channel, item.frame_start) == ("Act 1", 2, 5)
    item = wait_done(scene)
    assert item.status == "completed", item.error
    strip = vse.find_strip(scene, item.strip_name)
    assert strip.parent_meta() == meta and (strip.channel, vse.strip_start(strip), vse.strip_duration(strip)) == \
        (2, 5, 17)


def test_extend_starts_from_what_the_timeline_shows(blend):
    scene = blend.scene
    scene.view_settings.view_transform = "AgX" if "AgX" in _transforms(scene) else "Filmic"  # put back after
    blend.shot.model, blend.shot.prompt = "i2v", "what comes next"
    # A movie that ends blue, held on its first (grey) frame by a Speed effect: the timeline shows grey.
    clip = write_clip(blend.tmp / "ends_blue.mp4", [(128, 128, 128)] * 8 + [(0, 0, 255)])
    movie = vse.top_strips(scene).new_movie(name="held", filepath=str(clip), channel=3, frame_start=20)
    speed = vse.new_effect(vse.top_strips(scene), "hold", "SPEED", 4, 20, vse.strip_duration(movie), movie)
    speed.speed_control = "FRAME_NUMBER"
    speed.speed_frame_number = 0
    select(scene, movie)
    assert bpy.ops.movie_director.extend() == {"FINISHED"}
    held = wait_done(scene)
    assert held.status == "completed", held.error
    assert close_to(_first_colour(held), (128, 128, 128), tolerance=40)

    # A meta strip holding a red color strip.
    meta = vse.top_strips(scene).new_meta(name="red meta", channel=8, frame_start=60)
    vse.new_effect(vse.level_strips(scene, "red meta"), "red", "COLOR", 1, 60, 10).color = (1.0, 0.0, 0.0)
    select(scene, meta)
    assert bpy.ops.movie_director.extend() == {"FINISHED"}
    red = wait_done(scene)
    assert red.status == "completed", red.error
    assert close_to(_first_colour(red), (255, 0, 0), tolerance=40)

    # A scene strip showing another scene's sequencer (a green color strip).
    other = bpy.data.scenes.new("Shot")
    other.render.resolution_x, other.render.resolution_y = 320, 192
    vse.new_effect(vse.top_strips(other), "green", "COLOR", 1, 1, 50).color = (0.0, 1.0, 0.0)
    strip = vse.top_strips(scene).new_scene(name="the other scene", scene=other, channel=10, frame_start=100)
    strip.scene_input = "SEQUENCER"
    vse.set_strip_duration(strip, 10)
    select(scene, strip)
    assert bpy.ops.movie_director.extend() == {"FINISHED"}
    green = wait_done(scene)
    assert green.status == "completed", green.error
    assert close_to(_first_colour(green), (0, 255, 0), tolerance=40)
    assert (vse.find_strip(scene, green.strip_name).channel, green.frame_start) == (10, 110)  # right after it
    assert not any(s.mute for s in vse.all_strips(scene))  # what the render muted is back
    assert scene.view_settings.view_transform in ("AgX", "Filmic")


def _transforms(scene):
    return scene.view_settings.bl_rna.properties["view_transform"].enum_items.keys()
