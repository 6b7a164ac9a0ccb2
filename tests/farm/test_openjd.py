"""The farm path through OpenJD, run for real: `openjd check` and `openjd run` of a bundle against two emulators.

Each emulator stands for one farm worker with its WanGP on loopback: `openjd run` is called once per worker, with
that worker's tasks (--tasks) and its WanGP (the WanGPServer job parameter), as a farm would hand them out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blender_movie_director.backend.farm import shot_video_name
from blender_movie_director.cli import main

pytest.importorskip("openjd.model")
OPENJD = shutil.which("openjd", path=str(Path(sys.executable).parent)) or shutil.which("openjd")
pytestmark = pytest.mark.skipif(OPENJD is None, reason="openjd-cli is not installed (the dev extra)")


def _bundle(tmp_path: Path, count: int) -> Path:
    shots = [{"prompt": f"farm shot {i}", "frames": 17, "steps": 4, "seed": i}
             for i in range(count)]
    shots_file = tmp_path / "film.json"
    shots_file.write_text(json.dumps(shots), encoding="utf-8")
    assert main(["batch", str(shots_file), "--openjd", str(tmp_path / "bundle")]) == 0
    return tmp_path / "bundle"


def _openjd(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([OPENJD, *args], capture_output=True, text=True, env=env, timeout=240, check=False)


def _run(bundle: Path, server: str, shots: list[int]) -> subprocess.CompletedProcess[str]:
    return _openjd(bundle, "run", str(bundle / "template.yaml"), *_values(bundle), "-p", f"WanGPServer={server}",
                   "--tasks", json.dumps([{"Shot": i} for i in shots]))


def _values(bundle: Path) -> list[str]:
    """The bundle's parameter_values.yaml (Deadline Cloud's form) as `openjd` -p options."""
    import yaml

    values = yaml.safe_load((bundle / "parameter_values.yaml").read_text(encoding="utf-8"))["parameterValues"]
    return [arg for v in values for arg in ("-p", f"{v['name']}={v['value']}")]


def _started(emulator) -> list[str]:
    return [e["client_id"] for e in emulator.events() if e["event"] == "started"]


def test_bundle_passes_openjd_check(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, 3)
    assert sorted(p.name for p in bundle.iterdir()) == ["parameter_values.yaml", "shots.json", "template.yaml"]
    check = _openjd(bundle, "check", str(bundle / "template.yaml"))
    assert check.returncode == 0, check.stdout + check.stderr
    summary = _openjd(bundle, "summary", str(bundle / "template.yaml"), *_values(bundle), "--output", "json")
    assert summary.returncode == 0, summary.stdout + summary.stderr
    assert json.loads(summary.stdout)["total_tasks"] == 3

    import yaml

    template = yaml.safe_load((bundle / "template.yaml").read_text(encoding="utf-8"))
    assert template["specificationVersion"] == "jobtemplate-2023-09"
    params = {p["name"]: p for p in template["parameterDefinitions"]}
    assert params["OutputDir"]["type"] == "PATH" and params["OutputDir"]["dataFlow"] == "OUT"
    [step] = template["steps"]
    assert step["parameterSpace"]["taskParameterDefinitions"] == [{"name": "Shot", "type": "INT", "range": "0-2"}]
    assert step["script"]["actions"]["onRun"]["args"][:4] == ["shot", "{{Param.ShotsFile}}", "--shots",
                                                              "{{Task.Param.Shot}}"]
    copied = json.loads((bundle / "shots.json").read_text(encoding="utf-8"))
    assert [s["prompt"] for s in copied] == ["farm shot 0", "farm shot 1", "farm shot 2"]


@pytest.mark.slow
def test_openjd_run_over_two_workers_generates_each_shot_once(tmp_path: Path, make_emulator) -> None:
    first, second = make_emulator("v12"), make_emulator("v12")
    bundle = _bundle(tmp_path, 4)
    output = bundle / "output"
    runs = [_run(bundle, first.url, [0, 1]), _run(bundle, second.url, [2, 3])]
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "openjd_progress: 100" in run.stdout and "openjd_status: shot" in run.stdout
    for i in range(4):
        assert (output / shot_video_name(i)).stat().st_size > 0
    assert len(_started(first)) == 2 and len(_started(second)) == 2
    assert len(set(_started(first) + _started(second))) == 4  # four different shots

    # A farm's retry of a task (here on the other worker): nothing is generated again, the video stays.
    before = output / shot_video_name(1)
    inode = before.stat().st_ino
    again = _run(bundle, second.url, [1])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "shot 1: done already" in again.stdout
    assert len(_started(first)) == 2 and len(_started(second)) == 2
    assert [e for e in first.events() + second.events() if e["event"] == "queued"].__len__() == 4
    assert (output / shot_video_name(1)).stat().st_ino == inode


def test_task_whose_wangp_is_down_fails_with_exit_code_3(tmp_path: Path, make_emulator) -> None:
    emulator = make_emulator("v12")
    down = emulator.url
    emulator.stop()  # a worker whose WanGP is not running
    bundle = _bundle(tmp_path, 2)
    run = _openjd(bundle, "run", str(bundle / "template.yaml"), *_values(bundle), "-p", f"WanGPServer={down}",
                  "-p", "WaitForServer=2", "--tasks", json.dumps([{"Shot": 1}]))
    assert run.returncode != 0
    assert "exited with code: 3" in run.stdout and "did not answer within 2 s" in run.stdout, run.stdout
    assert not (bundle / "output" / shot_video_name(1)).exists()
    shots_file = tmp_path / "film.json"
    shots_file.write_text(json.dumps([{"prompt": "a shot nobody generates", "frames": 17}]), encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([sys.executable, "-m", "blender_movie_director.cli", "shot", str(shots_file), "--shots", "0",
                          "-o", str(tmp_path / "out"), "--server", down, "--wait-for-server", "2"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 3, run.stdout + run.stderr
    assert f"WanGP at {down.rstrip('/')}" in run.stderr and "did not answer" in run.stderr
    assert "start WanGP on this worker" in run.stderr
    assert not (tmp_path / "out" / shot_video_name(0)).exists()


def test_a_bad_shot_range_says_what_to_give(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shots_file = tmp_path / "film.json"
    shots_file.write_text(json.dumps([{"prompt": "one"}, {"prompt": "two"}]), encoding="utf-8")
    assert main(["shot", str(shots_file), "--shots", "1-5", "-o", str(tmp_path / "out")]) == 2
    assert "the batch has 2 shots (0-1)" in capsys.readouterr().err
    assert main(["shot", str(shots_file), "--shots", "first", "-o", str(tmp_path / "out")]) == 2
    assert 'give 0-based indices: "3", "0-3" or "0,2,5-7"' in capsys.readouterr().err
