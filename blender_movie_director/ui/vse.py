"""Every Video Sequence Editor call of the add-on, in one place, for Blender 4.2 to 5.3.

Blender's sequencer API moved under our feet, and each difference is handled here only:

- 4.4 renamed ``Sequence`` to ``Strip`` and added ``sequence_editor.strips`` (``sequences`` stayed as an alias
  until 5.0 removed it). ``new_effect`` took ``frame_end``/``seq1`` before 4.4, ``frame_end``/``input1`` in
  4.4-4.5 and ``length``/``input1`` from 5.0.
- 5.0 edits a scene per workspace: the sequencer shows ``context.sequencer_scene``, which need not be
  ``context.scene`` (:func:`sequencer_scene`).
- 5.1 gave strips handles and content: ``left_handle``, ``right_handle``, ``duration``, ``content_start``,
  ``content_duration``, ``content_trim_*``; the ``frame_final_*`` names they replace warn that they go in 6.0.
  :data:`HANDLES` says which API this Blender has; the old names are read only where the new ones don't exist.
- 5.2 added ``new_movie(..., stream=)``: a strip is made on the right stream of a file, not switched after.

What the user's timeline holds is taken as it is: a strip's span is what it shows (after retiming keys and
handles); when a meta strip is open for editing, new shots go inside it, next to what the user sees; the
start image of Extend is rendered through the user's own strip (with its retiming, Speed effect, meta or
scene), the other strips muted for that one render.

Measured facts this module relies on (bpy 5.0.1, see the field notes):

- ``strips.new_movie`` works in background mode; ``bpy.ops.sequencer.movie_strip_add`` does not (poll fails).
- Blender does not retime a 16 fps clip in a 24 fps scene; ``RetimingKeys.add`` segfaults on a strip made by
  ``new_movie`` (no retiming data yet), so time-stretching uses a Speed effect in "Stretch" mode.
- ``bpy.ops.render.render(scene=...)`` ignores the scene argument in the bpy module; a context override
  (``temp_override(scene=...)``) renders the right scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import bpy

from .. import storyboard

# Where a shot's generation settings live on its strip (a custom property holding JSON).
METADATA_KEY = "movie_director"

_STRIP = getattr(bpy.types, "Strip", None) or bpy.types.Sequence  # "Sequence" before 4.4
# 5.1+: strips have handles and content (left_handle, right_handle, duration, ...). Decided once per Blender.
HANDLES = "left_handle" in _STRIP.bl_rna.properties
# Strip types Extend can continue: what they show at their last frame is rendered as the start image.
EXTENDABLE = frozenset({"MOVIE", "META", "SCENE", "IMAGE"})


# --- the scene and its strip collections ---------------------------------------------------------------------

def sequencer_scene(context: Any) -> Any:
    """The scene the Video Sequence Editor edits: the workspace's sequencer scene in 5.0+, else the window's.

    Where no workspace names one (background mode, scripts, an older Blender), ``context.scene``.
    """
    scene = getattr(context, "sequencer_scene", None)
    return scene if scene is not None else context.scene


def sequence_editor(scene: bpy.types.Scene, *, create: bool = True) -> Any:
    """The scene's sequence editor, created on demand (``None`` if absent and ``create`` is false)."""
    editor = scene.sequence_editor
    if editor is None and create:
        editor = scene.sequence_editor_create()
    return editor


def _strips_of(holder: Any) -> Any:
    """The strips of a sequence editor or a meta strip (``strips`` on 4.4+, ``sequences`` before; 5.0 has no
    ``sequences``). Never ``getattr(holder, "strips", None) or holder.sequences``: an empty collection is falsy."""
    return holder.strips if hasattr(holder, "strips") else holder.sequences


def top_strips(scene: bpy.types.Scene) -> Any:
    """The top-level strip collection."""
    return _strips_of(sequence_editor(scene))


def all_strips(scene: bpy.types.Scene) -> list[Any]:
    """Every strip of the scene, inside meta strips too."""
    editor = sequence_editor(scene, create=False)
    if editor is None:
        return []
    return list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all)


def editing_meta(scene: bpy.types.Scene) -> str:
    """The name of the meta strip open for editing ("" at the top level): where the user is looking."""
    editor = sequence_editor(scene, create=False)
    if editor is None or not len(editor.meta_stack):
        return ""
    return editor.meta_stack[-1].name


def level_strips(scene: bpy.types.Scene, meta: str = "") -> Any:
    """The strips of meta strip ``meta``, or of the top level ("" or a meta that no longer exists)."""
    if meta:
        strip = find_strip(scene, meta)
        if strip is not None and strip.type == "META":
            return _strips_of(strip)
    return top_strips(scene)


def _shown(scene: bpy.types.Scene) -> list[Any]:
    """The strips of the level being edited (the open meta strip's, or the top level's)."""
    if sequence_editor(scene, create=False) is None:
        return []
    return list(level_strips(scene, editing_meta(scene)))


def active_strip(scene: bpy.types.Scene) -> Any | None:
    editor = sequence_editor(scene, create=False)
    return editor.active_strip if editor is not None else None


def selected_strips(scene: bpy.types.Scene) -> list[Any]:
    """The selected strips of the level being edited."""
    return [s for s in _shown(scene) if s.select]


def selected_text_strips(scene: bpy.types.Scene) -> list[Any]:
    """The selected text strips of the level being edited, in timeline order."""
    return sorted((s for s in selected_strips(scene) if s.type == "TEXT"), key=lambda s: (strip_start(s), s.channel))


def find_strip(scene: bpy.types.Scene, name: str) -> Any | None:
    for strip in all_strips(scene):
        if strip.name == name:
            return strip
    return None


def select_only(scene: bpy.types.Scene, strip: Any) -> None:
    for other in all_strips(scene):
        other.select = False
    strip.select = True
    sequence_editor(scene).active_strip = strip


def is_movie(strip: Any) -> bool:
    return strip is not None and strip.type == "MOVIE"


def is_image(strip: Any) -> bool:
    return strip is not None and strip.type == "IMAGE"


def can_extend(strip: Any) -> bool:
    return strip is not None and strip.type in EXTENDABLE


# --- frames: the handles API of 5.1+, the frame_final_* names before -----------------------------------------

def strip_start(strip: Any) -> int:
    """The first timeline frame the strip shows."""
    return int(strip.left_handle if HANDLES else strip.frame_final_start)


def strip_end(strip: Any) -> int:
    """The first timeline frame after the strip."""
    return int(strip.right_handle if HANDLES else strip.frame_final_end)


def strip_duration(strip: Any) -> int:
    """Timeline frames the strip shows, from handle to handle."""
    return int(strip.duration if HANDLES else strip.frame_final_duration)


def set_strip_duration(strip: Any, frames: int) -> None:
    """Move the right handle so the strip shows ``frames`` frames (past its content: the last frame is held)."""
    if HANDLES:
        strip.duration = frames
    else:
        strip.frame_final_duration = frames


def strip_span(strip: Any) -> tuple[int, int]:
    """``(first frame, frame after the last)`` of what the strip shows on the timeline."""
    return strip_start(strip), strip_end(strip)


def last_frame(strip: Any) -> int:
    """The last timeline frame a strip shows."""
    return strip_end(strip) - 1


def movie_path(strip: Any) -> str:
    return bpy.path.abspath(strip.filepath)


def image_strip_path(strip: Any, frame: int | None = None) -> str:
    """The file an image strip shows at ``frame`` (its first image when the frame is outside it)."""
    element = None
    if frame is not None:
        start, end = strip_span(strip)
        if start <= frame < end:
            element = strip.strip_elem_from_frame(frame)
    if element is None:
        element = strip.elements[0]
    return bpy.path.abspath(os.path.join(strip.directory, element.filename))


# --- free slots ----------------------------------------------------------------------------------------------

def spans(scene: bpy.types.Scene, meta: str = "", *, ignore: Any = None) -> list[storyboard.Span]:
    """``(channel, start, end)`` of every strip of a level (a meta strip's, or the top level), but ``ignore``."""
    if sequence_editor(scene, create=False) is None:
        return []
    return [(s.channel, *strip_span(s)) for s in level_strips(scene, meta) if s != ignore]


def first_free_channel(scene: bpy.types.Scene, lowest: int, start: int, end: int, *, meta: str = "",
                       reserved: list[storyboard.Span] | tuple[storyboard.Span, ...] = ()) -> int:
    """The lowest channel >= ``lowest`` free over ``[start, end)``, strips and shots on their way counted."""
    return storyboard.first_free_channel([*spans(scene, meta), *reserved], lowest, start, end)


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / (scene.render.fps_base or 1.0)


# --- placing a finished shot ---------------------------------------------------------------------------------

@dataclass
class Placement:
    """Where a finished shot went and what was done about its frame rate."""

    strip_name: str
    channel: int
    frame_start: int
    duration: int
    moved: bool  # the slot chosen at submit was taken: the nearest free channel was used
    notice: str = ""  # the frame-rate notice, if the clip's fps differs from the scene's
    speed_strip_name: str = ""
    meta: str = ""  # the meta strip it went into ("" for the top level)


def fit_method(scene: bpy.types.Scene) -> str:
    """How Blender's own Add Movie fits a clip to the scene's frame: the sequencer tool setting (default "FIT")."""
    tools = getattr(scene.tool_settings, "sequencer_tool_settings", None)
    return str(getattr(tools, "fit_method", "FIT") or "FIT")


def _new_movie(strips: Any, name: str, filepath: str, channel: int, frame_start: int, stream: int = 0,
               fit: str = "FIT") -> Any:
    """``new_movie`` on the file's video stream ``stream`` (given at creation in 5.2+, set afterwards before),
    fitted to the scene's frame as ``fit`` says (``fit_method``: FIT, FILL, STRETCH or ORIGINAL)."""
    if "stream" in strips.bl_rna.functions["new_movie"].parameters:
        return strips.new_movie(name=name, filepath=filepath, channel=channel, frame_start=frame_start,
                                stream=stream, fit_method=fit)
    strip = strips.new_movie(name=name, filepath=filepath, channel=channel, frame_start=frame_start,
                             fit_method=fit)
    if stream:
        strip.stream_index = stream
    return strip


def new_effect(strips: Any, name: str, kind: str, channel: int, frame_start: int, length: int,
               source: Any = None) -> Any:
    """An effect strip of ``length`` frames (``source``: its input, for effects that take one)."""
    params = strips.bl_rna.functions["new_effect"].parameters.keys()
    kwargs: dict[str, Any] = {}
    if "length" in params:  # 5.0+
        kwargs["length"] = length
    else:  # 4.2 - 4.5
        kwargs["frame_end"] = frame_start + length
    if source is not None:
        kwargs["input1" if "input1" in params else "seq1"] = source  # seq1 before 4.4
    return strips.new_effect(name=name, type=kind, channel=channel, frame_start=frame_start, **kwargs)


def place_movie(scene: bpy.types.Scene, filepath: str, name: str, channel: int, frame_start: int, *,
                clip_fps: float | None, fps_policy: str = "STRETCH", meta: str = "", fill: int = 0) -> Placement:
    """Add a finished shot at ``(channel, frame_start)``, or on the nearest free channel if that is taken,
    fitted to the scene's frame as Blender's own Add Movie does.

    ``fps_policy``: ``"STRETCH"`` plays the clip in real time (a Speed effect in Stretch mode on the channel
    above it), ``"KEEP"`` keeps one clip frame per scene frame (the clip then plays faster or slower).
    ``meta``: the meta strip to put it in (the top level if it is "" or no longer exists).
    ``fill``: the timeline frames the shot must take exactly (the text strip or marker range it was made for):
    WanGP makes 4n+1 frames at its own rate, which rarely lands on the scene's frame; the clip is stretched
    (or, with "KEEP", trimmed or held on its last frame) to that length.
    """
    path = filepath
    if bpy.data.filepath:
        try:
            path = bpy.path.relpath(filepath)
        except ValueError:  # another drive (Windows): keep the absolute path
            path = filepath
    fps = scene_fps(scene)
    stretch = fps_policy == "STRETCH" and storyboard.fps_differs(clip_fps, fps)
    holder = find_strip(scene, meta) if meta else None
    into = meta if holder is not None and holder.type == "META" else ""
    strips = level_strips(scene, into)
    # Added first on an empty channel (no overlap, so Blender shuffles nothing), to learn its real length.
    strip = _new_movie(strips, name, path, storyboard.empty_channel(s.channel for s in strips), frame_start,
                       fit=fit_method(scene))
    frames = strip_duration(strip)
    duration = fill or storyboard.timeline_length(frames, clip_fps, fps, fps_policy)
    stretch = stretch or (fps_policy == "STRETCH" and duration != frames)
    free = storyboard.nearest_free_channel(spans(scene, into, ignore=strip), channel, frame_start,
                                           frame_start + duration, height=2 if stretch else 1)
    strip.channel = free
    notice, speed_name = "", ""
    if stretch:
        set_strip_duration(strip, duration)  # holds the last frame; the Speed effect spreads the frames out
        effect = new_effect(strips, f"{name} speed", "SPEED", free + 1, frame_start, duration, strip)
        effect.speed_control = "STRETCH"
        speed_name = effect.name
        rates = f"clip is {clip_fps:g} fps, scene {fps:g} fps: " if storyboard.fps_differs(clip_fps, fps) else ""
        notice = (f"{rates}time-stretched its {frames} frames over {duration}" + (" to fill its place" if fill else "")
                  + f" (Speed effect on channel {free + 1})")
    elif fill and duration != frames:
        set_strip_duration(strip, duration)
        notice = (f"{'trimmed' if duration < frames else 'held the last frame of'} its {frames} frames to fill "
                  f"its {duration}")
    elif storyboard.fps_differs(clip_fps, fps):
        notice = (f"clip is {clip_fps:g} fps, scene {fps:g} fps: kept its {frames} frames, so it plays "
                  f"{fps / clip_fps:.2f}x as fast as it was generated")
    if meta and not into:
        notice = "; ".join(filter(None, [f"the meta strip {meta} is gone: placed at the top level", notice]))
    return Placement(strip.name, free, strip_start(strip), duration, free != channel, notice, speed_name, into)


def remove_strip(scene: bpy.types.Scene, strip: Any) -> None:
    parent = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    (_strips_of(parent) if parent is not None else top_strips(scene)).remove(strip)


# --- shot metadata on strips ---------------------------------------------------------------------------------

def set_shot_metadata(strip: Any, data: dict[str, Any]) -> None:
    """Store a shot's full generation record on its strip (saved with the .blend)."""
    strip[METADATA_KEY] = storyboard.dumps(data)


def get_shot_metadata(strip: Any) -> dict[str, Any] | None:
    if strip is None:
        return None
    return storyboard.metadata_from_text(strip.get(METADATA_KEY))


# --- stills for image-to-video -------------------------------------------------------------------------------

def render_frame(scene: bpy.types.Scene, frame: int, filepath: str) -> str:
    """Render ``scene`` at ``frame`` (its 3D view, or its sequencer if it has strips) to a PNG file.

    Runs on the main thread and blocks for the render's time: one still, at the scene's own settings.
    """
    original = scene.frame_current
    settings = scene.render.image_settings
    saved_format = settings.file_format
    try:
        scene.frame_set(frame)
        with bpy.context.temp_override(scene=scene):
            bpy.ops.render.render(write_still=False)
        settings.file_format = "PNG"
        bpy.data.images["Render Result"].save_render(filepath, scene=scene)
    finally:
        settings.file_format = saved_format
        scene.frame_set(original)
    return filepath


# --- From Frame: what makes the picture at a frame, and how cheaply it can be had --------------------------

@dataclass(frozen=True)
class FramePicture:
    """What makes the picture the film shows at a frame (:func:`frame_picture`).

    ``kind``:

    - ``"strip"``: one movie or image strip (with its Speed effect or meta strip) makes it alone: read from that
      strip's file at its own size (:func:`strip_picture_to_png`; an image strip is its file), at once;
    - ``"sequencer"``: strips without a scene strip (text over a shot, a colour strip, a cross-fade): the
      sequencer's own picture at the scene's size (:func:`sequencer_frame_to_png`), at once;
    - ``"engine"``: a scene strip, or no strips at all (the camera): the scene's render engine has to draw it,
      which takes seconds to minutes; it is rendered by another Blender process (``stills``);
    - ``"empty"``: the sequencer has strips, none at this frame (its picture is black);
    - ``"none"``: no strips and no camera: nothing to render.
    """

    kind: str
    strip: Any = None


def _muted(strip: Any, scene: bpy.types.Scene) -> bool:
    """Muted itself, by its channel (top level), or by a meta strip it is in."""
    if strip.mute:
        return True
    parent = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    if parent is None:
        channels = getattr(sequence_editor(scene), "channels", None)
        return bool(channels is not None and 0 < strip.channel < len(channels) and channels[strip.channel].mute)
    return _muted(parent, scene)


def frame_picture(scene: bpy.types.Scene, frame: int) -> FramePicture:
    """What makes the picture of ``scene`` at ``frame`` (see :class:`FramePicture`), as its render would."""
    strips = [s for s in all_strips(scene) if s.type != "SOUND"]
    if not scene.render.use_sequencer or not strips:
        return FramePicture("engine" if scene.camera is not None else "none")
    shown = [s for s in strips if strip_start(s) <= frame < strip_end(s) and not _muted(s, scene)]
    if not shown:
        return FramePicture("empty")
    if any(s.type == "SCENE" for s in shown):
        return FramePicture("engine")
    sources = [s for s in shown if s.type in ("MOVIE", "IMAGE")]
    if len(sources) == 1 and {s.name for s in shown} <= _shown_with(sources[0], scene):
        return FramePicture("strip", sources[0])
    return FramePicture("sequencer")


def media_size(strip: Any) -> tuple[int, int] | None:
    """The pixel size of a movie or image strip's file, as Blender read it (None if it could not)."""
    elements = getattr(strip, "elements", None)
    if elements is not None and len(elements) and elements[0].orig_width > 0:
        return int(elements[0].orig_width), int(elements[0].orig_height)
    return None


def strip_picture_to_png(scene: bpy.types.Scene, strip: Any, frame: int, filepath: str) -> str:
    """Write the frame of its file a movie strip shows at timeline ``frame``, at the file's own size.

    A generated shot's 832x480 frame stays 832x480: not scaled into the scene's frame, so no black bars where
    the aspects differ. Blender picks the frame (the strip's offsets, retiming, Speed effect, meta strip) and
    decodes it; the strip's transform is set aside for that one render. About 0.1 s (docs/blender.md).
    """
    size = media_size(strip)
    if size is None:
        raise RuntimeError(f"Blender could not read the size of {strip.name}'s file")
    render, transform = scene.render, strip.transform
    saved = (render.resolution_x, render.resolution_y, render.pixel_aspect_x, render.pixel_aspect_y,
             transform.scale_x, transform.scale_y, transform.offset_x, transform.offset_y, transform.rotation)
    try:
        render.resolution_x, render.resolution_y = size
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        transform.scale_x = transform.scale_y = 1.0
        transform.offset_x = transform.offset_y = transform.rotation = 0.0
        strip_frame_to_png(scene, strip, frame, filepath)
    finally:
        (render.resolution_x, render.resolution_y, render.pixel_aspect_x, render.pixel_aspect_y,
         transform.scale_x, transform.scale_y, transform.offset_x, transform.offset_y, transform.rotation) = saved
    return filepath


def sequencer_frame_to_png(scene: bpy.types.Scene, frame: int, filepath: str) -> str:
    """Write the sequencer's picture at ``frame`` (every strip, as the preview shows it) at the scene's size,
    with the Standard view transform. No scene strip is in it (:func:`frame_picture`): the render engine is not
    used, only the sequencer, which takes a few tens of milliseconds."""
    render, view = scene.render, scene.view_settings
    saved = (render.resolution_percentage, view.view_transform, view.look)
    try:
        render.resolution_percentage = 100
        view.view_transform, view.look = "Standard", "None"
        render_frame(scene, frame, filepath)
    finally:
        render.resolution_percentage, view.view_transform, view.look = saved
    return filepath


def save_copy(filepath: str) -> str:
    """Save a copy of the open file (the open file and its path stay as they are), for another Blender process
    to render from. Paths relative to the file are remapped to the copy's folder."""
    bpy.ops.wm.save_as_mainfile(filepath=filepath, copy=True, compress=False, relative_remap=True,
                                check_existing=False)
    return filepath


def _shown_with(strip: Any, scene: bpy.types.Scene) -> set[str]:
    """Names of the strips that make what ``strip`` shows: itself, what is inside it (a meta strip), the meta
    strips it is in, and the effects that take it as input (a Speed effect), and theirs."""
    keep = {strip.name}
    if strip.type == "META":
        stack = list(_strips_of(strip))
        while stack:
            inner = stack.pop()
            keep.add(inner.name)
            if inner.type == "META":
                stack.extend(_strips_of(inner))
    parent = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    while parent is not None:
        keep.add(parent.name)
        parent = parent.parent_meta()
    others = all_strips(scene)
    grown = True
    while grown:
        grown = False
        for other in others:
            if other.name in keep:
                continue
            inputs = [getattr(other, attr, None) for attr in ("input_1", "input_2")]
            if any(i is not None and i.name in keep for i in inputs):
                keep.add(other.name)
                grown = True
    return keep


def strip_frame_to_png(scene: bpy.types.Scene, strip: Any, frame: int, filepath: str) -> str:
    """Write the picture ``strip`` shows at timeline ``frame`` to a PNG, as the timeline shows it.

    The scene's sequencer is rendered with every other strip muted (its retiming, Speed effect, meta strip or
    scene strip apply), at 100 % of the scene's resolution and with the Standard view transform (the colours
    of the file are kept); mutes and settings are put back afterwards.
    """
    keep = _shown_with(strip, scene)
    muted = [(s, s.mute) for s in all_strips(scene)]
    render, view = scene.render, scene.view_settings
    saved = (render.resolution_percentage, view.view_transform, view.look, render.use_sequencer)
    try:
        for other, _mute in muted:
            other.mute = other.name not in keep
        render.resolution_percentage = 100
        view.view_transform, view.look = "Standard", "None"
        render.use_sequencer = True
        render_frame(scene, frame, filepath)
    finally:
        for other, mute in muted:
            other.mute = mute
        render.resolution_percentage, view.view_transform, view.look, render.use_sequencer = saved
    return filepath
