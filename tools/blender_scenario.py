"""One Blender version, end to end, from the built extension zip (run by tools/blender_versions.py).

Runs with a venv's Python that has only bpy: the add-on and its wheels come from the zip, installed by
Blender's own ``bpy.ops.extensions.package_install_files``. Two phases, each a fresh process::

    python tools/blender_scenario.py use ZIP URL WORKDIR      # install, enable, generate, regenerate, extend,
                                                             # save and reload with a job running, then quit
                                                             # with a job running (prints JSON lines)
    python tools/blender_scenario.py collect URL WORKDIR     # enable again, open the quit file: the job that
                                                             # ran on is collected and placed

``BLENDER_USER_RESOURCES`` must point at a folder of its own (the caller sets it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")

import bpy  # noqa: E402, I001  (bpy first: it makes Blender's own modules, addon_utils, importable)
import addon_utils  # noqa: E402

MODULE = "bl_ext.user_default.blender_movie_director"
FINISHED = ("completed", "failed", "cancelled", "lost")


def say(**data: object) -> None:
    print("RESULT " + json.dumps(data), flush=True)


def addon() -> tuple:
    ui = sys.modules[MODULE + ".ui"]
    return ui.pump, ui.vse, sys.modules[MODULE + ".storyboard"]


def setup(url: str, work: Path) -> object:
    p = bpy.context.preferences.addons[MODULE].preferences
    p.servers.clear()
    p.servers.add().url = url
    p.output_folder = str(work / "shots")
    p.timeout_connect, p.timeout_call, p.timeout_job_minutes = 10.0, 60.0, 5.0
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 16, 1.0
    scene.render.resolution_x, scene.render.resolution_y = 320, 192
    shot = scene.movie_director
    shot.prompt, shot.model, shot.resolution, shot.seconds, shot.steps = "a lighthouse at dusk", "t2v_1.3B", \
        "832x480", 1.0, 2
    return shot


def wait(pump: object, scene: object, seconds: float = 60.0) -> object:
    jobs = scene.movie_director.jobs
    pump.pump(seconds, until=lambda: jobs[-1].status in FINISHED)
    return jobs[-1]


def placed(vse: object, scene: object, item: object) -> tuple | None:
    strip = vse.find_strip(scene, item.strip_name) if item.status == "completed" else None
    return None if strip is None else (vse.strip_start(strip), strip.channel, vse.strip_duration(strip))


def use(zip_path: str, url: str, work: Path) -> None:
    started = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    say(step="install", ok=result == {"FINISHED"} and MODULE in bpy.context.preferences.addons,
        seconds=round(time.perf_counter() - started, 2))
    pump, vse, storyboard = addon()
    shot = setup(url, work)
    scene = bpy.context.scene

    scene.frame_current, shot.channel = 23, 3
    bpy.ops.movie_director.generate()
    first = wait(pump, scene)
    say(step="generate", ok=placed(vse, scene, first) == (23, 3, 17), placed=placed(vse, scene, first),
        error=first.error)

    strip = vse.find_strip(scene, first.strip_name)
    vse.select_only(scene, strip)
    bpy.ops.movie_director.regenerate(variation=False)
    again = wait(pump, scene)
    seeds = [vse.get_shot_metadata(vse.find_strip(scene, i.strip_name))["seed"] for i in (first, again)
             if i.status == "completed"]
    say(step="regenerate", ok=placed(vse, scene, again) == (23, 4, 17) and len(set(seeds)) == 1 and len(seeds) == 2,
        placed=placed(vse, scene, again), error=again.error)

    vse.select_only(scene, strip)
    shot.model, shot.prompt = "i2v", "the light turns"
    bpy.ops.movie_director.extend()
    extended = wait(pump, scene)
    say(step="extend", ok=placed(vse, scene, extended) == (40, 3, 17), placed=placed(vse, scene, extended),
        error=extended.error)

    def running_shot(frame: int, prompt: str) -> object:
        shot.model, shot.prompt, shot.steps = "t2v_1.3B", prompt, 8  # 8 slow steps: about 4 s on the emulator
        scene.frame_current = frame
        bpy.ops.movie_director.generate()
        item = scene.movie_director.jobs[-1]
        pump.pump(30, until=lambda: (storyboard.loads(item.record) or {}).get("task_queued", False))
        return item

    item = running_shot(100, "saved while it runs [[slow]]")
    key, status = item.key, item.status
    path = work / "reload.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    scene = bpy.context.scene
    item = next(i for i in scene.movie_director.jobs if i.key == key)
    pump.pump(60, until=lambda: item.status in FINISHED)
    say(step="save_reload", ok=status in ("queued", "running") and placed(vse, scene, item) == (100, 3, 17),
        status_at_save=status, placed=placed(vse, scene, item), error=item.error)

    shot = scene.movie_director
    item = running_shot(140, "quit while it runs [[slow]]")
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "quit.blend"))
    say(step="quit", status_at_quit=item.status, key=item.key, quit_at=time.time())
    # The script ends here: Python exits, as Blender does when it quits, with the job in flight.


def collect(url: str, work: Path) -> None:
    addon_utils.enable(MODULE, default_set=True)
    pump, vse, _storyboard = addon()
    setup(url, work)
    bpy.ops.wm.open_mainfile(filepath=str(work / "quit.blend"))
    scene = bpy.context.scene
    item = scene.movie_director.jobs[-1]
    pump.pump(60, until=lambda: item.status in FINISHED)
    say(step="collect", ok=placed(vse, scene, item) == (140, 3, 17), placed=placed(vse, scene, item),
        error=item.error)
    addon_utils.disable(MODULE, default_set=True)  # unregister before exit (bpy 4.5 hangs, 4.2 crashes)


if __name__ == "__main__":
    phase, *rest = sys.argv[1:]
    if phase == "use":
        use(rest[0], rest[1], Path(rest[2]))
    else:
        collect(rest[0], Path(rest[1]))
