"""Waiting in tests: for a condition, and for the emulator's own word in negative checks.

:func:`wait_until` polls a condition (every 20 ms) until it holds or a timeout passes: the one poll loop of the
tests, where no event can be waited on.

Negative checks ("nothing more runs on the server") do not sleep. The emulator records ``worker_ended`` when a
session's queue worker returns (``wan2gp_emulator/README.md``). After it, nothing more runs in that session
until the client starts a new run; so a test that cancelled a job waits for it, then asserts that no step or
completion followed, instead of sleeping and hoping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (it is asked a last time at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def worker_ended(server: Any, session: str, after: float) -> bool:
    """Whether ``session``'s queue worker on ``server`` ended at or after ``after`` (``time.monotonic()``)."""
    return any(e["event"] == "worker_ended" and e["session"] == session and e["t"] >= after for e in server.events())


def wait_worker_ended(server: Any, session: str, after: float, timeout: float = 20.0) -> None:
    """Wait until ``session``'s queue worker ended after ``after`` (Blender's tests pump_until ``worker_ended``)."""
    deadline = time.monotonic() + timeout
    while not worker_ended(server, session, after):
        if time.monotonic() > deadline:
            trace = [(round(e["t"] - after, 2), e["event"]) for e in server.events() if e["session"] == session]
            raise AssertionError(f"the queue worker of session {session} did not end within {timeout} s: {trace}")
        time.sleep(0.01)
