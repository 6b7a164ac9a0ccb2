"""The sequencer sidebar panel "Movie Director": server, shot settings, actions, queue. Powered by WanGP."""

from __future__ import annotations

import textwrap
from typing import Any

import bpy

from .. import storyboard
from . import pump, vse
from .preferences import active_url, is_loopback, prefs
from .properties import rules_for

_STATUS_ICONS = {
    "submitting": "EXPORT", "reconnecting": "FILE_REFRESH", "queued": "SORTTIME", "uploading": "EXPORT",
    "running": "RENDER_ANIMATION", "downloading": "IMPORT", "cancelling": "CANCEL", "completed": "CHECKMARK",
    "failed": "ERROR", "cancelled": "X", "lost": "QUESTION",
}


def draw_wrapped(layout: Any, context: Any, text: str, *, icon: str = "NONE", alert: bool = False) -> None:
    """A long message in full, wrapped to the region's width (Blender labels don't wrap)."""
    region = getattr(context, "region", None)
    width = max(20, int((region.width if region is not None else 300) / 7))  # ~7 px per character
    column = layout.column(align=True)
    column.alert = alert
    lines = [line for paragraph in text.splitlines() for line in (textwrap.wrap(paragraph, width) or [""])]
    for index, line in enumerate(lines):
        column.label(text=line, icon=icon if index == 0 else "BLANK1" if icon != "NONE" else "NONE")


def draw_found_servers(layout: Any, context: Any) -> None:
    if not pump.running():
        return
    st = pump.state()
    if st.finding:
        layout.label(text="Looking for WanGP servers…", icon="VIEWZOOM")
    elif st.found_error:
        draw_wrapped(layout, context, st.found_error, icon="ERROR", alert=True)
    elif st.found is not None:
        if not st.found:
            layout.label(text="No WanGP server found on this machine's usual ports.", icon="INFO")
        for service in st.found:
            row = layout.row()
            version = service.get("wangp_version") or "?"
            row.label(text=f"{service['url']}  (WanGP {version})", icon="URL")
            op = row.operator("movie_director.use_server", text="Use")
            op.url, op.label = service["url"], f"WanGP {version}"


def _draw_server(layout: Any, context: Any) -> None:
    p = prefs(context)
    url = active_url(p).rstrip("/")
    st = pump.state()
    box = layout.box()
    row = box.row(align=True)
    row.label(text=url, icon="URL")
    row.operator("movie_director.check_server", text="", icon="FILE_REFRESH")
    row.operator("movie_director.find_servers", text="", icon="VIEWZOOM")
    status = st.servers.get(url)
    if url in st.checking:
        box.label(text="Connecting…", icon="SORTTIME")
    elif status is None:
        box.label(text="Not connected: press Connect.", icon="UNLINKED")
        box.operator("movie_director.check_server", text="Connect", icon="LINKED")
    elif status.get("reachable"):
        busy = "busy" if status.get("busy") else "up"  # WanGP can't tell a stranger it is idle
        over = " (MCP)" if str(status.get("transport") or "").startswith("mcp") else ""  # MCP tells no version
        box.label(text=f"WanGP {status.get('wangp_version') or '?'}{over} · {busy}", icon="CHECKMARK")
        if status.get("current_model"):
            box.label(text=f"Model: {status['current_model']}")
    else:
        draw_wrapped(box, context, status.get("error") or "The server did not answer", icon="ERROR", alert=True)
    if not is_loopback(url):
        box.label(text="Not on this machine: make sure it is protected", icon="ERROR")
    draw_found_servers(box, context)


class MD_PT_main(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Movie Director"
    bl_label = "Movie Director"

    @classmethod
    def poll(cls, context):
        return pump.running() and vse.sequencer_scene(context) is not None

    def draw(self, context):
        _draw_server(self.layout, context)
        self.layout.label(text="Powered by WanGP", icon="INFO")


class MD_PT_shot(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Movie Director"
    bl_label = "Shot"
    bl_parent_id = "MD_PT_main"

    def draw(self, context):
        layout = self.layout
        scene = vse.sequencer_scene(context)
        shot = scene.movie_director
        layout.prop(shot, "prompt", text="")
        layout.prop(shot, "negative_prompt")
        layout.prop(shot, "category")
        layout.prop(shot, "model")
        layout.prop(shot, "resolution")
        row = layout.row(align=True)
        row.prop(shot, "seconds")
        rules = rules_for(context, shot.model)
        known = storyboard.frames_for(shot.seconds, rules)
        if known is not None:
            frames, fps = known
            length = storyboard.timeline_length(frames, fps, vse.scene_fps(scene), shot.fps_policy)
            layout.label(text=f"{frames} frames at {fps} fps → {length} frames in this scene", icon="TIME")
        elif rules and rules.get("error"):
            draw_wrapped(layout, context, rules["error"], icon="ERROR", alert=True)
        else:
            layout.label(text="Frame count: connect to the server to see it", icon="TIME")
        row = layout.row(align=True)
        row.prop(shot, "steps")
        row.prop(shot, "guidance_scale")
        layout.prop(shot, "seed")
        layout.prop(shot, "fps_policy")
        layout.prop(shot, "channel")
        column = layout.column(align=True)
        column.scale_y = 1.3
        column.operator("movie_director.generate", icon="PLAY")
        row = column.row(align=True)
        row.operator("movie_director.generate_from_frame", icon="IMAGE_DATA")
        row.operator("movie_director.extend", icon="FORWARD")
        column.operator("movie_director.generate_from_camera", icon="CAMERA_DATA")  # from_camera.py
        column.operator("movie_director.generate_all", icon="SEQ_STRIP_DUPLICATE")
        layout.prop(shot, "background")
        strip = vse.active_strip(scene)
        if vse.get_shot_metadata(strip) is not None:
            box = layout.box()
            box.label(text=f"Selected shot: {strip.name}", icon="SEQUENCE")
            row = box.row(align=True)
            row.operator("movie_director.regenerate", text="Regenerate", icon="FILE_REFRESH").variation = False
            row.operator("movie_director.regenerate", text="Variation", icon="MOD_NOISE").variation = True
            box.operator("movie_director.load_strip_settings", icon="PASTEDOWN")


class MD_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.alert = item.status in ("failed", "lost")
        row.label(text=item.prompt[:40] or item.kind, icon=_STATUS_ICONS.get(item.status, "DOT"))
        if item.status in storyboard.ACTIVE:
            row.progress(factor=item.fraction, type="BAR", text=storyboard.progress_text(item))
            row.operator("movie_director.cancel_job", text="", icon="X", emboss=False).key = item.key
        else:
            row.label(text=item.status.capitalize())


def _draw_batch(layout: Any, jobs: Any, batch: str) -> None:
    """The Generate All run of the selected job: how far it is, and Cancel All while shots are unfinished."""
    items = [i for i in jobs if i.batch == batch]
    counts = storyboard.batch_counts(items)
    row = layout.row(align=True)
    row.progress(factor=counts["fraction"], type="BAR", text=storyboard.batch_text(counts))
    if counts["active"]:
        row.operator("movie_director.cancel_batch", text="", icon="CANCEL").batch = batch


class MD_PT_queue(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Movie Director"
    bl_label = "Queue"
    bl_parent_id = "MD_PT_main"

    def draw(self, context):
        layout = self.layout
        state = vse.sequencer_scene(context).movie_director
        if not state.jobs:
            layout.label(text="No shots yet.")
            return
        layout.template_list("MD_UL_jobs", "", state, "jobs", state, "job_index", rows=3)
        layout.operator("movie_director.clear_finished", icon="BRUSH_DATA")
        if not 0 <= state.job_index < len(state.jobs):
            return
        item = state.jobs[state.job_index]
        box = layout.box()
        box.label(text=f"{item.kind.replace('_', ' ').capitalize()} · {item.model} · {item.status}",
                  icon=_STATUS_ICONS.get(item.status, "DOT"))
        draw_wrapped(box, context, item.prompt)
        where = f" in {item.meta}" if item.meta else ""
        box.label(text=f"Channel {item.channel}, frame {item.frame_start}{where}")
        if item.batch:
            _draw_batch(box, state.jobs, item.batch)
        if item.status in storyboard.ACTIVE:
            box.progress(factor=item.fraction, type="BAR", text=storyboard.progress_text(item))
            box.operator("movie_director.cancel_job", icon="CANCEL").key = item.key
        if item.error:
            draw_wrapped(box, context, item.error, icon="ERROR", alert=True)
            row = box.row(align=True)
            row.operator("movie_director.retry_job", icon="FILE_REFRESH").key = item.key
            row.operator("movie_director.copy_error", icon="COPYDOWN").key = item.key
        if item.message:
            draw_wrapped(box, context, item.message, icon="INFO")
        if item.status in storyboard.FINISHED:
            box.operator("movie_director.remove_job", icon="TRASH").key = item.key


classes = (MD_PT_main, MD_PT_shot, MD_UL_jobs, MD_PT_queue)
register, unregister = bpy.utils.register_classes_factory(classes)
