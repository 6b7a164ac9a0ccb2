"""One shot through WanGP's web UI: the generation chain, its progress, and every recovery on the way.

The chain, as WanGP's Generate button runs it (reference §4): model switch -> fill_inputs ->
validate_wizard_prompt (up to 8.x) -> save_inputs -> process_prompt_and_add_tasks -> activate_status ->
process_tasks (with refresh_status_async streaming status and progress) -> gallery -> download. Each shot runs in
its own WanGP session (a fork of the transport's root session), so its queue and gallery hold only its own task.
A stop (cancel, deadline) stops the work on the server: WanGP's abort and clear-queue, from the shot's session.

Faults: when the shot's event stream drops (or the server is silent for ``timeouts.heartbeat`` and then fails a
probe), the run re-attaches to its own session and collects the output if the server still has it; WanGP's worker
keeps generating meanwhile. A server that refuses connections (it stopped) or answers with another app id (it
restarted) fails the shot at once with :class:`ServerRestartedError`; one that can't be reached for
``timeouts.reconnect`` seconds fails it with :class:`Wan2GPTimeoutError`. A stop that can't reach the server
(cancel during a freeze) is retried in the background for ``timeouts.reconnect`` seconds.

The run talks to its job only through the handle's side for runners (``report``, ``check_stop``, ``wait_stop``,
``stop``, ``state``), and to the client only through its :class:`~..book.JobBook`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelledError
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._enums import JobStatus
from .._errors import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    ServerBusyError,
    ServerRestartedError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    hint_for_server_message,
    translate,
)
from .._files import check_video, must_be_video, output_name, unique_path
from .._jobs import JobPhase, StopReason, _Detached
from .._schemas import GenerationResult, GenerationSettings, Resolution
from .fingerprint import version_tuple
from .session import cancel_quietly

if TYPE_CHECKING:
    from .._book import JobBook
    from .._jobs import RemoteState, Wan2GPJob
    from .session import GradioSession
    from .transport import WebUiTransport

log = logging.getLogger(__name__)

_STEP_IN_TEXT = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.]|\s*s\b)")
# How the overall fraction is shared between the job's phases.
_PREPARE_SHARE, _DOWNLOAD_SHARE = 0.05, 0.05
# Settings read back from WanGP's queue for the result: what a shot needs to be made again.
USED_SETTINGS = ("resolution", "num_inference_steps", "video_length", "seed", "guidance_scale", "flow_shift",
                 "sample_solver", "negative_prompt")
# Re-attachments after dropped connections, per job: past this the link is too unstable to follow a job.
MAX_REATTACH = 3


class WebUiRun:
    """The run of one job over the web UI. Made by the client for each job (and for each resumed one)."""

    def __init__(self, job: Wan2GPJob, web: WebUiTransport, book: JobBook) -> None:
        self.job, self.web, self.book = job, web, book
        self.state: RemoteState = job.state
        self._session: GradioSession | None = None
        self._process_job: Any = None
        self._add_sent = False  # the add-task call went out (the task may be queued even if no answer came)
        self._last_server_word = time.monotonic()
        self._step_times: list[tuple[float, int]] = []
        self._last_progress: tuple[Any, ...] | None = None
        self._stopped_on_server = False
        self._reattaches = 0
        self._used: dict[str, Any] = {}  # settings WanGP recorded for the task (its queue), see _read_back
        self._lost_when = "when its program stopped"  # for "lost" messages after a re-attachment

    def run(self, started: float) -> GenerationResult:
        return self._run_chain(started)

    def let_go(self) -> None:
        """The job is detached: nothing of ours keeps reading its session, so a closing program exits at once."""
        session = self._session
        if session is not None:
            session.close_streams()

    def release(self) -> None:
        """The run is over: its session goes (it holds 64 endpoint copies; finished jobs keep nothing of it)."""
        session, self._session = self._session, None
        self._process_job = None
        if session is not None:
            session.close()

    def _on_status(self, update: Any, outputs: list[Any]) -> None:
        """Every status update of the status stream (refresh_status_async) and of process_tasks."""
        self._last_server_word = time.monotonic()
        code = getattr(update.code, "name", str(update.code))
        if update.log:
            self.job.report(message=str(update.log[0]))
        if code == "IN_QUEUE" and not self.state.processing_started:
            self.job.report(status=JobStatus.QUEUED, queue_position=update.rank, eta_seconds=update.rank_eta
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
            if self.state.processing_started:
                changes["status"] = JobStatus.RUNNING
                changes["queue_position"] = None
            self.job.report(**changes)

    def _on_process(self, update: Any, outputs: list[Any]) -> None:
        code = getattr(update.code, "name", str(update.code))
        if code in ("PROCESSING", "ITERATING", "PROGRESS") and not self.state.processing_started:
            self.state.processing_started = True
            # In the register before anyone sees RUNNING: a program that dies right after must leave a record
            # that says the task runs in WanGP's worker (resuming it must wait for that run, not start another).
            self.book.note(self.job, "running")
            self.job.enter(JobPhase.RUNNING)
            self.job.report(status=JobStatus.RUNNING, queue_position=None)
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

    def _run_chain(self, started: float) -> GenerationResult:
        api = self.web.require_api()
        model = str(self.job.settings.model)
        self.job.enter(JobPhase.PREPARING)
        self.job.report(status=JobStatus.UPLOADING, phase="Preparing the form")
        self.web.check_model(model)
        # The model's form: known from an earlier shot (of this client, or of this server build, kept by the API
        # cache), else read on the job's own session below, as every shot does anyway. A server whose /config
        # lists no models is asked on the client's session first: only that finds out a model it lacks.
        form = self.web.known_form(model) or (self.web.model_form(model) if not api.models else None)
        if self.state.resume:
            assert self.state.sent is not None
            form = form or self.web.model_form(model)
            if self.state.app_id and self.web.server_instance(self.web.settings.retries) != self.state.app_id:
                raise JobLostError(
                    f"lost: the WanGP server restarted since job {self.job.id} was queued, and the job went with it",
                    reason="the server restarted", server=self.web.server_address, job_id=self.job.id,
                    hint="submit the shot again")
            session = self.web.fork(self.state.session_hash)
            self._session = session
            return self._collect(session, form, self.state.sent, started, toasts=[])

        from .._form import build_save_args

        if form is not None:  # settings checked against the model's rules before anything is sent
            build_save_args(self.job.settings, form, api, client_id=self.job.client_id)
        self.job.check_stop()
        self.state.app_id = self.web.server_instance(self.web.settings.retries)  # a restart shows as another id
        session = self.web.fork()
        self._session, self.state.session_hash = session, session.session_hash
        form = self.web.keep_form(model, self._switch(session, model))  # the server's form as it is now
        args, sent = build_save_args(self.job.settings, form, api, client_id=self.job.client_id)
        self.state.sent = sent
        toasts = self._send(session, args, sent)
        return self._collect(session, form, sent, started, toasts)

    def _switch(self, session: GradioSession, model: str) -> Any:
        """Make ``model`` the session's model and read its form (which also sets the session's choices, e.g. of
        resolutions, that the settings are checked against). Returns ``fill_inputs``' answer."""
        api = self.web.require_api()
        call, again = self.web.settings.timeouts.call, self.web.settings.retries  # idempotent steps
        for endpoint, switch_args in self.web.switch_calls(model, new_session=True):
            session.call(endpoint, switch_args, timeout=call, what="switching model", retries=again)
        return session.call(api.chain.fill, [], timeout=call, what="reading the model's form", retries=again).value

    def _send(self, session: GradioSession, args: dict[str, Any],
              sent: GenerationSettings) -> list[str]:
        """Write the settings into the job's session, and add the task to its queue."""
        api = self.web.require_api()
        chain, call, model = api.chain, self.web.settings.timeouts.call, str(sent.model)
        again = self.web.settings.retries  # these steps write the session's form: safe to repeat
        if chain.validate and version_tuple(api.wangp_version) < (9,):
            # Up to 8.x the add-task step queues nothing unless the wizard's prompt check ran (wgp.py); from 9.x on
            # it does not look, and the check is one round trip less per shot.
            validate = api.endpoints[chain.validate]
            values = ["off", "", sent.prompt, ""] + [""] * (len(validate.parameters) - 4)
            session.call(chain.validate, values, timeout=call, what="validating the prompt", retries=again)
        self.job.check_stop()
        save = api.endpoints[chain.save_inputs]
        session.call(chain.save_inputs, save.bind(args), timeout=call, what="sending the settings", retries=again)
        add = api.endpoints[chain.add_tasks]
        add_args: dict[str, Any] = {"model_choice": model}
        if add.param("current_gallery_tab"):
            add_args["current_gallery_tab"] = 0
        self._add_sent = True
        try:  # never repeated: a second add would queue the shot twice
            added = session.call(chain.add_tasks, add.bind(add_args), timeout=call, what="adding the task")
        except Wan2GPConnectionError:
            self._stop_on_server(session)  # the task may have been queued without an answer
            raise
        self.state.task_queued = True
        self.job.enter(JobPhase.SENT)
        self.book.note(self.job, "sent")
        self._read_back(session)
        if added.messages:
            self.job.report(message=added.messages[-1])
        return added.messages

    def _read_back(self, session: GradioSession) -> None:
        """What WanGP recorded for the task it just queued (its queue holds the settings it will use, defaults
        and the model's own rules applied): kept for the result, so a shot can be reproduced from it alone.
        Not every release can show a one-task queue (6.x, 8.x): then the settings sent stand."""
        tasks = self.web.session_queue(session)
        mine = [t for t in tasks or [] if t.get("client_id") in (None, self.job.client_id)]
        if len(mine) == 1:
            params = mine[0]
            self._used = {key: params[key] for key in USED_SETTINGS if params.get(key) not in (None, "")}

    def _collect(self, session: GradioSession, form: Any, sent: GenerationSettings,
                 started: float, toasts: list[str]) -> GenerationResult:
        """Run the session's queue, then fetch and check the outputs from its gallery.

        A dropped connection on the way re-attaches to the job's session (bounded: :data:`MAX_REATTACH`).
        """
        while True:
            try:
                remote = self._follow(session, started)
                break
            except (ServerRestartedError, JobFailedError, JobCancelledError, _Detached):
                raise
            except (_StreamLost, Wan2GPConnectionError) as lost:
                if self.job.stopping:  # the job's own deadline ran out, or it was cancelled meanwhile
                    raise
                session = self._reattach(session, lost)
        self.job.enter(JobPhase.DOWNLOADING)
        self.job.report(status=JobStatus.DOWNLOADING, phase="Downloading",
                     fraction=1 - _DOWNLOAD_SHARE, queue_position=None, eta_seconds=None)
        if not remote:
            if self.state.resume:
                raise JobLostError(
                    f"lost: the server no longer has job {self.job.id} (it restarted, or the session expired)",
                    reason="the server no longer has it", server=self.web.server_address, job_id=self.job.id,
                    hint="submit the shot again")
            notice = "; ".join(toasts) if toasts else "no message"
            raise JobFailedError(
                f"WanGP queued nothing or produced no file for job {self.job.id} (server said: {notice})",
                server=self.web.server_address, job_id=self.job.id,
                hint="check the settings against the model (frame count, resolution, start image)",
            )
        return self._save_outputs(sent, form, remote, started)

    def _follow(self, session: GradioSession, started: float) -> list[Any]:
        """The job's outputs: from the gallery if the session has them, after the run it is in, or after
        running the session's queue."""
        chain = self.web.require_api().chain
        call, again = self.web.settings.timeouts.call, self.web.settings.retries
        try:
            remote = self._gallery(session) if self.state.resume else []
            if remote and self.state.processing_started:
                # It finished while nobody followed it: its process_tasks never cleared the status flag.
                self._release_status(session, finished=True)
            if not remote and self.state.resume and self.state.processing_started:
                # The earlier run goes on in WanGP's worker thread even though its stream is gone; starting
                # process_tasks again would run the task twice. Wait for that run's output.
                remote, queue_known = self._await_orphan(session, started)
                if not remote and queue_known:
                    raise JobLostError(
                        f"lost: job {self.job.id} was running {self._lost_when}, and the server no longer has it",
                        reason="the server no longer has it", server=self.web.server_address, job_id=self.job.id,
                    hint="submit the shot again")
                if remote:
                    self._release_status(session, finished=True)
            if not remote:
                self.job.check_stop()
                self.job.enter(JobPhase.QUEUED)
                self.job.report(status=JobStatus.QUEUED, phase="Queued on the server")
                self.book.wait_turn(self.job)
                self.job.check_stop()
                session.call(chain.activate, [], timeout=call, what="starting the queue", retries=again)
                self._process(session, started)
                self.job.enter(JobPhase.COLLECTING)
                remote = self._gallery(session)
            return remote
        except JobCancelledError:
            self._stop_on_server(session)
            raise

    def _release_status(self, session: GradioSession, *, finished: bool = False) -> None:
        """After collecting a run whose stream was lost: let WanGP reset the session's status flag (see
        :meth:`Wan2GPClient._release_session`). ``finished``: the session's gallery holds the job's output."""
        self.web.release_session(session, finished=finished, job_id=self.job.id)

    def _reattach(self, session: GradioSession, lost: BaseException) -> GradioSession:
        """After a dropped connection: a new session object on the job's own server session, once the server
        is reachable again and is still the same process. Every wait is bounded."""
        timeouts, retries = self.web.settings.timeouts, self.web.settings.retries
        self._reattaches += 1
        session.close()  # its stream is broken or frozen: end it, so that nothing reads it any more
        if self._session is session:
            self._session = None
        if self._reattaches > MAX_REATTACH:
            raise Wan2GPConnectionError(
                f"the connection to the server dropped {self._reattaches} times during job {self.job.id}; "
                f"last: {lost}", server=self.web.server_address, job_id=self.job.id,
                hint="the network or the server is unstable; the shot may still finish on the server")
        log.warning("job %s: %s; re-attaching to its session", self.job.id, lost)
        self.job.report(phase="Connection lost; reconnecting", message=str(lost))
        deadline = time.monotonic() + timeouts.reconnect
        failures = 0
        while True:
            try:
                self.job.check_stop()
            except JobCancelledError:
                self._stop_in_background()  # the server can't be told now: keep trying for a while
                raise
            try:
                instance = self.web.server_instance()
            except ServerRestartedError as exc:
                raise ServerRestartedError(
                    f"the WanGP server stopped or restarted during job {self.job.id}: the shot was not finished and "
                    "WanGP's queue went with it", server=self.web.server_address, job_id=self.job.id,
                    hint="start WanGP again if needed, and submit the shot again") from exc
            except Wan2GPConnectionError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stop_in_background()
                    raise Wan2GPTimeoutError(
                        f"the server did not answer for {timeouts.reconnect:.0f} s after the connection dropped "
                        f"during job {self.job.id} ({exc})", server=self.web.server_address, job_id=self.job.id,
                        hint="the server may be frozen or the network down; check WanGP's console") from exc
                failures += 1
                self.job.wait_stop(min(left, retries.pause(failures)))
                continue
            if self.state.app_id is not None and instance != self.state.app_id:
                raise ServerRestartedError(
                    f"the WanGP server restarted during job {self.job.id}: the shot was not finished and WanGP's "
                    "queue went with it", server=self.web.server_address, job_id=self.job.id,
                    hint="submit the shot again")
            fresh = self.web.fork(self.state.session_hash)
            try:  # its queue takes calls again: a server that is stopping still says who it is, then answers 503
                self.web.gallery_files(fresh)
            except (ServerBusyError, Wan2GPConnectionError) as exc:
                fresh.close()
                left = deadline - time.monotonic()
                if left <= 0 and not isinstance(exc, ServerRestartedError):  # a refusal: the next probe says it
                    self._stop_in_background()
                    raise Wan2GPTimeoutError(
                        f"the server's queue took no call for {timeouts.reconnect:.0f} s after the connection "
                        f"dropped during job {self.job.id} ({exc})", server=self.web.server_address,
                        job_id=self.job.id, hint="the server may be stopping or overloaded; check WanGP's console"
                    ) from exc
                failures += 1
                self.job.wait_stop(max(0.0, min(left, retries.pause(failures))))
                continue
            break
        self._session = fresh
        self.job.report(phase="Re-attached to the server", message="")  # the loss is over: don't keep saying it
        self.state.resume, self._lost_when = True, "when the connection dropped"
        self._process_job = None
        return fresh

    def _stop_in_background(self) -> None:
        """Keep trying, on a daemon thread, to stop this job's work on the server (abort, clear its queue) when
        the server could not be told at cancel time (frozen, unreachable): for ``timeouts.reconnect`` seconds,
        or three attempts of ``min(call, 2 * connect)``, whichever is longer, and only while the client is open
        (:meth:`Wan2GPClient.disconnect` waits for it).
        """
        if not self.state.session_hash or not (self._add_sent or self.state.task_queued):
            return
        timeouts, retries = self.web.settings.timeouts, self.web.settings.retries
        running = self.state.processing_started

        # Short attempts, repeated: an attempt can also be lost to the server's own clean-up of the job's old,
        # dropped stream (it ends the session's events when it finally sees that disconnect).
        attempt = min(timeouts.call, 2 * timeouts.connect)

        def stop() -> None:
            deadline = time.monotonic() + max(timeouts.reconnect, 3 * attempt)
            failures = 0
            while time.monotonic() < deadline:
                api, root = self.web.api, self.web.root
                if api is None or root is None:
                    log.warning("job %s: the client was closed before the job could be stopped on the server",
                                self.job.id)
                    return  # never reconnect a closed client from here
                chain = api.chain
                try:
                    session = root.fork(self.state.session_hash)
                except Exception as exc:  # noqa: BLE001 - the client is closing under us
                    log.debug("job %s: %s", self.job.id, exc)
                    return
                try:
                    if running:
                        _quiet(session.call, chain.abort, [], timeout=attempt, what="aborting the generation",
                               retries=retries)
                    session.call(chain.clear_queue, [], timeout=attempt, what="clearing the job's queue",
                                 retries=retries)
                    log.info("job %s: stopped on the server after all", self.job.id)
                    if running:
                        self._release_status(session)
                    return
                except Wan2GPError as exc:
                    log.debug("job %s: stopping it on the server: %s", self.job.id, exc)
                    failures += 1
                    time.sleep(retries.pause(failures))
                finally:
                    session.close()
            log.warning("job %s: could not reach the server to stop it within %.0f s; it may still run there",
                        self.job.id, max(timeouts.reconnect, 3 * attempt))

        def tracked() -> None:
            try:
                stop()
            finally:
                self.web.stopper_ended(thread)

        thread = threading.Thread(target=tracked, name=f"wan2gp-stop-{self.job.id}", daemon=True)
        self.web.stopper_started(thread)
        thread.start()

    def _await_orphan(self, session: GradioSession,
                      started: float | None = None) -> tuple[list[Any], bool]:
        """Wait for the interrupted run's output. Returns (files, whether the server's queue was readable).

        WanGP 12 shows the session's queue: wait while the task is in it, then read the gallery. WanGP 6 can't
        show a one-task queue: wait up to ``timeouts.resume_wait`` for the output, then let the caller run the
        session's queue again (a task still there runs; an empty queue means the job is lost).
        """
        timeouts = self.web.settings.timeouts
        self.job.report(status=JobStatus.RUNNING, phase="Generating (re-attached; no step progress)")
        deadline = time.monotonic() + timeouts.resume_wait
        hard = (started if started is not None else time.monotonic()) + timeouts.job
        polls, queue_known = 0, False
        while time.monotonic() < deadline:
            self.job.check_stop()
            if time.monotonic() > hard:
                self.job.stop(StopReason.DEADLINE)
                self._stop_on_server(session)
                raise Wan2GPTimeoutError(f"job {self.job.id} ran past its {timeouts.job:.0f} s limit; "
                                         "it was stopped on the server", job_id=self.job.id)
            remote = self._gallery(session)
            if remote:
                return remote, True
            if polls % 4 == 0:
                tasks = self.web.session_queue(session)
                if tasks is not None:
                    queue_known = True
                    # 9.x-11.x record no client_id in a task; the job's own session holds only its task
                    if not any(t.get("client_id") in (None, self.job.client_id) for t in tasks):
                        return self._gallery(session), True  # finished meanwhile, or gone
                    deadline = time.monotonic() + timeouts.stall  # still queued: it is running
            polls += 1
            self.job.wait_stop(self.web.poll_interval)
        return [], queue_known

    def _gallery(self, session: GradioSession) -> list[Any]:
        return self.web.gallery_files(session)

    def _process(self, session: GradioSession, started: float) -> None:
        timeouts = self.web.settings.timeouts
        chain = self.web.require_api().chain
        self.web.heal_leftovers()  # what dead programs left behind would hold up this job's status stream
        status_job = session.submit_observed(chain.status, [], self._on_status) if chain.status else None
        self._last_server_word = time.monotonic()
        process_job = session.submit_observed(chain.process, [], self._on_process)
        self._process_job = process_job
        self.book.turn_taken(self.job)  # in Gradio's queue now: the next shot of this client may follow
        try:
            while not process_job.done():
                if self.job.wait_stop(0.05):
                    self.job.check_detached()
                    self._stop_on_server(session)  # first, before waiting for any stream
                    raise JobCancelledError(f"job {self.job.id} was cancelled", job_id=self.job.id)
                now = time.monotonic()
                # Waiting is not dying: a shot queued behind others, or behind a model download, hears nothing
                # but gradio's heartbeats for as long as that takes. Silence on the stream (no heartbeat either),
                # or no status for `stall` seconds, only makes the client ask whether the server is still there;
                # a frozen server fails that probe and the job fails within `reconnect` seconds.
                if now - max(self._last_server_word, session.last_heard) > timeouts.heartbeat or \
                        now - self._last_server_word > timeouts.stall:
                    self._probe(session)
                if now - started > timeouts.job:
                    self.job.stop(StopReason.DEADLINE)
                    self._stop_on_server(session)
                    raise Wan2GPTimeoutError(f"job {self.job.id} ran past its {timeouts.job:.0f} s limit; "
                                             "it was stopped on the server", job_id=self.job.id)
            try:
                process_job.result(timeout=0)
            except FutureCancelledError as exc:
                self.job.check_detached()
                failure = session.stream_failure
                if failure:
                    self.job.stop(StopReason.FAILED)
                    self._stop_on_server(session)  # the work must not go on for nobody
                    raise Wan2GPServerError(f"the server's answer broke off: {failure}",
                                            server=self.web.server_address, job_id=self.job.id,
                                            hint="is this really WanGP? a proxy in between may alter its answers"
                                            ) from exc
                raise _StreamLost(f"the connection to the server dropped during job {self.job.id}") from exc
            except BaseException as exc:
                error = translate(exc, server=self.web.server_address, job_id=self.job.id, what="the generation")
                if isinstance(error, Wan2GPServerError):
                    message = error.message
                    raise JobFailedError(
                        f"WanGP failed to generate the shot: {message}", server=self.web.server_address,
                        job_id=self.job.id, hint=hint_for_server_message(message)) from exc
                raise error from exc
        finally:
            # The status stream ends by itself once process_tasks has finished (WanGP resets its status flag).
            # It is never cancelled: with gradio 5.29 a cancel can break the session's event stream (a KeyError
            # in the server's sse_stream) and with it the session's next calls.
            if status_job is not None and process_job.done() and not self.job.stopping:
                _wait_done(status_job, 2.0)

    def _probe(self, session: GradioSession) -> None:
        """After ``timeouts.heartbeat`` of silence: raise :class:`_StreamLost` unless the same server answers."""
        try:
            instance = self.web.server_instance()
        except Wan2GPConnectionError as exc:
            raise _StreamLost(f"the server went silent during job {self.job.id} and does not answer ({exc})") from exc
        if self.state.app_id is not None and instance != self.state.app_id:
            raise _StreamLost(f"the server restarted during job {self.job.id}")
        self._last_server_word = time.monotonic()  # alive: a long queue wait or a long step, keep following

    def _stop_on_server(self, session: GradioSession) -> None:
        """Make sure nothing of this job is left on the server: abort it if running, empty its queue.

        Bounded by ``min(timeouts.call, 2 * timeouts.connect)`` in all (a healthy server answers an abort in
        milliseconds; a frozen one should not hold a cancel for minutes); what could not be done is retried in the
        background for ``timeouts.reconnect`` seconds.
        """
        if self._stopped_on_server:
            return
        self._stopped_on_server = True
        chain = self.web.require_api().chain
        timeouts = self.web.settings.timeouts
        deadline = time.monotonic() + min(timeouts.call, 2 * timeouts.connect)
        again = self.web.settings.retries  # abort and clear are safe to repeat
        process_job = self._process_job

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        try:
            if process_job is not None and not self.state.processing_started and not process_job.done():
                cancel_quietly(process_job)  # still waiting in Gradio's queue: leave it
            if self.state.processing_started:  # running here, or in WanGP's worker after a dropped stream
                try:
                    session.call(chain.abort, [], timeout=left(), what="aborting the generation", retries=again)
                except Wan2GPServerError as exc:  # the server answered: the queue is cleared below anyway
                    log.info("job %s: abort: %s", self.job.id, exc)
            if self.state.task_queued or self._add_sent:
                session.call(chain.clear_queue, [], timeout=left(), what="clearing the job's queue",
                             retries=again)
            if process_job is not None:
                _wait_done(process_job, left())
            if self.state.resume and self.state.processing_started:
                self._release_status(session)  # the lost run's status poller, see there
        except Wan2GPServerError as exc:
            log.warning("job %s: stopping it on the server: %s", self.job.id, exc)
        except Wan2GPError as exc:
            log.warning("job %s: stopping it on the server: %s; trying again in the background", self.job.id, exc)
            self._stop_in_background()

    def _save_outputs(self, sent: GenerationSettings, form: Any,
                      remote: list[Any], started: float) -> GenerationResult:
        config = self.web.settings
        folder = self.job.output_dir
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
            dest = unique_path(folder, output_name(sent.prompt, sent.model, sent.seed, self.job.id, suffix))
            check = must_be_video if config.verify_outputs and dest.suffix.lower() in (".mp4", ".mov") else None
            path = self.web.download(item, dest, check=check)
            if config.verify_outputs and path.suffix.lower() in (".mp4", ".mov"):
                try:
                    info = check_video(path, frames=frames, fps=form.rule.fps, size=size)
                except JobFailedError as exc:
                    kept = path.with_name(path.stem + ".unverified" + path.suffix)
                    path.rename(kept)
                    raise JobFailedError(f"{exc.message}; the file is kept as {kept}",
                                         job_id=self.job.id, server=self.web.server_address) from exc
            saved.append(path)
        video = next((p for p in saved if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm")), saved[0])
        used = dict(self._used)
        if info is not None and info.width and info.height:
            used["resolution"] = f"{info.width}x{info.height}"  # e.g. WanGP followed a start image's aspect
        return GenerationResult(
            job_id=self.job.id,
            video_path=video,
            files=saved,
            settings=sent.model_copy(update=used),
            model=sent.model,
            frames=info.frames if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            fps=info.fps if info else None,
            server=self.web.server_address,
            wangp_version=self.web.require_api().wangp_version,
            elapsed_seconds=time.monotonic() - started,
            sent_settings=sent.to_wangp_json(),
        )


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
