"""Nothing is lost: jobs live in the .blend (``scene.movie_director.jobs``) and are reconciled with the server.

Reconcile runs after a file is loaded (``load_post``), after undo and redo (which bring back earlier states
of the jobs), and when the add-on is enabled (first timer tick, since ``bpy.data`` is not available during
``register``). For each job of the file:

- ended in this session but shown as running (an undo restored an earlier state): its end is applied again;
- still tracked in this session (e.g. File > Revert): nothing to do, tracking goes on;
- parked by a disable of the add-on in this session: adopted again;
- finished while its file was closed in this session: its result is applied now;
- queued or running with a record: a worker re-attaches with ``Wan2GPClient.resume_job(record)``
  (tracking resumes; "lost: <reason>" if the server no longer has it; the output is fetched if it finished);
- queued with no record (Blender closed or saved while submitting): re-attached from this user's register of
  jobs if the task reached the server's queue (found by its client id), else marked lost, with the reason;
- made by a background runner (Generate All, ``handoff``), or handed to one as Blender quit (a single shot, with
  "Keep running when Blender closes"; ``handoff.handed_over`` says where): its journal is read until the shot
  ends there, and a finished shot is placed from it; a runner that died with shots unfinished is started again
  (``--resume``);
- finished and downloaded but not yet on the timeline: placed now.

Before a save, the records of tracked jobs are refreshed so the file holds their latest state. When Blender
quits, running jobs are let go at once (``pump.on_quit``): they are collected the next time the file is opened.
"""

from __future__ import annotations

import logging
from typing import Any

import bpy
from bpy.app.handlers import persistent

from .. import storyboard
from . import pump
from .preferences import connection, prefs

log = logging.getLogger(__name__)


def reconcile(st: pump.State) -> bool:
    """Bring the open file's jobs and the server's in line (main thread). Returns True if anything changed."""
    changed = False
    st.where.clear()
    p = prefs()
    registered: dict[str, Any] | None = None  # the register, read at most once per pass (main thread)
    for scene in bpy.data.scenes:
        for item in pump.job_items(scene):
            key = item.key
            if key in st.orphans:
                st.post(st.orphans.pop(key))
                continue
            if item.status in storyboard.ACTIVE:
                if key in st.finished:  # an undo brought back an earlier state of a job that has ended
                    st.post(st.finished[key])
                    continue
                if key in st.jobs or key in st.pending:
                    continue
                if not item.journal:  # handed to a background runner as Blender quit (after the last save)
                    from .. import handoff

                    handed = handoff.handed_over(item.output_dir, key)
                    if handed is not None:
                        item.journal, item.journal_index = handed
                        item.status, item.phase = "queued", "Handed to the background runner"
                        changed = True
                if item.journal:  # made by a background runner: its journal says how far it is
                    if item.status == "cancelling":
                        from .. import handoff

                        handoff.stop(handoff.paths_of(item.journal))
                    pump.watch(st, item.journal, item.journal_index, key, connection(p, item.server, item.output_dir))
                    continue
                if pump.adopt(st, key):  # parked by a disable in this session: still followed in memory
                    continue
                record = storyboard.loads(item.record)
                if not record:
                    registered = _registered() if registered is None else registered
                    entry = registered.get(storyboard.client_id(key))
                    record = entry["record"] if entry else None
                if not record:
                    item.status = "lost"
                    item.error = ("lost: Blender was closed before the server accepted this job, so it never ran; "
                                  "generate the shot again")
                    changed = True
                    continue
                if item.status == "cancelling":
                    st.cancel_requested.add(key)
                if scene.movie_director.background:  # quit again before it ends: it goes to a runner then
                    st.keep_running.add(key)
                item.status = "reconnecting"
                item.phase = "Reconnecting to the server"
                st.pending.add(key)
                st.run(pump.resume_worker, st, key, connection(p, item.server, item.output_dir), record)
                changed = True
            elif item.status == "completed" and not item.placed and item.video_path:
                st.to_place.append(key)
                changed = True
    return changed


def _registered() -> dict[str, Any]:
    """This user's register of jobs whose task reached a server, by client id: where a shot the .blend missed
    (saved or quit before the server's answer came back) is found again."""
    from ..backend.wan2gp._register import queued_by_client_id

    try:
        return queued_by_client_id()
    except Exception:  # noqa: BLE001 - a register that can't be read must not stop the reconcile
        log.exception("reading the register of jobs")
        return {}


def retry(st: pump.State, item: Any) -> bool:
    """Try a lost job's record again (e.g. the server was down when the file was loaded)."""
    record = storyboard.loads(item.record)
    if not record:
        return False
    item.status = "reconnecting"
    item.error = ""
    st.pending.add(item.key)
    st.run(pump.resume_worker, st, item.key, connection(prefs(), item.server, item.output_dir), record)
    return True


@persistent
def _load_post(*_args: Any) -> None:
    if pump.running():
        st = pump.state()
        st.needs_reconcile = True
        pump.tick()  # apply at once when Blender has a UI; background callers pump themselves


@persistent
def _save_pre(*_args: Any) -> None:
    if not pump.running():
        return
    st = pump.state()
    for key, job in list(st.jobs.items()):
        _scene, item = pump.find_item(st, key)
        record = pump.record_of(job)
        if item is not None and record is not None:
            item.record = storyboard.dumps(record)


@persistent
def _exit_pre(*_args: Any) -> None:
    pump.on_quit()


_HANDLERS = (
    (bpy.app.handlers.load_post, _load_post),
    (bpy.app.handlers.undo_post, _load_post),
    (bpy.app.handlers.redo_post, _load_post),
    (bpy.app.handlers.save_pre, _save_pre),
)
# Blender 5.x calls exit_pre as it quits (a Blender without it: pump's own exit hook does the same).
if hasattr(bpy.app.handlers, "exit_pre"):
    _HANDLERS += ((bpy.app.handlers.exit_pre, _exit_pre),)


def _same(a: Any, b: Any) -> bool:
    """The same handler, also across a reload of this module (a new function object)."""
    return getattr(a, "__name__", None) == b.__name__ and getattr(a, "__module__", None) == b.__module__


def register() -> None:
    unregister()
    for handlers, fn in _HANDLERS:
        handlers.append(fn)


def unregister() -> None:
    for handlers, fn in _HANDLERS:
        for old in [h for h in handlers if _same(h, fn)]:
            handlers.remove(old)
