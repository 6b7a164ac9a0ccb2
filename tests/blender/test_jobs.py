"""The queue: cancel, failures, and nothing lost across a save, a reload and a re-enable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from quiet import worker_ended

from blender_movie_director import storyboard
from blender_movie_director.ui import persistence, pump, vse

from .conftest import ADDON, addon_utils, bpy, pump_until, wait_done


def _events(server, kind, since=0):
    return [e for e in server.events()[since:] if e["event"] == kind]


def test_cancel_stops_the_job_on_the_server(blend):
    before = len(blend.server.events())
    blend.shot.prompt = "a long shot [[slow]]"
    blend.shot.steps = 40  # 20 s at the emulator's slow pace: it must be stopped, not finish
    bpy.ops.movie_director.generate()
    item = blend.scene.movie_director.jobs[-1]
    pump_until(lambda: item.status == "running" and item.step >= 1, timeout=30)
    assert 0 < item.fraction < 1 and item.total == 40 and item.phase
    assert "1/40" in storyboard.progress_text(item) or f"{item.step}/40" in storyboard.progress_text(item)

    assert bpy.ops.movie_director.cancel_job(key=item.key) == {"FINISHED"}
    assert item.status == "cancelling"
    item = wait_done(blend.scene, timeout=30)
    assert item.status == "cancelled" and not item.placed and item.error == ""
    aborted = _events(blend.server, "aborted", before)
    assert aborted, "WanGP's abort was not called"
    session, aborted_at = aborted[-1]["session"], aborted[-1]["t"]
    pump_until(lambda: worker_ended(blend.server, session, aborted_at))  # that session's run is over
    trace = "; ".join(f'{e["t"] - aborted_at:+.2f} {e["event"]}' for e in blend.server.events()[before:]
                      if e.get("session") == session)
    # The step under way when the abort arrived finished before WanGP saw it (it stops between steps): none after.
    late = [e for e in _events(blend.server, "step", before) if e["session"] == session and e["t"] > aborted_at]
    assert late == [], trace
    assert not _events(blend.server, "completed", before)
    assert vse.all_strips(blend.scene) == []


def test_a_failing_job_shows_the_servers_error_and_what_to_do(blend):
    blend.shot.prompt = "this one fails [[fail]]"
    bpy.ops.movie_director.generate()
    item = wait_done(blend.scene)
    assert item.status == "failed" and not item.placed
    assert "Generation failed: the prompt contains the [[fail]] marker" in item.error
    assert item.error.startswith("WanGP failed to generate the shot")
    # Retry submits the same request again, as a new job.
    assert bpy.ops.movie_director.retry_job(key=item.key) == {"FINISHED"}
    assert len(blend.scene.movie_director.jobs) == 2
    assert storyboard.loads(blend.scene.movie_director.jobs[-1].request)["prompt"] == "this one fails [[fail]]"
    wait_done(blend.scene)
    bpy.ops.movie_director.clear_finished()
    assert len(blend.scene.movie_director.jobs) == 0


def test_disable_and_enable_with_a_job_running_keeps_following_it(blend):
    before = len(blend.server.events())
    blend.shot.prompt = "survives a disable [[slow]]"
    blend.shot.steps = 4
    blend.scene.frame_current = 40
    bpy.ops.movie_director.generate()
    item = blend.scene.movie_director.jobs[-1]
    pump_until(lambda: item.status == "running", 30)
    key = item.key
    addon_utils.disable(ADDON, default_set=True)  # parks the job: not cancelled
    addon_utils.enable(ADDON, default_set=True)
    scene = bpy.context.scene
    assert key not in pump.state().jobs
    item = wait_done(scene, timeout=60)  # the first tick reconciles: the parked job is adopted again
    assert item.key == key and item.status == "completed", item.error
    strip = vse.find_strip(scene, item.strip_name)
    assert strip is not None and (vse.strip_start(strip), strip.channel) == (40, 2)
    assert len(_events(blend.server, "queued", before)) == 1 and not _events(blend.server, "aborted", before)


_CLOSED_BLENDER = """
import json, os, sys, time
import bpy, addon_utils
addon_utils.enable("blender_movie_director", default_set=True)
from blender_movie_director import storyboard
from blender_movie_director.ui import pump
p = bpy.context.preferences.addons["blender_movie_director"].preferences
p.servers.add().url = {url!r}
p.output_folder = {out!r}
scene = bpy.context.scene
scene.render.fps = 16
shot = scene.movie_director
shot.prompt, shot.steps, shot.seconds, shot.channel = "survives a restart [[slow]]", 6, 1.0, 2
scene.frame_current = 40
bpy.ops.movie_director.generate()
item = shot.jobs[-1]
ok = pump.pump(30, until=lambda: item.status == "running" and
               (storyboard.loads(item.record) or {{}}).get("task_queued"))
bpy.ops.wm.save_as_mainfile(filepath={path!r})
print(json.dumps({{"ok": ok, "key": item.key, "status": item.status}}), flush=True)
os._exit(0)  # Blender is gone (closed or crashed) while the job runs on the server
"""


def close_blender_reopen_and_collect(url: str, out: Path, server: Any, tmp_path: Path) -> None:
    """Another Blender starts a shot on ``url``, saves the file while it runs and is gone; this one opens the file:
    the shot is collected by the record saved in it, placed where it was asked for, and queued on ``server`` once."""
    before = len(server.events())
    path = tmp_path / "film.blend"
    script = _CLOSED_BLENDER.format(url=url, out=str(out), path=str(path))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads(run.stdout.strip().splitlines()[-1])
    assert saved["ok"] and saved["status"] == "running", run.stderr[-3000:]

    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_post: reconcile, with the record saved in the file
    scene = bpy.context.scene
    item = scene.movie_director.jobs[-1]
    assert item.key == saved["key"]
    item = wait_done(scene, timeout=60)
    assert item.status == "completed", item.error
    strip = vse.find_strip(scene, item.strip_name)
    assert strip is not None and (vse.strip_start(strip), strip.channel) == (40, 2)
    assert vse.get_shot_metadata(strip)["settings"]["prompt"] == "survives a restart [[slow]]"
    assert len(_events(server, "queued", before)) == 1  # picked up again, never submitted twice


def test_save_with_a_job_running_close_blender_reopen_and_reconcile(blend, tmp_path):
    close_blender_reopen_and_collect(blend.url, blend.out, blend.server, tmp_path)


def test_reconcile_marks_lost_jobs_with_the_reason(blend):
    scene = blend.scene
    never_sent = scene.movie_director.jobs.add()
    never_sent.key, never_sent.status, never_sent.prompt = "k-never-sent", "submitting", "never sent"
    gone = scene.movie_director.jobs.add()
    gone.key, gone.status, gone.prompt, gone.server = "k-gone", "running", "gone", blend.url
    gone.output_dir = str(blend.out)
    gone.record = storyboard.dumps({
        "job_id": "deadbeef0000", "client_id": "bmd-deadbeef0000", "session_hash": "no-such-session",
        "server": blend.url, "settings": {"prompt": "gone", "model": "t2v_1.3B"},
        "sent_settings": {"prompt": "gone", "model": "t2v_1.3B", "video_length": 17, "seed": 1},
        "submitted_at": time.time() - 60, "status": "running", "task_queued": True,
    })
    path = blend.tmp / "lost.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_post: reconcile
    scene = bpy.context.scene
    pump_until(lambda: all(j.status == "lost" for j in scene.movie_director.jobs), timeout=30)
    never_sent, gone = scene.movie_director.jobs
    assert never_sent.error.startswith("lost: Blender was closed before the server accepted this job")
    assert gone.error.startswith("lost:") and "no longer has" in gone.error


def test_an_undo_does_not_lose_a_finished_shot(blend):
    bpy.ops.movie_director.generate()
    item = blend.scene.movie_director.jobs[-1]
    pump_until(lambda: item.status == "running")
    bpy.ops.ed.undo_push(message="job running")  # the state an undo will bring back
    item = wait_done(blend.scene)
    assert item.status == "completed" and vse.find_strip(blend.scene, item.strip_name) is not None
    blend.scene.frame_current = 99
    bpy.ops.ed.undo_push(message="an edit")
    assert persistence._load_post in bpy.app.handlers.undo_post and persistence._load_post in bpy.app.handlers.redo_post
    persistence.unregister()  # to see the state the undo brings back, before reconcile
    bpy.ops.ed.undo()  # back to "job running": the strip is gone from that state
    persistence.register()
    scene = bpy.context.scene
    assert scene.movie_director.jobs[-1].status == "running" and not vse.all_strips(scene)
    persistence._load_post()  # what the undo_post handler does
    scene = bpy.context.scene
    pump_until(lambda: scene.movie_director.jobs[-1].status == "completed")
    item = scene.movie_director.jobs[-1]
    assert vse.find_strip(scene, item.strip_name) is not None
    assert sum(1 for s in vse.all_strips(scene) if s.type == "MOVIE") == 1


_QUIT_BLENDER = """
import json, os, sys, time
import bpy, addon_utils
addon_utils.enable("blender_movie_director", default_set=True)
from blender_movie_director import storyboard
from blender_movie_director.ui import pump
p = bpy.context.preferences.addons["blender_movie_director"].preferences
p.servers.add().url = {url!r}
p.output_folder = {out!r}
scene = bpy.context.scene
scene.render.fps = 16
shot = scene.movie_director
shot.prompt, shot.steps, shot.seconds, shot.channel = "quit while it runs [[slow]]", 6, 1.0, 2
for frame in (1, 30, 60):
    scene.frame_current = frame
    bpy.ops.movie_director.generate()
queued = lambda: all((storyboard.loads(j.record) or {{}}).get("task_queued") for j in shot.jobs)
ok = pump.pump(30, until=queued)
bpy.ops.wm.save_as_mainfile(filepath={path!r})
print(json.dumps({{"ok": ok, "statuses": [j.status for j in shot.jobs], "quit_at": time.time()}}), flush=True)
# The script ends: Python exits as Blender does when it quits, with the three jobs in flight.
"""


def test_quit_with_jobs_running_exits_at_once_and_the_next_load_collects_them(blend, tmp_path):
    before = len(blend.server.events())
    path = tmp_path / "film.blend"
    script = _QUIT_BLENDER.format(url=blend.url, out=str(blend.out), path=str(path))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user")}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    out, err = process.communicate(timeout=120)
    exited_at = time.time()
    assert process.returncode == 0, err[-3000:]
    saved = json.loads(out.strip().splitlines()[-1])
    assert saved["ok"] and set(saved["statuses"]) <= {"queued", "running"}, err[-3000:]
    # Three 3-second shots were in flight (about 9 s of work): the exit did not wait for them.
    assert exited_at - saved["quit_at"] < 3.0
    assert not _events(blend.server, "completed", before)

    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_post: reconcile, with the records saved in the file
    scene = bpy.context.scene
    pump_until(lambda: all(j.status in storyboard.FINISHED for j in scene.movie_director.jobs), timeout=90)
    jobs = list(scene.movie_director.jobs)
    assert [j.status for j in jobs] == ["completed"] * 3, [j.error for j in jobs]
    for job, frame in zip(jobs, (1, 30, 60), strict=True):
        strip = vse.find_strip(scene, job.strip_name)
        assert (vse.strip_start(strip), strip.channel, vse.strip_duration(strip)) == (frame, 2, 17)
    assert len(_events(blend.server, "queued", before)) == 3  # each picked up again, none submitted twice


_DIES_AFTER_QUEUEING = """
import sys, time
from blender_movie_director.backend.wan2gp import JobStatus, Wan2GPClient
client = Wan2GPClient(sys.argv[1], output_dir=sys.argv[2])
job = client.submit(prompt="queued as Blender went down [[slow]]", frames=9, steps=6, client_id=sys.argv[3])
while job.status() != JobStatus.RUNNING:
    time.sleep(0.02)
print("running", flush=True)
time.sleep(60)
"""


def test_a_shot_the_blend_missed_is_found_in_the_register_and_collected(blend):
    """Blender went down after WanGP queued the shot and before the .blend held its record: the reconcile finds
    it in the register of jobs by its client id, and collects that task instead of calling it lost."""
    scene = blend.scene
    item = scene.movie_director.jobs.add()
    item.key, item.status, item.prompt, item.server = "k-missed", "submitting", "queued as Blender went down", blend.url
    item.output_dir, item.channel, item.frame_start, item.fps_policy = str(blend.out), 2, 1, "STRETCH"
    program = subprocess.Popen([sys.executable, "-c", _DIES_AFTER_QUEUEING, blend.url, str(blend.out),
                                storyboard.client_id(item.key)], stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None and program.stdout.readline().strip() == "running"
    finally:
        program.kill()
        program.wait(10)
    path = blend.tmp / "missed.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_post: reconcile
    scene = bpy.context.scene
    pump_until(lambda: scene.movie_director.jobs[0].status in storyboard.FINISHED, timeout=60)
    job = scene.movie_director.jobs[0]
    assert job.status == "completed", job.error
    pump_until(lambda: scene.movie_director.jobs[0].placed, timeout=20)
    assert vse.find_strip(scene, scene.movie_director.jobs[0].strip_name) is not None
    queued = [e for e in blend.server.events() if e["event"] == "queued"
              and e["client_id"] == storyboard.client_id("k-missed")]
    assert len(queued) == 1  # collected, not generated again
