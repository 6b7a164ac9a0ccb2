"""The Flamenco job type, compiled by Node against a stand-in of Flamenco's compiler API (flamenco_standin.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
JOB_TYPE = HERE.parents[1] / "tools" / "flamenco" / "movie_director_shots.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node is not installed")


def compile_job(**settings: Any) -> dict[str, Any]:
    assert NODE is not None
    run = subprocess.run([NODE, str(HERE / "flamenco_standin.js"), str(JOB_TYPE), json.dumps(settings)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(run.stdout)


BASE = {"shots_file": "/farm/film/shots.json", "shot_count": 3, "output_dir": "/farm/film/out"}


def test_one_blender_task_per_shot_running_the_extension() -> None:
    job = compile_job(**BASE, blendfile="/farm/film/edit.blend")
    assert job["label"] == "Movie Director Shots"
    assert [t["name"] for t in job["tasks"]] == ["shot-0000", "shot-0001", "shot-0002"]
    for index, task in enumerate(job["tasks"]):
        assert task["type"] == "blender" and task["dependencies"] == []
        [command] = task["commands"]
        assert command["name"] == "blender-render"
        p = command["parameters"]
        assert p["exe"] == "{blender}" and p["blendfile"] == "/farm/film/edit.blend"
        assert p["args"][:1] == ["--python-expr"]
        assert 'import_module("bl_ext.user_default.blender_movie_director.headless").main()' in p["args"][1]
        assert p["args"][2:] == ["--", "/farm/film/shots.json", "--shots", str(index), "--output", "/farm/film/out"]
    assert job["printed"] == ["Movie Director: 3 shots of /farm/film/shots.json into /farm/film/out"]


def test_cli_runner_and_server() -> None:
    job = compile_job(**BASE, runner="cli", wangp_server="http://127.0.0.1:7861")
    [command] = job["tasks"][2]["commands"]
    assert job["tasks"][2]["type"] == "misc"
    assert command == {"name": "exec", "parameters": {
        "exe": "movie-director",
        "args": ["shot", "/farm/film/shots.json", "--shots", "2", "--output", "/farm/film/out",
                 "--server", "http://127.0.0.1:7861"]}}


def test_bad_jobs_are_rejected_with_a_reason() -> None:
    assert compile_job(**BASE)["error"] == "runner blender needs a blendfile (or choose runner cli)"
    assert compile_job(**{**BASE, "shot_count": 0}, runner="cli")["error"].startswith("shot_count must be at least 1")
    assert compile_job(shot_count=2, output_dir="/o")["error"] == "setting shots_file is required"
