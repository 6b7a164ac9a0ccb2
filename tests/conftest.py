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

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from wan2gp_emulator import EmulatorServer  # noqa: E402

FLAVOURS = ("v12", "v6")

# A short step keeps generations fast while leaving time to observe progress and to cancel.
TEST_STEP_SECONDS = 0.05


@pytest.fixture(autouse=True)
def _clean_wan2gp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration comes from arguments in tests, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("WAN2GP_"):
            monkeypatch.delenv(name, raising=False)


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
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "shots"
    path.mkdir()
    return path
