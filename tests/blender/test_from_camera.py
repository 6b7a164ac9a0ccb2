"""From Camera: the 3D scene's camera move as a control video (real bpy), generated on the emulator (VACE).

The renders without a server come first. With bpy 5.0.1 and the emulator in this process, a render started
while threads of an earlier test were still at work crashed the process (a segmentation fault in a Python
thread: the emulator's /config, a worker's json.loads); not understood yet, see docs/blender.md. The emulator
now runs in its own process (tests/blender/conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

from blender_movie_director.ui import layout, vse

from .conftest import bpy, connect, select, wait_done

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from follow import follow_score  # noqa: E402


def dolly_scene(name: str = "Layout", *, direction: int = 1, camera: bool = True, fps: int = 16) -> bpy.types.Scene:
    """A 2 m cube at the origin and a camera 10 m in front of it, trucking 3 m sideways over 17 frames
    (left to right, or back with ``direction=-1``)."""
    import bmesh

    scene = bpy.data.scenes.new(name)
    scene.render.fps, scene.render.fps_base = fps, 1.0
    scene.frame_start, scene.frame_end = 1, 17
    mesh = bpy.data.meshes.new(f"{name} cube")
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)
    bm.to_mesh(mesh)
    bm.free()
    scene.collection.objects.link(bpy.data.objects.new(f"{name} Cube", mesh))
    if camera:
        cam = bpy.data.objects.new(f"{name} Camera", bpy.data.cameras.new(f"{name} Camera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
        cam.rotation_euler = (np.pi / 2, 0.0, 0.0)  # looking along +Y, at the cube
        for frame, x in ((1, -1.5 * direction), (17, 1.5 * direction)):
            cam.location = (x, -10.0, 0.0)
            cam.keyframe_insert("location", frame=frame)
    return scene


def _grey(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(video=0)]


def test_a_dolly_past_a_cube_renders_to_a_depth_video(addon, tmp_path):
    scene = dolly_scene()
    request = layout.ControlRequest(kind="depth", scene=scene.name, camera="", frame_start=1, frames=17,
                                    width=832, height=480, fps=16)
    scenes_before = set(bpy.data.scenes.keys())
    path = layout.render_now(request, str(tmp_path / "depth.mp4"))
    assert set(bpy.data.scenes.keys()) == scenes_before  # our scenes are gone
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, float(stream.average_rate)) == (832, 480, 16.0)
    frames = _grey(Path(path))
    assert len(frames) == 17
    first, last = frames[0], frames[-1]
    assert first[240].max() > 200 and first[20, 20] < 10  # the cube's near face is white, the background black
    columns = [np.nonzero(f[240] > 100)[0].mean() for f in (first, last)]
    assert columns[1] < columns[0] - 100  # the camera trucks right: the cube slides left in the picture


def test_a_mask_from_a_collection_is_white_where_its_objects_are(addon, tmp_path):
    scene = dolly_scene("Masked")
    hero = bpy.data.collections.new("Hero")
    scene.collection.children.link(hero)
    cube = bpy.data.objects["Masked Cube"]
    hero.objects.link(cube)
    scene.collection.objects.unlink(cube)
    wall = bpy.data.objects.new("Wall", bpy.data.objects["Masked Cube"].data)  # another cube, not in Hero
    wall.location = (0.0, 6.0, 0.0)
    wall.scale = (6.0, 0.1, 3.0)
    scene.collection.objects.link(wall)
    common = {"scene": scene.name, "camera": "", "frame_start": 1, "frames": 5, "width": 208, "height": 120,
              "fps": 16}
    mask = _grey(Path(layout.render_now(layout.ControlRequest(kind="mask", mask_collection="Hero", **common),
                                        str(tmp_path / "mask.mp4"))))
    depth = _grey(Path(layout.render_now(layout.ControlRequest(kind="depth", **common),
                                         str(tmp_path / "depth.mp4"))))
    assert len(mask) == 5
    for m, d in zip(mask, depth, strict=True):
        assert set(np.unique(m > 127)) == {False, True}
        assert (d[m > 127] > 127).mean() > 0.95  # white on the cube (the nearest thing: bright in depth)
        assert (m > 127).mean() < 0.3  # the wall behind, nearly the whole picture, is not in the mask
    with pytest.raises(layout.ControlVideoError, match="no collection 'Nobody'"):
        layout.render_now(layout.ControlRequest(kind="mask", mask_collection="Nobody", **common),
                          str(tmp_path / "x.mp4"))


def test_a_control_video_of_the_wrong_length_is_refused(blend):
    """Through the add-on's own queue: the job fails with what to do, before anything is queued on WanGP."""
    from blender_movie_director.ui import operators

    # Rendered before connecting: with bpy 5.0.1 a render on the main thread while the add-on's workers were
    # reading the server's answers crashed the process once (a segmentation fault in a worker's json.loads).
    short = layout.render_now(layout.ControlRequest(kind="depth", scene=dolly_scene().name, camera="",
                                                    frame_start=1, frames=13, width=208, height=120, fps=16),
                              str(blend.tmp / "short.mp4"))
    blend.shot.model = "vace_1.3B"
    connect(blend)
    before = len(blend.server.events())
    request = {"prompt": "x", "model": "vace_1.3B", "video_length": 17, "video_guide": short,
               "control_mode": "UV"}
    operators.submit(bpy.context, blend.scene, kind="from_camera", request=request, channel=2, frame_start=1,
                     length=17)
    item = wait_done(blend.scene)
    assert item.status == "failed" and "has 13 frames but the shot has 17" in item.error, item.error
    assert not [e for e in blend.server.events()[before:] if e["event"] == "queued"]


def test_from_camera_makes_a_shot_that_follows_the_camera_move(blend):
    layout_scene = dolly_scene()
    blend.shot.model = "vace_1.3B"
    blend.shot.prompt = "a marble statue in a museum hall"
    connect(blend)
    strip = vse.top_strips(blend.scene).new_scene("Layout", layout_scene, 3, 20)
    vse.set_strip_duration(strip, 17)  # 1 s at 16 fps: 17 frames, 4n+1
    select(blend.scene, strip)
    assert bpy.ops.movie_director.generate_from_camera(kind="depth") == {"FINISHED"}
    item = wait_done(blend.scene, timeout=90)
    assert item.status == "completed", item.error
    shot = vse.find_strip(blend.scene, item.strip_name)
    assert vse.strip_start(shot) == 20 and shot.channel == 4  # over the scene strip
    meta = vse.get_shot_metadata(shot)
    settings = meta["settings"]
    assert settings["movie_director"]["control_mode"] == "UV" and settings["video_prompt_type"] == "UV"
    control = Path(settings["video_guide"])
    assert control.is_file() and meta["frames"] == 17
    other = layout.render_now(layout.ControlRequest(
        kind="depth", scene=dolly_scene("Other", direction=-1).name, camera="", frame_start=1, frames=17,
        width=832, height=480, fps=16), str(blend.tmp / "other.mp4"))
    video = Path(bpy.path.abspath(shot.filepath))
    own, against = follow_score(video, control), follow_score(video, Path(other))
    assert own > 0.8 and against < 0.2, (own, against)

    select(blend.scene, shot)  # Regenerate: the stored control video and mode are sent again
    assert bpy.ops.movie_director.regenerate(variation=True) == {"FINISHED"}
    again = wait_done(blend.scene, timeout=90)
    assert again.status == "completed", again.error
    assert follow_score(Path(bpy.path.abspath(vse.find_strip(blend.scene, again.strip_name).filepath)),
                        control) > 0.8


def test_from_camera_errors_are_clear_and_nothing_is_sent(blend):
    blend.shot.model = "t2v_1.3B"
    connect(blend)
    strip = vse.top_strips(blend.scene).new_scene("Layout", dolly_scene(), 3, 1)
    select(blend.scene, strip)
    before = len(blend.server.events())
    with pytest.raises(RuntimeError, match="t2v_1.3B takes no control video: choose a control-video model"):
        bpy.ops.movie_director.generate_from_camera()
    blend.shot.model = "vace_1.3B"
    connect(blend)
    blind = dolly_scene("Blind", camera=False)
    select(blend.scene, vse.top_strips(blend.scene).new_scene("Blind", blind, 5, 1))
    with pytest.raises(RuntimeError, match="has no camera to render the shot from"):
        bpy.ops.movie_director.generate_from_camera()
    assert not blend.scene.movie_director.jobs and len(blend.server.events()) == before
