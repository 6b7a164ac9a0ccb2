"""The render process of From Frame (stills.py), without Blender: its command and its progress."""

from __future__ import annotations

import sys

import pytest

from blender_movie_director import stills


def test_the_render_process_is_blender_when_there_is_one_else_this_python_with_bpy():
    cmd = stills.command("/opt/blender/blender", "/tmp/c.blend", "Scene", 12, "/tmp/o.png", "bl_ext.user.md")
    assert cmd[:3] == ["/opt/blender/blender", "-b", "--python-expr"] and cmd[3] == stills.SCRIPT
    assert cmd[4:] == ["--", "/tmp/c.blend", "Scene", "12", "/tmp/o.png", "bl_ext.user.md"]
    cmd = stills.command("", "/tmp/c.blend", "Scene", 12, "/tmp/o.png", "md")  # bpy from PyPI: no program
    assert cmd[:3] == [sys.executable, "-c", stills.SCRIPT]


def test_progress_reads_the_scripts_phases_and_blenders_samples():
    p = stills.Progress()
    assert p.fraction == 0.0 and p.text.startswith("Starting a Blender")
    assert not p.read("Fra:1 Mem:10M | Rendering 3 / 64 samples")  # before the file is loaded: not the render
    assert p.read("MD-STILL loaded\n") and p.phase == "loaded" and p.fraction == pytest.approx(0.1)
    assert p.read("Fra:1 Mem:12.0M (Peak 13M) | Time:00:01.20 | Rendering 32 / 64 samples")
    assert (p.step, p.total, p.fraction) == (32, 64, pytest.approx(0.525))
    assert p.read("Fra:1 | Remaining:00:03.21 | Mem:30M | Scene, ViewLayer | Sample 16/128")  # Cycles
    assert (p.step, p.total) == (16, 128)
    p.elapsed = 4.2
    assert p.text == "Rendering the start image: 16/128 samples (4 s)"
    assert not p.read("Saved: something")
    assert p.read("MD-STILL written") and p.fraction == 1.0


def test_a_failing_render_process_says_why_and_a_cancelled_one_is_stopped(tmp_path):
    out = str(tmp_path / "o.png")
    with pytest.raises(RuntimeError, match="ended with code 3: no camera here"):
        stills.render([sys.executable, "-c", "import sys; print('no camera here'); sys.exit(3)"], out,
                      on_progress=lambda p: None, stop=lambda: False, poll=0.02)
    seen = []
    with pytest.raises(stills.RenderCancelled):
        stills.render([sys.executable, "-c", "import time; print('MD-STILL loaded', flush=True); time.sleep(30)"],
                      out, on_progress=lambda p: seen.append(p.phase), stop=lambda: "loaded" in seen, poll=0.02)
    assert seen[-1] == "loaded"
