"""The Flamenco task inside real bpy: the job type's own --python-expr, with Blender's arguments after ``--``.

Here (not in tests/farm) because bpy must be set up before it is imported (conftest.py beside this file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blender_movie_director.backend.farm import shot_video_name

from .conftest import ADDON, bpy

JOB_TYPE = Path(__file__).parents[2] / "tools" / "flamenco" / "movie_director_shots.js"
STANDIN = Path(__file__).parents[1] / "farm" / "flamenco_standin.js"


def _flamenco_args(shots_file: Path, output: Path, server: str) -> list[str]:
    """The Blender arguments the job type gives shot 1 (compiled by Node, as tests/farm/test_flamenco.py does)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node is not installed")
    settings = {"shots_file": str(shots_file), "shot_count": 2, "output_dir": str(output), "blendfile": "x.blend",
                "addon_module": ADDON, "wangp_server": server}
    run = subprocess.run([node, str(STANDIN), str(JOB_TYPE), json.dumps(settings)], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(run.stdout)["tasks"][1]["commands"][0]["parameters"]["args"]


def test_the_job_types_expression_generates_the_shot_in_bpy(addon: Any, emulator_v12: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    shots_file = tmp_path / "film.json"
    shots_file.write_text(json.dumps([{"prompt": f"headless shot {i}", "frames": 17, "steps": 4} for i in range(2)]),
                          encoding="utf-8")
    output = tmp_path / "out"
    args = _flamenco_args(shots_file, output, emulator_v12.url)
    assert args[0] == "--python-expr" and args[2] == "--"
    monkeypatch.setattr(sys, "argv", ["blender", "-b", "x.blend", *args])
    assert bpy.app.background  # so the entry ends Blender with the task's exit code
    started = len([e for e in emulator_v12.events() if e["event"] == "started"])
    with pytest.raises(SystemExit) as ended:
        exec(args[1], {})  # what Blender does with --python-expr
    assert ended.value.code == 0, capsys.readouterr()
    assert (output / shot_video_name(1)).stat().st_size > 0
    assert not (output / shot_video_name(0)).exists()  # only this task's shot
    assert "openjd_progress: 100" in capsys.readouterr().out
    assert len([e for e in emulator_v12.events() if e["event"] == "started"]) == started + 1
