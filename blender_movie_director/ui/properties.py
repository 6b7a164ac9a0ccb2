"""Saved state: the shot settings of each scene and its jobs (``scene.movie_director``).

Jobs are PropertyGroups so that they are saved with the .blend: a reload forgets nothing (see persistence).
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import pump
from .preferences import active_url, connection, prefs

FPS_POLICIES = [
    ("STRETCH", "Time-stretch", "Play the clip at its real speed: a Speed effect spreads its frames over the "
     "scene's frame rate (a 16 fps clip in a 24 fps scene lasts as long as it was generated)"),
    ("KEEP", "Keep frames", "One clip frame per scene frame: the clip plays faster or slower than generated"),
]


def _catalog(context: Any) -> list[dict[str, Any]]:
    if not pump.running():
        return []
    return pump.state().catalogs.get(active_url(prefs(context)).rstrip("/"), [])


def _search_models(self: Any, context: Any, edit_text: str) -> list[tuple[str, str]]:
    wanted, text = self.category.strip(), edit_text.strip().lower()
    found = []
    for model in _catalog(context):
        if wanted and wanted not in model.get("categories", []):
            continue
        name = model["model_type"]
        if text and text not in name.lower() and text not in model.get("name", "").lower():
            continue
        found.append((name, model.get("name", "")))
    return found[:300]


def _search_categories(self: Any, context: Any, edit_text: str) -> list[str]:
    categories = sorted({c for m in _catalog(context) for c in m.get("categories", [])})
    return [c for c in categories if edit_text.strip().lower() in c]


def rules_for(context: Any, model: str) -> dict[str, Any] | None:
    """The connected server's rules for ``model`` (fps, frame rule, resolutions), if fetched."""
    if not pump.running():
        return None
    return pump.state().rules.get((active_url(prefs(context)).rstrip("/"), model.strip()))


def request_rules(context: Any, model: str) -> None:
    """Fetch a model's rules from the server in the background (once), if the server is reachable."""
    if not pump.running() or not model.strip():
        return
    st = pump.state()
    p = prefs(context)
    url = active_url(p).rstrip("/")
    key = (url, model.strip())
    if key in st.rules or key in st.rules_asked or not st.servers.get(url, {}).get("reachable"):
        return
    st.rules_asked.add(key)
    st.run(pump.rules_worker, st, connection(p), model.strip())


def _search_resolutions(self: Any, context: Any, edit_text: str) -> list[str]:
    rules = rules_for(context, self.model) or {}
    return [r for r in rules.get("resolutions", []) if edit_text.strip() in r]


def _model_changed(self: Any, context: Any) -> None:
    request_rules(context, self.model)


class MD_Job(bpy.types.PropertyGroup):
    """One shot on its way: what was asked, where it goes, how far it is, and how it ended."""

    key: StringProperty(description="This job's id in the .blend")
    kind: StringProperty(description="generate, from_frame, extend, regenerate, variation or batch")
    batch: StringProperty(description="The Generate All run this job belongs to (empty: a single shot)")
    job_id: StringProperty(description="The WanGP client's job id")
    server: StringProperty()
    output_dir: StringProperty(subtype="DIR_PATH")
    prompt: StringProperty()
    model: StringProperty()
    request: StringProperty(description="What was asked (JSON)")
    record: StringProperty(description="The client's record of the job, to resume it after a reload (JSON)")
    result: StringProperty(description="The finished shot (JSON)")
    status: StringProperty(default="submitting")
    fraction: FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    step: IntProperty()
    total: IntProperty()
    phase: StringProperty()
    eta: FloatProperty(default=-1.0)
    queue_position: IntProperty(default=-1)
    message: StringProperty(description="The latest notice: from the server, or about placement and fps")
    error: StringProperty(description="What went wrong and what to do")
    video_path: StringProperty(subtype="FILE_PATH")
    strip_name: StringProperty()
    placed: BoolProperty(default=False)
    channel: IntProperty(min=1, max=128, default=1)
    meta: StringProperty(description="The meta strip the shot goes into (empty: the top level)")
    frame_start: IntProperty()
    expected_length: IntProperty(description="Timeline frames reserved at submit")
    fill_length: IntProperty(default=0, min=0,
                             description="Timeline frames the shot fills exactly (its text strip or marker range); "
                                         "0: as long as the clip")
    fps_policy: StringProperty(default="STRETCH")
    created: FloatProperty()
    journal: StringProperty(subtype="FILE_PATH", description="The background runner's journal that makes this "
                            "shot (Generate All with Keep Running); empty: the shot runs inside Blender")
    journal_index: IntProperty(default=0, min=0, description="This shot's place in that journal")


class MD_SceneState(bpy.types.PropertyGroup):
    """The shot settings of the panel, and the scene's jobs."""

    prompt: StringProperty(name="Prompt", description="What the shot shows")
    negative_prompt: StringProperty(name="Negative", description="What the shot must not show")
    category: StringProperty(name="Category", default="", search=_search_categories,
                             description="Filter the model list (empty: every model)")
    model: StringProperty(name="Model", default="t2v_1.3B", search=_search_models, update=_model_changed,
                          description="WanGP model type, from the server's catalog")
    resolution: StringProperty(name="Resolution", default="832x480", search=_search_resolutions,
                               description="Width x height, as WanGP writes it")
    seconds: FloatProperty(name="Duration", default=2.0, min=0.1, max=60.0, step=10, precision=2,
                           description="Seconds; the model turns them into its own frame count (shown below)")
    steps: IntProperty(name="Steps", default=0, min=0, max=200, description="Denoising steps (0: the model's "
                       "default)")
    seed: IntProperty(name="Seed", default=-1, min=-1, description="-1: a new random seed for each shot")
    guidance_scale: FloatProperty(name="Guidance", default=0.0, min=0.0, max=30.0,
                                  description="Guidance scale (0: the model's default)")
    fps_policy: EnumProperty(name="Frame rate", items=FPS_POLICIES, default="STRETCH",
                             description="When the clip's fps differs from the scene's")
    channel: IntProperty(name="Channel", default=2, min=1, max=127,
                         description="Lowest channel for new shots (the first free one from here is used)")
    background: BoolProperty(name="Keep running when Blender closes", default=True,
                             description="Generate All hands its shots to a background runner on this machine "
                                         "(movie-director batch), and the other shots still unfinished when "
                                         "Blender quits go to one: they go on with Blender closed and are placed "
                                         "when the file is opened again. Off: they run inside Blender, and are "
                                         "collected when the file is opened again")
    jobs: CollectionProperty(type=MD_Job)
    job_index: IntProperty(name="Job", default=0, min=0)


classes = (MD_Job, MD_SceneState)
_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()
    bpy.types.Scene.movie_director = PointerProperty(type=MD_SceneState)


def unregister() -> None:
    del bpy.types.Scene.movie_director
    _unregister()
