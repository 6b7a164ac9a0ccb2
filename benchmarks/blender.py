"""Benchmark: the Blender add-on's cost to Blender's UI thread (real bpy from PyPI).

Measured, not asserted. Targets (issue 5): enabling the add-on <= 150 ms; one timer tick <= 2 ms at the 99th
percentile with 10 jobs in flight.

1. **Enable**: ``addon_utils.enable`` in fresh interpreters (``import bpy`` is done and not counted), with
   ``disable`` timed too; imports of gradio_client / the WanGP client at enable are reported (must be none).
2. **Tick, live**: 10 shots submitted to a WanGP emulator running in its own process (as WanGP does), the
   timer function called at the interval it asks for, until all are placed on the timeline. Ticks that
   placed a strip are reported apart: ``strips.new_movie`` opens and probes the file inside Blender (one
   C call, ~5-30 ms on the emulator's clips, ~100 ms on an 832x480 clip of noise), once per finished shot.
3. **Tick, stress**: 10 fake jobs posting progress from 10 threads at 200 updates/s each (far more than
   WanGP's per-step updates), plus 10 finished-job messages: the budget has to hold the line.
4. **Generate All** (issue 7): 50 selected text strips; the operator's time on the UI thread, then the run
   until every shot is placed, every shot accounted for.
5. **Quit with 3 jobs in flight** (issue 13, target <= 1 s): a fresh Blender (bpy) process submits three slow
   shots to the emulator, saves, and ends; the seconds from its last line to the process being gone. On this
   Python and, with ``--python313``, on the newest bpy for Python 3.13 (enabling is timed there too).
6. **Control video** (issue 14): a 33-frame 832x480 depth control video of a camera trucking past a cube,
   rendered headless by each renderer this Blender has (``ui/layout.py``; Eevee runs in software OpenGL here,
   over a minute a frame with its shader compilation, so it renders only ``--eevee-frames``); then a
   ``vace_1.3B`` shot generated on the emulator from the Workbench video, and how it follows its control video
   and the control video of the opposite move
   (``tools/follow.py``: mean per-frame correlation of the changes over time; 1 = follows exactly).
7. **Zips** (issue 13): the extension zip of each platform, built from PyPI's wheels for Python 3.11 and 3.13
   (``tools/build_extension.py``; needs the network): size and wheels.

Prints a summary and saves ``benchmarks/results/blender.json`` (``--only`` re-runs some parts and keeps the
others' saved figures). Run: ``python benchmarks/blender.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
_USER = tempfile.mkdtemp(prefix="md-bench-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER  # before bpy is imported: nothing written to the home folder

RESULTS = Path(__file__).parent / "results" / "blender.json"
ROOT = Path(__file__).resolve().parent.parent
ADDON = "blender_movie_director"
SECTIONS = ("enable", "tick_live", "tick_stress", "generate_all", "quit", "zips", "control")

_ENABLE = """
import json, sys, time
import bpy, addon_utils
t0 = time.perf_counter()
addon_utils.enable("blender_movie_director", default_set=True)
t1 = time.perf_counter()
heavy = sorted(m for m in ("gradio_client", "httpx", "pydantic", "blender_movie_director.backend.wan2gp")
               if m in sys.modules)
addon_utils.disable("blender_movie_director", default_set=True)
t2 = time.perf_counter()
print(json.dumps({"enable_ms": (t1 - t0) * 1000, "disable_ms": (t2 - t1) * 1000, "heavy": heavy}))
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median": round(statistics.median(values), 3), "p90": round(_percentile(values, 90), 3),
            "p99": round(_percentile(values, 99), 3), "max": round(max(values), 3)}


def bench_enable(runs: int, python: str = sys.executable) -> dict:
    enable, disable, heavy = [], [], set()
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as user:
            out = subprocess.run([python, "-c", _ENABLE], capture_output=True, text=True, check=True,
                                 env={**os.environ, "BLENDER_USER_RESOURCES": user})
        result = json.loads(out.stdout.strip().splitlines()[-1])
        enable.append(result["enable_ms"])
        disable.append(result["disable_ms"])
        heavy.update(result["heavy"])
    return {"enable_ms": _summary(enable), "disable_ms": _summary(disable), "heavy_imports_at_enable": sorted(heavy),
            "target_ms": 150}


_QUIT = """
import json, os, sys, time
import bpy, addon_utils
addon_utils.enable("blender_movie_director", default_set=True)
from blender_movie_director import storyboard
from blender_movie_director.ui import pump
url, out, path = sys.argv[1:4]
p = bpy.context.preferences.addons["blender_movie_director"].preferences
p.servers.add().url = url
p.output_folder = out
scene = bpy.context.scene
scene.render.fps = 16
shot = scene.movie_director
shot.prompt, shot.steps, shot.seconds = "quit benchmark [[slow]]", 20, 1.0
shot.background = False  # no runner left behind on the benchmark's emulator (tests time the hand-over's exit)
for frame in (1, 30, 60):
    scene.frame_current = frame
    bpy.ops.movie_director.generate()
ok = pump.pump(60, until=lambda: all((storyboard.loads(j.record) or {}).get("task_queued") for j in shot.jobs))
bpy.ops.wm.save_as_mainfile(filepath=path)
print(json.dumps({"ok": ok, "statuses": [j.status for j in shot.jobs], "bpy": bpy.app.version_string,
                  "quit_at": time.time()}), flush=True)
"""


def bench_quit(runs: int, python: str = sys.executable) -> dict:
    """Seconds from the end of a Blender (bpy) script with 3 slow shots in flight to its process being gone."""
    process, url = _start_emulator(0.05)  # [[slow]] shots: 0.5 s a step, 10 s each: far longer than any exit
    seconds, bpy_version, statuses = [], "", []
    try:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as work:
                run = subprocess.Popen([python, "-c", _QUIT, url, work, os.path.join(work, "quit.blend")],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env={**os.environ, "BLENDER_USER_RESOURCES": work})
                out, err = run.communicate(timeout=300)
                gone = time.time()
                if run.returncode != 0:
                    raise RuntimeError(f"the quit run failed: {err[-2000:]}")
                result = json.loads(out.strip().splitlines()[-1])
                seconds.append(gone - result["quit_at"])
                bpy_version, statuses = result["bpy"], result["statuses"]
    finally:
        process.terminate()
        process.wait(10)
    return {"bpy": bpy_version, "jobs_in_flight": 3, "statuses_at_quit": statuses, "exit_seconds": _summary(seconds),
            "target_seconds": 1.0}


def bench_zips() -> dict:
    """Build every platform's zip from PyPI (as released) and report its size and wheels."""
    sys.path.insert(0, str(ROOT / "tools"))
    import zipfile

    import build_extension

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        zips = build_extension.build(argparse.Namespace(platform=None, from_installed=False, output_dir=out,
                                                        single_zip=False, blender_ext=None, pip_arg=None))
        built = {}
        for path in zips:
            with zipfile.ZipFile(path) as archive:
                wheels = [n for n in archive.namelist() if n.endswith(".whl")]
            built[path.name] = {"mb": round(path.stat().st_size / 1e6, 2), "wheels": len(wheels),
                                "compiled": sum(1 for w in wheels if not w.endswith("-none-any.whl"))}
    return {"pythons": list(build_extension.PYTHON_VERSIONS), "build_seconds": round(time.perf_counter() - started, 1),
            "zips": built}


def _start_emulator(step_seconds: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wan2gp_emulator", "--flavour", "v12", "--port", "0", "--step-seconds",
         str(step_seconds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return process, line.split("=", 1)[1].strip().rstrip("/")
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the emulator did not start")


def _connected_scene(url: str, steps: int) -> tuple:
    """A new empty file at 16 fps, the add-on pointed at ``url`` and connected: (scene, its shot settings)."""
    import bpy

    from blender_movie_director.ui import pump

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = 16
    p = bpy.context.preferences.addons[ADDON].preferences
    p.servers.clear()
    p.servers.add().url = url
    p.output_folder = tempfile.mkdtemp(prefix="md-bench-shots-")
    shot = scene.movie_director
    shot.seconds, shot.steps, shot.resolution = 1.0, steps, "832x480"
    bpy.ops.movie_director.check_server()
    st = pump.state()
    pump.pump(30, until=lambda: url in st.servers and (url, shot.model) in st.rules)
    return scene, shot


def bench_tick_live(jobs: int, steps: int, step_seconds: float) -> dict:
    import bpy

    from blender_movie_director.ui import pump

    process, url = _start_emulator(step_seconds)
    try:
        scene, shot = _connected_scene(url, steps)
        for index in range(jobs):
            shot.prompt = f"benchmark shot {index}"
            scene.frame_current = 1 + index * 20
            bpy.ops.movie_director.generate()
        ticks, placing, in_flight = [], [], []
        started = time.monotonic()
        while time.monotonic() - started < 600:
            active = sum(1 for j in shot.jobs if j.status in ("submitting", "queued", "uploading", "running",
                                                                 "downloading"))
            placed = sum(1 for j in shot.jobs if j.placed)
            t0 = time.perf_counter()
            interval = pump.tick()
            elapsed = (time.perf_counter() - t0) * 1000
            (placing if sum(1 for j in shot.jobs if j.placed) > placed else ticks).append(elapsed)
            in_flight.append(active)
            if all(j.status in ("completed", "failed", "cancelled", "lost") for j in shot.jobs):
                break
            time.sleep(interval or pump.ACTIVE_INTERVAL)
        statuses = {s: sum(1 for j in shot.jobs if j.status == s) for s in sorted({j.status for j in shot.jobs})}
        errors = sorted({j.error for j in shot.jobs if j.error})
        ten = [t for t, n in zip(ticks, in_flight, strict=False) if n >= jobs]
        return {"jobs": jobs, "steps": steps, "emulator_step_seconds": step_seconds, "statuses": statuses,
                "errors": errors,
                "wall_seconds": round(time.monotonic() - started, 1),
                "tick_ms": _summary(ticks), "tick_ms_with_all_jobs_in_flight": _summary(ten) if ten else None,
                "placing_tick_ms": _summary(placing) if placing else None, "target_p99_ms": 2.0}
    finally:
        process.terminate()
        process.wait(10)


def bench_tick_stress(jobs: int, seconds: float) -> dict:
    import bpy

    from blender_movie_director.ui import pump

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    st = pump.state()
    keys = []
    for index in range(jobs):
        item = scene.movie_director.jobs.add()
        item.key, item.status, item.prompt = f"stress{index}", "running", f"stress {index}"
        keys.append(item.key)
    stop = threading.Event()

    def poster(key: str) -> None:
        step = 0
        while not stop.is_set():
            step += 1
            st.post_progress(pump.JobProgressed(key, "running", step % 100 / 100, step % 100, 100, "Denoising",
                                                None, 12.0, "", {"job_id": key, "status": "running"}))
            time.sleep(1 / 200)

    threads = [threading.Thread(target=poster, args=(k,), daemon=True) for k in keys]
    for thread in threads:
        thread.start()
    ticks = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        t0 = time.perf_counter()
        pump.tick()
        ticks.append((time.perf_counter() - t0) * 1000)
        time.sleep(pump.ACTIVE_INTERVAL)
    stop.set()
    for thread in threads:
        thread.join()
    for key in keys:  # finished-but-failed messages: applied within the budget too
        st.post(pump.JobFinished(key, "failed", error="stress"))
    finishing = []
    while not st.messages.empty():
        t0 = time.perf_counter()
        pump.tick()
        finishing.append((time.perf_counter() - t0) * 1000)
    return {"jobs": jobs, "updates_per_second_per_job": 200, "tick_ms": _summary(ticks),
            "finishing_ticks": len(finishing), "finishing_tick_ms": _summary(finishing) if finishing else None}


def bench_generate_all(shots: int, steps: int, step_seconds: float) -> dict:
    """Generate All on a storyboard of ``shots`` selected text strips: the operator's time on the UI thread,
    then the whole run to the last strip placed, with the timer ticks on the way."""
    import bpy

    from blender_movie_director import storyboard
    from blender_movie_director.ui import pump, vse

    process, url = _start_emulator(step_seconds)
    try:
        scene, shot = _connected_scene(url, steps)
        strips = vse.top_strips(scene)
        for index in range(shots):
            strip = vse.new_effect(strips, f"board {index}", "TEXT", 1, 1 + index * 20, 17)
            strip.text, strip.select = f"storyboard shot {index}", True
        t0 = time.perf_counter()
        bpy.ops.movie_director.generate_all()
        operator_ms = (time.perf_counter() - t0) * 1000
        ticks, started = [], time.monotonic()
        while time.monotonic() - started < 900:
            t1 = time.perf_counter()
            interval = pump.tick()
            ticks.append((time.perf_counter() - t1) * 1000)
            if all(j.status in storyboard.FINISHED and (j.placed or j.status != "completed") for j in shot.jobs):
                break
            time.sleep(interval or pump.ACTIVE_INTERVAL)
        statuses = {s: sum(1 for j in shot.jobs if j.status == s) for s in sorted({j.status for j in shot.jobs})}
        movies = [s for s in vse.all_strips(scene) if s.type == "MOVIE"]
        return {"shots": shots, "steps": steps, "emulator_step_seconds": step_seconds,
                "operator_ms": round(operator_ms, 1), "statuses": statuses, "movie_strips": len(movies),
                "wall_seconds": round(time.monotonic() - started, 1), "tick_ms": _summary(ticks)}
    finally:
        process.terminate()
        process.wait(10)


def _dolly_scene(name: str, frames: int, direction: int) -> str:
    """A 2 m cube and a camera 10 m away trucking 3 m sideways over ``frames`` frames at 16 fps."""
    import bmesh
    import bpy

    scene = bpy.data.scenes.new(name)
    scene.render.fps, scene.frame_start, scene.frame_end = 16, 1, frames
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)
    bm.to_mesh(mesh)
    bm.free()
    scene.collection.objects.link(bpy.data.objects.new(f"{name} cube", mesh))
    camera = bpy.data.objects.new(f"{name} camera", bpy.data.cameras.new(name))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.rotation_euler = (1.5707963, 0.0, 0.0)
    for frame, x in ((1, -1.5 * direction), (frames, 1.5 * direction)):
        camera.location = (x, -10.0, 0.0)
        camera.keyframe_insert("location", frame=frame)
    return scene.name


def bench_control(frames: int, engines: list[str] | None, eevee_frames: int) -> dict:
    import bpy

    from blender_movie_director.backend.wan2gp import Wan2GPClient
    from blender_movie_director.ui import layout

    sys.path.insert(0, str(ROOT / "tools"))
    from follow import follow_score

    bpy.ops.wm.read_homefile(use_empty=True)
    out = Path(tempfile.mkdtemp(prefix="md-bench-control-"))
    right, left = _dolly_scene("right", frames, 1), _dolly_scene("left", frames, -1)
    seconds: dict[str, float] = {}
    rendered: dict[str, int] = {}
    videos: dict[str, Path] = {}
    for engine in engines or layout.engines():
        # Eevee renders in software OpenGL here, over a minute a frame: it renders fewer frames, and says so.
        count = min(frames, eevee_frames) if engine.startswith("BLENDER_EEVEE") else frames
        request = layout.ControlRequest(kind="depth", scene=right, camera="", frame_start=1, frames=count,
                                        width=832, height=480, fps=16, engine=engine)
        started = time.perf_counter()
        videos[engine] = Path(layout.render_now(request, str(out / f"depth_{engine}.mp4")))
        seconds[engine], rendered[engine] = round(time.perf_counter() - started, 1), count
        print(f"  {engine}: {seconds[engine]} s for {count} frames")
    other = Path(layout.render_now(layout.ControlRequest(
        kind="depth", scene=left, camera="", frame_start=1, frames=frames, width=832, height=480, fps=16,
        engine="BLENDER_WORKBENCH"), str(out / "other.mp4")))
    control = videos.get("BLENDER_WORKBENCH") or next(iter(videos.values()))
    process, url = _start_emulator(0.0)
    try:
        with Wan2GPClient(url, output_dir=out / "shots") as client:
            result = client.generate(prompt="a marble statue in a museum hall", model="vace_1.3B", steps=4,
                                     seed=1, video_guide=control, control_mode="UV")
    finally:
        process.terminate()
        process.wait(10)
    return {"frames": frames, "size": "832x480", "render_seconds": seconds, "rendered_frames": rendered,
            "follow_own": round(follow_score(result.video_path, control), 3),
            "follow_other_move": round(follow_score(result.video_path, other), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enable-runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.1)
    parser.add_argument("--stress-seconds", type=float, default=10.0)
    parser.add_argument("--storyboard", type=int, default=50, help="text strips for Generate All")
    parser.add_argument("--quit-runs", type=int, default=3)
    parser.add_argument("--python313", default=str(ROOT / ".venv313" / "bin" / "python"),
                        help="a Python 3.13 with the newest bpy and this project (tools/test_blender_py313.sh)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these parts; keep the others' figures")
    parser.add_argument("--control-frames", type=int, default=33)
    parser.add_argument("--engines", nargs="+", help="renderers for the control video (default: all there are)")
    parser.add_argument("--eevee-frames", type=int, default=4, help="frames Eevee renders (it is slow here)")
    args = parser.parse_args(argv)
    wanted = set(args.only or SECTIONS)
    py313 = args.python313 if Path(args.python313).exists() else None

    results: dict = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    results.update({"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "when": time.strftime("%Y-%m-%d %H:%M:%S")})
    if "enable" in wanted:
        results["enable"] = bench_enable(args.enable_runs)
        print(f"enable: {results['enable']['enable_ms']} ms (target <= 150); heavy imports: "
              f"{results['enable']['heavy_imports_at_enable']}")
        if py313:
            results["enable_py313"] = bench_enable(args.enable_runs, py313)
            print(f"enable, Python 3.13: {results['enable_py313']['enable_ms']} ms")
    if "quit" in wanted:
        results["quit"] = bench_quit(args.quit_runs)
        print(f"quit with 3 jobs in flight, bpy {results['quit']['bpy']}: {results['quit']['exit_seconds']} s")
        if py313:
            results["quit_py313"] = bench_quit(args.quit_runs, py313)
            print(f"quit, bpy {results['quit_py313']['bpy']}: {results['quit_py313']['exit_seconds']} s")
    if "zips" in wanted:
        results["zips"] = bench_zips()
        print("zips: " + ", ".join(f"{n} {z['mb']} MB" for n, z in results["zips"]["zips"].items()))

    if wanted & {"tick_live", "tick_stress", "generate_all", "control"}:
        import bpy  # noqa: I001  (bpy first: it makes Blender's own modules, addon_utils, importable)
        import addon_utils

        results["bpy"] = bpy.app.version_string
        addon_utils.enable(ADDON, default_set=True)
        try:
            if "tick_live" in wanted:
                results["tick_live"] = bench_tick_live(args.jobs, args.steps, args.step_seconds)
                print(f"tick, {args.jobs} live jobs: {results['tick_live']['tick_ms']} ms; with all in flight: "
                      f"{results['tick_live']['tick_ms_with_all_jobs_in_flight']}; placing: "
                      f"{results['tick_live']['placing_tick_ms']} (statuses {results['tick_live']['statuses']})")
            if "tick_stress" in wanted:
                results["tick_stress"] = bench_tick_stress(args.jobs, args.stress_seconds)
                print(f"tick, stress: {results['tick_stress']['tick_ms']} ms; finishing: "
                      f"{results['tick_stress']['finishing_tick_ms']}")
            if "generate_all" in wanted:
                results["generate_all"] = bench_generate_all(args.storyboard, args.steps, args.step_seconds)
                g = results["generate_all"]
                print(f"Generate All, {g['shots']} text strips: operator {g['operator_ms']} ms; {g['statuses']}, "
                      f"{g['movie_strips']} strips placed in {g['wall_seconds']} s; tick {g['tick_ms']} ms")
            if "control" in wanted:
                results["control"] = c = bench_control(args.control_frames, args.engines, args.eevee_frames)
                print(f"control video, {c['frames']} frames {c['size']}: {c['render_seconds']} s; the shot follows "
                      f"it {c['follow_own']}, the opposite move {c['follow_other_move']}")
        finally:
            addon_utils.disable(ADDON, default_set=True)  # unregister before exit (bpy 4.x hangs otherwise)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
