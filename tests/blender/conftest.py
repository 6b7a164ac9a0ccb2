"""Fixtures for the add-on tests: real bpy (Blender as a Python module) against the WanGP emulator.

``bpy.app.timers`` never fire in the bpy module, so tests pump the add-on's timer function themselves.
``BLENDER_USER_RESOURCES`` points at a temporary folder before bpy is imported, so nothing is written to the
home folder. The emulators of these tests run in their own processes (the fixtures below replace the in-process
ones of ``tests/conftest.py``): with bpy 5.0.1, a render on the main thread while an in-process server's threads
ran Python crashed the test process (a segmentation fault) in 3 of 3 whole-suite runs. The add-on is disabled
(unregistered) at the end: classes still registered at exit make bpy 4.5 hang and 4.2 crash.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

_USER_RESOURCES = tempfile.mkdtemp(prefix="md-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed: pip install bpy==5.0.1")

import addon_utils  # noqa: E402  (Blender's module: importable once bpy is)
from quiet import wait_until  # noqa: E402

from wan2gp_emulator.process import EmulatorProcess  # noqa: E402

ADDON = "blender_movie_director"
STEP_SECONDS = "0.05"  # as tests/conftest.py's TEST_STEP_SECONDS


def _emulator_process(tmp_path_factory: pytest.TempPathFactory, flavour: str, **options: Any) -> EmulatorProcess:
    """``python -m wan2gp_emulator --flavour F --inspect`` on a free port; ``options`` as EmulatorServer's
    (``load_seconds=2`` becomes ``--load-seconds 2``, ``missing_weights=True`` becomes ``--missing-weights``)."""
    args = ["--flavour", flavour, "--port", "0", "--step-seconds", STEP_SECONDS, "--inspect"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value not in (None, False):
            args += [flag, str(value)]
    return EmulatorProcess(*args, output_dir=tmp_path_factory.mktemp(f"emulator-{flavour}-outputs"))


@pytest.fixture(scope="session")
def emulator_v12(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    server = _emulator_process(tmp_path_factory, "v12")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator_v6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    server = _emulator_process(tmp_path_factory, "v6")
    yield server
    server.stop()


@pytest.fixture
def make_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def factory(flavour: str = "v12", **options: Any) -> EmulatorProcess:
        server = _emulator_process(tmp_path_factory, flavour, **options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def addon() -> Iterator[Any]:
    """The add-on, enabled as Blender enables it; disabled (unregistered) at the end of the session."""
    module = addon_utils.enable(ADDON, default_set=True, handle_error=_raise)
    assert module is not None
    yield module
    addon_utils.disable(ADDON, default_set=True, handle_error=_raise)
    shutil.rmtree(_USER_RESOURCES, ignore_errors=True)


def _raise(exc: BaseException) -> None:
    raise exc


def prefs() -> Any:
    return bpy.context.preferences.addons[ADDON].preferences


@pytest.fixture
def blend(addon: Any, emulator_v12: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A new empty file whose scene runs at 16 fps (Wan's), the add-on pointed at the emulator. The add-on's
    clients are closed after the test: each test has its own output folder, hence its own client, and the
    threads of dozens of open clients made bpy crash (a segmentation fault, in a later test)."""
    yield from _blend_file(emulator_v12, tmp_path)


@pytest.fixture
def own_blend(addon: Any, make_emulator: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """As ``blend``, on an emulator of its own: for a test that leaves sessions mid-shot (its Blender quits, or
    its runner is killed, with shots running). Such a session holds WanGP's one status stream: on the shared
    server, the later tests' shots would show no steps."""
    yield from _blend_file(make_emulator("v12"), tmp_path)


def _blend_file(emulator: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 16, 1.0
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 320, 192, 100
    p = prefs()
    p.servers.clear()
    server = p.servers.add()
    server.url = emulator.url.rstrip("/")
    p.server_index = 0
    out = tmp_path / "shots"
    p.output_folder = str(out)
    # Connect at the add-on's default (10 s): a whole suite's load on 2 CPUs can slow a first /config read past 5 s
    p.timeout_connect, p.timeout_call, p.timeout_job_minutes = 10.0, 30.0, 2.0
    shot = scene.movie_director
    shot.prompt = "a red fox running through snow"
    shot.model = "t2v_1.3B"
    shot.resolution = "832x480"
    shot.seconds = 1.0  # 17 frames at 16 fps (4n+1)
    shot.steps = 2
    shot.channel = 2
    yield SimpleNamespace(scene=scene, shot=shot, out=out, server=emulator, url=server.url, tmp=tmp_path)
    _close_clients()
    _stop_runners(out)


def _stop_runners(out: Path) -> None:
    """Background runners a test started (Generate All) and left running: stopped (SIGINT cancels their shots
    on the server), killed if they don't end, so that none outlives the test on the shared server."""
    import signal

    from blender_movie_director import handoff

    for pid_file in (out / handoff.FOLDER).glob("*.pid"):
        files = handoff.paths_of(pid_file.with_name(pid_file.name.removesuffix(".pid") + ".journal.jsonl"))
        if not handoff.stop(files):
            continue
        if not wait_until(lambda files=files: not handoff.running(files), 30):
            os.killpg(int(files.pid.read_text().split()[0]), signal.SIGKILL)


def _close_clients() -> None:
    from blender_movie_director.ui import pump

    st = pump._state
    if st is None:
        return
    with st.lock:
        clients = list(st.clients.values())
        st.clients.clear()
    for client in clients:
        client.close()


def pump_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run the add-on's timer function until ``condition()`` holds (fails the test after ``timeout`` s)."""
    from blender_movie_director.ui import pump

    if not pump.pump(timeout, until=condition):
        jobs = [(j.kind, j.status, j.phase, j.error) for s in bpy.data.scenes for j in s.movie_director.jobs]
        raise AssertionError(f"timed out after {timeout} s; jobs: {jobs}")


def connect(blend: SimpleNamespace) -> None:
    """Press Connect and wait for the server's status, catalog and the current model's rules."""
    from blender_movie_director.ui import pump

    assert bpy.ops.movie_director.check_server() == {"FINISHED"}
    st = pump.state()
    try:
        pump_until(lambda: (blend.url, blend.shot.model) in st.rules
                   or (blend.url in st.servers and blend.url not in st.checking
                       and not st.servers[blend.url].get("reachable")))
    except AssertionError as exc:  # say where it stuck: the check, or the rules asked after it
        pool = st.pool
        raise AssertionError(f"{exc}; checking: {sorted(st.checking)}; status: {st.servers.get(blend.url)}; "
                             f"rules asked: {sorted(st.rules_asked)}; worker tasks waiting: "
                             f"{pool.tasks.qsize() if pool else None}") from None
    status = st.servers[blend.url]
    assert status.get("reachable"), f"Connect found the server unreachable: {status.get('error')}"
    # The client reads the server's API description on a thread of its own after connecting. With bpy 5.0.1, a
    # render on the main thread while that thread decoded the answer crashed the test process (a segmentation
    # fault in its json.loads: once in test_from_camera, session 12; once before). Tests that render after
    # Connect wait for it to end; whether Blender itself is at risk is not known (docs/blender.md).
    before_render(blend)


def before_render(blend: SimpleNamespace, timeout: float = 30.0) -> None:
    """Let the add-on's workers finish reading the chosen model's rules (asked when the model changes) before
    an operator renders on the main thread: with bpy 5.0.1 a render while a worker decoded a server's answer
    crashed the test process (a segmentation fault; From Frame, in a fresh-clone run of session 12)."""
    from blender_movie_director.ui import pump

    st = pump.state()
    key = (blend.url, blend.shot.model)
    pump.pump(timeout, until=lambda: key in st.rules or key not in st.rules_asked)
    wait_until(lambda: not any(t.name == "wan2gp-describe" for t in threading.enumerate()), timeout)


def finished(scene: Any, index: int = -1) -> Callable[[], bool]:
    return lambda: scene.movie_director.jobs[index].status in ("completed", "failed", "cancelled", "lost")


def wait_done(scene: Any, index: int = -1, timeout: float = 60.0) -> Any:
    pump_until(finished(scene, index), timeout)
    return scene.movie_director.jobs[index]


def select(scene: Any, strip: Any) -> None:
    from blender_movie_director.ui import vse

    vse.select_only(scene, strip)


def video_frames(path: str | Path) -> tuple[int, float, Any, Any]:
    """(frame count, fps, first frame, last frame) of a video file (RGB arrays)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), float(stream.average_rate), frames[0], frames[-1]


def write_clip(path: Path, colours: list[tuple[int, int, int]], fps: int = 16, size: tuple[int, int] = (320, 192)
               ) -> Path:
    """An H.264 MP4 with one frame per colour."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for colour in colours:
            image = np.zeros((size[1], size[0], 3), np.uint8)
            image[:] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def close_to(pixel_mean: Any, colour: tuple[int, int, int], tolerance: float = 30) -> bool:
    return all(abs(float(a) - b) < tolerance for a, b in zip(pixel_mean, colour, strict=True))


# --- panels: drawn with a recording layout (background mode has no UI) -----------------------------------

_ICONS = frozenset(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class FakeLayout:
    """Records what a panel draws; every sub-layout is another FakeLayout. Names of properties, operators and
    icons are checked against Blender's own (a wrong one shows nothing, or an error, in a real panel)."""

    def __init__(self, record: list[tuple[str, Any]]) -> None:
        self.record = record
        self.alert = False
        self.scale_y = 1.0
        self.enabled = True

    def _sub(self, *args: Any, **kwargs: Any) -> FakeLayout:
        return FakeLayout(self.record)

    row = column = box = split = _sub

    def label(self, text: str = "", icon: str = "NONE", **kwargs: Any) -> None:
        assert icon in _ICONS, icon
        self.record.append(("label", text))

    def prop(self, data: Any, name: str, **kwargs: Any) -> None:
        assert hasattr(data, name), name
        self.record.append(("prop", name))

    def operator(self, idname: str, icon: str = "NONE", **kwargs: Any) -> Any:
        assert icon in _ICONS, icon
        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name), idname
        self.record.append(("operator", idname))
        return SimpleNamespace()

    def template_list(self, *args: Any, **kwargs: Any) -> None:
        self.record.append(("list", args[0]))

    def progress(self, factor: float = 0.0, type: str = "BAR", text: str = "") -> None:
        self.record.append(("progress", text))

    def separator(self, **kwargs: Any) -> None:
        pass


def draw_panels(scene: Any) -> list[tuple[str, Any]]:
    from blender_movie_director.ui import panels

    record: list[tuple[str, Any]] = []
    context = SimpleNamespace(scene=scene, preferences=bpy.context.preferences, region=None,
                              window_manager=bpy.context.window_manager)
    for panel in (panels.MD_PT_main, panels.MD_PT_shot, panels.MD_PT_queue):
        panel.draw(SimpleNamespace(layout=FakeLayout(record)), context)
    item = scene.movie_director.jobs[scene.movie_director.job_index] if scene.movie_director.jobs else None
    if item is not None:
        panels.MD_UL_jobs.draw_item(None, context, FakeLayout(record), None, item, None, None, None)
    return record
