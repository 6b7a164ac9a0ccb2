"""Operators. ``execute`` works headless (scripts, tests, background mode); nothing here waits on the network:
work goes to worker threads and comes back through the pump.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import bpy
from bpy.props import BoolProperty, StringProperty

from .. import handoff, storyboard
from . import convert, persistence, pump, vse
from .preferences import ADDON_PACKAGE, DEFAULT_SERVER, connection, prefs
from .properties import request_rules, rules_for


def _running(cls: type, context: Any) -> bool:
    if not pump.running():
        cls.poll_message_set("Movie Director is not enabled")
        return False
    if vse.sequencer_scene(context) is None:
        cls.poll_message_set("No scene")
        return False
    return True


class _NeedsAddon:
    """Operators that work only while the add-on runs (its pump and workers), in a scene."""

    @classmethod
    def poll(cls, context):
        return _running(cls, context)


def find_job(scene: Any, key: str) -> Any:
    for item in pump.job_items(scene):
        if item.key == key:
            return item
    return None


def _reservations(scene: Any, meta: str) -> list[storyboard.Span]:
    """Slots of shots on their way to a level (a meta strip, or the top): two jobs submitted at the same frame
    don't pick the same channel."""
    return [(i.channel, i.frame_start, i.frame_start + max(1, i.expected_length)) for i in pump.job_items(scene)
            if i.meta == meta and (i.status in storyboard.ACTIVE or (i.status == "completed" and not i.placed))]


def free_channel(scene: Any, lowest: int, start: int, end: int) -> int:
    """The first free channel from ``lowest`` over ``[start, end)`` where the user is editing (an open meta
    strip, or the top level), strips and shots on their way counted."""
    meta = vse.editing_meta(scene)
    return vse.first_free_channel(scene, lowest, start, end, meta=meta, reserved=_reservations(scene, meta))


def expected_length(context: Any, scene: Any, model: str, seconds: float | None = None, *,
                    frames: int | None = None, clip_fps: float | None = None) -> int:
    """Timeline frames a shot will take, from the model's rules when known (else the scene's fps)."""
    fps = vse.scene_fps(scene)
    if frames is None:
        known = storyboard.frames_for(seconds or 0.0, rules_for(context, model))
        if known is None:
            return max(1, round((seconds or 0.0) * fps))
        frames, clip_fps = known
    return storyboard.timeline_length(frames, clip_fps, fps, scene.movie_director.fps_policy)


def submit(context: Any, scene: Any, *, kind: str, request: dict[str, Any], channel: int, frame_start: int,
           length: int, batch: str = "", meta: str | None = None, fill: int = 0, journal: str = "",
           journal_index: int = 0, render: list[str] | None = None) -> Any:
    """Add the job to the scene (saved with the .blend) and hand it to a worker. Returns the job item.

    ``meta``: the meta strip the shot goes into (default: the one open for editing, or the top level).
    ``fill``: timeline frames the placed shot must take exactly (a text strip's or a marker range's), else 0.
    ``journal``: a background runner makes the shot (``handoff``); nothing is sent from here, the journal is
    watched (the caller starts the runner). Else the shot runs inside Blender, and with "Keep running when
    Blender closes" it goes to a background runner if Blender quits before it is done (``pump._let_go``).
    ``render``: the command of a process that renders the start image (``request["image_start"]``) first.
    """
    st = pump.state()
    p = prefs(context)
    conn = connection(p)
    state = scene.movie_director
    prompt, model = storyboard.request_summary(request)
    item = state.jobs.add()
    item.key = uuid.uuid4().hex[:12]
    item.kind = kind
    item.batch = batch
    item.server = conn.url
    item.output_dir = conn.output_dir
    item.prompt = prompt
    item.model = model
    item.request = storyboard.dumps(request)
    item.status = "submitting"
    item.phase = "Sending to the server"
    item.channel = channel
    item.meta = vse.editing_meta(scene) if meta is None else meta
    item.frame_start = frame_start
    item.expected_length = fill or length
    item.fill_length = fill
    item.fps_policy = state.fps_policy
    item.created = time.time()
    state.job_index = len(state.jobs) - 1
    st.where[item.key] = scene.name
    if journal:
        item.journal, item.journal_index = journal, journal_index
        item.status, item.phase = "queued", "Handed to the background runner"
        pump.watch(st, journal, journal_index, item.key, conn)
    else:
        if state.background:
            st.keep_running.add(item.key)
        st.pending.add(item.key)
        if render:
            item.phase = "Rendering the start image"
            pump.render_then_submit(st, item.key, conn, request, render)
        else:
            st.run(pump.submit_worker, st, item.key, conn, request)
    pump.tag_redraw()
    return item


def _inputs_dir(context: Any) -> str:
    folder = os.path.join(connection(prefs(context)).output_dir, "inputs")
    os.makedirs(folder, exist_ok=True)
    return folder


class _ShotOperator(_NeedsAddon):
    bl_options = {"REGISTER"}

    def _request(self, context: Any) -> dict[str, Any] | None:
        request = convert.shot_request(vse.sequencer_scene(context).movie_director)
        problem = storyboard.quick_check(request)
        if problem:
            self.report({"ERROR"}, problem)
            return None
        return request

    def _queue(self, context: Any, kind: str, request: dict[str, Any], frame: int, channel: int | None = None,
               length: int | None = None, render: list[str] | None = None) -> set[str]:
        scene = vse.sequencer_scene(context)
        state = scene.movie_director
        if length is None:
            length = expected_length(context, scene, request["model"], request.get("seconds"))
        if channel is None:
            channel = free_channel(scene, state.channel, frame, frame + length)
        item = submit(context, scene, kind=kind, request=request, channel=channel, frame_start=frame, length=length,
                      render=render)
        self.report({"INFO"}, f"Shot queued for channel {item.channel}, frame {item.frame_start}"
                    + (" (its start image renders in the background first)" if render else ""))
        return {"FINISHED"}


class MD_OT_generate(_ShotOperator, bpy.types.Operator):
    """Generate a shot from the prompt (text to video) at the current frame"""

    bl_idname = "movie_director.generate"
    bl_label = "Generate"

    def execute(self, context):
        request = self._request(context)
        if request is None:
            return {"CANCELLED"}
        return self._queue(context, "generate", request, vse.sequencer_scene(context).frame_current)


class MD_OT_generate_from_frame(_ShotOperator, bpy.types.Operator):
    """Image to video: the selected image strip, or the picture at the current frame, starts the shot"""

    bl_idname = "movie_director.generate_from_frame"
    bl_label = "From Frame"

    def execute(self, context):
        request = self._request(context)
        if request is None:
            return {"CANCELLED"}
        scene = vse.sequencer_scene(context)
        frame = scene.frame_current
        strip = vse.active_strip(scene)
        render = None
        if vse.is_image(strip) and strip.select:
            request["image_start"] = vse.image_strip_path(strip, frame)
        else:
            try:
                request["image_start"], render = _start_image(context, scene, frame)
            except Exception as exc:
                self.report({"ERROR"}, f"Could not take the picture at frame {frame}: {exc}")
                return {"CANCELLED"}
        return self._queue(context, "from_frame", request, frame, render=render)


def _start_image(context: Any, scene: Any, frame: int) -> tuple[str, list[str] | None]:
    """From Frame's start image: ``(its path, None)`` when it is written at once (a shot's own frame, or the
    sequencer's picture), ``(its path to be, the render process's command)`` when it needs the render engine."""
    picture = vse.frame_picture(scene, frame)
    name = f"frame_{bpy.path.clean_name(scene.name)}_{frame}_{uuid.uuid4().hex[:6]}.png"
    image = os.path.join(_inputs_dir(context), name)
    if picture.kind == "none":
        raise RuntimeError("the scene has no strips and no camera: add a camera or strips, or select an image strip")
    if picture.kind == "empty":
        raise RuntimeError("no strip shows anything there: move the playhead onto a strip")
    if picture.kind == "strip" and vse.is_image(picture.strip):
        return vse.image_strip_path(picture.strip, frame), None
    if picture.kind == "strip" and vse.media_size(picture.strip) is not None:
        return vse.strip_picture_to_png(scene, picture.strip, frame, image), None
    if picture.kind in ("strip", "sequencer"):
        return vse.sequencer_frame_to_png(scene, frame, image), None
    from .. import stills

    copy = os.path.join(_inputs_dir(context), ".render", name.removesuffix(".png") + ".blend")
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    vse.save_copy(copy)
    return image, stills.command(bpy.app.binary_path, copy, scene.name, frame, image, ADDON_PACKAGE)


class MD_OT_extend(_ShotOperator, bpy.types.Operator):
    """Continue the selected strip (a movie, meta, scene or image strip): what it shows at its last frame starts a
    new shot, placed right after it"""

    bl_idname = "movie_director.extend"
    bl_label = "Extend"

    @classmethod
    def poll(cls, context):
        if not _running(cls, context):
            return False
        if not vse.can_extend(vse.active_strip(vse.sequencer_scene(context))):
            cls.poll_message_set("Select a movie, meta, scene or image strip to extend")
            return False
        return True

    def execute(self, context):
        scene = vse.sequencer_scene(context)
        strip = vse.active_strip(scene)
        request = convert.shot_request(scene.movie_director)
        if not request["prompt"].strip():  # nothing typed: continue with the strip's own prompt
            meta = vse.get_shot_metadata(strip) or {}
            request["prompt"] = (meta.get("settings") or {}).get("prompt", "")
        problem = storyboard.quick_check(request)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        start, end = vse.strip_span(strip)
        image = os.path.join(_inputs_dir(context), f"extend_{end}_{uuid.uuid4().hex[:6]}.png")
        try:
            vse.strip_frame_to_png(scene, strip, vse.last_frame(strip), image)
        except Exception as exc:
            self.report({"ERROR"}, f"Could not render the last frame of {strip.name}: {exc}")
            return {"CANCELLED"}
        request["image_start"] = image
        length = expected_length(context, scene, request["model"], request.get("seconds"))
        channel = free_channel(scene, strip.channel, end, end + length)  # its own channel, unless taken
        return self._queue(context, "extend", request, end, channel=channel, length=length)


class MD_OT_regenerate(_ShotOperator, bpy.types.Operator):
    """Make the selected shot again from the settings stored on its strip (Variation: with a new seed)"""

    bl_idname = "movie_director.regenerate"
    bl_label = "Regenerate"

    variation: BoolProperty(name="Variation", default=False, description="Use a new seed")

    @classmethod
    def description(cls, context, properties):
        if properties.variation:
            return "Make a variation of the selected shot: the same settings with a new seed"
        return "Make the selected shot again with exactly the settings (and seed) stored on its strip"

    @classmethod
    def poll(cls, context):
        if not _running(cls, context):
            return False
        if vse.get_shot_metadata(vse.active_strip(vse.sequencer_scene(context))) is None:
            cls.poll_message_set("Select a strip made by Movie Director")
            return False
        return True

    def execute(self, context):
        scene = vse.sequencer_scene(context)
        strip = vse.active_strip(scene)
        meta = vse.get_shot_metadata(strip) or {}
        stored = meta.get("settings")
        if not isinstance(stored, dict) or not stored.get("prompt"):
            self.report({"ERROR"}, f"{strip.name} carries no generation settings")
            return {"CANCELLED"}
        request = storyboard.rerun_request(stored, variation=self.variation)
        start, end = vse.strip_span(strip)
        length = end - start
        channel = free_channel(scene, strip.channel + 1, start, start + length)
        return self._queue(context, "variation" if self.variation else "regenerate", request, start,
                           channel=channel, length=length)


class MD_OT_generate_all(_NeedsAddon, bpy.types.Operator):
    """One shot per selected text strip (its text is the prompt; the shot fills its place, on the channel above),
    or, with no text strip selected, per selected timeline marker (its name is the prompt; the shot lasts until
    the next marker). The other settings come from the panel"""

    bl_idname = "movie_director.generate_all"
    bl_label = "Generate All"
    bl_options = {"REGISTER"}

    def execute(self, context):
        scene = vse.sequencer_scene(context)
        state = scene.movie_director
        base = convert.shot_request(state)
        shots, skipped, notes = _timeline_prompts(scene, base.get("seconds") or 1.0)
        if not shots:
            self.report({"ERROR"}, "Nothing to generate: select text strips (their text is the prompt) or timeline "
                        "markers (their name is the prompt)" + (f"; skipped {', '.join(skipped)}" if skipped else ""))
            return {"CANCELLED"}
        problem = storyboard.quick_check({**base, "prompt": shots[0][0]})  # prompts here are never empty
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        batch = uuid.uuid4().hex[:8]
        rules = rules_for(context, base["model"])
        rule = storyboard.model_rule(rules)
        files = None
        if state.background and rule is None:
            notes.append("the shots run inside Blender, not in the background: connect to the server first (the "
                         "model's frame rule is needed to hand them over)")
        elif state.background:
            conn = connection(prefs(context))
            files = handoff.paths(conn.output_dir, batch)
        items = []
        for prompt, start, seconds, lowest, place in shots:
            request = {**base, "prompt": prompt, "seconds": seconds}
            length = expected_length(context, scene, request["model"], seconds)
            fill = place
            if rule is not None and round(seconds * rule.fps) + 1 > rule.last:
                notes.append(f"the shot at frame {start} is shorter than its place: {base['model']} makes at most "
                             f"{rule.last} frames ({(rule.last - 1) / rule.fps:.1f} s)")
                fill = 0  # it fills what it can, at its own speed
            channel = free_channel(scene, lowest or state.channel, start, start + (fill or length))
            items.append(submit(context, scene, kind="batch", request=request, channel=channel,
                                frame_start=start, length=length, batch=batch, fill=fill,
                                journal=str(files.journal) if files else "", journal_index=len(items)))
        if files is not None:
            try:
                handoff.write_shots(files.shots, [_background_shot(i, rules) for i in items])
                handoff.start(files, conn.url, conn.output_dir, auth=conn.auth)
            except (OSError, ValueError) as exc:  # the jobs stay in the list, failed, with Retry (inside Blender)
                for item in items:
                    item.status, item.phase = "failed", ""
                    item.error = f"could not start the background runner ({exc}); Retry runs the shot in Blender"
                self.report({"ERROR"}, f"Could not start the background runner: {exc}")
                return {"CANCELLED"}
            notes.append(f"handed to the background runner: they go on if Blender closes (journal {files.journal})")
        text = f"{len(shots)} shot(s) queued"
        if skipped:
            text += f"; skipped {', '.join(skipped)}"
        self.report({"WARNING"} if skipped or notes else {"INFO"}, "; ".join([text, *notes]))
        return {"FINISHED"}


def _background_shot(item: Any, rules: dict[str, Any] | None) -> dict[str, Any]:
    """A job as a shot of the runner's shots file: the request with the frame count the model makes of its
    seconds (as the shot inside Blender gets it), named on the server by the job's client id."""
    request = storyboard.loads(item.request) or {}
    shot = {k: v for k, v in request.items() if k != "seconds"}
    known = storyboard.frames_for(float(request.get("seconds") or 1.0), rules)
    if known is not None:
        shot["video_length"] = known[0]
    shot["client_id"] = storyboard.client_id(item.key)
    return shot


def _timeline_prompts(scene: Any, default_seconds: float) -> tuple[list[tuple[str, int, float, int | None, int]],
                                                                  list[str], list[str]]:
    """The shots "Generate All" makes: ``(prompt, start frame, seconds, lowest channel, frames to fill)`` each
    (0 to fill: a last marker, whose shot has the panel's length), what was skipped, and notices. Selected text
    strips win; else the selected markers."""
    fps = vse.scene_fps(scene)
    shots, skipped, notes = [], [], []
    texts = vse.selected_text_strips(scene)
    if texts:
        for strip in texts:
            start, end = vse.strip_span(strip)
            if not strip.text.strip():
                skipped.append(f"{strip.name} (no text)")
                continue
            shots.append((strip.text.strip(), start, storyboard.span_seconds(start, end, fps), strip.channel + 1,
                          end - start))
        return shots, skipped, notes
    markers = sorted(scene.timeline_markers, key=lambda m: m.frame)
    for index, marker in enumerate(markers):
        if not marker.select:
            continue
        if not marker.name.strip():
            skipped.append(f"the marker at frame {marker.frame} (no name)")
            continue
        later = [m.frame for m in markers[index + 1:] if m.frame > marker.frame]
        seconds = storyboard.span_seconds(marker.frame, later[0], fps) if later else default_seconds
        shots.append((marker.name.strip(), marker.frame, seconds, None, later[0] - marker.frame if later else 0))
        if len(marker.name) >= storyboard.MARKER_NAME_MAX:
            notes.append(f"the marker at frame {marker.frame} has a {storyboard.MARKER_NAME_MAX}-character name, "
                         "Blender's limit: its prompt may be cut; use a text strip for long prompts")
    return shots, skipped, notes


class MD_OT_load_strip_settings(bpy.types.Operator):
    """Copy the settings stored on the selected strip into the shot settings"""

    bl_idname = "movie_director.load_strip_settings"
    bl_label = "Load Settings"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not _running(cls, context):
            return False
        if vse.get_shot_metadata(vse.active_strip(vse.sequencer_scene(context))) is None:
            cls.poll_message_set("Select a strip made by Movie Director")
            return False
        return True

    def execute(self, context):
        meta = vse.get_shot_metadata(vse.active_strip(vse.sequencer_scene(context))) or {}
        convert.load_shot_settings(vse.sequencer_scene(context).movie_director, meta.get("settings") or {})
        return {"FINISHED"}


class _JobOperator:
    bl_options = {"REGISTER", "INTERNAL"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def _item(self, context: Any) -> Any:
        item = find_job(vse.sequencer_scene(context), self.key)
        if item is None:
            self.report({"ERROR"}, f"No job {self.key} in this scene")
        return item


class MD_OT_cancel_job(_NeedsAddon, _JobOperator, bpy.types.Operator):
    """Cancel this job: it is removed from WanGP's queue, or its generation is stopped on the server"""

    bl_idname = "movie_director.cancel_job"
    bl_label = "Cancel Job"

    def execute(self, context):
        item = self._item(context)
        if item is None:
            return {"CANCELLED"}
        if item.status not in storyboard.ACTIVE:
            self.report({"WARNING"}, f"The job is already {item.status}")
            return {"CANCELLED"}
        cancel_item(item)
        pump.tag_redraw()
        return {"FINISHED"}


def cancel_item(item: Any) -> None:
    """Cancel an active job: its own thread stops the work on the server (never waited for here). A job of a
    background runner stops the whole run: the runner cancels its shots on the server and ends."""
    st = pump.state()
    if item.journal:
        handoff.stop(handoff.paths_of(item.journal))
        for scene in bpy.data.scenes:
            for other in pump.job_items(scene):
                if other.journal == item.journal and other.status in storyboard.ACTIVE:
                    other.status, other.phase = "cancelling", "Stopping the background runner"
        return
    with st.lock:  # a worker moves the job from pending to jobs under this lock (pump.track)
        job = st.jobs.get(item.key)
        pending = job is None and item.key in st.pending
        if pending:
            st.cancel_requested.add(item.key)  # cancelled as soon as the server has it
    if job is not None:
        job.cancel()  # sets a flag: the job's own thread stops the work on the server
        item.status = "cancelling"
        item.phase = "Stopping on the server"
    elif pending:
        item.status = "cancelling"
    else:
        item.status = "cancelled"


class MD_OT_cancel_batch(_NeedsAddon, bpy.types.Operator):
    """Cancel every unfinished shot of this Generate All run (finished shots stay)"""

    bl_idname = "movie_director.cancel_batch"
    bl_label = "Cancel All"
    bl_options = {"REGISTER", "INTERNAL"}

    batch: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        active = [i for i in vse.sequencer_scene(context).movie_director.jobs
                  if self.batch and i.batch == self.batch and i.status in storyboard.ACTIVE]
        if not active:
            self.report({"WARNING"}, "No unfinished shot in this batch")
            return {"CANCELLED"}
        for item in active:
            cancel_item(item)
        pump.tag_redraw()
        self.report({"INFO"}, f"Cancelling {len(active)} shot(s)")
        return {"FINISHED"}


class MD_OT_remove_job(_JobOperator, bpy.types.Operator):
    """Remove this finished job from the list (its strip and file stay)"""

    bl_idname = "movie_director.remove_job"
    bl_label = "Remove Job"

    def execute(self, context):
        state = vse.sequencer_scene(context).movie_director
        for index, item in enumerate(state.jobs):
            if item.key == self.key:
                if item.status in storyboard.ACTIVE:
                    self.report({"ERROR"}, "Cancel the job first")
                    return {"CANCELLED"}
                state.jobs.remove(index)
                state.job_index = min(state.job_index, max(0, len(state.jobs) - 1))
                return {"FINISHED"}
        return {"CANCELLED"}


class MD_OT_clear_finished(bpy.types.Operator):
    """Remove finished jobs from the list (their strips and files stay)"""

    bl_idname = "movie_director.clear_finished"
    bl_label = "Clear Finished"
    bl_options = {"REGISTER"}

    def execute(self, context):
        state = vse.sequencer_scene(context).movie_director
        for index in reversed(range(len(state.jobs))):
            if state.jobs[index].status in storyboard.FINISHED:
                state.jobs.remove(index)
        state.job_index = min(state.job_index, max(0, len(state.jobs) - 1))
        return {"FINISHED"}


class MD_OT_retry_job(_NeedsAddon, _JobOperator, bpy.types.Operator):
    """Try again: reconnect a lost job to the server, or submit a failed one again"""

    bl_idname = "movie_director.retry_job"
    bl_label = "Retry"

    def execute(self, context):
        item = self._item(context)
        if item is None:
            return {"CANCELLED"}
        if item.status == "lost" and storyboard.loads(item.record):
            persistence.retry(pump.state(), item)
            return {"FINISHED"}
        if item.status in ("failed", "cancelled", "lost"):
            request = storyboard.loads(item.request)
            if not request:
                self.report({"ERROR"}, "This job has no stored request")
                return {"CANCELLED"}
            submit(context, vse.sequencer_scene(context), kind=item.kind, request=request, channel=item.channel,
                   frame_start=item.frame_start, length=item.expected_length, batch=item.batch, meta=item.meta)
            return {"FINISHED"}
        self.report({"WARNING"}, f"The job is {item.status}")
        return {"CANCELLED"}


class MD_OT_copy_error(_JobOperator, bpy.types.Operator):
    """Copy the job's full error message to the clipboard"""

    bl_idname = "movie_director.copy_error"
    bl_label = "Copy Error"

    def execute(self, context):
        item = self._item(context)
        if item is None:
            return {"CANCELLED"}
        context.window_manager.clipboard = item.error or item.message
        return {"FINISHED"}


class MD_OT_check_server(_NeedsAddon, bpy.types.Operator):
    """Connect to the server: its version, model and load, and its model catalog"""

    bl_idname = "movie_director.check_server"
    bl_label = "Connect"
    bl_options = {"REGISTER"}

    def execute(self, context):
        st = pump.state()
        conn = connection(prefs(context))
        st.checking.add(conn.url)
        st.run(pump.check_worker, st, conn)
        self.report({"INFO"}, f"Contacting {conn.url}")
        return {"FINISHED"}


class MD_OT_find_servers(_NeedsAddon, bpy.types.Operator):
    """Look for WanGP servers: the listed URLs and the usual ports on this machine"""

    bl_idname = "movie_director.find_servers"
    bl_label = "Find Servers"
    bl_options = {"REGISTER"}

    def execute(self, context):
        st = pump.state()
        urls = [s.url for s in prefs(context).servers if s.url.strip()]
        st.finding = True
        st.found, st.found_error = None, ""
        st.run(pump.find_worker, st, urls)
        return {"FINISHED"}


class MD_OT_use_server(bpy.types.Operator):
    """Use this server"""

    bl_idname = "movie_director.use_server"
    bl_label = "Use Server"
    bl_options = {"REGISTER", "INTERNAL"}

    url: StringProperty()
    label: StringProperty()

    def execute(self, context):
        p = prefs(context)
        url = self.url.rstrip("/")
        for index, server in enumerate(p.servers):
            if server.url.rstrip("/") == url:
                p.server_index = index
                break
        else:
            server = p.servers.add()
            server.url, server.label = url, self.label
            p.server_index = len(p.servers) - 1
        return {"FINISHED"}


class MD_OT_server_add(bpy.types.Operator):
    """Add a server URL"""

    bl_idname = "movie_director.server_add"
    bl_label = "Add Server"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        p = prefs(context)
        server = p.servers.add()
        server.url = DEFAULT_SERVER
        p.server_index = len(p.servers) - 1
        return {"FINISHED"}


class MD_OT_server_remove(bpy.types.Operator):
    """Remove the selected server URL"""

    bl_idname = "movie_director.server_remove"
    bl_label = "Remove Server"
    bl_options = {"REGISTER", "INTERNAL"}

    @classmethod
    def poll(cls, context):
        return len(prefs(context).servers) > 0

    def execute(self, context):
        p = prefs(context)
        p.servers.remove(min(p.server_index, len(p.servers) - 1))
        p.server_index = max(0, min(p.server_index, len(p.servers) - 1))
        return {"FINISHED"}


def request_model_rules(context: Any) -> None:
    """After a server check: fetch the rules of the models the scenes use (in the background)."""
    for scene in bpy.data.scenes:
        request_rules(context, scene.movie_director.model)


classes = (
    MD_OT_generate,
    MD_OT_generate_from_frame,
    MD_OT_extend,
    MD_OT_regenerate,
    MD_OT_generate_all,
    MD_OT_load_strip_settings,
    MD_OT_cancel_job,
    MD_OT_cancel_batch,
    MD_OT_remove_job,
    MD_OT_clear_finished,
    MD_OT_retry_job,
    MD_OT_copy_error,
    MD_OT_check_server,
    MD_OT_find_servers,
    MD_OT_use_server,
    MD_OT_server_add,
    MD_OT_server_remove,
)
register, unregister = bpy.utils.register_classes_factory(classes)
