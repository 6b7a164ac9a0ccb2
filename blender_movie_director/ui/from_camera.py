"""From Camera: a shot that follows the 3D scene. The selected scene strip's frame range (or a scene and camera
named on the operator) is rendered from its camera into a control video at the model's size, frame rate and
frame count (``layout.py``), then generated with a control-video model (VACE) and placed over the strip like
any shot; its settings (control video, mode, mask, reference images) are stored on the new strip, so
Regenerate and Variation work.

``execute`` renders at once (scripts, background mode, tests); ``invoke`` renders one frame per timer tick,
with progress in the status bar, and Esc cancels between frames.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from .. import storyboard
from . import convert, layout, pump, vse
from .operators import _inputs_dir, _running, expected_length, free_channel, submit
from .properties import request_rules, rules_for

# The mode each kind of control video is sent with, among the model's own modes (its form's choices): a depth
# video made by Blender is sent unchanged (or in VACE's raw format where a release has no "unchanged" mode);
# a plain layout render is turned into depth by WanGP.
_PREFERRED_MODES = {"depth": ("UV", "V"), "layout": ("DV",)}


@dataclass
class ShotPlan:
    """Everything decided before rendering: the source, the model's numbers, where the shot goes."""

    scene: Any  # the sequencer's scene, where the shot lands
    model: str
    rules: dict[str, Any]  # the model's rules from the server's form (ModelInfo as a dict)
    mode: str  # the control video's mode, one of the model's
    control: layout.ControlRequest
    mask: layout.ControlRequest | None
    refs: list[str]
    frame: int
    channel: int
    length: int
    folder: str  # where the control files are written (the output folder's inputs/)


def plan_shot(context: Any, op: Any) -> ShotPlan:
    """The shot From Camera makes, or ``layout.ControlVideoError`` saying what to change."""
    scene = vse.sequencer_scene(context)
    shot = scene.movie_director
    model = shot.model.strip()
    rules = rules_for(context, model)
    if rules is None:
        request_rules(context, model)
        raise layout.ControlVideoError(f"the rules of {model} are not known yet: connect to the server "
                                       "(Check Server) and try again")
    modes = [tuple(m) for m in (rules.get("control_modes") or {}).get("video_guide", [])]
    if not modes:
        raise layout.ControlVideoError(f"{model} takes no control video: choose a control-video model (VACE), "
                                       "e.g. vace_1.3B or vace_14B")
    if op.control_mode:
        mode = op.control_mode
    else:
        mode = next((v for want in _PREFERRED_MODES[op.kind] for _, v in modes if v == want), "")
        if not mode:
            raise layout.ControlVideoError(f"{model} offers none of the modes for a {op.kind} video; choose one "
                                           f"(control_mode): {', '.join(v for _, v in modes)}")
    strip = vse.active_strip(scene)
    scene_fps = vse.scene_fps(scene)
    if strip is not None and strip.type == "SCENE" and strip.select and not op.scene_name:
        source = strip.scene
        camera = strip.scene_camera or (source.camera if source else None)
        start, end = vse.strip_span(strip)
        content_start = getattr(strip, "frame_start", start)
        source_start = source.frame_start + (start - int(content_start)) if source else 0
        seconds = storyboard.span_seconds(start, end, scene_fps)
        channel_floor = strip.channel + 1
    else:
        source = bpy.data.scenes.get(op.scene_name) if op.scene_name else scene
        camera = bpy.data.objects.get(op.camera_name) if op.camera_name else (source.camera if source else None)
        start = scene.frame_current
        source_start = op.frame_start if op.frame_start else (source.frame_start if source else 1)
        seconds = float(shot.seconds)
        channel_floor = shot.channel
    if source is None:
        raise layout.ControlVideoError(f"there is no scene {op.scene_name!r}")
    if camera is None:
        raise layout.ControlVideoError(f"scene {source.name!r} has no camera to render the shot from: add one "
                                       "and make it the scene's camera (or the scene strip's)")
    frames, fps = storyboard.frames_for(seconds, rules) or (0, 0)
    resolution = shot.resolution.strip() or str((rules.get("defaults") or {}).get("resolution") or "")
    if rules.get("resolutions") and resolution not in rules["resolutions"]:
        raise layout.ControlVideoError(f"{model} does not make {resolution or 'that size'}; choose one of "
                                       f"{', '.join(rules['resolutions'])}")
    width, height = (int(v) for v in resolution.split("x"))
    control = layout.ControlRequest(kind="layout" if op.kind == "layout" else "depth", scene=source.name,
                                    camera=camera.name, frame_start=source_start, frames=frames, width=width,
                                    height=height, fps=fps, engine=op.engine)
    layout.check(control)
    mask = None
    if op.mask_collection or op.mask_view_layer:
        mask = layout.ControlRequest(kind="mask", scene=source.name, camera=camera.name, frame_start=source_start,
                                     frames=frames, width=width, height=height, fps=fps, engine=op.engine,
                                     mask_collection=op.mask_collection, mask_view_layer=op.mask_view_layer)
        layout.check(mask)
    refs = [vse.image_strip_path(s) for s in vse.selected_strips(scene) if vse.is_image(s)]
    refs += [p for p in op.reference_images.split(";") if p.strip()]
    length = expected_length(context, scene, model, frames=frames, clip_fps=fps)
    return ShotPlan(scene=scene, model=model, rules=rules, mode=mode, control=control, mask=mask, refs=refs,
                    frame=start, channel=free_channel(scene, channel_floor, start, start + length), length=length,
                    folder=_inputs_dir(context))


def _first_mode(rules: dict[str, Any], role: str, letter: str) -> str | None:
    return next((v for _, v in (rules.get("control_modes") or {}).get(role, []) if v == letter), None) or next(
        (v for _, v in (rules.get("control_modes") or {}).get(role, []) if letter in v), None)


def queue_shot(context: Any, plan: ShotPlan, control_path: str, mask_path: str | None) -> Any:
    """Submit the shot over the strip, with the control files and modes."""
    request = convert.shot_request(plan.scene.movie_director)
    request.pop("seconds", None)
    request.update(model=plan.model, video_length=plan.control.frames,
                   resolution=f"{plan.control.width}x{plan.control.height}", video_guide=control_path,
                   control_mode=plan.mode)
    if mask_path:
        request.update(video_mask=mask_path, mask_mode=_first_mode(plan.rules, "video_mask", "A"))
    if plan.refs:
        request.update(image_refs=plan.refs, refs_mode=_first_mode(plan.rules, "image_refs", "I"))
    return submit(context, plan.scene, kind="from_camera", request=request, channel=plan.channel,
                  frame_start=plan.frame, length=plan.length)


class MD_OT_generate_from_camera(bpy.types.Operator):
    """Render the selected scene strip from its camera into a control video (depth, or a layout render for
    WanGP's own depth extraction) and generate a shot that follows it with a VACE model, placed over the strip"""

    bl_idname = "movie_director.generate_from_camera"
    bl_label = "From Camera"
    bl_options = {"REGISTER"}

    kind: EnumProperty(name="Control", items=[
        ("depth", "Depth", "True depth of the 3D scene, rendered by Blender, sent unchanged (near = white)"),
        ("layout", "Layout", "A plain render of the blocking; WanGP extracts its depth itself"),
    ], default="depth")
    control_mode: StringProperty(name="Mode", description="One of the model's Control Video modes (its value or "
                                 "label); empty: the one for the kind")
    mask_collection: StringProperty(name="Mask Collection", description="Generate only where this collection's "
                                    "objects are")
    mask_view_layer: StringProperty(name="Mask View Layer", description="Or: where the collections of this view "
                                    "layer are")
    reference_images: StringProperty(name="Reference Images", description="Image files, separated by ';' "
                                     "(selected image strips are added)")
    engine: StringProperty(name="Renderer", description="BLENDER_WORKBENCH, BLENDER_EEVEE(_NEXT) or CYCLES; "
                           "empty: Workbench")
    scene_name: StringProperty(name="Scene", description="Without a selected scene strip: the scene to render")
    camera_name: StringProperty(name="Camera", description="Its camera (empty: the scene's)")
    frame_start: IntProperty(name="Start", default=0, description="The scene's first frame (0: its start)")

    _steps: Any = None
    _timer: Any = None

    @classmethod
    def poll(cls, context):
        return _running(cls, context)

    def _prepare(self, context: Any) -> tuple[ShotPlan, str, str | None] | None:
        try:
            plan = plan_shot(context, self)
        except layout.ControlVideoError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        tag = uuid.uuid4().hex[:6]
        control = os.path.join(plan.folder, f"control_{plan.control.kind}_{tag}.mp4")
        mask = os.path.join(plan.folder, f"mask_{tag}.mp4") if plan.mask else None
        return plan, control, mask

    def _all_steps(self, plan: ShotPlan, control: str, mask: str | None) -> Any:
        yield from layout.render_control_video(plan.control, control)
        if mask:
            yield from layout.render_control_video(plan.mask, mask)

    def execute(self, context):
        prepared = self._prepare(context)
        if prepared is None:
            return {"CANCELLED"}
        plan, control, mask = prepared
        try:
            for _ in self._all_steps(plan, control, mask):
                pass
        except layout.ControlVideoError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        item = queue_shot(context, plan, control, mask)
        self.report({"INFO"}, f"Shot queued over frame {item.frame_start}, channel {item.channel}")
        return {"FINISHED"}

    def invoke(self, context, event):
        prepared = self._prepare(context)
        if prepared is None:
            return {"CANCELLED"}
        self._prepared = prepared
        self._steps = self._all_steps(*prepared)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _finish(self, context: Any) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.workspace.status_text_set(None)

    def modal(self, context, event):
        if event.type == "ESC":
            self._steps.close()  # between two frames: our scenes and frames are removed
            self._finish(context)
            self.report({"WARNING"}, "Control video cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            done, total = next(self._steps)
        except StopIteration:
            self._finish(context)
            plan, control, mask = self._prepared
            queue_shot(context, plan, control, mask)
            pump.tag_redraw()
            return {"FINISHED"}
        except layout.ControlVideoError as exc:
            self._finish(context)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.window_manager.progress_update(int(100 * done / max(1, total)))
        context.workspace.status_text_set(f"Movie Director: control video frame {done} of {total - 1} (Esc cancels)")
        return {"RUNNING_MODAL"}


classes = (MD_OT_generate_from_camera,)
register, unregister = bpy.utils.register_classes_factory(classes)
