"""A storyboard to a farm and back, in real bpy: Submit to Flamenco (to a stand-in Manager), the farm's tasks run
against the emulator (the shot runner, the job type's own Blender command, or `openjd run`), and Import Farm
Results puts every shot on the timeline where the storyboard had it, with its settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from farm.flamenco_manager import StandInManager, check  # tests/farm (tests/ is on the path, as for every package here)

from blender_movie_director.backend.farm import MANIFEST, shot_video_name
from blender_movie_director.cli import main

from .conftest import ADDON, FakeLayout, bpy, prefs, select, wait_done

JOB_TYPE = Path(__file__).parents[2] / "tools" / "flamenco" / "movie_director_shots.js"
PROMPTS = ("a fox in the snow", "a paper boat on a river", "clouds over a hill")


def _storyboard(blend: SimpleNamespace) -> None:
    """Three selected markers at frames 1, 21 and 41: the first two shots fill 20 frames, the last has the panel's
    length (1 s: 17 frames at 16 fps)."""
    scene = blend.scene
    scene.timeline_markers.clear()
    for frame, prompt in zip((1, 21, 41), PROMPTS, strict=True):
        scene.timeline_markers.new(prompt, frame=frame).select = True
    prefs().farm_folder = str(blend.tmp / "farm")


def _farm_ops() -> Any:
    import importlib

    return importlib.import_module(f"{ADDON}.ui.farm_ops")


def _movies(scene: Any) -> list[Any]:
    from blender_movie_director.ui import vse

    return sorted((s for s in vse.all_strips(scene) if s.type == "MOVIE"), key=vse.strip_start)


def _run_shots(folder: Path, shots: str, url: str) -> None:
    assert main(["-q", "shot", str(folder / "shots.json"), "--shots", shots, "-o", str(folder / "output"),
                 "--server", url]) == 0


def test_shot_runner_output_lands_where_the_storyboard_was(blend: SimpleNamespace) -> None:
    from blender_movie_director.ui import pump, vse

    _storyboard(blend)
    st = pump.state()  # not connected (an earlier test may have been), and asked again at the next Connect
    st.rules.pop((blend.url, blend.shot.model), None)
    st.rules_asked.discard((blend.url, blend.shot.model))
    folder, batch, notes = _farm_ops().write_job(bpy.context, blend.scene, prefs().farm_folder)
    assert [s["prompt"] for s in batch["shots"]] == list(PROMPTS)
    assert [s["video_length"] for s in batch["shots"]] == [21, 21, 17]  # Wan's 4n+1 at 16 fps
    assert (folder / "worker.blend").is_file() and bpy.data.filepath == ""  # for the workers; this file unchanged
    assert any("family's rule" in n for n in notes)  # not connected: the model family's frame rule
    _run_shots(folder, "0-2", blend.url)
    output = folder / "output"
    assert json.loads((output / MANIFEST).read_text())["timeline"]["places"][1]["frame_start"] == 21

    assert bpy.ops.movie_director.farm_import(directory=str(output)) == {"FINISHED"}
    movies = _movies(blend.scene)
    assert [vse.strip_start(s) for s in movies] == [1, 21, 41]
    assert [vse.strip_duration(s) for s in movies] == [20, 20, 17]  # filled their places; the last its own length
    assert [s.channel for s in movies] == [2, 2, 2]  # the panel's channel
    assert [vse.movie_path(s) for s in movies] == [str(output / shot_video_name(i)) for i in range(3)]
    for index, strip in enumerate(movies):
        meta = vse.get_shot_metadata(strip)
        assert meta["kind"] == "farm" and meta["farm"]["index"] == index
        assert meta["settings"]["prompt"] == PROMPTS[index] and meta["frames"] == batch["shots"][index]["video_length"]

    # Importing again places nothing.
    assert bpy.ops.movie_director.farm_import(directory=str(output)) == {"CANCELLED"}
    assert len(_movies(blend.scene)) == 3

    # The imported strips are shots like any other: Variation makes one again from the stored settings.
    select(blend.scene, movies[1])
    assert bpy.ops.movie_director.regenerate.poll()
    assert bpy.ops.movie_director.regenerate(variation=True) == {"FINISHED"}
    job = wait_done(blend.scene)
    assert job.status == "completed", job.error
    again = json.loads(job.request)["__wangp__"]
    assert again["prompt"] == PROMPTS[1] and again["seed"] != vse.get_shot_metadata(movies[1])["settings"]["seed"]


def test_a_half_done_or_damaged_output_places_nothing_and_says_why(blend: SimpleNamespace) -> None:
    farm_ops = _farm_ops()
    _storyboard(blend)
    assert bpy.ops.movie_director.farm_write() == {"FINISHED"}  # the job folder, for any farm
    output = Path(farm_ops.last_output(blend.scene))
    folder = output.parent
    assert json.loads((folder / "shots.json").read_text())["timeline"]["places"][2]["frame_start"] == 41
    with pytest.raises(farm_ops.FarmError, match="no farm|not the output folder"):
        farm_ops.import_output(blend.scene, str(blend.tmp))

    _run_shots(folder, "0-1", blend.url)  # the farm has not run shot 2 yet
    with pytest.raises(farm_ops.FarmError) as half:
        farm_ops.import_output(blend.scene, str(output))
    assert "1 of the 3 shots" in str(half.value) and "shot 2: no task has run it yet" in str(half.value)
    assert "nothing was placed" in str(half.value)
    with pytest.raises(RuntimeError, match="nothing was placed"):  # the operator's error report, in bpy
        bpy.ops.movie_director.farm_import(directory=str(output))
    assert _movies(blend.scene) == []

    _run_shots(folder, "2", blend.url)
    video = output / shot_video_name(1)
    data = video.read_bytes()
    video.unlink()  # a new file, not the hard-linked one: the shot's original stays whole
    video.write_bytes(data[: len(data) // 2])  # half-written (a copy cut short)
    with pytest.raises(farm_ops.FarmError, match=r"shot 1: done, but shot-0001\.mp4 .* incomplete"):
        farm_ops.import_output(blend.scene, str(output))
    assert _movies(blend.scene) == []


def test_submit_to_flamenco_then_its_tasks_then_import(blend: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    if shutil.which("node") is None:
        pytest.skip("Node is not installed (the stand-in Manager compiles jobs with it)")
    from blender_movie_director import headless
    from blender_movie_director.ui import vse

    farm_ops = _farm_ops()
    _storyboard(blend)
    p = prefs()
    assert not bpy.ops.movie_director.farm_submit.poll()  # no Manager in the preferences yet
    with StandInManager(JOB_TYPE) as manager:
        p.flamenco_manager = manager.url
        assert bpy.ops.movie_director.farm_submit() == {"FINISHED"}
        [sent] = manager.jobs
        assert manager.requests == [("GET", "/api/v3/jobs/type/movie-director-shots"), ("POST", "/api/v3/jobs")]
        body, tasks = sent["submitted"], sent["compiled"]["tasks"]
        assert check(body, {"$ref": "#/components/schemas/SubmittedJob"}) == []
        assert body["type"] == "movie-director-shots" and body["type_etag"] == manager.etag
        settings = body["settings"]
        assert settings["shot_count"] == 3 and settings["runner"] == "blender" and settings["addon_module"] == ADDON
        assert Path(settings["blendfile"]).is_file() and Path(settings["shots_file"]).is_file()
        assert [t["name"] for t in tasks] == ["shot-0000", "shot-0001", "shot-0002"]
        # Pressing Submit again with the same storyboard sends nothing (every shot would be made twice).
        with pytest.raises(RuntimeError, match="This storyboard was sent already"):
            bpy.ops.movie_director.farm_submit()
        assert len(manager.jobs) == 1

        # What the Manager refuses comes back as its message: a job type not installed, a body off the schema.
        with monkeypatch.context() as m, pytest.raises(farm_ops.FarmError, match="copy tools/flamenco/movie_dir"):
            m.setattr(farm_ops, "JOB_TYPE", "movie-director-other")
            farm_ops.submit(manager.url, {**body, "type": "movie-director-other"})
        with pytest.raises(farm_ops.FarmError, match="answered 400 .* priority is required"):
            farm_ops.manager_call(manager.url, "POST", "/api/v3/jobs", {k: v for k, v in body.items()
                                                                        if k != "priority"})
    with pytest.raises(farm_ops.FarmError, match="did not answer"):
        farm_ops.submit(manager.url, body)  # the Manager is gone

    # Each task as a Flamenco worker runs it: Blender with the task's --python-expr, its arguments after "--",
    # against the worker's own WanGP (here the emulator, as WAN2GP_URL says).
    monkeypatch.setenv("WAN2GP_URL", blend.url)
    for task in tasks:
        args = task["commands"][0]["parameters"]["args"]
        assert headless.main(args[args.index("--") + 1:], exit_blender=False) == 0
    output = Path(settings["output_dir"])
    assert farm_ops.last_output(blend.scene) == str(output)
    assert bpy.ops.movie_director.farm_import() == {"FINISHED"}  # the last job's output folder by default
    assert [vse.strip_start(s) for s in _movies(blend.scene)] == [1, 21, 41]

    # What Blender on a worker opens first: an empty file, none of this file's scenes or jobs.
    bpy.ops.wm.open_mainfile(filepath=settings["blendfile"])
    assert [s.name for s in bpy.data.scenes] == ["Empty"] and not bpy.context.scene.movie_director.jobs


@pytest.mark.slow
def test_an_openjd_batch_without_places_lands_end_to_end(blend: SimpleNamespace, tmp_path: Path) -> None:
    from blender_movie_director.ui import vse

    openjd = shutil.which("openjd", path=str(Path(sys.executable).parent))
    if openjd is None:
        pytest.skip("openjd-cli is not installed (the dev extra)")
    shots = tmp_path / "film.json"
    shots.write_text(json.dumps([{"prompt": f"openjd shot {i}", "frames": 9 + 8 * i, "steps": 2} for i in range(2)]))
    assert main(["-q", "batch", str(shots), "--openjd", str(tmp_path / "bundle")]) == 0
    bundle, output = tmp_path / "bundle", tmp_path / "bundle" / "output"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([openjd, "run", str(bundle / "template.yaml"), "-p", f"ShotsFile={bundle / 'shots.json'}",
                          "-p", f"OutputDir={output}", "-p", f"WanGPServer={blend.url}"], capture_output=True,
                         text=True, env=env, timeout=240, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    blend.scene.frame_current = 100
    assert bpy.ops.movie_director.farm_import(directory=str(output)) == {"FINISHED"}
    movies = _movies(blend.scene)
    assert [(vse.strip_start(s), vse.strip_duration(s), s.channel) for s in movies] == [(100, 9, 2), (109, 17, 2)]
    assert [vse.get_shot_metadata(s)["settings"]["prompt"] for s in movies] == ["openjd shot 0", "openjd shot 1"]


def test_the_render_farm_panel_and_preferences_draw(blend: SimpleNamespace) -> None:
    farm_ops = _farm_ops()
    record: list[tuple[str, Any]] = []
    blend.scene[farm_ops.LAST_JOB] = json.dumps({"job": "4f2a", "shots": 3, "output": "/farm/x/output"})
    context = SimpleNamespace(scene=blend.scene, preferences=bpy.context.preferences, region=None)
    farm_ops.MD_PT_farm.draw(SimpleNamespace(layout=FakeLayout(record)), context)
    assert [r for r in record if r[0] == "operator"] == [("operator", "movie_director.farm_submit"),
                                                        ("operator", "movie_director.farm_write"),
                                                        ("operator", "movie_director.farm_import")]
    assert ("label", "Last job: 4f2a (3 shots)") in record
    assert farm_ops.last_output(blend.scene) == "/farm/x/output"
    record.clear()
    p = prefs()
    type(p).draw(SimpleNamespace(layout=FakeLayout(record), **{k: getattr(p, k) for k in type(p).__annotations__}),
                 bpy.context)
    assert ("prop", "flamenco_manager") in record and ("prop", "farm_folder") in record
