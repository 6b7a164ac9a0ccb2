"""The add-on over WanGP's MCP server (13.x, API v2), as over its web UI: Connect, Generate, Cancel, and a shot
followed again after Blender was closed while it ran. Real bpy; the emulator in its own process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from blender_movie_director.ui import pump, vse

from .conftest import _emulator_process, bpy, connect, draw_panels, prefs, pump_until, wait_done
from .test_jobs import close_blender_reopen_and_collect


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = _emulator_process(tmp_path_factory, "v13", mcp=True, mcp_api_version=2)
    yield server
    server.stop()


@pytest.fixture
def over_mcp(blend: SimpleNamespace, mcp_server: Any) -> SimpleNamespace:
    """The ``blend`` file, its add-on pointed at the MCP endpoint (``http://127.0.0.1:PORT/mcp``)."""
    prefs().servers[0].url = mcp_server.url
    blend.url, blend.server = mcp_server.url, mcp_server
    return blend


def test_connect_and_generate_over_mcp(over_mcp):
    connect(over_mcp)
    st = pump.state()
    status = st.servers[over_mcp.url]
    assert status["reachable"] and status["transport"].startswith("mcp"), status
    assert any(m["model_type"] == "t2v_1.3B" for m in st.catalogs[over_mcp.url])
    assert ("label", "WanGP ? (MCP) · up") in draw_panels(over_mcp.scene)  # no version said, none made up
    over_mcp.scene.frame_current = 10
    assert bpy.ops.movie_director.generate() == {"FINISHED"}
    item = wait_done(over_mcp.scene)
    assert item.status == "completed", item.error
    strip = vse.find_strip(over_mcp.scene, item.strip_name)
    assert strip is not None and (vse.strip_start(strip), strip.channel, vse.strip_duration(strip)) == (10, 2, 17)
    meta = vse.get_shot_metadata(strip)
    assert meta["settings"]["prompt"] == "a red fox running through snow" and meta["frames"] == 17
    assert meta["seed"] >= 0 and meta["fps"] == 16
    assert not meta["wangp_version"]  # WanGP's MCP server does not say it (serverInfo is the mcp package's)
    jobs = over_mcp.server.jobs()
    assert len([j for j in jobs if j["done"] and (j["result"] or {}).get("success")]) >= 1, jobs


def test_cancel_over_mcp_stops_the_job_on_the_server(over_mcp):
    before_jobs = len(over_mcp.server.jobs())
    over_mcp.shot.prompt = "a long shot [[slow]]"
    over_mcp.shot.steps = 40
    bpy.ops.movie_director.generate()
    item = over_mcp.scene.movie_director.jobs[-1]
    pump_until(lambda: item.status == "running" and item.step >= 1, timeout=30)
    assert bpy.ops.movie_director.cancel_job(key=item.key) == {"FINISHED"}
    item = wait_done(over_mcp.scene, timeout=30)
    assert item.status == "cancelled" and not item.placed and item.error == ""
    assert vse.all_strips(over_mcp.scene) == []
    mine = over_mcp.server.jobs()[before_jobs:]
    assert len(mine) == 1 and mine[0]["cancel_requested"] and mine[0]["done"], mine  # WanGP's own cancel
    assert not (mine[0]["result"] or {}).get("success"), mine


def test_closed_with_a_shot_running_over_mcp_then_reopened_collects_it(over_mcp, tmp_path):
    close_blender_reopen_and_collect(over_mcp.url, over_mcp.out, over_mcp.server, tmp_path)  # by its MCP job id


def test_from_camera_over_mcp_uploads_the_control_video_and_the_shot_follows_it(over_mcp):
    """Issue 14 over MCP: the depth video rendered from the 3D scene goes up through an upload ticket, with the
    mode the model's MCP schema declares; the shot follows the camera move."""
    from blender_movie_director.ui import layout

    from .conftest import select
    from .test_from_camera import dolly_scene, follow_score

    layout_scene = dolly_scene()
    over_mcp.shot.model = "vace_1.3B"
    over_mcp.shot.prompt = "a marble statue in a museum hall"
    connect(over_mcp)
    strip = vse.top_strips(over_mcp.scene).new_scene("Layout", layout_scene, 3, 20)
    vse.set_strip_duration(strip, 17)
    select(over_mcp.scene, strip)
    assert bpy.ops.movie_director.generate_from_camera(kind="depth") == {"FINISHED"}
    item = wait_done(over_mcp.scene, timeout=90)
    assert item.status == "completed", item.error
    shot = vse.find_strip(over_mcp.scene, item.strip_name)
    assert vse.strip_start(shot) == 20 and shot.channel == 4
    settings = vse.get_shot_metadata(shot)["settings"]
    control = Path(settings["video_guide"])
    assert control.is_file() and settings["video_prompt_type"] == "UV", settings  # depth, sent unchanged
    assert settings["movie_director"]["control_mode"] == "UV"  # stored on the strip: Regenerate sends it again
    other = layout.render_now(layout.ControlRequest(
        kind="depth", scene=dolly_scene("Other", direction=-1).name, camera="", frame_start=1, frames=17,
        width=832, height=480, fps=16), str(over_mcp.tmp / "other.mp4"))
    video = Path(bpy.path.abspath(shot.filepath))
    own, against = follow_score(video, control), follow_score(video, Path(other))
    assert own > 0.8 and against < 0.2, (own, against)
    sent = over_mcp.server.jobs()[-1]
    assert sent["done"] and sent["result"]["success"], sent

    select(over_mcp.scene, shot)  # Variation: the stored control video goes up again, with its mode
    assert bpy.ops.movie_director.regenerate(variation=True) == {"FINISHED"}
    again = wait_done(over_mcp.scene, timeout=90)
    assert again.status == "completed", again.error
    assert follow_score(Path(bpy.path.abspath(vse.find_strip(over_mcp.scene, again.strip_name).filepath)),
                        control) > 0.8
