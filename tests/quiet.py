"""Negative checks ("nothing more runs on the server") without sleeping: wait for the emulator's own word.

The emulator records ``worker_ended`` when a session's queue worker returns (``wan2gp_emulator/README.md``).
After it, nothing more runs in that session until the client starts a new run; so a test that cancelled a job
waits for it, then asserts that no step or completion followed, instead of sleeping and hoping.
"""

from __future__ import annotations

import time
from typing import Any


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
