"""The job handle: one shot on its way through WanGP, off the caller's thread.

Each job runs in its own WanGP session (a fork of the client's connection), so its queue and gallery hold
only its own task and its own outputs. The chain, as WanGP's Generate button runs it (reference §4):
model switch -> fill_inputs -> validate_wizard_prompt -> save_inputs -> process_prompt_and_add_tasks ->
activate_status -> process_tasks (with refresh_status_async streaming status and progress) -> gallery ->
download. ``cancel()`` stops the work on the server: WanGP's abort and clear-queue, from the job's session.

Faults while a job runs: when its event stream drops (or the server is silent for ``timeouts.heartbeat`` and
then fails a probe), the job re-attaches to its own session on the server and collects the output if the server
still has it; WanGP's worker keeps generating meanwhile. A server that refuses connections (it stopped) or
answers with another app id (it restarted) fails the job at once with :class:`ServerRestartedError`; one that
can't be reached for ``timeouts.reconnect`` seconds fails it with :class:`Wan2GPTimeoutError`. A stop that can't
reach the server (cancel during a freeze) is retried in the background for ``timeouts.reconnect`` seconds.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelledError
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._mp4 import NotAVideo, probe
from .enums import JobStatus
from .errors import (
    JobCancelledError,
    JobFailedError,
    ServerRestartedError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    hint_for_server_message,
    redact,
    translate,
)
from .files import check_video, output_name, unique_path
from .fingerprint import version_tuple
from .schemas import GenerationResult, GenerationSettings, JobProgress, Resolution
from .session import cancel_quietly

if TYPE_CHECKING:
    from .client import Wan2GPClient
    from .session import GradioSession

log = logging.getLogger(__name__)
# Our own generator: seeds and retry jitter never touch the global `random` state of the host program.
_rng = random.Random()


_STEP_IN_TEXT = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.]|\s*s\b)")
# How the overall fraction is shared between the job's phases.
_PREPARE_SHARE, _DOWNLOAD_SHARE = 0.05, 0.05
# Settings read back from WanGP's queue for the result: what a shot needs to be made again.
USED_SETTINGS = ("resolution", "num_inference_steps", "video_length", "seed", "guidance_scale", "flow_shift",
                 "sample_solver", "negative_prompt")
# Re-attachments after dropped connections, per job: past this the link is too unstable to follow a job.
MAX_REATTACH = 3


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
        """``callback(job, progress)`` on every change; runs on a background thread."""
        self._progress_callbacks.append(callback)

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
            for callback in list(self._progress_callbacks):
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

    def __init__(self, client: Wan2GPClient, settings: GenerationSettings) -> None:
        super().__init__()
        self.settings = settings
        self.client_id = settings.client_id or f"bmd-{self.id}"
        self._client = client
        self._cancel = threading.Event()
        self._detach = threading.Event()
        self._session: GradioSession | None = None
        self._process_job: Any = None
        self._processing_started = False
        self._task_queued = False
        self._last_server_word = time.monotonic()
        self._step_times: list[tuple[float, int]] = []
        self._session_hash: str | None = None
        self._last_progress: tuple[Any, ...] | None = None
        self._stopped_on_server = False
        self._sent: GenerationSettings | None = None  # the settings as sent (frames, seed fixed)
        self._resume: bool = False  # re-attaching to a session that already holds the task
        self._add_sent = False  # the add-task call went out (the task may be queued even if no answer came)
        self._app_id: str | None = None  # the server process that holds the job's session
        self._reattaches = 0
        self._used: dict[str, Any] = {}  # settings WanGP recorded for the task (its queue), see _read_back
        self._lost_when = "when its program stopped"  # for "lost" messages after a re-attachment
        self.submitted_at = time.time()

    # --- public ---------------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job; its work stops on the server too. Returns False if it had already finished.

        A queued task is removed from WanGP's queue; a running one is aborted with WanGP's own abort, which
        stops between two denoising steps (the step in progress finishes first).
        """
        if self.done():
            return False
        self._cancel.set()
        return True

    def detach(self) -> bool:
        """Stop following the job here, without cancelling it: it goes on on the server.

        For a program that is closing (Blender quitting) with :meth:`to_record` saved: a later
        :meth:`Wan2GPClient.resume_job` follows it again. Returns False if the job had already finished.
        Afterwards ``done()`` is true and ``result()`` raises a :class:`Wan2GPError` saying it was detached.
        """
        if self.done():
            return False
        self._detach.set()
        self._cancel.set()  # wakes the waits; the detach flag makes them leave the server alone
        session = self._session
        if session is not None:
            session.close_streams()  # nothing of ours keeps reading, so a closing program exits at once
        return True

    @property
    def session_hash(self) -> str | None:
        """The job's WanGP session on the server (its private queue and gallery), once it has one."""
        return self._session_hash

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record of the job, to save and later hand to :meth:`Wan2GPClient.resume_job`."""
        return {
            "job_id": self.id,
            "client_id": self.client_id,
            "session_hash": self._session_hash,
            "server": self._client.server_address,
            "settings": self.settings.model_dump(mode="json", exclude_unset=True),
            "sent_settings": self._sent.model_dump(mode="json") if self._sent is not None else None,
            "submitted_at": self.submitted_at,
            "status": self.status().value,
            "task_queued": self._task_queued,
            "processing_started": self._processing_started,
            "app_id": self._app_id,
        }

    def __repr__(self) -> str:
        return f"<Wan2GPJob {self.id} {self.status().value} {self.settings.prompt[:30]!r}>"

    # --- progress -------------------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        with self._lock:
            if self._progress.status.finished and "status" not in changes:
                return
            data = self._progress.model_dump()
            data.update(changes)
            data["updated_at"] = datetime.now()
            version = self._publish(JobProgress(**data))
            snapshot = self._progress
        self._tell_progress(snapshot, version)

    def _on_status(self, update: Any, outputs: list[Any]) -> None:
        """Every status update of the status stream (refresh_status_async) and of process_tasks."""
        self._last_server_word = time.monotonic()
        code = getattr(update.code, "name", str(update.code))
        if update.log:
            self._update(message=str(update.log[0]))
        if code == "IN_QUEUE" and not self._processing_started:
            self._update(status=JobStatus.QUEUED, queue_position=update.rank, eta_seconds=update.rank_eta
                         if hasattr(update, "rank_eta") else update.eta)
            return
        changes: dict[str, Any] = {}
        text = outputs[-1] if outputs else None
        if isinstance(text, tuple):
            text = text[0] if text else None
        if isinstance(text, str) and text.strip():
            changes["phase"] = text.strip()
            match = _STEP_IN_TEXT.search(text)
            if match and not update.progress_data:
                changes["step"], changes["total"] = int(match.group(1)), int(match.group(2))
        if update.progress_data:
            unit = update.progress_data[-1]
            key = (unit.index, unit.length, unit.progress, unit.desc)
            if key == self._last_progress and not outputs:
                return  # delivered early by the SSE reader already
            self._last_progress = key
            if unit.index is not None and unit.length:
                changes["step"], changes["total"] = int(unit.index), int(unit.length)
            elif unit.progress is not None:
                changes["fraction"] = _PREPARE_SHARE + (1 - _PREPARE_SHARE - _DOWNLOAD_SHARE) * float(unit.progress)
            if unit.desc:
                changes["phase"] = unit.desc
        if "step" in changes and changes["total"]:
            step, total = changes["step"], changes["total"]
            changes["fraction"] = _PREPARE_SHARE + (1 - _PREPARE_SHARE - _DOWNLOAD_SHARE) * min(step / total, 1.0)
            changes["eta_seconds"] = self._eta(step, total)
        if changes or code in ("PROCESSING", "ITERATING", "PROGRESS"):
            if self._processing_started:
                changes["status"] = JobStatus.RUNNING
                changes["queue_position"] = None
            self._update(**changes)

    def _on_process(self, update: Any, outputs: list[Any]) -> None:
        code = getattr(update.code, "name", str(update.code))
        if code in ("PROCESSING", "ITERATING", "PROGRESS") and not self._processing_started:
            self._processing_started = True
            # In the register before anyone sees RUNNING: a program that dies right after must leave a record
            # that says the task runs in WanGP's worker (resuming it must wait for that run, not start another).
            self._client._note(self, "running")
            self._update(status=JobStatus.RUNNING, queue_position=None)
        # process_tasks yields refresh triggers (timestamps), not status text: only its codes and progress count
        self._on_status(update, [])

    def _eta(self, step: int, total: int) -> float | None:
        now = time.monotonic()
        if not self._step_times or self._step_times[-1][1] != step:
            self._step_times.append((now, step))
            self._step_times = self._step_times[-20:]
        if len(self._step_times) < 2:
            return None
        (t0, s0), (t1, s1) = self._step_times[0], self._step_times[-1]
        if s1 <= s0:
            return None
        return max(0.0, (total - step) * (t1 - t0) / (s1 - s0))

    # --- the run --------------------------------------------------------------------------------------

    def _check_cancel(self) -> None:
        self._check_cancel_detached()
        if self._cancel.is_set():
            raise JobCancelledError(f"job {self.id} was cancelled", job_id=self.id)

    def _check_cancel_detached(self) -> None:
        if self._detach.is_set():
            raise _Detached()

    def run(self) -> None:
        """Run the whole job (called on a worker thread of the client)."""
        client = self._client
        started = time.monotonic()
        try:
            self._check_cancel()
            result = self._run_chain(client, started)
            self._finish(result=result)
        except _Detached:
            self._finish(error=Wan2GPError(
                f"job {self.id} was detached: it goes on on the server; Wan2GPClient.resume_job(record) follows "
                "it again", job_id=self.id), keep_status=True)
        except JobCancelledError as exc:
            self._finish(error=exc)
        except Wan2GPError as exc:
            exc.job_id = exc.job_id or self.id
            exc.message = redact(exc.message, client._secrets)  # a server may echo what it was sent
            exc.hint = redact(exc.hint, client._secrets) if exc.hint else exc.hint
            exc.args = (exc.message,)
            self._finish(error=exc)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the caller, translated
            log.exception("job %s failed unexpectedly", self.id)
            self._finish(error=translate(exc, server=client.server_address, job_id=self.id, what="the job"))
        finally:
            client._turn_taken(self)
            session, self._session = self._session, None
            self._process_job = None  # it holds its session (64 endpoint copies): finished jobs keep nothing of it
            if session is not None:
                session.close()

    def _finish(self, *, result: GenerationResult | None = None, error: Wan2GPError | None = None,
                keep_status: bool = False) -> None:
        """The register first, then the job's end: whoever sees the job done finds the register saying so."""
        if self._task_queued and not self.done():
            if self._detach.is_set():
                state, message = "detached", None
            else:
                state = (JobStatus.COMPLETED if result is not None else JobStatus.CANCELLED
                         if isinstance(error, JobCancelledError) else JobStatus.FAILED).value
                message = str(error) if error else None
            self._client._note(self, state, output=str(result.video_path) if result else None, message=message)
        super()._finish(result=result, error=error, keep_status=keep_status)

    def _run_chain(self, client: Wan2GPClient, started: float) -> GenerationResult:
        api = client._require_api()
        model = str(self.settings.model)
        self._update(status=JobStatus.UPLOADING, phase="Preparing the form")
        client._check_model(model)
        # The model's form: known from an earlier shot (of this client, or of this server build, kept by the API
        # cache), else read on the job's own session below, as every shot does anyway. A server whose /config
        # lists no models is asked on the client's session first: only that finds out a model it lacks.
        form = client._known_form(model) or (client._model_form(model) if not api.models else None)
        if self._resume:
            assert self._sent is not None
            form = form or client._model_form(model)
            if self._app_id and client._server_instance() != self._app_id:
                raise ServerRestartedError(
                    f"lost: the WanGP server restarted since job {self.id} was queued, and the job went with it",
                    server=client.server_address, job_id=self.id, hint="submit the shot again")
            session = client._fork_session(self._session_hash)
            self._session = session
            return self._collect(session, client, form, self._sent, started, toasts=[])

        from .form import build_save_args

        if form is not None:  # settings checked against the model's rules before anything is sent
            build_save_args(self.settings, form, api, client_id=self.client_id)
        self._check_cancel()
        self._app_id = client._server_instance()  # a restart later shows as another id
        session = client._fork_session()
        self._session, self._session_hash = session, session.session_hash
        form = client._keep_form(model, self._switch(session, client, model))  # the server's form as it is now
        args, sent = build_save_args(self.settings, form, api, client_id=self.client_id)
        self._sent = sent
        toasts = self._send(session, client, args, sent)
        return self._collect(session, client, form, sent, started, toasts)

    def _switch(self, session: GradioSession, client: Wan2GPClient, model: str) -> Any:
        """Make ``model`` the session's model and read its form (which also sets the session's choices, e.g. of
        resolutions, that the settings are checked against). Returns ``fill_inputs``' answer."""
        api = client._require_api()
        call, again = client.settings.timeouts.call, client.settings.retries.attempts  # idempotent steps
        for endpoint, switch_args in client._switch_calls(model, new_session=True):
            session.call(endpoint, switch_args, timeout=call, what="switching model", attempts=again)
        return session.call(api.chain.fill, [], timeout=call, what="reading the model's form", attempts=again).value

    def _send(self, session: GradioSession, client: Wan2GPClient, args: dict[str, Any],
              sent: GenerationSettings) -> list[str]:
        """Write the settings into the job's session, and add the task to its queue."""
        api = client._require_api()
        chain, call, model = api.chain, client.settings.timeouts.call, str(sent.model)
        again = client.settings.retries.attempts  # these steps write the session's form: safe to repeat
        if chain.validate and version_tuple(api.wangp_version) < (9,):
            # Up to 8.x the add-task step queues nothing unless the wizard's prompt check ran (wgp.py); from 9.x on
            # it does not look, and the check is one round trip less per shot.
            validate = api.endpoints[chain.validate]
            values = ["off", "", sent.prompt, ""] + [""] * (len(validate.parameters) - 4)
            session.call(chain.validate, values, timeout=call, what="validating the prompt", attempts=again)
        self._check_cancel()
        save = api.endpoints[chain.save_inputs]
        session.call(chain.save_inputs, save.bind(args), timeout=call, what="sending the settings", attempts=again)
        add = api.endpoints[chain.add_tasks]
        add_args = {"model_choice": model}
        if add.param("current_gallery_tab"):
            add_args["current_gallery_tab"] = 0
        self._add_sent = True
        try:  # never repeated: a second add would queue the shot twice
            added = session.call(chain.add_tasks, add.bind(add_args), timeout=call, what="adding the task")
        except Wan2GPConnectionError:
            self._stop_on_server(session, client)  # the task may have been queued without an answer
            raise
        self._task_queued = True
        client._note(self, "sent")
        self._read_back(session, client)
        if added.messages:
            self._update(message=added.messages[-1])
        return added.messages

    def _read_back(self, session: GradioSession, client: Wan2GPClient) -> None:
        """What WanGP recorded for the task it just queued (its queue holds the settings it will use, defaults
        and the model's own rules applied): kept for the result, so a shot can be reproduced from it alone.
        Not every release can show a one-task queue (6.x, 8.x): then the settings sent stand."""
        tasks = client._session_queue(session)
        mine = [t for t in tasks or [] if t.get("client_id") in (None, self.client_id)]
        if len(mine) == 1:
            params = mine[0]
            self._used = {key: params[key] for key in USED_SETTINGS if params.get(key) not in (None, "")}

    def _collect(self, session: GradioSession, client: Wan2GPClient, form: Any, sent: GenerationSettings,
                 started: float, toasts: list[str]) -> GenerationResult:
        """Run the session's queue, then fetch and check the outputs from its gallery.

        A dropped connection on the way re-attaches to the job's session (bounded: :data:`MAX_REATTACH`).
        """
        while True:
            try:
                remote = self._follow(session, client, started)
                break
            except (ServerRestartedError, JobFailedError, JobCancelledError, _Detached):
                raise
            except (_StreamLost, Wan2GPConnectionError) as lost:
                if self._cancel.is_set():  # the job's own deadline ran out, or it was cancelled meanwhile
                    raise
                session = self._reattach(session, client, lost)
        self._update(status=JobStatus.DOWNLOADING, phase="Downloading",
                     fraction=1 - _DOWNLOAD_SHARE, queue_position=None, eta_seconds=None)
        if not remote:
            if self._resume:
                raise JobFailedError(
                    f"lost: the server no longer has job {self.id} (it restarted, or the session expired)",
                    server=client.server_address, job_id=self.id, hint="submit the shot again")
            notice = "; ".join(toasts) if toasts else "no message"
            raise JobFailedError(
                f"WanGP queued nothing or produced no file for job {self.id} (server said: {notice})",
                server=client.server_address, job_id=self.id,
                hint="check the settings against the model (frame count, resolution, start image)",
            )
        return self._save_outputs(client, sent, form, remote, started)

    def _follow(self, session: GradioSession, client: Wan2GPClient, started: float) -> list[Any]:
        """The job's outputs: from the gallery if the session has them, after the run it is in, or after
        running the session's queue."""
        chain = client._require_api().chain
        call, again = client.settings.timeouts.call, client.settings.retries.attempts
        try:
            remote = self._gallery(session, client) if self._resume else []
            if remote and self._processing_started:
                # It finished while nobody followed it: its process_tasks never cleared the status flag.
                self._release_status(session, client, finished=True)
            if not remote and self._resume and self._processing_started:
                # The earlier run goes on in WanGP's worker thread even though its stream is gone; starting
                # process_tasks again would run the task twice. Wait for that run's output.
                remote, queue_known = self._await_orphan(session, client, started)
                if not remote and queue_known:
                    raise JobFailedError(
                        f"lost: job {self.id} was running {self._lost_when}, and the server no longer has it",
                        server=client.server_address, job_id=self.id, hint="submit the shot again")
                if remote:
                    self._release_status(session, client, finished=True)
            if not remote:
                self._check_cancel()
                self._update(status=JobStatus.QUEUED, phase="Queued on the server")
                client._wait_turn(self)
                self._check_cancel()
                session.call(chain.activate, [], timeout=call, what="starting the queue", attempts=again)
                self._process(session, client, started)
                remote = self._gallery(session, client)
            return remote
        except JobCancelledError:
            self._stop_on_server(session, client)
            raise

    def _release_status(self, session: GradioSession, client: Wan2GPClient, *, finished: bool = False) -> None:
        """After collecting a run whose stream was lost: let WanGP reset the session's status flag (see
        :meth:`Wan2GPClient._release_session`). ``finished``: the session's gallery holds the job's output."""
        client._release_session(session, finished=finished, job_id=self.id)

    def _reattach(self, session: GradioSession, client: Wan2GPClient, lost: BaseException) -> GradioSession:
        """After a dropped connection: a new session object on the job's own server session, once the server
        is reachable again and is still the same process. Every wait is bounded."""
        timeouts, retries = client.settings.timeouts, client.settings.retries
        self._reattaches += 1
        session.close()  # its stream is broken or frozen: end it, so that nothing reads it any more
        if self._session is session:
            self._session = None
        if self._reattaches > MAX_REATTACH:
            raise Wan2GPConnectionError(
                f"the connection to the server dropped {self._reattaches} times during job {self.id}; "
                f"last: {lost}", server=client.server_address, job_id=self.id,
                hint="the network or the server is unstable; the shot may still finish on the server")
        log.warning("job %s: %s; re-attaching to its session", self.id, lost)
        self._update(phase="Connection lost; reconnecting", message=str(lost))
        deadline = time.monotonic() + timeouts.reconnect
        delay = retries.backoff
        while True:
            try:
                self._check_cancel()
            except JobCancelledError:
                self._stop_in_background(client)  # the server can't be told now: keep trying for a while
                raise
            try:
                instance = client._server_instance()
            except ServerRestartedError as exc:
                raise ServerRestartedError(
                    f"the WanGP server stopped or restarted during job {self.id}: the shot was not finished and "
                    "WanGP's queue went with it", server=client.server_address, job_id=self.id,
                    hint="start WanGP again if needed, and submit the shot again") from exc
            except Wan2GPConnectionError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stop_in_background(client)
                    raise Wan2GPTimeoutError(
                        f"the server did not answer for {timeouts.reconnect:.0f} s after the connection dropped "
                        f"during job {self.id} ({exc})", server=client.server_address, job_id=self.id,
                        hint="the server may be frozen or the network down; check WanGP's console") from exc
                self._cancel.wait(min(left, delay * (0.5 + _rng.random())))
                delay = min(delay * 2, retries.max_backoff)
                continue
            if self._app_id is not None and instance != self._app_id:
                raise ServerRestartedError(
                    f"the WanGP server restarted during job {self.id}: the shot was not finished and WanGP's "
                    "queue went with it", server=client.server_address, job_id=self.id,
                    hint="submit the shot again")
            break
        fresh = client._fork_session(self._session_hash)
        self._session = fresh
        self._update(phase="Re-attached to the server", message="")  # the loss is over: don't keep saying it
        self._resume, self._lost_when = True, "when the connection dropped"
        self._process_job = None
        return fresh

    def _stop_in_background(self, client: Wan2GPClient) -> None:
        """Keep trying, on a daemon thread, to stop this job's work on the server (abort, clear its queue) when
        the server could not be told at cancel time (frozen, unreachable): for ``timeouts.reconnect`` seconds,
        or three attempts of ``min(call, 2 * connect)``, whichever is longer, and only while the client is open
        (:meth:`Wan2GPClient.disconnect` waits for it).
        """
        if not self._session_hash or not (self._add_sent or self._task_queued):
            return
        timeouts, retries = client.settings.timeouts, client.settings.retries
        running = self._processing_started

        # Short attempts, repeated: an attempt can also be lost to the server's own clean-up of the job's old,
        # dropped stream (it ends the session's events when it finally sees that disconnect).
        attempt = min(timeouts.call, 2 * timeouts.connect)

        def stop() -> None:
            deadline = time.monotonic() + max(timeouts.reconnect, 3 * attempt)
            delay = retries.backoff
            while time.monotonic() < deadline:
                api, root = client._api, client._root
                if api is None or root is None:
                    log.warning("job %s: the client was closed before the job could be stopped on the server",
                                self.id)
                    return  # never reconnect a closed client from here
                chain = api.chain
                try:
                    session = root.fork(self._session_hash)
                except Exception as exc:  # noqa: BLE001 - the client is closing under us
                    log.debug("job %s: %s", self.id, exc)
                    return
                try:
                    if running:
                        _quiet(session.call, chain.abort, [], timeout=attempt, what="aborting the generation",
                               attempts=retries.attempts)
                    session.call(chain.clear_queue, [], timeout=attempt, what="clearing the job's queue",
                                 attempts=retries.attempts)
                    log.info("job %s: stopped on the server after all", self.id)
                    if running:
                        self._release_status(session, client)
                    return
                except Wan2GPError as exc:
                    log.debug("job %s: stopping it on the server: %s", self.id, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, retries.max_backoff)
                finally:
                    session.close()
            log.warning("job %s: could not reach the server to stop it within %.0f s; it may still run there",
                        self.id, max(timeouts.reconnect, 3 * attempt))

        def tracked() -> None:
            try:
                stop()
            finally:
                with client._lock:
                    client._stoppers.discard(thread)

        thread = threading.Thread(target=tracked, name=f"wan2gp-stop-{self.id}", daemon=True)
        with client._lock:
            client._stoppers.add(thread)
        thread.start()

    def _await_orphan(self, session: GradioSession, client: Wan2GPClient,
                      started: float | None = None) -> tuple[list[Any], bool]:
        """Wait for the interrupted run's output. Returns (files, whether the server's queue was readable).

        WanGP 12 shows the session's queue: wait while the task is in it, then read the gallery. WanGP 6 can't
        show a one-task queue: wait up to ``timeouts.resume_wait`` for the output, then let the caller run the
        session's queue again (a task still there runs; an empty queue means the job is lost).
        """
        timeouts = client.settings.timeouts
        self._update(status=JobStatus.RUNNING, phase="Generating (re-attached; no step progress)")
        deadline = time.monotonic() + timeouts.resume_wait
        hard = (started if started is not None else time.monotonic()) + timeouts.job
        polls, queue_known = 0, False
        while time.monotonic() < deadline:
            self._check_cancel()
            if time.monotonic() > hard:
                self._cancel.set()
                self._stop_on_server(session, client)
                raise Wan2GPTimeoutError(f"job {self.id} ran past its {timeouts.job:.0f} s limit; "
                                         "it was stopped on the server", job_id=self.id)
            remote = self._gallery(session, client)
            if remote:
                return remote, True
            if polls % 4 == 0:
                tasks = client._session_queue(session)
                if tasks is not None:
                    queue_known = True
                    # 9.x-11.x record no client_id in a task; the job's own session holds only its task
                    if not any(t.get("client_id") in (None, self.client_id) for t in tasks):
                        return self._gallery(session, client), True  # finished meanwhile, or gone
                    deadline = time.monotonic() + timeouts.stall  # still queued: it is running
            polls += 1
            self._cancel.wait(client.poll_interval)
        return [], queue_known

    def _gallery(self, session: GradioSession, client: Wan2GPClient) -> list[Any]:
        return client._gallery_files(session)

    def _process(self, session: GradioSession, client: Wan2GPClient, started: float) -> None:
        timeouts = client.settings.timeouts
        chain = client._require_api().chain
        client._heal_leftovers()  # what dead programs left behind would hold up this job's status stream
        status_job = session.submit_observed(chain.status, [], self._on_status) if chain.status else None
        self._last_server_word = time.monotonic()
        process_job = session.submit_observed(chain.process, [], self._on_process)
        self._process_job = process_job
        client._turn_taken(self)  # in Gradio's queue now: the next shot of this client may follow
        try:
            while not process_job.done():
                if self._cancel.wait(0.05):
                    self._check_cancel_detached()
                    self._stop_on_server(session, client)  # first, before waiting for any stream
                    raise JobCancelledError(f"job {self.id} was cancelled", job_id=self.id)
                now = time.monotonic()
                # Waiting is not dying: a shot queued behind others, or behind a model download, hears nothing
                # but gradio's heartbeats for as long as that takes. Silence on the stream (no heartbeat either),
                # or no status for `stall` seconds, only makes the client ask whether the server is still there;
                # a frozen server fails that probe and the job fails within `reconnect` seconds.
                if now - max(self._last_server_word, session.last_heard) > timeouts.heartbeat or \
                        now - self._last_server_word > timeouts.stall:
                    self._probe(session, client)
                if now - started > timeouts.job:
                    self._cancel.set()
                    self._stop_on_server(session, client)
                    raise Wan2GPTimeoutError(f"job {self.id} ran past its {timeouts.job:.0f} s limit; "
                                             "it was stopped on the server", job_id=self.id)
            try:
                process_job.result(timeout=0)
            except FutureCancelledError as exc:
                self._check_cancel_detached()
                failure = session.stream_failure
                if failure:
                    self._cancel.set()
                    self._stop_on_server(session, client)  # the work must not go on for nobody
                    raise Wan2GPServerError(f"the server's answer broke off: {failure}",
                                            server=client.server_address, job_id=self.id,
                                            hint="is this really WanGP? a proxy in between may alter its answers"
                                            ) from exc
                raise _StreamLost(f"the connection to the server dropped during job {self.id}") from exc
            except BaseException as exc:
                error = translate(exc, server=client.server_address, job_id=self.id, what="the generation")
                if isinstance(error, Wan2GPServerError):
                    message = error.message
                    raise JobFailedError(
                        f"WanGP failed to generate the shot: {message}", server=client.server_address,
                        job_id=self.id, hint=hint_for_server_message(message)) from exc
                raise error from exc
        finally:
            # The status stream ends by itself once process_tasks has finished (WanGP resets its status flag).
            # It is never cancelled: with gradio 5.29 a cancel can break the session's event stream (a KeyError
            # in the server's sse_stream) and with it the session's next calls.
            if status_job is not None and process_job.done() and not self._cancel.is_set():
                _wait_done(status_job, 2.0)

    def _probe(self, session: GradioSession, client: Wan2GPClient) -> None:
        """After ``timeouts.heartbeat`` of silence: raise :class:`_StreamLost` unless the same server answers."""
        try:
            instance = client._server_instance()
        except Wan2GPConnectionError as exc:
            raise _StreamLost(f"the server went silent during job {self.id} and does not answer ({exc})") from exc
        if self._app_id is not None and instance != self._app_id:
            raise _StreamLost(f"the server restarted during job {self.id}")
        self._last_server_word = time.monotonic()  # alive: a long queue wait or a long step, keep following

    def _stop_on_server(self, session: GradioSession, client: Wan2GPClient) -> None:
        """Make sure nothing of this job is left on the server: abort it if running, empty its queue.

        Bounded by ``min(timeouts.call, 2 * timeouts.connect)`` in all (a healthy server answers an abort in
        milliseconds; a frozen one should not hold a cancel for minutes); what could not be done is retried in the
        background for ``timeouts.reconnect`` seconds.
        """
        if self._stopped_on_server:
            return
        self._stopped_on_server = True
        chain = client._require_api().chain
        timeouts = client.settings.timeouts
        deadline = time.monotonic() + min(timeouts.call, 2 * timeouts.connect)
        again = client.settings.retries.attempts  # abort and clear are safe to repeat
        process_job = self._process_job

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        try:
            if process_job is not None and not self._processing_started and not process_job.done():
                cancel_quietly(process_job)  # still waiting in Gradio's queue: leave it
            if self._processing_started:  # running here, or in WanGP's worker after a dropped stream
                try:
                    session.call(chain.abort, [], timeout=left(), what="aborting the generation", attempts=again)
                except Wan2GPServerError as exc:  # the server answered: the queue is cleared below anyway
                    log.info("job %s: abort: %s", self.id, exc)
            if self._task_queued or self._add_sent:
                session.call(chain.clear_queue, [], timeout=left(), what="clearing the job's queue",
                             attempts=again)
            if process_job is not None:
                _wait_done(process_job, left())
            if self._resume and self._processing_started:
                self._release_status(session, client)  # the lost run's status poller, see there
        except Wan2GPServerError as exc:
            log.warning("job %s: stopping it on the server: %s", self.id, exc)
        except Wan2GPError as exc:
            log.warning("job %s: stopping it on the server: %s; trying again in the background", self.id, exc)
            self._stop_in_background(client)

    def _save_outputs(self, client: Wan2GPClient, sent: GenerationSettings, form: Any,
                      remote: list[Any], started: float) -> GenerationResult:
        config = client.settings
        folder = Path(config.output_dir)
        saved: list[Path] = []
        frames = form.frames_for(sent)
        resolution = sent.resolution or form.values.get("resolution")
        has_image_input = sent.image_start is not None or sent.video_source is not None
        size = None
        if resolution and not has_image_input:
            r = Resolution.parse(str(resolution))
            size = (r.width, r.height)
        info = None
        for item in remote:
            suffix = Path(item.name).suffix
            dest = unique_path(folder, output_name(sent.prompt, sent.model, sent.seed, self.id, suffix))
            check = _must_be_video if config.verify_outputs and dest.suffix.lower() in (".mp4", ".mov") else None
            path = client._download(item, dest, check=check)
            if config.verify_outputs and path.suffix.lower() in (".mp4", ".mov"):
                try:
                    info = check_video(path, frames=frames, fps=form.rule.fps, size=size)
                except JobFailedError as exc:
                    kept = path.with_name(path.stem + ".unverified" + path.suffix)
                    path.rename(kept)
                    raise JobFailedError(f"{exc.message}; the file is kept as {kept}",
                                         job_id=self.id, server=client.server_address) from exc
            saved.append(path)
        video = next((p for p in saved if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm")), saved[0])
        used = dict(self._used)
        if info is not None and info.width and info.height:
            used["resolution"] = f"{info.width}x{info.height}"  # e.g. WanGP followed a start image's aspect
        return GenerationResult(
            job_id=self.id,
            video_path=video,
            files=saved,
            settings=sent.model_copy(update=used),
            model=sent.model,
            frames=info.frames if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            fps=info.fps if info else None,
            server=client.server_address,
            wangp_version=client._require_api().wangp_version,
            elapsed_seconds=time.monotonic() - started,
            sent_settings=sent.to_wangp_json(),
        )


def _must_be_video(path: Path) -> None:
    """Reject a download that is not a complete MP4/MOV video (it is removed, never kept under a final name)."""
    try:
        probe(path)
    except NotAVideo as exc:
        raise JobFailedError(f"the server's output is not a usable video: {exc}; nothing was kept",
                             hint="check WanGP's console; the output may be damaged") from exc
    except OSError as exc:
        raise JobFailedError(f"the downloaded output could not be read: {exc}") from exc


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call ``fn``; a server error (e.g. nothing to abort) is logged, not raised."""
    try:
        fn(*args, **kwargs)
    except Wan2GPServerError as exc:
        log.debug("%s", exc)


class _StreamLost(Exception):  # noqa: N818 - internal signal, never leaves the job
    """The job's connection dropped (or the server went silent and failed a probe): re-attach."""


def _wait_done(job: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.01)


class _Detached(Exception):  # noqa: N818 - internal signal, never leaves the job
    """Raised inside the job's thread when detach() was called."""
