"""The job handle: one shot on its way through WanGP, off the caller's thread, whatever the transport.

:class:`Wan2GPJob` is what a caller holds: status, progress, callbacks, result, cancel, detach and
:meth:`~Wan2GPJob.to_record`. The work is done by its transport's runner (the web UI's is
``_webui.runner.WebUiRun``), which reports through the handle's side for runners: :meth:`~Wan2GPJob.report`,
:meth:`~Wan2GPJob.enter` (the :class:`JobPhase`), :meth:`~Wan2GPJob.check_stop` and
:meth:`~Wan2GPJob.wait_stop` (a stop has one :class:`StopReason`), and :attr:`~Wan2GPJob.state` (what the server
knows of the job, saved in its :class:`JobRecord`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from ._enums import JobStatus
from ._errors import (
    JobCancelledError,
    Wan2GPError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
    redact,
    translate,
)
from ._schemas import GenerationResult, GenerationSettings, JobProgress

if TYPE_CHECKING:
    from ._book import JobBook

log = logging.getLogger(__name__)

# The version of the records this code writes (JobRecord.record_version). A record without one was written
# before records had versions (December 2026 and earlier), with the same fields as version 1.
RECORD_VERSION = 1


class JobPhase(enum.StrEnum):
    """Where a job is on its way, whatever the transport (``status`` is what the caller is told)."""

    PREPARING = "preparing"  # checking the settings, reading the model's form, uploading inputs
    SENT = "sent"  # the server has the task
    QUEUED = "queued"  # waiting for the server's worker
    RUNNING = "running"  # generating
    COLLECTING = "collecting"  # finding the outputs
    DOWNLOADING = "downloading"  # fetching and checking them


class StopReason(enum.StrEnum):
    """Why a job was told to stop. Only ``DETACH`` leaves its work on the server."""

    USER = "user"  # cancel()
    DEADLINE = "deadline"  # it ran past timeouts.job
    FAILED = "failed"  # the server's answer broke off: the work must not go on for nobody
    DETACH = "detach"  # detach(): it goes on on the server, a later resume_job follows it


class JobRecord(BaseModel):
    """What is saved of a job (in a .blend, a batch journal, the register) to follow it again later.

    ``Wan2GPJob.to_record()`` gives it as a JSON-able dict; :meth:`load` reads that dict back, from this version
    or an older one. Fields a transport does not use stay empty (the web UI keeps ``session_hash``; a transport
    with job ids keeps ``remote_job_id``).
    """

    model_config = ConfigDict(extra="ignore")

    record_version: int = RECORD_VERSION
    transport: str = "webui"
    job_id: str
    client_id: str = ""
    server: str = ""
    settings: dict[str, Any]
    sent_settings: dict[str, Any] | None = None
    submitted_at: float = 0.0
    status: str = "queued"
    task_queued: bool = False  # the server's queue has (or had) the task
    processing_started: bool = False  # the server's worker started it
    app_id: str | None = None  # the server process that holds the job
    session_hash: str | None = None
    remote_job_id: str | None = None
    output_dir: str | None = None  # where the job saves its files (None in records of before: the client's)

    @property
    def reattachable(self) -> bool:
        """The server had the task: a resume re-attaches to it rather than sending it again."""
        return self.task_queued and bool(self.session_hash or self.remote_job_id)

    @classmethod
    def load(cls, data: dict[str, Any] | JobRecord) -> JobRecord:
        """A record from ``to_record()``'s dict; :class:`Wan2GPValidationError` when it is not one."""
        if isinstance(data, JobRecord):
            return data
        if not isinstance(data, dict):
            raise Wan2GPValidationError(f"a job record is a dict (from Wan2GPJob.to_record()), not "
                                        f"{type(data).__name__}", field="record")
        version = data.get("record_version", 1)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise Wan2GPValidationError(
                f"this job record was saved by a newer Movie Director (record version {version}; this one reads "
                f"up to {RECORD_VERSION})", field="record", hint="update Movie Director to follow this job")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise Wan2GPValidationError(f"not a job record: {where}: {first.get('msg')}", field="record") from None


@dataclass
class RemoteState:
    """What the server knows of a job: written by its runner, saved in its record."""

    session_hash: str | None = None
    app_id: str | None = None
    remote_job_id: str | None = None
    sent: GenerationSettings | None = None  # the settings as sent (frames, seed fixed)
    task_queued: bool = False
    processing_started: bool = False
    resume: bool = False  # re-attaching to a job the server already has


class Runner(Protocol):
    """A transport's run of one job (see ``_webui.runner.WebUiRun``)."""

    def run(self, started: float) -> GenerationResult: ...

    def let_go(self) -> None: ...

    def release(self) -> None: ...


class JobHandle:
    """The caller's side of a job: status, progress, result, error and callbacks. Shared by
    :class:`Wan2GPJob` and the pool's ``PoolJob``; the subclass sets ``id`` and runs the work, then calls
    :meth:`_finish` once."""

    _label = "job"  # in messages: "job 1a2b…", "pool job 1a2b…"

    def __init__(self, progress: JobProgress | None = None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        self._error: Wan2GPError | None = None
        self._progress = progress or JobProgress()
        self._version = 0  # of _progress; delivered in order, one callback round at a time (_tell_progress)
        self._delivered = 0
        self._delivering = threading.Lock()
        self._progress_callbacks: list[Callable[[Any, JobProgress], None]] = []
        self._done_callbacks: list[Callable[[Any], None]] = []

    def status(self) -> JobStatus:
        return self._progress.status

    @property
    def progress(self) -> JobProgress:
        with self._lock:
            return self._progress.model_copy()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Wait for the shot. Raises the job's error, :class:`JobCancelledError`, or a timeout error."""
        if not self._done.wait(timeout):
            raise Wan2GPTimeoutError(f"{self._label} {self.id} is still {self.status().value} after {timeout} s",
                                     job_id=self.id, hint="wait longer, or cancel() it")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def exception(self) -> Wan2GPError | None:
        return self._error if self.done() else None

    def add_progress_callback(self, callback: Callable[[Any, JobProgress], None]) -> None:
        """``callback(job, progress)`` on every change; runs on a background thread. A job that has progressed
        already (it started when it was submitted) calls it at once with its current progress, on the caller's
        thread: a callback added late does not miss the news of a job that then says nothing for a while (a long
        wait in WanGP's queue)."""
        with self._delivering:  # between deliveries: none can come after this one with an older snapshot
            self._progress_callbacks.append(callback)
            with self._lock:
                snapshot, version = self._progress, self._version
            if not version:
                return
            if version > self._delivered:  # news the others have not had yet either: it goes to all, in turn
                self._delivered = version
                callbacks = list(self._progress_callbacks)
            else:
                callbacks = [callback]
            self._call_each(callbacks, snapshot)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """``callback(job)`` once finished (at once if it already is); runs on a background thread."""
        with self._lock:
            if not self.done():
                self._done_callbacks.append(callback)
                return
        callback(self)

    def _publish(self, progress: JobProgress) -> int:
        """Set the progress (the caller holds ``_lock``); returns its version, for :meth:`_tell_progress`."""
        self._progress = progress
        self._version += 1
        return self._version

    def _tell_progress(self, snapshot: JobProgress, version: int) -> None:
        """Call the progress callbacks, outside ``_lock``, for one snapshot at a time and in order: updates come
        from several threads (the event stream's reader, the job's own), and a snapshot overtaken by a newer one
        before its turn is dropped, never delivered after it. A callback that fails is logged; the others run."""
        with self._delivering:
            if version <= self._delivered:
                return
            self._delivered = version
            self._call_each(list(self._progress_callbacks), snapshot)

    def _call_each(self, callbacks: list[Callable[[Any, JobProgress], None]], snapshot: JobProgress) -> None:
        for callback in callbacks:
            try:
                callback(self, snapshot)
            except Exception:
                log.exception("progress callback failed for %s %s", self._label, self.id)

    def _finish(self, *, result: GenerationResult | None = None, error: Wan2GPError | None = None,
                keep_status: bool = False) -> None:
        """End the job (once): its status follows the outcome unless ``keep_status``; callbacks are called."""
        with self._lock:
            if self._done.is_set():
                return
            self._result, self._error = result, error
            if not keep_status:
                if result is not None:
                    update: dict[str, Any] = {"status": JobStatus.COMPLETED, "fraction": 1.0}
                elif isinstance(error, JobCancelledError):
                    update = {"status": JobStatus.CANCELLED}
                else:
                    update = {"status": JobStatus.FAILED, "message": str(error) if error else ""}
                version = self._publish(self._progress.model_copy(update=update))
            else:
                version = self._publish(self._progress)
            snapshot = self._progress
            self._done.set()
            callbacks = list(self._done_callbacks)
            self._done_callbacks.clear()
        self._tell_progress(snapshot, version)
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback failed for %s %s", self._label, self.id)


class Wan2GPJob(JobHandle):
    """A generation submitted with :meth:`Wan2GPClient.submit`.

    Callbacks run on a background thread; GUI code (Blender) must hand them over to its own main thread.

    Example::

        job = client.submit(GenerationSettings(prompt="a red fox in snow", frames=33))
        job.add_progress_callback(lambda job, p: print(p.status, p.step, p.total))
        result = job.result(timeout=600)
    """

    def __init__(self, settings: GenerationSettings, *, book: JobBook, server: str, output_dir: Path,
                 transport: str = "webui", secrets: list[str] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.output_dir = output_dir  # where its files are saved: the client's folder unless the submit said
        self.transport = transport
        self.client_id = settings.client_id or f"bmd-{self.id}"
        self.server = server
        self.submitted_at = time.time()
        self.state = RemoteState()
        self.phase = JobPhase.PREPARING
        self.stop_reason: StopReason | None = None
        self.runner: Runner | None = None  # set by the client before the job runs
        self.book = book  # for its runner: the start order and the register
        self._secrets = secrets or []
        self._stop_event = threading.Event()

    # --- public ---------------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job; its work stops on the server too. Returns False if it had already finished.

        A queued task is removed from WanGP's queue; a running one is aborted with WanGP's own abort, which
        stops between two denoising steps (the step in progress finishes first).
        """
        if self.done():
            return False
        self.stop(StopReason.USER)
        return True

    def detach(self) -> bool:
        """Stop following the job here, without cancelling it: it goes on on the server.

        For a program that is closing (Blender quitting) with :meth:`to_record` saved: a later
        :meth:`Wan2GPClient.resume_job` follows it again. Returns False if the job had already finished.
        Afterwards ``done()`` is true and ``result()`` raises a :class:`Wan2GPError` saying it was detached.
        """
        if self.done():
            return False
        self.stop(StopReason.DETACH)
        if self.runner is not None:
            self.runner.let_go()
        return True

    @property
    def session_hash(self) -> str | None:
        """The job's WanGP session on the server (its private queue and gallery), once it has one."""
        return self.state.session_hash

    def record(self) -> JobRecord:
        """The job's :class:`JobRecord`, to save and later hand to :meth:`Wan2GPClient.resume_job`."""
        state = self.state
        return JobRecord(
            transport=self.transport, job_id=self.id, client_id=self.client_id, server=self.server,
            settings=self.settings.model_dump(mode="json", exclude_unset=True),
            sent_settings=state.sent.model_dump(mode="json") if state.sent is not None else None,
            submitted_at=self.submitted_at, status=self.status().value, task_queued=state.task_queued,
            processing_started=state.processing_started, app_id=state.app_id, session_hash=state.session_hash,
            remote_job_id=state.remote_job_id, output_dir=str(self.output_dir),
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record of the job (:class:`JobRecord`), to save and later hand to
        :meth:`Wan2GPClient.resume_job`."""
        return self.record().model_dump(mode="json")

    def __repr__(self) -> str:
        return f"<Wan2GPJob {self.id} {self.status().value} {self.settings.prompt[:30]!r}>"

    # --- the side for runners -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once the job was told to stop (:attr:`stop_reason` says why)."""
        return self._stop_event.is_set()

    def stop(self, reason: StopReason) -> None:
        """Tell the job to stop (the first reason given stands); wakes every :meth:`wait_stop`."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self._stop_event.set()

    @property
    def stop_signal(self) -> threading.Event:
        """The event set when the job is told to stop, for a transport's own waits (read it; never set it)."""
        return self._stop_event

    def wait_stop(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a stop; True if the job was told to stop."""
        return self._stop_event.wait(seconds)

    def check_detached(self) -> None:
        if self.stop_reason is StopReason.DETACH:
            raise _Detached()

    def check_stop(self) -> None:
        """Raise if the job was told to stop: :class:`JobCancelledError`, or the detach signal."""
        self.check_detached()
        if self._stop_event.is_set():
            raise JobCancelledError(f"job {self.id} was cancelled", job_id=self.id)

    def enter(self, phase: JobPhase) -> None:
        self.phase = phase

    def report(self, **changes: Any) -> None:
        """Change the job's progress (fields of :class:`JobProgress`); the callbacks are told."""
        with self._lock:
            if self._progress.status.finished and "status" not in changes:
                return
            data = self._progress.model_dump()
            data.update(changes)
            data["updated_at"] = datetime.now()
            version = self._publish(JobProgress(**data))
            snapshot = self._progress
        self._tell_progress(snapshot, version)

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the whole job with its runner (called on a worker thread of the client)."""
        assert self.runner is not None, "the client sets the job's runner before it runs"
        started = time.monotonic()
        try:
            self.check_stop()
            result = self.runner.run(started)
            self._finish(result=result)
        except _Detached:
            self._finish(error=Wan2GPError(
                f"job {self.id} was detached: it goes on on the server; Wan2GPClient.resume_job(record) follows "
                "it again", job_id=self.id), keep_status=True)
        except JobCancelledError as exc:
            self._finish(error=exc)
        except Wan2GPError as exc:
            exc.job_id = exc.job_id or self.id
            exc.message = redact(exc.message, self._secrets)  # a server may echo what it was sent
            exc.hint = redact(exc.hint, self._secrets) if exc.hint else exc.hint
            exc.args = (exc.message,)
            self._finish(error=exc)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the caller, translated
            log.exception("job %s failed unexpectedly", self.id)
            self._finish(error=translate(exc, server=self.server, job_id=self.id, what="the job"))
        finally:
            self.book.turn_taken(self)
            self.runner.release()

    def _finish(self, *, result: GenerationResult | None = None, error: Wan2GPError | None = None,
                keep_status: bool = False) -> None:
        """The register first, then the job's end: whoever sees the job done finds the register saying so."""
        if self.state.task_queued and not self.done():
            if self.stop_reason is StopReason.DETACH:
                state, message = "detached", None
            else:
                state = (JobStatus.COMPLETED if result is not None else JobStatus.CANCELLED
                         if isinstance(error, JobCancelledError) else JobStatus.FAILED).value
                message = str(error) if error else None
            self.book.note(self, state, output=str(result.video_path) if result else None, message=message)
        super()._finish(result=result, error=error, keep_status=keep_status)


class _Detached(Exception):  # noqa: N818 - internal signal, never leaves the job
    """Raised inside the job's thread when detach() was called."""
