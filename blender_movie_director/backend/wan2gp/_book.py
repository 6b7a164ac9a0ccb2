"""The client's book of jobs, whatever the transport: which are listed, the order they start in, the register.

The job handle (``_jobs.Wan2GPJob``) and its transport's runner only talk to the client through this book, so a
transport never reaches into the client, and the client never into a transport's runner.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ._register import JobRegister

if TYPE_CHECKING:
    from ._jobs import Wan2GPJob

log = logging.getLogger(__name__)

KEEP_FINISHED_JOBS = 50  # finished jobs still listed; older ones are forgotten (no growth per job)


class JobBook:
    """The jobs of one client: listed while unfinished (and the last finished ones), started on the server in the
    order they were submitted, and written into this user's register of jobs (shared with their other
    programs) as they go."""

    def __init__(self, register: JobRegister | None, turn_timeout: float) -> None:
        self.register = register
        self.turn_timeout = turn_timeout
        self._lock = threading.RLock()
        self._jobs: dict[str, Wan2GPJob] = {}
        self._start_order: list[str] = []  # ids of submitted jobs not started yet, in submit order
        self._turn = threading.Condition(self._lock)

    def add(self, job: Wan2GPJob, *, in_order: bool = True) -> None:
        """List ``job``; ``in_order``: it takes its turn behind the jobs submitted before it."""
        with self._lock:
            self._jobs[job.id] = job
            if in_order:
                self._start_order.append(job.id)
            finished = [j for j in self._jobs.values() if j.done()]
            for old in finished[: max(0, len(finished) - KEEP_FINISHED_JOBS)]:
                del self._jobs[old.id]

    def jobs(self) -> list[Wan2GPJob]:
        with self._lock:
            return list(self._jobs.values())

    def unfinished(self) -> list[Wan2GPJob]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.done()]

    def unfinished_ids(self) -> set[str]:
        return {job.id for job in self.unfinished()}

    def wait_turn(self, job: Wan2GPJob) -> None:
        """Shots of one client start on the server in the order they were submitted: wait until every earlier
        one has started (or ended). Each job's chain runs on its own thread, so without this a later, quicker
        chain can overtake an earlier one in WanGP's queue. Wakes for a stop of the job, and never waits longer
        than ``turn_timeout``: an order is not worth a shot held back behind one that is stuck."""
        deadline = time.monotonic() + self.turn_timeout
        with self._turn:
            while job.id in self._start_order and self._start_order[0] != job.id and not job.stopping:
                if time.monotonic() > deadline:
                    log.info("job %s starts before %s, which has not started after %.0f s", job.id,
                             self._start_order[0], self.turn_timeout)
                    self._start_order.remove(job.id)
                    return
                self._turn.wait(0.1)

    def turn_taken(self, job: Wan2GPJob) -> None:
        with self._turn:
            if job.id in self._start_order:
                self._start_order.remove(job.id)
                self._turn.notify_all()

    def note(self, job: Wan2GPJob, state: str, *, output: str | None = None, message: str | None = None) -> None:
        """Write a job's state into the register (shared with this user's other programs)."""
        if self.register is not None:
            # Written before the job's own end sets its progress to 1: a completed job is all done.
            progress = 1.0 if state == "completed" else job.progress.fraction
            self.register.write(job.to_record(), state=state, progress=progress, output=output, message=message)
