"""Emulators of the releases the shared conftest does not start (8.11, 9.81, 11.66)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wan2gp_emulator import EmulatorServer

STEP_SECONDS = 0.05  # the shared conftest's step: fast generations that still show progress


def _session_emulator(tmp_path_factory: pytest.TempPathFactory, flavour: str) -> Iterator[EmulatorServer]:
    server = EmulatorServer(flavour, output_dir=tmp_path_factory.mktemp(f"emulator-{flavour}-outputs"),
                            step_seconds=STEP_SECONDS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator_v8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    yield from _session_emulator(tmp_path_factory, "v8")


@pytest.fixture(scope="session")
def emulator_v9(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    yield from _session_emulator(tmp_path_factory, "v9")


@pytest.fixture(scope="session")
def emulator_v11(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    yield from _session_emulator(tmp_path_factory, "v11")
