"""Generate All: a shot per selected text strip or timeline marker, and Cancel All for the run."""

from __future__ import annotations

import pytest
from quiet import worker_ended

from blender_movie_director import storyboard
from blender_movie_director.ui import vse

from .conftest import bpy, connect, draw_panels, pump_until


def _text(scene, name, text, channel, start, length, select=True):
    strips = vse.top_strips(scene)
    params = strips.bl_rna.functions["new_effect"].parameters.keys()
    span = {"length": length} if "length" in params else {"frame_end": start + length}
    strip = strips.new_effect(name=name, type="TEXT", channel=channel, frame_start=start, **span)
    strip.text = text
    strip.select = select
    return strip


def _jobs(scene):
    return list(scene.movie_director.jobs)


def _all_finished(scene):
    return lambda: all(i.status in storyboard.FINISHED for i in scene.movie_director.jobs)


def test_generate_all_from_text_strips_fills_each_strips_place(blend):
    connect(blend)
    scene = blend.scene
    _text(scene, "first", "a lighthouse at dusk", channel=1, start=1, length=17)
    _text(scene, "second", "  waves against the rocks  ", channel=1, start=40, length=33)
    _text(scene, "empty", "   ", channel=4, start=100, length=17)
    _text(scene, "unselected", "not this one", channel=1, start=200, length=17, select=False)
    blend.shot.prompt = "the panel's prompt is not used"

    assert bpy.ops.movie_director.generate_all() == {"FINISHED"}
    jobs = _jobs(scene)
    assert [storyboard.loads(j.request)["prompt"] for j in jobs] == ["a lighthouse at dusk", "waves against the rocks"]
    assert [(j.channel, j.frame_start, j.expected_length) for j in jobs] == [(2, 1, 17), (2, 40, 33)]
    assert len({j.batch for j in jobs}) == 1 and jobs[0].batch and {j.kind for j in jobs} == {"batch"}
    # The panel's other settings are shared: model, steps, resolution.
    request = storyboard.loads(jobs[0].request)
    assert (request["model"], request["num_inference_steps"], request["resolution"]) == ("t2v_1.3B", 2, "832x480")

    pump_until(_all_finished(scene), timeout=90)
    for job, start, frames in zip(_jobs(scene), (1, 40), (17, 33), strict=True):
        assert job.status == "completed", job.error
        strip = vse.find_strip(scene, job.strip_name)
        assert (strip.channel, vse.strip_start(strip), vse.strip_duration(strip)) == (2, start, frames)
        assert vse.get_shot_metadata(strip)["settings"]["prompt"] == storyboard.loads(job.request)["prompt"]
    shown = [text for kind, text in draw_panels(scene) if kind == "progress"]
    assert "Batch: 2/2 done" in shown


def test_back_to_back_text_strips_at_24_fps_give_one_clean_row_fitted_to_the_frame(blend):
    """WanGP makes 4n+1 frames at 16 fps: a 25-frame place at 24 fps gets 17 frames (25.5 scene frames). Each shot
    must fill its text strip exactly, so the next one stays on the same channel, and fill the frame as
    Blender's own Add Movie does (an 832x480 clip in a 1920x1080 scene: scale 2.25)."""
    scene = blend.scene
    scene.render.fps, scene.render.resolution_x, scene.render.resolution_y = 24, 1920, 1080
    connect(blend)
    lengths = [25, 49, 25, 37]
    starts = [1 + sum(lengths[:i]) for i in range(len(lengths))]
    for i, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        _text(scene, f"beat {i}", f"storyboard beat {i}", channel=1, start=start, length=length)
    assert bpy.ops.movie_director.generate_all() == {"FINISHED"}
    pump_until(_all_finished(scene), timeout=120)
    jobs = _jobs(scene)
    assert [j.status for j in jobs] == ["completed"] * 4, [j.error for j in jobs]
    strips = [vse.find_strip(scene, j.strip_name) for j in jobs]
    assert [vse.strip_span(s) for s in strips] == [(a, a + n) for a, n in zip(starts, lengths, strict=True)]
    assert {s.channel for s in strips} == {2}  # one row, nothing pushed onto another channel
    assert all(abs(s.transform.scale_x - 2.25) < 1e-3 and abs(s.transform.scale_y - 2.25) < 1e-3 for s in strips)
    speeds = [s for s in vse.all_strips(scene) if s.type == "SPEED"]
    assert len(speeds) == 4 and {s.channel for s in speeds} == {3}  # the retiming stays on the row above
    assert all("to fill its place" in j.message for j in jobs)


def test_generate_all_from_markers_lasts_until_the_next_marker(blend):
    connect(blend)
    scene = blend.scene
    first = scene.timeline_markers.new("a fox in the snow", frame=10)
    skipped = scene.timeline_markers.new("not selected: only ends the second shot", frame=60)
    second = scene.timeline_markers.new("a fox asleep", frame=43)
    last = scene.timeline_markers.new("the sun comes up", frame=80)
    skipped.select = False
    assert first.select and second.select and last.select

    assert bpy.ops.movie_director.generate_all() == {"FINISHED"}
    jobs = _jobs(scene)
    assert [storyboard.loads(j.request)["prompt"] for j in jobs] == ["a fox in the snow", "a fox asleep",
                                                                  "the sun comes up"]
    # 10 -> 43 is 33 frames: 2 s at 16 fps; 43 -> 60 is 17 frames: 1 s; the last has the panel's 1 s.
    assert [j.frame_start for j in jobs] == [10, 43, 80]
    assert [j.expected_length for j in jobs] == [33, 17, 17]
    assert [j.channel for j in jobs] == [2, 2, 2]
    pump_until(_all_finished(scene), timeout=90)
    assert [j.status for j in _jobs(scene)] == ["completed"] * 3, [j.error for j in _jobs(scene)]


def test_a_text_strip_longer_than_the_model_makes_is_said_and_its_shot_fills_what_it_can(blend, capfd):
    connect(blend)
    scene = blend.scene
    _text(scene, "long", "a whole day in one shot", channel=1, start=1, length=400)  # 25 s at 16 fps
    bpy.ops.movie_director.generate_all()
    job = _jobs(scene)[0]
    assert job.expected_length == 337  # Wan 2.1's longest clip, 4n+1 frames
    assert "shorter than its place: t2v_1.3B makes at most 337 frames (21.0 s)" in capfd.readouterr().out
    bpy.ops.movie_director.cancel_batch(batch=job.batch)
    pump_until(_all_finished(scene), timeout=60)
    assert _jobs(scene)[0].status == "cancelled"


def test_generate_all_says_what_to_select_and_queues_nothing(blend):
    connect(blend)
    with pytest.raises(RuntimeError, match="select text strips .* or timeline markers"):
        bpy.ops.movie_director.generate_all()
    _text(blend.scene, "blank", "", channel=1, start=1, length=17)
    with pytest.raises(RuntimeError, match=r"skipped blank \(no text\)"):
        bpy.ops.movie_director.generate_all()
    assert len(blend.scene.movie_director.jobs) == 0


def test_cancel_all_stops_every_unfinished_shot_of_the_run_on_the_server(blend):
    connect(blend)
    scene = blend.scene
    blend.shot.steps = 40  # 20 s each at the emulator's slow pace: they must be stopped, not finish
    blend.shot.background = False  # inside Blender, with step progress (the runner's: test_background.py)
    before = len(blend.server.events())
    for index in range(3):
        _text(scene, f"slow {index}", f"slow shot {index} [[slow]]", channel=1, start=1 + 40 * index, length=17)
    bpy.ops.movie_director.generate_all()
    jobs = _jobs(scene)
    pump_until(lambda: any(j.status == "running" and j.step >= 1 for j in jobs), timeout=30)
    scene.movie_director.job_index = 0
    assert ("operator", "movie_director.cancel_batch") in draw_panels(scene)

    assert bpy.ops.movie_director.cancel_batch(batch=jobs[0].batch) == {"FINISHED"}
    pump_until(_all_finished(scene), timeout=60)
    assert [j.status for j in _jobs(scene)] == ["cancelled"] * 3
    ran = {e["session"]: e["t"] for e in blend.server.events()[before:] if e["event"] in ("started", "aborted")}
    pump_until(lambda: all(worker_ended(blend.server, s, t) for s, t in ran.items()))  # their runs are over
    events = blend.server.events()[before:]
    assert [e for e in events if e["event"] == "aborted"], "WanGP's abort was not called"
    assert not [e for e in events if e["event"] == "completed"]
    busy = [s for s, state in blend.server.sessions().items() if state.get("queue")]
    assert busy == [], busy
    assert vse.all_strips(scene) and not [s for s in vse.all_strips(scene) if s.type == "MOVIE"]
