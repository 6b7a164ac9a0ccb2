"""Add-on preferences: servers (with "Find servers"), output folder, timeouts, gradio login."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import bpy
from bpy.props import CollectionProperty, FloatProperty, IntProperty, StringProperty

from ..backend._urls import is_loopback

# The add-on's package: "blender_movie_director", or "bl_ext.<repo>.blender_movie_director" as an extension.
ADDON_PACKAGE = __package__.rpartition(".")[0]
DEFAULT_SERVER = "http://127.0.0.1:7860"  # WanGP's default port (wgp.py --server-port)
OUTPUT_FOLDER_NAME = "MovieDirector_shots"  # next to the saved .blend


class MD_ServerItem(bpy.types.PropertyGroup):
    url: StringProperty(name="URL", default=DEFAULT_SERVER, description="A WanGP web UI, e.g. "
                        "http://127.0.0.1:7860")
    label: StringProperty(name="Label", default="", description="What discovery found there")


class MD_Preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    servers: CollectionProperty(type=MD_ServerItem)
    server_index: IntProperty(name="Server", default=0, min=0)
    output_folder: StringProperty(
        name="Output folder", subtype="DIR_PATH", default="",
        description="Where generated shots are saved. Empty: a folder named MovieDirector_shots next to the "
                    "saved .blend file, or ~/MovieDirector/shots for an unsaved file")
    username: StringProperty(name="User", default="", description="Only if WanGP runs with gradio auth")
    password: StringProperty(name="Password", default="", subtype="PASSWORD",
                             description="Only if WanGP runs with gradio auth (kept in Blender's preferences)")
    timeout_connect: FloatProperty(name="Connect", default=10.0, min=1.0, max=300.0, unit="TIME_ABSOLUTE",
                                   description="Seconds to reach the server and read its configuration")
    timeout_call: FloatProperty(name="Call", default=120.0, min=5.0, max=3600.0, unit="TIME_ABSOLUTE",
                                description="Seconds for one short call (switch model, add a task)")
    timeout_job_minutes: FloatProperty(name="Job (minutes)", default=360.0, min=1.0, max=48 * 60.0,
                                       description="Longest a generation may take, from submit to saved file")
    flamenco_manager: StringProperty(
        name="Flamenco Manager", default="",
        description="The Flamenco Manager that Submit to Flamenco sends the storyboard to, e.g. "
                    "http://flamenco:8080 (its job type tools/flamenco/movie_director_shots.js installed)")
    farm_folder: StringProperty(
        name="Farm job folder", subtype="DIR_PATH", default="",
        description="Storage every farm worker reads and writes, mapped alike on every machine (Flamenco's "
                    "shared storage): each submitted storyboard gets a folder there, with its shots' output")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.label(text="WanGP servers")
        row = layout.row()
        row.template_list("MD_UL_servers", "", self, "servers", self, "server_index", rows=3)
        column = row.column(align=True)
        column.operator("movie_director.server_add", icon="ADD", text="")
        column.operator("movie_director.server_remove", icon="REMOVE", text="")
        row = layout.row(align=True)
        row.operator("movie_director.find_servers", icon="VIEWZOOM")
        row.operator("movie_director.check_server", icon="FILE_REFRESH", text="Test")
        from . import panels

        panels.draw_found_servers(layout, context)
        url = active_url(self)
        if not is_loopback(url):
            box = layout.box()
            box.alert = True
            box.label(text="This server is not on this machine.", icon="ERROR")
            box.label(text="Make sure it is protected (gradio auth, a VPN or an SSH tunnel).")
        layout.prop(self, "output_folder")
        layout.label(text=f"Shots of this file go to: {output_dir(self)}")
        row = layout.row()
        row.prop(self, "username")
        row.prop(self, "password")
        layout.label(text="Timeouts")
        row = layout.row(align=True)
        row.prop(self, "timeout_connect")
        row.prop(self, "timeout_call")
        row.prop(self, "timeout_job_minutes")
        layout.label(text="Render farm")
        layout.prop(self, "flamenco_manager")
        layout.prop(self, "farm_folder")
        layout.label(text="Powered by WanGP (github.com/deepbeepmeep/Wan2GP)", icon="INFO")


class MD_UL_servers(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "url", text="", emboss=False, icon="URL")
        if item.label:
            row.label(text=item.label)


# --- reading the preferences (main thread) ----------------------------------------------------------------

_DEFAULTS = SimpleNamespace(
    servers=[], server_index=0, output_folder="", username="", password="",
    timeout_connect=10.0, timeout_call=120.0, timeout_job_minutes=360.0, flamenco_manager="", farm_folder="",
)


def prefs(context: bpy.types.Context | None = None) -> Any:
    """The add-on's preferences, or their defaults when it was registered without ``addon_utils``."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else _DEFAULTS


def active_url(p: Any) -> str:
    servers = list(p.servers)
    if not servers:
        return DEFAULT_SERVER
    return servers[min(p.server_index, len(servers) - 1)].url.strip() or DEFAULT_SERVER


def output_dir(p: Any) -> str:
    """Where this file's shots go: the chosen folder, else next to the .blend, else a user folder."""
    if p.output_folder.strip():
        return os.path.normpath(bpy.path.abspath(p.output_folder.strip()))
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), OUTPUT_FOLDER_NAME)
    return os.path.join(os.path.expanduser("~"), "MovieDirector", "shots")


def connection(p: Any, url: str | None = None, folder: str | None = None) -> Any:
    """A :class:`pump.Connection` from the preferences (plain values a worker thread may hold)."""
    from .pump import Connection

    auth = (p.username, p.password) if p.username and p.password else None
    return Connection(url=(url or active_url(p)).rstrip("/"), output_dir=folder or output_dir(p),
                      connect=float(p.timeout_connect), call=float(p.timeout_call),
                      job=float(p.timeout_job_minutes) * 60.0, auth=auth)


classes = (MD_ServerItem, MD_Preferences, MD_UL_servers)
register, unregister = bpy.utils.register_classes_factory(classes)
