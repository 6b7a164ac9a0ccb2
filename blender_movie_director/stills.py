"""A still rendered by another Blender process, so that From Frame never freezes Blender for a render.

When the picture at the playhead needs the scene's render engine (the camera of a 3D scene, or a scene strip:
``vse.frame_picture``), Blender saves a copy of the open file and this module renders the frame from that copy
in a process of its own, on a worker thread of the add-on that waits for it, reads its progress and hands the
picture to the shot. Blender's main thread spends only the copy's save (milliseconds for a small file).

Which process: in Blender, ``bpy.app.binary_path`` is Blender itself (``blender -b --python-expr``); with Blender
as a Python module (bpy from PyPI, which has no Blender program) it is empty, and ``sys.executable`` is a Python
that imports bpy. Either way the same script runs (:data:`SCRIPT`): it disables this add-on first (the copy holds
the shots' jobs, which this process must not follow), opens the copy, renders the frame with the scene's own
settings (at 100 % of its size) and writes the PNG to a temporary name, renamed when complete.

Progress: the script says when it has loaded the file, starts rendering and has written the picture; Blender
itself prints its samples ("Rendering 12 / 64 samples", Cycles' "Sample 12/64") when it runs as a program with
``-b``; the bpy module prints nothing while it renders, so there the phase and the elapsed time are all there is.

Plain Python, no bpy: the add-on passes what it read from Blender.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# The render process's script. Arguments after "--": the copy, the scene, the frame, the PNG, this add-on's module.
SCRIPT = r"""
import os, sys
blend, scene_name, frame, out, addon = sys.argv[sys.argv.index("--") + 1:][:5]
import bpy, addon_utils
if addon and addon in {m.__name__ for m in addon_utils.modules()}:
    addon_utils.disable(addon)
bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False)
scene = bpy.data.scenes[scene_name]
scene.frame_set(int(frame))
scene.render.resolution_percentage = 100
print("MD-STILL loaded", flush=True)
with bpy.context.temp_override(scene=scene):
    bpy.ops.render.render(write_still=False)
print("MD-STILL rendered", flush=True)
scene.render.image_settings.file_format = "PNG"
part = out + ".part.png"
bpy.data.images["Render Result"].save_render(part, scene=scene)
os.replace(part, out)
print("MD-STILL written", flush=True)
"""

_SAMPLES = re.compile(r"(?:Rendering\s+(\d+)\s*/\s*(\d+)\s+samples|Sample\s+(\d+)\s*/\s*(\d+))")
# How much of the whole each phase is, for a progress bar: loading the copy is short, the render is the work.
_PHASES = {"starting": (0.0, "Starting a Blender to render the start image"),
           "loaded": (0.1, "Rendering the start image"), "rendered": (0.95, "Saving the start image"),
           "written": (1.0, "Start image rendered")}


def command(binary_path: str, copy: str, scene: str, frame: int, out: str, addon: str) -> list[str]:
    """The render process's command line: Blender's own program when there is one, else this Python with bpy."""
    args = ["--", copy, scene, str(frame), out, addon]
    if binary_path and os.path.basename(binary_path).lower().startswith("blender"):
        return [binary_path, "-b", "--python-expr", SCRIPT, *args]
    return [sys.executable, "-c", SCRIPT, *args]


@dataclass
class Progress:
    """How far the render process is: a phase, a fraction for the bar, samples when Blender prints them."""

    phase: str = "starting"
    fraction: float = 0.0
    step: int | None = None
    total: int | None = None
    elapsed: float = 0.0

    @property
    def text(self) -> str:
        text = _PHASES.get(self.phase, _PHASES["starting"])[1]
        if self.total:
            text += f": {self.step}/{self.total} samples"
        return f"{text} ({self.elapsed:.0f} s)"

    def read(self, line: str) -> bool:
        """Take one line of the process's output; True if the progress changed."""
        if line.startswith("MD-STILL "):
            phase = line.split()[1]
            if phase in _PHASES:
                self.phase, self.fraction = phase, _PHASES[phase][0]
                return True
            return False
        match = _SAMPLES.search(line)
        if match is None or self.phase != "loaded":
            return False
        done, total = (int(x) for x in (match.group(1, 2) if match.group(1) else match.group(3, 4)))
        if total > 0:
            self.step, self.total = done, total
            self.fraction = 0.1 + 0.85 * min(1.0, done / total)
            return True
        return False


class RenderCancelled(Exception):
    """The shot was cancelled (or Blender is closing) while its start image was being rendered."""


def render(cmd: list[str], out: str, *, on_progress: Callable[[Progress], None],
           stop: Callable[[], bool], started: Callable[[subprocess.Popen[str]], None] | None = None,
           timeout: float = 3600.0, poll: float = 0.25) -> str:
    """Run the render process to its end; returns ``out``. Calls ``on_progress`` as it goes (this thread).

    Raises :class:`RenderCancelled` when ``stop()`` turns true (the process is killed), ``TimeoutError`` past
    ``timeout`` seconds, and ``RuntimeError`` with the end of the process's output when it fails.
    """
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace")
    if started is not None:
        started(process)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    tail: deque[str] = deque(maxlen=40)
    progress = Progress()
    begun = time.monotonic()

    def read() -> None:  # its own thread: a line may be long in coming
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, name="movie-director-still", daemon=True)
    reader.start()
    try:
        while True:
            ended = process.poll() is not None
            if ended:
                reader.join(2.0)
            while not lines.empty():
                line = lines.get()
                tail.append(line)
                progress.read(line)
            progress.elapsed = time.monotonic() - begun
            on_progress(progress)
            if ended:
                break
            if stop():
                raise RenderCancelled("cancelled while rendering the start image")
            if progress.elapsed > timeout:
                raise TimeoutError(f"rendering the start image took more than {timeout:.0f} s")
            time.sleep(poll)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        reader.join(2.0)  # the pipe is at its end once the process is gone
        if process.stdout is not None and not reader.is_alive():
            process.stdout.close()
    if process.returncode != 0 or not os.path.isfile(out):
        text = "".join(line for line in tail if "EGL Error" not in line).strip()[-800:]
        raise RuntimeError(f"the render process ended with code {process.returncode}: {text or 'no output'}")
    return out
