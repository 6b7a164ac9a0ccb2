"""Control videos from the 3D scene: a shot's frame range, seen from its camera, rendered by Blender.

Two kinds (:data:`KINDS`):

* ``depth``: true depth from the scene (the renderer's Z pass), mapped near = white, far = black, as the depth
  videos VACE was trained on look (WanGP's own depth extraction, Depth Anything, writes near bright): the
  model takes it unchanged ("Keep Control Video Unchanged"). Near and far are the nearest and farthest points
  of the visible objects' bounding boxes over the whole shot, so the grey levels mean the same distance in
  every frame (Depth Anything normalises each frame by itself). The world background is black.
* ``layout``: a plain solid render of the blocking, for WanGP's own depth, edge or pose extraction.

And a ``mask`` video: white where the objects of a collection (or of a view layer's collections) are, black
elsewhere (objects of other collections in front of them do not cut the mask).

Everything is rendered in scenes of our own, made for the render and removed after it (they link the
source scene's collections and camera, and change nothing of the source scene or its objects). Frames are
rendered one at a time by a generator (:func:`render_control_video`), so the operator renders one frame per
timer tick, shows progress and can be cancelled between frames; the frames are then encoded into an H.264
MP4 by Blender's own sequencer and FFmpeg. Shot frame ``i`` is the source scene at
``frame_start + i * scene_fps / model_fps`` (subframes included): the control video lasts as long, in
seconds, as the stretch of the scene it shows.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bpy
from mathutils import Vector

KINDS = ("depth", "layout", "mask")
# Renderers in the order they are tried when none is named: Workbench is the fastest and has a depth pass;
# Eevee's name changed in 4.2 (BLENDER_EEVEE_NEXT) and back in 5.0 (BLENDER_EEVEE).
ENGINES = ("BLENDER_WORKBENCH", "BLENDER_EEVEE_NEXT", "BLENDER_EEVEE", "CYCLES")
_FAR = 1.0e9  # beyond any clip_end: the Z pass of the background


class ControlVideoError(Exception):
    """A control video can't be rendered as asked; the message says what to change."""


@dataclass(frozen=True)
class ControlRequest:
    """What to render: a kind, the scene and camera, and the model's size, frame rate and frame count."""

    kind: str
    scene: str
    camera: str
    frame_start: int  # the source scene's frame the shot starts at
    frames: int  # the model's frame count (Wan: 4n+1)
    width: int
    height: int
    fps: float  # the model's frame rate
    engine: str = ""  # "" = the first of ENGINES this Blender has
    mask_collection: str = ""  # kind "mask": the collection whose objects are white
    mask_view_layer: str = ""  # kind "mask": or the collections a view layer of the scene includes


def _subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


def engines() -> list[str]:
    """The render engines of this Blender, among those :func:`render_control_video` uses."""
    # Workbench and Eevee are built in (the RNA enum lists only some engines); Cycles is an add-on's engine.
    eevee = "BLENDER_EEVEE_NEXT" if (4, 2) <= bpy.app.version < (5, 0) else "BLENDER_EEVEE"
    available = {"BLENDER_WORKBENCH", eevee}
    available |= {getattr(c, "bl_idname", "") for c in _subclasses(bpy.types.RenderEngine)}
    return [e for e in ENGINES if e in available]


def check(request: ControlRequest) -> tuple[Any, Any]:
    """``(scene, camera)`` of the request, or :class:`ControlVideoError` saying what is missing or wrong."""
    if request.kind not in KINDS:
        raise ControlVideoError(f"unknown control video kind {request.kind!r}: use one of {', '.join(KINDS)}")
    scene = bpy.data.scenes.get(request.scene)
    if scene is None:
        raise ControlVideoError(f"there is no scene {request.scene!r}")
    camera = bpy.data.objects.get(request.camera) if request.camera else scene.camera
    if camera is None or camera.type != "CAMERA":
        raise ControlVideoError(f"scene {scene.name!r} has no camera to render the shot from: add one (Add > "
                                "Camera) and make it the scene's camera, or choose one for the scene strip")
    if request.frames < 1 or request.width < 16 or request.height < 16 or request.fps <= 0:
        raise ControlVideoError(f"nothing to render: {request.frames} frames of {request.width}x{request.height} "
                                f"at {request.fps:g} fps")
    if request.width % 2 or request.height % 2:
        raise ControlVideoError(f"{request.width}x{request.height}: H.264 needs an even width and height")
    if request.engine and request.engine not in engines():
        raise ControlVideoError(f"this Blender has no {request.engine} renderer; use one of {', '.join(engines())}")
    if request.kind == "mask":
        if request.mask_collection and request.mask_collection not in bpy.data.collections:
            raise ControlVideoError(f"there is no collection {request.mask_collection!r} for the mask")
        if request.mask_view_layer and request.mask_view_layer not in scene.view_layers:
            raise ControlVideoError(f"scene {scene.name!r} has no view layer {request.mask_view_layer!r}")
        if not (request.mask_collection or request.mask_view_layer):
            raise ControlVideoError("a mask needs a collection or a view layer: what should be white")
    return scene, camera


def source_frames(scene: Any, request: ControlRequest) -> list[tuple[int, float]]:
    """``(frame, subframe)`` of the source scene for each shot frame."""
    scene_fps = scene.render.fps / scene.render.fps_base
    out = []
    for i in range(request.frames):
        t = request.frame_start + i * scene_fps / request.fps
        frame = math.floor(t + 1e-9)
        out.append((frame, max(0.0, t - frame)))
    return out


# --- the scenes we render in -------------------------------------------------------------------------------

def _visible_collections(scene: Any, view_layer: Any | None = None) -> list[Any]:
    """The source's top collections its view layer includes (the first one, unless named)."""
    layer = view_layer or scene.view_layers[0]
    if layer.layer_collection is None:  # 5.3: a scene made by a script has none until its layers are synced
        layer.update()
    if layer.layer_collection is None:
        return list(scene.collection.children)
    return [lc.collection for lc in layer.layer_collection.children if not lc.exclude]


def _stage_scene(source: Any, camera: Any, request: ControlRequest, name: str) -> Any:
    """A scene of ours that shows what ``request`` renders, from ``camera``, at the model's size."""
    stage = bpy.data.scenes.new(name)
    if request.kind == "mask":
        if request.mask_collection:
            collections = [bpy.data.collections[request.mask_collection]]
        else:
            collections = _visible_collections(source, source.view_layers[request.mask_view_layer])
        loose: list[Any] = []
    else:
        collections = _visible_collections(source)
        loose = list(source.collection.objects)
    for collection in collections:
        stage.collection.children.link(collection)
    for obj in loose:
        stage.collection.objects.link(obj)
    if camera.name not in stage.objects:
        stage.collection.objects.link(camera)
    stage.camera = camera
    stage.world = source.world if request.kind == "layout" else None
    render = stage.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = request.width, request.height, 100
    render.fps, render.fps_base = source.render.fps, source.render.fps_base
    render.engine = request.engine or engines()[0]
    render.use_compositing = request.kind != "layout"
    render.use_sequencer = False
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGB"
    if render.engine == "CYCLES":
        stage.cycles.device = "CPU"
        stage.cycles.samples = 1 if request.kind != "layout" else 8  # a depth pass needs one sample
    if render.engine == "BLENDER_WORKBENCH" and request.kind == "layout":
        stage.display.shading.light = "STUDIO"
        stage.display.shading.color_type = "MATERIAL"
    # Depth and mask values are written as they are: no view transform, no look.
    stage.view_settings.view_transform = "Raw" if request.kind != "layout" else "Standard"
    stage.view_settings.look = "None"
    stage.view_layers[0].use_pass_z = True
    return stage


def depth_range(stage: Any, camera: Any, frames: list[tuple[int, float]]) -> tuple[float, float]:
    """Nearest and farthest distance (along the view) of the visible objects' boxes over the shot's frames."""
    near, far = math.inf, 0.0
    data = camera.data
    for frame, subframe in frames:
        stage.frame_set(frame, subframe=subframe)
        depsgraph = stage.view_layers[0].depsgraph
        view = camera.evaluated_get(depsgraph).matrix_world.inverted()
        for obj in stage.objects:
            if obj.type not in ("MESH", "CURVE", "SURFACE", "META", "FONT") or obj.hide_render:
                continue
            evaluated = obj.evaluated_get(depsgraph)
            for corner in evaluated.bound_box:
                z = -(view @ (evaluated.matrix_world @ Vector(corner))).z
                near, far = min(near, z), max(far, z)
    near = max(near, data.clip_start)
    far = min(far, data.clip_end)
    if not math.isfinite(near) or far <= near:
        raise ControlVideoError("nothing in front of the camera to take the depth of: check the camera points at "
                                "the scene and its clip range")
    return near, far


def _compositor(stage: Any, low: float, high: float) -> None:
    """Z pass -> white at ``low`` .. black at ``high`` (clamped) -> the render's output."""
    if hasattr(stage, "compositing_node_group"):  # 5.0+: a compositor node group with a group output
        tree = bpy.data.node_groups.new(f"{stage.name} depth", "CompositorNodeTree")
        stage.compositing_node_group = tree
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        out = tree.nodes.new("NodeGroupOutput")
        remap = tree.nodes.new("ShaderNodeMapRange")
    else:  # 4.2 - 4.5: the scene's own node tree and a Composite node
        stage.use_nodes = True
        tree = stage.node_tree
        tree.nodes.clear()
        out = tree.nodes.new("CompositorNodeComposite")
        remap = tree.nodes.new("CompositorNodeMapRange")
        remap.use_clamp = True
    layers = tree.nodes.new("CompositorNodeRLayers")
    layers.scene = stage
    if hasattr(remap, "clamp"):
        remap.clamp = True
    values = [s for s in remap.inputs if s.type == "VALUE"]  # Value, From Min, From Max, To Min, To Max
    values[1].default_value, values[2].default_value = low, high
    values[3].default_value, values[4].default_value = 1.0, 0.0
    tree.links.new(layers.outputs["Depth"], values[0])
    tree.links.new(remap.outputs[0], out.inputs[0])


def _remove_scene(scene: Any) -> None:
    tree = getattr(scene, "compositing_node_group", None)
    bpy.data.scenes.remove(scene)
    if tree is not None and tree.users == 0:
        bpy.data.node_groups.remove(tree)


def _encode(frames_dir: str, count: int, request: ControlRequest, path: str) -> None:
    """The PNG frames as an H.264 MP4 at the model's frame rate, through a sequencer scene of ours."""
    enc = bpy.data.scenes.new("Movie Director encode")
    try:
        render = enc.render
        render.resolution_x, render.resolution_y, render.resolution_percentage = request.width, request.height, 100
        fps = round(request.fps)
        render.fps, render.fps_base = fps, fps / request.fps
        enc.frame_start, enc.frame_end = 1, count
        editor = enc.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences
        strip = strips.new_image("frames", os.path.join(frames_dir, "f0000.png"), 1, 1)
        for i in range(1, count):
            strip.elements.append(f"f{i:04d}.png")
        settings = render.image_settings
        if hasattr(settings, "media_type"):  # 5.0+
            settings.media_type = "VIDEO"
        settings.file_format = "FFMPEG"
        render.ffmpeg.format, render.ffmpeg.codec = "MPEG4", "H264"
        render.ffmpeg.constant_rate_factor = "PERC_LOSSLESS"  # grey levels kept to a level or two
        render.ffmpeg.audio_codec = "NONE"
        enc.view_settings.view_transform, enc.view_settings.look = "Standard", "None"  # PNG in, same values out
        render.use_sequencer = True
        tmp = path + ".part.mp4"
        render.filepath = tmp
        bpy.ops.render.render(animation=True, scene=enc.name)
        if not os.path.exists(tmp):
            raise ControlVideoError(f"Blender wrote no video at {tmp}: is FFmpeg output available in this build?")
        os.replace(tmp, path)
    finally:
        _remove_scene(enc)


def render_control_video(request: ControlRequest, path: str) -> Iterator[tuple[int, int]]:
    """Render the control video to ``path``, one frame per step: yields ``(frames done, total)``.

    Closing the generator (a cancel) stops between two frames; our scenes and frames are removed whatever
    happens, and ``path`` is only written, complete, by the last step. Raises :class:`ControlVideoError`.
    """
    source, camera = check(request)
    stage = _stage_scene(source, camera, request, f"Movie Director {request.kind}")
    frames_dir = tempfile.mkdtemp(prefix="md-control-")
    try:
        frames = source_frames(source, request)
        if request.kind == "depth":
            _compositor(stage, *depth_range(stage, camera, frames))
        elif request.kind == "mask":
            _compositor(stage, camera.data.clip_end, _FAR)  # anything rendered -> white, background -> black
        total = len(frames) + 1  # the encoding is the last step
        for i, (frame, subframe) in enumerate(frames):
            stage.frame_set(frame, subframe=subframe)
            stage.render.filepath = os.path.join(frames_dir, f"f{i:04d}.png")
            with bpy.context.temp_override(scene=stage):  # render(scene=...) alone renders the context's frame
                bpy.ops.render.render(write_still=True)
            yield i + 1, total
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _encode(frames_dir, len(frames), request, path)
        yield total, total
    finally:
        _remove_scene(stage)
        shutil.rmtree(frames_dir, ignore_errors=True)


def render_now(request: ControlRequest, path: str) -> str:
    """Render the whole control video at once (scripts, background mode, tests); returns ``path``."""
    for _ in render_control_video(request, path):
        pass
    return path
