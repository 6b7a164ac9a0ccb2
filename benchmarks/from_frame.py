"""Benchmark: what From Frame costs Blender, by the path its start image takes and by render engine (real bpy).

Measured, not asserted (issue 17: From Frame used to render on Blender's main thread, 55 s with Eevee here).
The add-on's own functions are timed, in a 1920x1080 scene at 100 %, the render engine set to each of Workbench,
Eevee and Cycles (CPU):

1. **A generated shot under the playhead** (an 832x480 H.264 movie strip, fitted to the frame): its own frame,
   read through Blender's sequencer at the clip's size (``vse.strip_picture_to_png``), on the main thread.
2. **The sequencer's picture** (a text strip over a colour strip): the sequencer alone at the scene's size
   (``vse.sequencer_frame_to_png``), on the main thread.
3. **A 3D scene** (Blender's factory scene: a cube, a light, a camera; each engine's factory settings): the
   main thread saves a copy of the file (``vse.save_copy``); another Blender process renders it
   (``stills.render``). Both times are given: the main thread's, and the wall time until the picture exists.

Prints a summary and saves ``benchmarks/results/from_frame.json``. Run: ``python benchmarks/from_frame.py``
(``--runs`` for the two quick paths; ``--engines`` to leave some out: Cycles at its factory 4096 samples takes
minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

_USER = tempfile.mkdtemp(prefix="md-bench-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER  # before bpy is imported: nothing written to the home folder

import bpy  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "from_frame.json"
ENGINES = {"workbench": "BLENDER_WORKBENCH", "eevee": "BLENDER_EEVEE", "cycles": "CYCLES"}


def _clip(path: Path, frames: int = 33) -> Path:
    """An 832x480 H.264 clip whose frames differ (as a generated shot's do)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 832, 480, "yuv420p"
        rng = np.random.default_rng(1)
        base = rng.integers(0, 255, (480, 832, 3), dtype=np.uint8)
        for index in range(frames):
            image = np.roll(base, index * 8, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _scene(engine: str, *, factory: bool) -> object:
    if factory:
        bpy.ops.wm.read_homefile(use_factory_startup=True)
    else:
        bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 1920, 1080, 100
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
    return scene


def _median_ms(fn, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"n": runs, "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=list(ENGINES))
    args = parser.parse_args()
    import addon_utils  # Blender's own module: importable once bpy is

    addon_utils.enable("blender_movie_director", default_set=True)
    from blender_movie_director import stills
    from blender_movie_director.ui import vse

    work = Path(tempfile.mkdtemp(prefix="md-bench-frame-"))
    clip = _clip(work / "shot.mp4")
    results: dict = {"bpy": bpy.app.version_string, "python": platform.python_version(), "cpus": os.cpu_count(),
                     "measured": time.strftime("%Y-%m-%d"), "scene": "1920x1080 at 100 %", "engines": {}}
    for name in args.engines:
        engine = ENGINES[name]
        row: dict = {}
        scene = _scene(engine, factory=False)
        strips = vse.top_strips(scene)
        shot = vse._new_movie(strips, "shot", str(clip), 2, 1, fit="FIT")
        assert vse.frame_picture(scene, 12).kind == "strip"
        row["shot_frame"] = _median_ms(lambda s=scene, m=shot: vse.strip_picture_to_png(s, m, 12, str(work / "a.png")),
                                       args.runs)
        vse.new_effect(strips, "colour", "COLOR", 3, 1, 40).color = (0.2, 0.3, 0.8)
        vse.new_effect(strips, "title", "TEXT", 4, 1, 40).text = "TITLE"
        assert vse.frame_picture(scene, 12).kind == "sequencer"
        row["sequencer"] = _median_ms(lambda s=scene: vse.sequencer_frame_to_png(s, 12, str(work / "b.png")),
                                      args.runs)

        scene = _scene(engine, factory=True)
        assert vse.frame_picture(scene, 1).kind == "engine"
        copy, out = str(work / f"copy-{name}.blend"), str(work / f"{name}.png")
        started = time.perf_counter()
        vse.save_copy(copy)
        cmd = stills.command(bpy.app.binary_path, copy, scene.name, 1, out, "blender_movie_director")
        main_thread = time.perf_counter() - started
        phases: dict[str, float] = {}

        def progress(p: stills.Progress, phases: dict[str, float] = phases) -> None:
            phases.setdefault(p.phase, round(p.elapsed, 2))

        stills.render(cmd, out, on_progress=progress, stop=lambda: False)
        row["render_process"] = {"main_thread_ms": round(main_thread * 1000, 1),
                                 "wall_s": round(time.perf_counter() - started, 1), "phases_s": phases,
                                 "samples": getattr(scene.cycles, "samples", None) if engine == "CYCLES" else
                                 getattr(scene.eevee, "taa_render_samples", None) if engine == "BLENDER_EEVEE"
                                 else None}
        results["engines"][name] = row
        print(f"{name}: shot's frame {row['shot_frame']['median_ms']} ms, sequencer {row['sequencer']['median_ms']}"
              f" ms; 3D scene: main thread {row['render_process']['main_thread_ms']} ms, picture after "
              f"{row['render_process']['wall_s']} s (phases {phases})", flush=True)
    addon_utils.disable("blender_movie_director", default_set=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
