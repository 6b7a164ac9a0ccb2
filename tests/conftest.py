"""Shared fixtures: the WanGP emulator runs for real, in-process, on free loopback ports.

Nothing here mocks the network: tests talk to a real Gradio 5.29 server over HTTP.
"""

from __future__ import annotations

import os

# Nothing phones home, whatever a test imports later (gradio_client reads these at import/connect time).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["DO_NOT_TRACK"] = "1"

import errno  # noqa: E402
import ipaddress  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


class NetworkGuard:
    """No connection leaves this machine during the test suite: ``socket.connect`` to anything but loopback
    fails (``ENETUNREACH``) and is recorded, and so is a name lookup of any host but this one.

    Installed when this conftest is imported (before gradio and the rest are), checked when the session ends:
    a connection attempt swallowed by some background thread (telemetry, say) still fails the run.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self._lock = threading.Lock()
        self._real = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

    def install(self) -> None:
        real_connect, real_connect_ex, real_getaddrinfo = self._real
        guard = self

        def connect(sock: socket.socket, address: object) -> None:
            guard.check(sock, address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: object) -> int:
            guard.check(sock, address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: object, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            guard.check_name(host)
            return real_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo

    def uninstall(self) -> None:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = self._real  # type: ignore[method-assign]

    def _refuse(self, what: str) -> None:
        with self._lock:
            self.blocked.append(what)
        raise OSError(errno.ENETUNREACH, f"the test suite may not reach beyond this machine: {what}")

    def check(self, sock: socket.socket, address: object) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return  # AF_UNIX and the like
        host = str(address[0]).split("%", 1)[0]
        if host == "localhost":
            return
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            self._refuse(f"connect to {address!r} (a name)")
            return
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (ip.is_loopback or ip.is_unspecified or (mapped is not None and mapped.is_loopback)):
            self._refuse(f"connect to {address!r}")

    def check_name(self, host: object) -> None:
        if host is None:
            return
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in ("", "localhost", socket.gethostname()) or name.endswith(".localhost"):
            return
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            self._refuse(f"look up {name!r}")


NETWORK_GUARD = NetworkGuard()
NETWORK_GUARD.install()

from wan2gp_emulator import EmulatorServer  # noqa: E402
from wan2gp_emulator.server import ensure_event_loop  # noqa: E402

FLAVOURS = ("v12", "v6")

# A short step keeps generations fast while leaving time to observe progress and to cancel.
TEST_STEP_SECONDS = 0.05


@pytest.fixture(scope="session", autouse=True)
def _no_network_beyond_loopback() -> Iterator[NetworkGuard]:
    """Fails the session if anything tried to reach beyond loopback (tests that do it on purpose clear it)."""
    yield NETWORK_GUARD
    assert not NETWORK_GUARD.blocked, f"non-loopback network access during the tests: {NETWORK_GUARD.blocked}"


@pytest.fixture(autouse=True)
def _main_thread_event_loop() -> None:
    """An ``asyncio.run`` (the MCP tests) leaves the main thread with no current event loop, and a Gradio app a
    later test builds there would fail every event stream with HTTP 500 (see ``ensure_event_loop``)."""
    ensure_event_loop()


@pytest.fixture
def network_guard() -> NetworkGuard:
    """The guard, for tests that check it (or that reach out on purpose and then clear what they caused)."""
    return NETWORK_GUARD


@pytest.fixture(scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(autouse=True)
def _clean_wan2gp_env(monkeypatch: pytest.MonkeyPatch, _state_dir: Path) -> None:
    """Configuration comes from arguments in tests, never from the developer's shell; the job register and the
    caches of the tests (and of the programs they start) are temporary ones, never the user's."""
    for name in list(os.environ):
        if name.startswith("WAN2GP_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WAN2GP_STATE_DIR", str(_state_dir))
    monkeypatch.setenv("WAN2GP_CACHE_DIR", str(_state_dir / "cache"))  # the CLI's API cache, never the user's


def _start(tmp_path_factory: pytest.TempPathFactory, flavour: str, **options) -> EmulatorServer:
    out = tmp_path_factory.mktemp(f"emulator-{flavour}-outputs")
    server = EmulatorServer(flavour=flavour, output_dir=out, step_seconds=TEST_STEP_SECONDS, **options)
    server.start()
    return server


@pytest.fixture(scope="session")
def emulator_v12(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = _start(tmp_path_factory, "v12")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator_v6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = _start(tmp_path_factory, "v6")
    yield server
    server.stop()


@pytest.fixture(params=FLAVOURS)
def emulator(request: pytest.FixtureRequest) -> EmulatorServer:
    """One test, run against both WanGP versions."""
    return request.getfixturevalue(f"emulator_{request.param}")


@pytest.fixture
def make_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start a private emulator with options (e.g. missing_weights=True); stopped after the test."""
    started: list[EmulatorServer] = []

    def factory(flavour: str = "v12", **options) -> EmulatorServer:
        server = _start(tmp_path_factory, flavour, **options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def make_mcp_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start a private WanGP MCP server emulator; stopped after the test. ``server.url`` is the MCP endpoint.

    Example: ``make_mcp_emulator("v13", mcp_api_version=2, mcp_async=True, missing_weights=True)``."""
    started: list[EmulatorServer] = []

    def factory(flavour: str = "v13", **options) -> EmulatorServer:
        server = _start(tmp_path_factory, flavour, mcp=True, **options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


MCP_CONTRACTS = (("v12", 1), ("v13", 1), ("v13", 2))  # 12.60's API v1, 13.x's API v1, 13.x's API v2


@pytest.fixture(params=MCP_CONTRACTS, ids=[f"{f}-api{v}" for f, v in MCP_CONTRACTS])
def mcp_emulator(request: pytest.FixtureRequest, make_mcp_emulator) -> EmulatorServer:
    """One test, run against each MCP contract (v2 with --mcp-async, so that wait=false is allowed)."""
    flavour, version = request.param
    return make_mcp_emulator(flavour, mcp_api_version=version, mcp_async=version == 2)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "shots"
    path.mkdir()
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run Blender's tests first: bpy crashed once (rendering a frame) in a process where earlier tests had
    left many client threads; in a fresh process it has not."""
    items[:] = sorted(items, key=lambda item: "blender" not in item.path.parts)
