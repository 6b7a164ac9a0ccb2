"""The job handle: one shot on its way through WanGP, off the caller's thread.

Each job runs in its own WanGP session (a fork of the client's connection), so its queue and gallery hold
only its own task and its own outputs. The chain, as WanGP's Generate button runs it (reference §4):
model switch -> fill_inputs -> validate_wizard_prompt -> save_inputs -> process_prompt_and_add_tasks ->
activate_status -> process_tasks (with refresh_status_async streaming status and progress) -> gallery ->
download. ``cancel()`` stops the work on the server: WanGP's abort and clear-queue, from the job's session.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelledError
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .enums import JobStatus
from .errors import (
    JobCancelledError,
    JobFailedError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    hint_for_server_message,
    translate,
)
from .files import check_video, gallery_files, output_name, unique_path
from .schemas import GenerationResult, GenerationSettings, JobProgress, Resolution

if TYPE_CHECKING:
    from .client import Wan2GPClient
    from .session import GradioSession

log = logging.getLogger(__name__)

ProgressCallback = Callable[["Wan2GPJob", JobProgress], None]
DoneCallback = Callable[["Wan2GPJob"], None]

_STEP_IN_TEXT = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.]|\s*s\b)")
# How the overall fraction is shared between the job's phases.
_PREPARE_SHARE, _DOWNLOAD_SHARE = 0.05, 0.05


class Wan2GPJob:
    """A generation submitted with :meth:`Wan2GPClient.submit`.

    Callbacks run on a background thread; GUI code (Blender) must hand them over to its own main thread.

    Example::

        job = client.submit(GenerationSettings(prompt="a red fox in snow", frames=33))
        job.add_progress_callback(lambda job, p: print(p.status, p.step, p.total))
        result = job.result(timeout=600)
    """

    def __init__(self, client: Wan2GPClient, settings: GenerationSettings) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.settings = settings
        self.client_id = settings.client_id or f"bmd-{self.id}"
        self._client = client
        self._lock = threading.RLock()
        self._progress = JobProgress()
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._detach = threading.Event()
        self._result: GenerationResult | None = None
        self._error: Wan2GPError | None = None
        self._progress_callbacks: list[ProgressCallback] = []
        self._done_callbacks: list[DoneCallback] = []
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
        self.submitted_at = time.time()

    # --- public ---------------------------------------------------------------------------------------

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
            raise Wan2GPTimeoutError(f"job {self.id} is still {self.status().value} after {timeout} s",
                                     job_id=self.id, hint="wait longer, or cancel() it")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def exception(self) -> Wan2GPError | None:
        return self._error if self.done() else None

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

    def add_progress_callback(self, callback: ProgressCallback) -> None:
        self._progress_callbacks.append(callback)

    def add_done_callback(self, callback: DoneCallback) -> None:
        with self._lock:
            if not self.done():
                self._done_callbacks.append(callback)
                return
        callback(self)

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
            data["updated_at"] = __import__("datetime").datetime.now()
            self._progress = JobProgress(**data)
            snapshot = self._progress
        for callback in list(self._progress_callbacks):
            try:
                callback(self, snapshot)
            except Exception:
                log.exception("progress callback failed for job %s", self.id)

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

    def _finish(self, *, result: GenerationResult | None = None, error: Wan2GPError | None = None,
                keep_status: bool = False) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._result, self._error = result, error
            if keep_status:
                pass
            elif result is not None:
                self._progress = self._progress.model_copy(update={"status": JobStatus.COMPLETED, "fraction": 1.0})
            elif isinstance(error, JobCancelledError):
                self._progress = self._progress.model_copy(update={"status": JobStatus.CANCELLED})
            else:
                self._progress = self._progress.model_copy(
                    update={"status": JobStatus.FAILED, "message": str(error) if error else ""})
            snapshot = self._progress
            self._done.set()
            callbacks = list(self._done_callbacks)
            self._done_callbacks.clear()
        for callback in list(self._progress_callbacks):
            try:
                callback(self, snapshot)
            except Exception:
                log.exception("progress callback failed for job %s", self.id)
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback failed for job %s", self.id)

    def _check_cancel(self) -> None:
        if self._detach.is_set():
            raise _Detached()
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
            self._finish(error=exc)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the caller, translated
            log.exception("job %s failed unexpectedly", self.id)
            self._finish(error=translate(exc, server=client.server_address, job_id=self.id, what="the job"))
        finally:
            session, self._session = self._session, None
            if session is not None:
                session.close()

    def _run_chain(self, client: Wan2GPClient, started: float) -> GenerationResult:
        api = client._require_api()
        model = str(self.settings.model)
        self._update(status=JobStatus.UPLOADING, phase="Preparing the form")
        form = client._model_form(model)  # validates the model against the server; cached
        if self._resume:
            assert self._sent is not None
            session = client._fork_session(self._session_hash)
            self._session = session
            return self._collect(session, client, form, self._sent, started, toasts=[])

        from .form import build_save_args

        args, sent = build_save_args(self.settings, form, api, client_id=self.client_id)
        self._sent = sent
        self._check_cancel()
        session = client._fork_session()
        self._session, self._session_hash = session, session.session_hash
        toasts = self._send(session, client, args, sent)
        return self._collect(session, client, form, sent, started, toasts)

    def _send(self, session: GradioSession, client: Wan2GPClient, args: dict[str, Any],
              sent: GenerationSettings) -> list[str]:
        """Set the job's session to the model and settings, and add the task to its queue."""
        api = client._require_api()
        chain, call, model = api.chain, client.settings.timeouts.call, str(sent.model)
        for endpoint in chain.model_switch:
            session.call(endpoint, [model], timeout=call, what="switching model")
        session.call(chain.fill, [], timeout=call, what="reading the model's form")
        if chain.validate:
            validate = api.endpoints[chain.validate]
            values = ["off", "", sent.prompt, ""] + [""] * (len(validate.parameters) - 4)
            session.call(chain.validate, values, timeout=call, what="validating the prompt")
        self._check_cancel()
        save = api.endpoints[chain.save_inputs]
        session.call(chain.save_inputs, save.bind(args), timeout=call, what="sending the settings")
        add = api.endpoints[chain.add_tasks]
        add_args = {"model_choice": model}
        if add.param("current_gallery_tab"):
            add_args["current_gallery_tab"] = 0
        added = session.call(chain.add_tasks, add.bind(add_args), timeout=call, what="adding the task")
        self._task_queued = True
        if added.messages:
            self._update(message=added.messages[-1])
        return added.messages

    def _collect(self, session: GradioSession, client: Wan2GPClient, form: Any, sent: GenerationSettings,
                 started: float, toasts: list[str]) -> GenerationResult:
        """Run the session's queue, then fetch and check the outputs from its gallery."""
        chain = client._require_api().chain
        call = client.settings.timeouts.call
        remote = self._gallery(session, client) if self._resume else []
        if not remote and self._resume and self._processing_started:
            # The previous program's generation goes on in WanGP's worker thread even though its stream is
            # gone; starting process_tasks again would run the task twice. Wait for that run's output.
            remote, queue_known = self._await_orphan(session, client)
            if not remote and queue_known:
                raise JobFailedError(
                    f"lost: job {self.id} was running when its program stopped, and the server no longer has it",
                    server=client.server_address, job_id=self.id, hint="submit the shot again")
        if not remote:
            try:
                self._check_cancel()
                self._update(status=JobStatus.QUEUED, phase="Queued on the server")
                session.call(chain.activate, [], timeout=call, what="starting the queue")
                self._process(session, client, started)
            except JobCancelledError:
                self._stop_on_server(session, client)
                raise
            remote = self._gallery(session, client)
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

    def _await_orphan(self, session: GradioSession, client: Wan2GPClient) -> tuple[list[Any], bool]:
        """Wait for the interrupted run's output. Returns (files, whether the server's queue was readable).

        WanGP 12 shows the session's queue: wait while the task is in it, then read the gallery. WanGP 6 can't
        show a one-task queue: wait up to ``timeouts.resume_wait`` for the output, then let the caller run the
        session's queue again (a task still there runs; an empty queue means the job is lost).
        """
        timeouts = client.settings.timeouts
        self._update(status=JobStatus.RUNNING, phase="Generating (re-attached; no step progress)")
        deadline = time.monotonic() + timeouts.resume_wait
        polls, queue_known = 0, False
        while time.monotonic() < deadline:
            self._check_cancel()
            remote = self._gallery(session, client)
            if remote:
                return remote, True
            if polls % 4 == 0:
                tasks = client._session_queue(session)
                if tasks is not None:
                    queue_known = True
                    if not any(t.get("client_id") == self.client_id for t in tasks):
                        return self._gallery(session, client), True  # finished meanwhile, or gone
                    deadline = time.monotonic() + timeouts.stall  # still queued: it is running
            polls += 1
            self._cancel.wait(client.poll_interval)
        return [], queue_known

    def _gallery(self, session: GradioSession, client: Wan2GPClient) -> list[Any]:
        chain = client._require_api().chain
        gallery = session.call(chain.gallery, [], timeout=client.settings.timeouts.call,
                               what="reading the gallery").value
        # gradio_client returns a tuple for several outputs, the value itself for one
        value = gallery[chain.gallery_index] if isinstance(gallery, tuple) else gallery
        return gallery_files(value, session.src_prefixed)

    def _process(self, session: GradioSession, client: Wan2GPClient, started: float) -> None:
        timeouts = client.settings.timeouts
        chain = client._require_api().chain
        status_job = session.submit_observed(chain.status, [], self._on_status) if chain.status else None
        self._last_server_word = time.monotonic()
        process_job = session.submit_observed(chain.process, [], self._on_process)
        self._process_job = process_job
        try:
            while not process_job.done():
                if self._cancel.wait(0.05):
                    self._check_cancel_detached()
                    self._stop_on_server(session, client)  # first, before waiting for any stream
                    raise JobCancelledError(f"job {self.id} was cancelled", job_id=self.id)
                now = time.monotonic()
                if now - started > timeouts.job:
                    self._cancel.set()
                    self._stop_on_server(session, client)
                    raise Wan2GPTimeoutError(f"job {self.id} ran past its {timeouts.job:.0f} s limit; "
                                             "it was stopped on the server", job_id=self.id)
                if now - self._last_server_word > timeouts.stall:
                    self._cancel.set()
                    self._stop_on_server(session, client)
                    raise Wan2GPTimeoutError(
                        f"no word from the server for {timeouts.stall:.0f} s during job {self.id}",
                        job_id=self.id, hint="the server may be frozen; check its console")
            try:
                process_job.result(timeout=0)
            except FutureCancelledError as exc:
                raise Wan2GPConnectionError(
                    f"lost the connection to the server during job {self.id}",
                    server=client.server_address, job_id=self.id,
                    hint="the server may have stopped or restarted; submit the shot again") from exc
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
            if status_job is not None and not self._detach.is_set():
                _wait_done(status_job, 2.0)

    def _stop_on_server(self, session: GradioSession, client: Wan2GPClient) -> None:
        """Make sure nothing of this job is left on the server: abort it if running, empty its queue."""
        if self._stopped_on_server:
            return
        self._stopped_on_server = True
        chain = client._require_api().chain
        call = client.settings.timeouts.call
        process_job = self._process_job
        try:
            if process_job is not None and not self._processing_started and not process_job.done():
                process_job.cancel()  # still waiting in Gradio's queue: leave it
            if self._processing_started and process_job is not None and not process_job.done():
                session.call(chain.abort, [], timeout=call, what="aborting the generation")
            if self._task_queued:
                session.call(chain.clear_queue, [], timeout=call, what="clearing the job's queue")
            if process_job is not None:
                _wait_done(process_job, call)
        except Wan2GPError as exc:
            log.warning("job %s: stopping it on the server: %s", self.id, exc)

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
            path = client._download(item, dest)
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
        return GenerationResult(
            job_id=self.id,
            video_path=video,
            files=saved,
            settings=sent,
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


def _wait_done(job: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.01)


class _Detached(Exception):  # noqa: N818 - internal signal, never leaves the job
    """Raised inside the job's thread when detach() was called."""
