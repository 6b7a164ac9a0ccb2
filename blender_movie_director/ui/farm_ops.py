"""The render farm from Blender: submit the storyboard to a Flamenco Manager, and bring a farm job's shots back.

**Write Farm Job** writes the job folder only (for OpenJD, or any farm that runs the batch file).

**Submit to Flamenco** takes the shots Generate All would make (the selected text strips, else the selected
markers, with the panel's settings) and writes a job folder in the farm job folder of the preferences (storage
every worker sees): ``shots.json`` (the batch file, with the storyboard's places as its ``timeline``), an empty
``worker.blend`` for Blender on the workers to open, and ``output/``. It then sends the job to the Manager over
Flamenco's documented REST API (``POST /api/v3/jobs``, a ``SubmittedJob`` of the job type
``movie-director-shots``, the one ``tools/flamenco/movie_director_shots.js`` defines). As Flamenco's own add-on
does, the two requests run on the main thread, each bounded by :data:`MANAGER_TIMEOUT`.

**Import Farm Results** reads a job's output folder (``backend.farm.read_output``: files only, no server) and puts
every shot on the timeline where its storyboard place was (or, for a batch without places, end to end from the
current frame), with its settings stored on the strip as for any generated shot, so Regenerate and Variation
work. All or nothing: while a shot is missing or unfinished, nothing is placed, and the message says which.
Shots already on the timeline (the same generated shot, by its job id) are not placed again.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, StringProperty

from .. import storyboard
from . import convert, operators, vse
from .preferences import ADDON_PACKAGE, prefs
from .properties import rules_for

JOB_TYPE = "movie-director-shots"  # Flamenco names a job type after its script: movie_director_shots.js
JOB_TYPE_SCRIPT = "tools/flamenco/movie_director_shots.js"
MANAGER_TIMEOUT = 10.0  # seconds per request to the Manager: it answers at once (it compiles the job as it answers)
LAST_JOB = "movie_director_farm"  # scene custom property (JSON): the last job sent, for Import's default folder
TIMELINE_FORMAT = 1  # backend.farm.TIMELINE_FORMAT (not imported here: the backend is heavy to import)


class FarmError(Exception):
    """What went wrong (with the farm job, its output folder or the Manager), said so that the user knows what to
    do; ``status`` is the Manager's HTTP status when it answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- the storyboard as a batch file ---------------------------------------------------------------------------


def storyboard_batch(context: Any, scene: Any) -> tuple[dict[str, Any], list[str]]:
    """Generate All's shots as a batch file (``{"shots": [...], "timeline": {...}}``) and the notices about them.

    Raises :class:`FarmError` when there is nothing to send. The frame count of each shot is the model's own
    for its duration: the connected server's rule for the model, else its family's (the workers' WanGP has the
    same models).
    """
    state = scene.movie_director
    base = convert.shot_request(state)
    shots, skipped, notes = operators._timeline_prompts(scene, base.get("seconds") or 1.0)
    if not shots:
        raise FarmError("Nothing to send: select text strips (their text is the prompt) or timeline markers (their "
                        "name is the prompt)" + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    problem = storyboard.quick_check({**base, "prompt": shots[0][0]})
    if problem:
        raise FarmError(problem)
    rule = storyboard.model_rule(rules_for(context, base["model"]))
    if rule is None:
        from ..backend.wan2gp._enums import family_rule

        rule = family_rule(base["model"])
        notes.append(f"frame counts from the {base['model']} family's rule ({rule.fps} fps): connect to a WanGP "
                     "server to use its own")
    fps = vse.scene_fps(scene)
    batch, places = [], []
    reserved: list[storyboard.Span] = []
    meta = vse.editing_meta(scene)
    for prompt, start, seconds, lowest, fill in shots:
        frames = rule.frames_for_seconds(seconds)
        if round(seconds * rule.fps) + 1 > rule.last:
            notes.append(f"the shot at frame {start} is shorter than its place: {base['model']} makes at most "
                         f"{rule.last} frames")
            fill = 0
        length = fill or storyboard.timeline_length(frames, rule.fps, fps, state.fps_policy)
        channel = vse.first_free_channel(scene, lowest or state.channel, start, start + length, meta=meta,
                                         reserved=reserved)
        reserved.append((channel, start, start + length))
        shot = {k: v for k, v in base.items() if k != "seconds"}
        shot.update(prompt=prompt, video_length=frames)
        batch.append(shot)
        places.append({"frame_start": start, "channel": channel, "fill": fill, "meta": meta})
    if skipped:
        notes.append(f"skipped {', '.join(skipped)}")
    timeline = {"format": TIMELINE_FORMAT, "scene": scene.name, "fps": round(fps, 4), "places": places}
    return {"shots": batch, "timeline": timeline}, notes


def write_job(context: Any, scene: Any, root: str) -> tuple[Path, dict[str, Any], list[str]]:
    """Write the job folder of the storyboard under ``root``: ``shots.json``, ``worker.blend``, ``output/``.

    Returns the folder, the batch written and the notices. The batch is checked as the workers will read it.
    """
    from ..backend.batch import load_shots
    from ..backend.farm import load_timeline

    batch, notes = storyboard_batch(context, scene)
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(bpy.data.filepath).stem or scene.name).strip("_") or "storyboard"
    folder = Path(bpy.path.abspath(root)).expanduser() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    (folder / "output").mkdir(parents=True, exist_ok=False)
    shots_file = folder / "shots.json"
    shots_file.write_text(json.dumps(batch, indent=1) + "\n", encoding="utf-8")
    load_shots(shots_file)  # raises Wan2GPValidationError naming the shot at fault
    load_timeline(shots_file)
    # What Blender on the workers opens (the job type's Blender runner needs a file): an empty one. The task needs
    # no scene data, and this file's own jobs must not be reconciled on a worker when it loads.
    bpy.data.libraries.write(str(folder / "worker.blend"), set())
    return folder, batch, notes


# --- Flamenco Manager: its REST API (pkg/api/flamenco-openapi.yaml) ---------------------------------------------


def manager_call(manager: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to a Flamenco Manager; its JSON answer. Raises :class:`FarmError` with the Manager's message."""
    url = manager.rstrip("/") + path
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Accept": "application/json", **({"Content-Type": "application/json"} if data is not None else {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the farm's LAN: no proxy
    try:
        with opener.open(request, timeout=MANAGER_TIMEOUT) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise FarmError(f"the Flamenco Manager at {manager} answered {exc.code} to {method} {path}: {message}",
                        exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FarmError(f"the Flamenco Manager at {manager} did not answer ({reason}): is it running? Check its URL "
                        "in the add-on's preferences") from None


def submitted_job(name: str, folder: Path, count: int, etag: str) -> dict[str, Any]:
    """The ``SubmittedJob`` of a job folder written by :func:`write_job`."""
    return {
        "name": name,
        "type": JOB_TYPE,
        "type_etag": etag,
        "priority": 50,  # Flamenco's default
        "submitter_platform": platform.system().lower(),
        "settings": {
            "shots_file": str(folder / "shots.json"),
            "shot_count": count,
            "output_dir": str(folder / "output"),
            "blendfile": str(folder / "worker.blend"),
            "runner": "blender",
            "addon_module": ADDON_PACKAGE,  # the workers' Blender has the extension where this one has it
            "wangp_server": "",  # each worker's own WanGP, on its loopback
        },
        "metadata": {"user.name": getpass.getuser(), "movie_director.folder": str(folder)},
    }


def submit(manager: str, job: dict[str, Any]) -> dict[str, Any]:
    """Send ``job`` (``etag`` filled from the Manager's job type); returns the Manager's ``Job``."""
    try:
        job_type = manager_call(manager, "GET", f"/api/v3/jobs/type/{JOB_TYPE}")
    except FarmError as exc:
        if exc.status == 404:
            raise FarmError(f"the Flamenco Manager at {manager} has no job type {JOB_TYPE}: copy {JOB_TYPE_SCRIPT} "
                            "into its scripts/ folder and restart it") from None
        raise
    job = {**job, "type_etag": str((job_type or {}).get("etag") or "")}
    if not job["type_etag"]:
        del job["type_etag"]  # optional: without it the Manager does not check the job type's version
    return manager_call(manager, "POST", "/api/v3/jobs", job)


def _remember(scene: Any, folder: Path, count: int, manager: str = "", job: str = "") -> None:
    scene[LAST_JOB] = storyboard.dumps({"manager": manager, "job": job, "folder": str(folder),
                                        "output": str(folder / "output"), "shots": count})


class MD_OT_farm_write(bpy.types.Operator):
    """Write the storyboard (Generate All's shots) as a farm job folder, for any farm: its shots.json runs on
    OpenJD (movie-director batch shots.json --openjd DIR) or on Flamenco"""

    bl_idname = "movie_director.farm_write"
    bl_label = "Write Farm Job"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if vse.sequencer_scene(context) is None:
            cls.poll_message_set("No scene")
            return False
        if not prefs(context).farm_folder.strip():
            cls.poll_message_set("Set the farm job folder (storage every worker sees) in the add-on's preferences")
            return False
        return True

    def execute(self, context):
        from ..backend.wan2gp._errors import Wan2GPValidationError

        scene = vse.sequencer_scene(context)
        try:
            folder, batch, notes = write_job(context, scene, prefs(context).farm_folder.strip())
        except (FarmError, Wan2GPValidationError, OSError) as exc:
            self.report({"ERROR"}, f"Could not write the farm job: {exc}")
            return {"CANCELLED"}
        _remember(scene, folder, len(batch["shots"]))
        text = (f"Farm job written: {folder}; for OpenJD: movie-director batch {folder / 'shots.json'} --openjd "
                f"BUNDLE, with -p OutputDir={folder / 'output'}")
        self.report({"WARNING"} if notes else {"INFO"}, "; ".join([text, *notes]))
        return {"FINISHED"}


class MD_OT_farm_submit(bpy.types.Operator):
    """Send the storyboard (Generate All's shots: the selected text strips, else the selected markers) to the
    Flamenco Manager, one task per shot, each generated by the WanGP on its worker"""

    bl_idname = "movie_director.farm_submit"
    bl_label = "Submit to Flamenco"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        p = prefs(context)
        if vse.sequencer_scene(context) is None:
            cls.poll_message_set("No scene")
            return False
        if not p.flamenco_manager.strip():
            cls.poll_message_set("Set the Flamenco Manager's URL in the add-on's preferences")
            return False
        if not p.farm_folder.strip():
            cls.poll_message_set("Set the farm job folder (storage every worker sees) in the add-on's preferences")
            return False
        return True

    again: BoolProperty(name="Submit Again", default=False, options={"SKIP_SAVE"},
                        description="Send the storyboard even if this scene sent the very same one last time")

    def execute(self, context):
        from ..backend.wan2gp._errors import Wan2GPValidationError

        scene = vse.sequencer_scene(context)
        p = prefs(context)
        manager = p.flamenco_manager.strip()
        last = storyboard.loads(scene.get(LAST_JOB)) or {}
        if not self.again and last.get("job"):  # a second press must not make every shot twice
            try:
                sent = json.loads((Path(last["folder"]) / "shots.json").read_text(encoding="utf-8"))
                same = storyboard_batch(context, scene)[0]["shots"] == sent["shots"]  # the places may have moved
            except (FarmError, OSError, ValueError, KeyError, TypeError):
                same = False
            if same:
                self.report({"ERROR"}, f"This storyboard was sent already (job {last['job']}, {last['folder']}): "
                            "Import Farm Results when it is done, or change it; Submit Again sends it anyway")
                return {"CANCELLED"}
        try:
            folder, batch, notes = write_job(context, scene, p.farm_folder.strip())
        except (FarmError, Wan2GPValidationError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except OSError as exc:
            self.report({"ERROR"}, f"Could not write the job into the farm job folder: {exc}")
            return {"CANCELLED"}
        count = len(batch["shots"])
        try:
            job = submit(manager, submitted_job(f"{folder.name} ({count} shots)", folder, count, ""))
        except FarmError as exc:
            self.report({"ERROR"}, f"{exc}; the job folder {folder} was written: submit it again once the Manager "
                        "answers")
            return {"CANCELLED"}
        _remember(scene, folder, count, manager, str((job or {}).get("id", "")))
        text = (f"Submitted {count} shot(s) to Flamenco (job {(job or {}).get('id', '?')}); when they are done, "
                f"Import Farm Results from {folder / 'output'}")
        self.report({"WARNING"} if notes else {"INFO"}, "; ".join([text, *notes]))
        return {"FINISHED"}


# --- results back on the timeline -------------------------------------------------------------------------------


def last_output(scene: Any) -> str:
    """The output folder of the last job this scene sent to a farm ("" if none)."""
    return str((storyboard.loads(scene.get(LAST_JOB)) or {}).get("output") or "")


def _strip_name(prompt: str, index: int) -> str:
    words = "_".join(prompt.split()[:4])[:40]
    return f"{index:04d}_{words}" if words else f"shot-{index:04d}"


def _on_timeline(scene: Any) -> set[str]:
    """The job ids of the generated shots already on the scene's timeline."""
    ids = set()
    for strip in vse.all_strips(scene):
        meta = vse.get_shot_metadata(strip)
        if meta and meta.get("job_id"):
            ids.add(str(meta["job_id"]))
    return ids


def import_output(scene: Any, folder: str) -> tuple[list[str], int, list[str]]:
    """Place every shot of a farm job's output folder on ``scene``'s timeline.

    Returns ``(strip names placed, shots already there, notices)``. Raises :class:`FarmError` (nothing placed) when
    the folder is not a farm job's, or some of its shots are not done.
    """
    from .. import __version__
    from ..backend.farm import read_output
    from ..backend.wan2gp._errors import Wan2GPValidationError

    try:
        output = read_output(folder)
    except Wan2GPValidationError as exc:
        raise FarmError(str(exc)) from None
    problems = output.problems()
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise FarmError(f"{len(problems)} of the {output.total} shots in {output.folder} are not ready ({shown}): "
                        "nothing was placed. Import again once the farm job has finished")
    state = scene.movie_director
    fps = vse.scene_fps(scene)
    notes: list[str] = []
    timeline = output.timeline
    if timeline is None:
        notes.append(f"the batch has no storyboard places: placed end to end from frame {scene.frame_current}")
        places, frame = [], scene.frame_current
        for shot in output.shots:
            places.append({"frame_start": frame, "channel": state.channel, "fill": 0, "meta": ""})
            frame += storyboard.timeline_length(shot.result.frames or 1, shot.result.fps, fps, state.fps_policy)
    else:
        places = timeline["places"]
        if storyboard.fps_differs(timeline.get("fps"), fps):
            notes.append(f"the storyboard was at {timeline['fps']:g} fps, this scene is at {fps:g} fps")
    there = _on_timeline(scene)
    placed: list[vse.Placement] = []
    already = 0
    try:
        for shot, place in zip(output.shots, places, strict=True):
            result = shot.result
            if result.job_id in there:
                already += 1
                continue
            placement = vse.place_movie(scene, str(shot.video), _strip_name(result.settings.prompt or "", shot.index),
                                        place["channel"], place["frame_start"], clip_fps=result.fps,
                                        fps_policy=state.fps_policy, meta=place.get("meta", ""), fill=place["fill"])
            placed.append(placement)
            metadata = storyboard.strip_metadata(storyboard.result_record(result), kind="farm",
                                                 addon_version=__version__, created=time.time())
            metadata["farm"] = {"output": str(output.folder), "index": shot.index}
            vse.set_shot_metadata(vse.find_strip(scene, placement.strip_name), metadata)
            if placement.moved:
                notes.append(f"shot {shot.index}: channel {place['channel']} was taken, placed on "
                             f"{placement.channel}")
            if place.get("meta") and not placement.meta:
                notes.append(f"shot {shot.index}: the meta strip {place['meta']} is gone, placed at the top level")
    except Exception as exc:  # e.g. no free channel: take back what this import placed, all or nothing
        for placement in reversed(placed):
            for name in (placement.speed_strip_name, placement.strip_name):
                strip = vse.find_strip(scene, name) if name else None
                if strip is not None:
                    vse.remove_strip(scene, strip)
        raise FarmError(f"could not place the shots of {output.folder} ({exc}): nothing was placed") from exc
    return [p.strip_name for p in placed], already, notes


class MD_OT_farm_import(bpy.types.Operator):
    """Put the shots of a farm job (its output folder: shot-NNNN.mp4 and their journals) on the timeline, where
    the storyboard had them, with their settings (Regenerate and Variation work on them)"""

    bl_idname = "movie_director.farm_import"
    bl_label = "Import Farm Results"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Output folder", subtype="DIR_PATH",
                              description="The farm job's output folder (OutputDir, output_dir)")

    @classmethod
    def poll(cls, context):
        if vse.sequencer_scene(context) is None:
            cls.poll_message_set("No scene")
            return False
        return True

    def invoke(self, context, event):
        if not self.directory:
            self.directory = last_output(vse.sequencer_scene(context))
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        scene = vse.sequencer_scene(context)
        folder = bpy.path.abspath(self.directory or last_output(scene))
        if not folder.strip():
            self.report({"ERROR"}, "Choose the farm job's output folder")
            return {"CANCELLED"}
        try:
            placed, already, notes = import_output(scene, os.path.normpath(folder))
        except FarmError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not placed:
            self.report({"INFO"}, f"All {already} shot(s) of {folder} are on the timeline already")
            return {"CANCELLED"}
        text = f"Placed {len(placed)} shot(s) from {folder}"
        if already:
            text += f"; {already} were on the timeline already"
        self.report({"WARNING"} if notes else {"INFO"}, "; ".join([text, *notes]))
        return {"FINISHED"}


class MD_PT_farm(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Movie Director"
    bl_label = "Render Farm"
    bl_parent_id = "MD_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.operator(MD_OT_farm_submit.bl_idname, icon="EXPORT")
        layout.operator(MD_OT_farm_write.bl_idname, icon="FILE_NEW")
        layout.operator(MD_OT_farm_import.bl_idname, icon="IMPORT")
        last = storyboard.loads(vse.sequencer_scene(context).get(LAST_JOB)) or {}
        if last:
            layout.label(text=f"Last job: {last.get('job') or '?'} ({last.get('shots', '?')} shots)", icon="INFO")


classes = (MD_OT_farm_write, MD_OT_farm_submit, MD_OT_farm_import, MD_PT_farm)
register, unregister = bpy.utils.register_classes_factory(classes)
