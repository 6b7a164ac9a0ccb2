"""From Frame without freezing Blender: a shot's own frame at once, a render engine's picture in another process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from blender_movie_director import storyboard
from blender_movie_director.ui import pump, vse

from .conftest import before_render, bpy, connect, pump_until, wait_done


def _frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video (RGB), decoded by PyAV: not by Blender, whose picture is under test."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def _png(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_from_frame_on_a_generated_shot_is_that_shots_frame_at_the_playhead_at_once(blend):
    """In a 1920x1080 scene, the 832x480 shot is fitted (scale 2.25) to the film. From Frame at frame 21 takes
    the shot's own 21st frame (index 20), at its own size: no black frame, no render engine (Eevee is set), and
    the operator is back at once."""
    scene = blend.scene
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.render.engine = "BLENDER_EEVEE"  # 55 s or more for a still on these machines: must not be used
    connect(blend)
    blend.shot.seconds = 2.0  # 33 frames
    scene.frame_current = 1
    assert bpy.ops.movie_director.generate() == {"FINISHED"}
    shot = wait_done(scene)
    assert shot.status == "completed", shot.error
    strip = vse.find_strip(scene, shot.strip_name)
    assert abs(strip.transform.scale_x - 2.25) < 1e-3  # fitted to the film like Add Movie
    frames = _frames(shot.video_path)
    assert len(frames) == 33

    blend.shot.model, blend.shot.prompt = "i2v", "the fox turns its head"
    before_render(blend)  # the new model's rules are read first (see there)
    scene.frame_current = 21
    started = time.perf_counter()
    assert bpy.ops.movie_director.generate_from_frame() == {"FINISHED"}
    seconds = time.perf_counter() - started
    print(f"From Frame on a generated shot: back to the event loop in {seconds * 1000:.0f} ms")
    assert seconds < 1.0, seconds  # measured 0.1-0.2 s: one sequencer frame and a PNG, no render engine
    job = scene.movie_director.jobs[-1]
    start = Path(storyboard.loads(job.request)["image_start"])
    assert start.is_file()  # written before the operator returned
    picture = _png(start)
    assert picture.shape == (480, 832, 3)  # the shot's own size: not 1920x1080 with black bars
    # Tolerance: Blender (its ffmpeg, its colour management at Standard) and PyAV decode the same H.264 frame;
    # their YUV-to-RGB conversions differ by a level or two. The emulator's frames differ from one to the next
    # by a moving bar and a frame counter: the picture must be nearest to frame index 20, not a neighbour.
    near = {index: _difference(picture, frames[index]) for index in (18, 19, 20, 21, 22)}
    assert near[20] < 4.0, near
    assert min(near, key=near.get) == 20, near
    assert abs(picture.mean() - frames[20].mean()) < 3.0  # not a picture in a black frame (mean 19-24 before)

    made = wait_done(scene)
    assert made.status == "completed", made.error
    first = _frames(made.video_path)[0]
    assert first.shape == (480, 832, 3) and _difference(first, frames[20]) < 6.0  # the next shot starts there


def test_from_frame_over_text_on_a_shot_takes_the_sequencers_picture_at_once(blend):
    """A text strip over a colour: the sequencer's own picture (every strip), at the scene's size."""
    scene = blend.scene
    scene.render.engine = "CYCLES"
    scene.view_settings.view_transform = "AgX"  # put to Standard for the picture: a clip's colours are kept
    strips = vse.top_strips(scene)
    vse.new_effect(strips, "blue", "COLOR", 1, 1, 40).color = (0.0, 0.0, 1.0)
    title = vse.new_effect(strips, "title", "TEXT", 2, 1, 40)
    title.text = "TITLE"
    assert vse.frame_picture(scene, 10).kind == "sequencer"
    blend.shot.model = "i2v"
    before_render(blend)  # the new model's rules are read first (see there)
    scene.frame_current = 10
    started = time.perf_counter()
    assert bpy.ops.movie_director.generate_from_frame() == {"FINISHED"}
    assert time.perf_counter() - started < 1.0
    picture = _png(storyboard.loads(scene.movie_director.jobs[-1].request)["image_start"])
    assert picture.shape == (192, 320, 3)
    assert picture[..., 2].mean() > 200 and picture[..., 0].mean() < 60  # blue, with the white title on it
    assert (picture.min(axis=2) > 200).any()
    assert scene.view_settings.view_transform == "AgX"
    assert wait_done(scene).status == "completed"

    # Nothing at the playhead: said, and nothing is queued.
    scene.frame_current = 100
    count = len(scene.movie_director.jobs)
    try:
        bpy.ops.movie_director.generate_from_frame()
    except RuntimeError as exc:
        assert "no strip shows anything there" in str(exc)
    else:
        raise AssertionError("From Frame on an empty frame was accepted")
    assert len(scene.movie_director.jobs) == count


def _red_cube_scene(scene):
    """A camera looking at a cube, drawn flat red by Workbench (a 3D scene: no strips)."""
    mesh = bpy.data.meshes.new("cube")
    import bmesh

    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)
    bm.to_mesh(mesh)
    bm.free()
    cube = bpy.data.objects.new("cube", mesh)
    scene.collection.objects.link(cube)
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    camera.location = (0.0, -6.0, 0.0)
    camera.rotation_euler = (1.5708, 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light, shading.color_type, shading.single_color = "FLAT", "SINGLE", (1.0, 0.0, 0.0)
    scene.view_settings.view_transform = "Standard"


def test_from_frame_of_a_3d_scene_renders_in_another_process_with_progress_and_can_be_cancelled(blend):
    scene = blend.scene
    _red_cube_scene(scene)
    scene.frame_current = 3
    assert vse.frame_picture(scene, 3).kind == "engine"
    blend.shot.model = "i2v"
    before = len(blend.server.events())

    # Cancelled while it renders: the render process is stopped, nothing reaches the server.
    assert bpy.ops.movie_director.generate_from_frame() == {"FINISHED"}
    job = scene.movie_director.jobs[-1]
    st = pump.state()
    pump_until(lambda: job.key in st.renders, timeout=10)
    process = st.renders[job.key]
    assert bpy.ops.movie_director.cancel_job(key=job.key) == {"FINISHED"}
    pump_until(lambda: job.status in storyboard.FINISHED, timeout=20)
    assert job.status == "cancelled", job.error
    assert process.poll() is not None
    assert not [e for e in blend.server.events()[before:] if e["client_id"] == storyboard.client_id(job.key)]

    # Rendered: the operator is back at once, the job shows the render's phases, then the shot is made.
    started = time.perf_counter()
    assert bpy.ops.movie_director.generate_from_frame() == {"FINISHED"}
    returned = time.perf_counter() - started
    job = scene.movie_director.jobs[-1]
    assert job.status == "submitting" and job.phase.startswith("Rendering the start image")
    phases, ticks = set(), []
    rendered_at = None

    def watch() -> bool:
        nonlocal rendered_at
        phases.add(job.phase.split(" (")[0])
        if rendered_at is None and job.status not in ("submitting",):
            rendered_at = time.perf_counter()
        return job.status in storyboard.FINISHED

    deadline = time.monotonic() + 120
    while not watch() and time.monotonic() < deadline:
        tick = time.perf_counter()
        pump.tick()
        ticks.append(time.perf_counter() - tick)
        time.sleep(0.02)
    assert job.status == "completed", (job.status, job.error)
    print(f"From Frame of a 3D scene (Workbench): back in {returned * 1000:.0f} ms; rendered and sent after "
          f"{(rendered_at or 0) - started:.1f} s; longest timer tick {max(ticks) * 1000:.1f} ms; phases {phases}")
    assert returned < 1.0, returned  # the copy of the file is saved; the render is another process's
    assert max(ticks) < 0.25  # Blender's timer stays quick while the other process renders
    assert "Rendering the start image" in phases
    picture = _png(storyboard.loads(job.request)["image_start"])
    assert picture.shape == (192, 320, 3)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 60) & (picture[..., 2] < 60)
    assert 0.05 < red.mean() < 0.95  # the cube, drawn by the render engine, on the world's background
    assert not list((blend.out / "inputs" / ".render").glob("*.blend"))  # the copy it rendered from is gone
