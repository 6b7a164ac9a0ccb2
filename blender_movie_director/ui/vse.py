"""Every Video Sequence Editor call of the add-on, in one place.

Blender's sequencer API moved under our feet: 4.4 renamed ``Sequence`` to ``Strip`` and added
``sequence_editor.strips`` (keeping ``sequences`` as an alias), 5.0 removed ``sequences``, and ``new_effect``
took ``frame_end``/``seq1`` before 4.4, ``frame_end``/``input1`` in 4.4-4.5 and ``length``/``input1`` in 5.0.
Nothing outside this module touches a strip collection, so those differences are handled here only.

Measured facts this module relies on (bpy 5.0.1, see the field notes):

- ``strips.new_movie`` works in background mode; ``bpy.ops.sequencer.movie_strip_add`` does not (poll fails).
- Blender does not retime a 16 fps clip in a 24 fps scene; ``RetimingKeys.add`` segfaults on a strip made by
  ``new_movie`` (no retiming data yet), so time-stretching uses a Speed effect in "Stretch" mode.
- ``bpy.ops.render.render(scene=...)`` ignores the scene argument in the bpy module; a context override
  (``temp_override(scene=...)``) renders the right scene.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import bpy

# Where a shot's generation settings live on its strip (a custom property holding JSON).
METADATA_KEY = "movie_director"
MAX_CHANNEL = 128  # Blender's channel range is 1..128 since 2.8x


# --- the strip collections ----------------------------------------------------------------------------

def sequence_editor(scene: bpy.types.Scene, *, create: bool = True) -> Any:
    """The scene's sequence editor, created on demand (``None`` if absent and ``create`` is false)."""
    editor = scene.sequence_editor
    if editor is None and create:
        editor = scene.sequence_editor_create()
    return editor


def top_strips(scene: bpy.types.Scene) -> Any:
    """The top-level strip collection (``strips`` on 4.4+, ``sequences`` before; 5.0 has no ``sequences``).

    Never ``getattr(editor, "strips", None) or editor.sequences``: an empty collection is falsy.
    """
    editor = sequence_editor(scene)
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(scene: bpy.types.Scene) -> list[Any]:
    """Every strip of the scene, inside meta strips too."""
    editor = sequence_editor(scene, create=False)
    if editor is None:
        return []
    collection = editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    return list(collection)


def _top_level(scene: bpy.types.Scene) -> list[Any]:
    editor = sequence_editor(scene, create=False)
    if editor is None:
        return []
    return list(editor.strips if hasattr(editor, "strips") else editor.sequences)


def active_strip(scene: bpy.types.Scene) -> Any | None:
    editor = sequence_editor(scene, create=False)
    return editor.active_strip if editor is not None else None


def selected_strips(scene: bpy.types.Scene) -> list[Any]:
    return [s for s in _top_level(scene) if s.select]


def selected_text_strips(scene: bpy.types.Scene) -> list[Any]:
    """The selected top-level text strips, in timeline order."""
    return sorted((s for s in selected_strips(scene) if s.type == "TEXT"),
                  key=lambda s: (s.frame_final_start, s.channel))


def find_strip(scene: bpy.types.Scene, name: str) -> Any | None:
    for strip in all_strips(scene):
        if strip.name == name:
            return strip
    return None


def select_only(scene: bpy.types.Scene, strip: Any) -> None:
    for other in _top_level(scene):
        other.select = False
    strip.select = True
    sequence_editor(scene).active_strip = strip


def is_movie(strip: Any) -> bool:
    return strip is not None and strip.type == "MOVIE"


def is_image(strip: Any) -> bool:
    return strip is not None and strip.type == "IMAGE"


def strip_span(strip: Any) -> tuple[int, int]:
    """``(first frame, frame after the last)`` of what the strip shows on the timeline."""
    return int(strip.frame_final_start), int(strip.frame_final_end)


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


# --- free slots ------------------------------------------------------------------------------------------

Reservation = tuple[int, int, int]  # (channel, start, end) of a shot on its way


def occupied(scene: bpy.types.Scene, channel: int, start: int, end: int, *,
             reserved: list[Reservation] | tuple[Reservation, ...] = (), ignore: Any = None) -> bool:
    """True if ``channel`` holds a strip (other than ``ignore``) or a reservation over ``[start, end)``."""
    for strip in _top_level(scene):
        if strip.channel == channel and strip != ignore:
            s, e = strip_span(strip)
            if s < end and start < e:
                return True
    return any(c == channel and s < end and start < e for c, s, e in reserved)


def _free(scene: bpy.types.Scene, channel: int, span: int, start: int, end: int, **options: Any) -> bool:
    return 1 <= channel and channel + span - 1 <= MAX_CHANNEL and not any(
        occupied(scene, c, start, end, **options) for c in range(channel, channel + span))


def first_free_channel(scene: bpy.types.Scene, lowest: int, start: int, end: int, *, span: int = 1,
                       **options: Any) -> int:
    """The lowest channel >= ``lowest`` free over ``[start, end)`` (``span`` channels in a row)."""
    for channel in range(max(1, lowest), MAX_CHANNEL + 1):
        if _free(scene, channel, span, start, end, **options):
            return channel
    raise RuntimeError(f"no free channel from {lowest} up between frames {start} and {end}")


def nearest_free_channel(scene: bpy.types.Scene, channel: int, start: int, end: int, *, span: int = 1,
                         **options: Any) -> int:
    """``channel`` if free over ``[start, end)``, else the nearest free one (upwards first on a tie)."""
    for distance in range(MAX_CHANNEL):
        for candidate in (channel + distance, channel - distance):
            if _free(scene, candidate, span, start, end, **options):
                return candidate
    raise RuntimeError(f"no free channel between frames {start} and {end}")


def _empty_channel(scene: bpy.types.Scene) -> int:
    """A channel with nothing on it at all: a strip can be added there before its length is known."""
    used = {s.channel for s in _top_level(scene)}
    return next((c for c in range(MAX_CHANNEL, 0, -1) if c not in used), MAX_CHANNEL)


# --- placing a finished shot -----------------------------------------------------------------------------

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


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / (scene.render.fps_base or 1.0)


def stretched_length(frames: int, clip_fps: float, fps: float) -> int:
    """Timeline frames that play ``frames`` frames of a ``clip_fps`` clip in real time at ``fps``."""
    return max(1, round(frames * fps / clip_fps))


def _new_speed_effect(scene: bpy.types.Scene, name: str, channel: int, frame_start: int, length: int,
                      source: Any) -> Any:
    strips = top_strips(scene)
    params = strips.bl_rna.functions["new_effect"].parameters.keys()
    kwargs: dict[str, Any] = {}
    if "length" in params:  # 5.0
        kwargs["length"] = length
    else:  # 4.2 - 4.5
        kwargs["frame_end"] = frame_start + length
    kwargs["input1" if "input1" in params else "seq1"] = source  # seq1 before 4.4
    return strips.new_effect(name=name, type="SPEED", channel=channel, frame_start=frame_start, **kwargs)


def place_movie(scene: bpy.types.Scene, filepath: str, name: str, channel: int, frame_start: int, *,
                clip_fps: float | None, fps_policy: str = "STRETCH") -> Placement:
    """Add a finished shot at ``(channel, frame_start)``, or on the nearest free channel if that is taken.

    ``fps_policy``: ``"STRETCH"`` plays the clip in real time (a Speed effect in Stretch mode on the channel
    above it), ``"KEEP"`` keeps one clip frame per scene frame (the clip then plays faster or slower).
    """
    path = filepath
    if bpy.data.filepath:
        try:
            path = bpy.path.relpath(filepath)
        except ValueError:  # another drive (Windows): keep the absolute path
            path = filepath
    fps = scene_fps(scene)
    mismatch = bool(clip_fps) and abs(clip_fps - fps) > 1e-3
    stretch = mismatch and fps_policy == "STRETCH"
    span = 2 if stretch else 1
    # Added first on an empty channel (no overlap, so Blender shuffles nothing), to learn its real length.
    strip = top_strips(scene).new_movie(name=name, filepath=path, channel=_empty_channel(scene),
                                        frame_start=frame_start)
    frames = int(strip.frame_final_duration)
    duration = stretched_length(frames, clip_fps, fps) if stretch else frames
    free = nearest_free_channel(scene, channel, frame_start, frame_start + duration, span=span, ignore=strip)
    strip.channel = free
    notice, speed_name = "", ""
    if stretch:
        strip.frame_final_duration = duration  # holds the last frame; the Speed effect spreads the frames out
        effect = _new_speed_effect(scene, f"{name} speed", free + 1, frame_start, duration, strip)
        effect.speed_control = "STRETCH"
        speed_name = effect.name
        notice = (f"clip is {clip_fps:g} fps, scene {fps:g} fps: time-stretched its {frames} frames over "
                  f"{duration} (Speed effect on channel {free + 1})")
    elif mismatch:
        notice = (f"clip is {clip_fps:g} fps, scene {fps:g} fps: kept its {frames} frames, so it plays "
                  f"{fps / clip_fps:.2f}x as fast as it was generated")
    return Placement(strip.name, free, int(strip.frame_final_start), duration, free != channel, notice,
                     speed_name)


def remove_strip(scene: bpy.types.Scene, strip: Any) -> None:
    top_strips(scene).remove(strip)


# --- shot metadata on strips -----------------------------------------------------------------------------

def set_shot_metadata(strip: Any, data: dict[str, Any]) -> None:
    """Store a shot's full generation record on its strip (saved with the .blend)."""
    strip[METADATA_KEY] = json.dumps(data, sort_keys=True, default=str)


def get_shot_metadata(strip: Any) -> dict[str, Any] | None:
    if strip is None:
        return None
    raw = strip.get(METADATA_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- stills for image-to-video ---------------------------------------------------------------------------

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


def movie_frame_to_png(strip: Any, frame: int, filepath: str) -> str:
    """Write the picture a movie strip shows at timeline ``frame`` to a PNG, at the clip's own size.

    Renders a temporary scene holding only a copy of that strip (Standard view transform, so the colours of
    the file are kept), then removes the scene.
    """
    element = strip.elements[0] if len(strip.elements) else None
    width = element.orig_width if element is not None and element.orig_width else 0
    height = element.orig_height if element is not None and element.orig_height else 0
    temp = bpy.data.scenes.new("MovieDirector still")
    try:
        if width and height:
            temp.render.resolution_x, temp.render.resolution_y = width, height
        temp.render.resolution_percentage = 100
        temp.view_settings.view_transform = "Standard"
        copy = top_strips(temp).new_movie(name="still", filepath=movie_path(strip), channel=1,
                                          frame_start=int(strip.frame_start))
        copy.frame_offset_start = strip.frame_offset_start
        copy.frame_offset_end = strip.frame_offset_end
        temp.frame_start = max(0, int(copy.frame_final_start))
        temp.frame_end = int(copy.frame_final_end)
        temp.frame_current = frame
        with bpy.context.temp_override(scene=temp):
            bpy.ops.render.render(write_still=False)
        temp.render.image_settings.file_format = "PNG"
        bpy.data.images["Render Result"].save_render(filepath, scene=temp)
    finally:
        bpy.data.scenes.remove(temp)
    return filepath


def last_frame(strip: Any) -> int:
    """The last timeline frame a strip shows."""
    return int(strip.frame_final_end) - 1
