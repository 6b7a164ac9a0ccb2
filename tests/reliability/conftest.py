"""Fixtures for the reliability tests: short bounded waits, the fault proxy, the hostile gateway, emulator processes.

Every test here is bounded twice: by the client's own timeouts (seconds, set below) and by pytest-timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from hostile import HostileGateway

from blender_movie_director.backend.wan2gp import Retries, Timeouts, Wan2GPClient
from wan2gp_emulator.process import EmulatorProcess

# Seconds, not minutes: a fault must be noticed and reported fast enough to test many of them.
# heartbeat 1.5 s of silence before a probe (the emulator's status stream speaks every 50 ms while a job runs);
# connect 2 s for a probe to answer; reconnect 4 s to reach the server again after a drop; call 15 s for a chain
# call (a model switch on a freshly started emulator took over 5 s once, on a loaded CI machine).
FAULT_TIMEOUTS = Timeouts(connect=2, describe=10, call=15, job=60, stall=30, download=10, heartbeat=1.5,
                          reconnect=4, resume_wait=20)
FAULT_RETRIES = Retries(attempts=3, backoff=0.1, max_backoff=0.5)


def make_client(url: str, out_dir: Path, **kwargs) -> Wan2GPClient:
    kwargs.setdefault("timeouts", FAULT_TIMEOUTS)
    kwargs.setdefault("retries", FAULT_RETRIES)
    client = Wan2GPClient(url, output_dir=out_dir, **kwargs)
    client.poll_interval = 0.05
    return client


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def proxy_to() -> Iterator[Callable[[str], FaultProxy]]:
    """``proxy_to(server.url)``: a started fault proxy, stopped after the test."""
    started: list[FaultProxy] = []

    def factory(url: str) -> FaultProxy:
        proxy = FaultProxy(url)
        proxy.start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()


@pytest.fixture
def hostile_to() -> Iterator[Callable[[str], HostileGateway]]:
    started: list[HostileGateway] = []

    def factory(url: str) -> HostileGateway:
        gateway = HostileGateway(url)
        gateway.start()
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


@pytest.fixture
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def factory(*args: str) -> EmulatorProcess:
        process = EmulatorProcess(*args, output_dir=tmp_path_factory.mktemp("emulator-process"))
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop()
