"""WanGP's MCP server as a transport of ``Wan2GPClient``: one server (:class:`McpTransport`), one shot
(:class:`McpRun`), on :class:`~._connection.McpConnection`.

A shot: its input files go up through upload tickets, its settings (WanGP's own names) are checked against the
model's schema and sent with ``wangp_generate``, its job is polled for progress, and its outputs come down through
download tickets, checked and renamed into the output folder. WanGP keeps jobs in memory only: the job id is in
the job's record, and a job the server no longer knows after a restart is lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..._urls import tls_context
from .._config import ClientSettings
from .._enums import JobStatus, ModelCategory, catalog, categories_of
from .._errors import (
    JobCancelledError,
    JobLostError,
    ServerRestartedError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
)
from .._files import check_video, must_be_video, output_name, unique_path
from .._form import ModelForm, check_control, shot_shape, video_prompt_type_for
from .._jobs import JobPhase, StopReason
from .._schemas import MEDIA_FIELDS, GenerationResult, GenerationSettings, ModelInfo, ServerStatus
from ._connection import POLL_INTERVAL, McpConnection, frame_rule
from ._contract import ModelSchema
from ._snapshot import JobSnapshot

if TYPE_CHECKING:
    from .._book import JobBook
    from .._jobs import JobRecord, Wan2GPJob

log = logging.getLogger(__name__)

_rng = random.Random()  # seeds; never the host program's global `random` state

# A cancel is sent, then the job is watched until the server says it stopped (WanGP stops within a step).
CANCEL_WAIT = 30.0


class McpTransport:
    """One WanGP MCP server, as the client's jobs use it. Thread-safe."""

    name = "mcp"

    def __init__(self, settings: ClientSettings, server_address: str, book: JobBook, secrets: list[str]) -> None:
        self.settings = settings
        self.server_address = server_address
        self.book = book
        self.secrets = secrets
        self.conn: McpConnection | None = None
        self._lock = threading.Lock()
        self._last_model: str | None = None
        self._poll_interval = POLL_INTERVAL

    @property
    def poll_interval(self) -> float:
        """Seconds between two reads of a job's snapshot (the server sends no notifications)."""
        return self._poll_interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        self._poll_interval = seconds
        if self.conn is not None:
            self.conn.poll_interval = seconds

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def open(self) -> None:
        with self._lock:
            if self.conn is not None:
                return
            token = self.settings.token.get_secret_value() if self.settings.token else None
            self.conn = McpConnection.open(self.settings.url, token=token, timeouts=self.settings.timeouts,
                                           retries=self.settings.retries,
                                           max_download_bytes=self.settings.max_download_bytes,
                                           poll_interval=self._poll_interval)

    def require(self) -> McpConnection:
        conn = self.conn
        if conn is None:
            raise Wan2GPConnectionError(f"the client of {self.server_address} is closed",
                                        server=self.server_address, hint="connect() it again")
        return conn

    def close(self) -> None:
        with self._lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def let_go(self) -> None:
        pass  # nothing of ours streams: each poll is one short request

    def wait_for_stoppers(self, seconds: float) -> None:
        pass  # a cancel is sent by the job's own thread

    def identity(self) -> tuple[str, str | None, str | None] | None:
        conn = self.conn
        if conn is None:
            return None
        # initialize's serverInfo.version is the mcp package's (12.60 said 1.10.1), not WanGP's: no tool says
        # WanGP's version, so it stays unknown rather than wrong.
        return (f"mcp:{conn.url}", None, None)

    def ping(self) -> None:
        response = httpx.get(self.settings.url, timeout=self.settings.timeouts.connect, follow_redirects=False,
                             verify=tls_context())
        if response.status_code >= 500:
            response.raise_for_status()

    def fill_status(self, status: ServerStatus) -> None:
        conn = self.require()
        status.wangp_version = None  # not said over MCP (see identity)
        status.endpoint_count = len(conn.tools)
        status.transport = f"mcp {conn.contract.value}" if conn.contract else "mcp"

    def last_form_model(self) -> str | None:
        return self._last_model

    # --- models ---------------------------------------------------------------------------------------------

    def check_settings(self, settings: GenerationSettings) -> None:
        conn = self.require()
        model = str(settings.model)
        self._last_model = model
        schema = conn.validate(model, wangp_settings(settings, media={}))
        schema_form(schema, settings)

    def model_info(self, model: str) -> ModelInfo:
        schema = self.require().model_schema(model)
        self._last_model = model
        record = schema.record
        entry = catalog().get(model, {})
        return ModelInfo(
            model_type=model, name=record.name or entry.get("name") or model, family=record.family or
            entry.get("family", ""), categories=sorted(c.value for c in categories_of(model, entry)),
            inputs=list(record.inputs) or entry.get("inputs", []), fps=schema.fps,
            frames_minimum=schema.frames_minimum, frames_step=schema.frames_step,
            frames_maximum=schema.frames_maximum, resolutions=list(schema.resolutions),
            control_modes={role: list(pairs) for role, pairs in schema.control_choices.items()}, on_server=True,
        )

    def list_models(self, *, family: str | None = None,
                    category: ModelCategory | str | None = None) -> list[ModelInfo]:
        entries = catalog()
        wanted = ModelCategory(category) if category else None
        result = []
        for record in self.require().models():
            entry = entries.get(record.model_type, {})
            cats = categories_of(record.model_type, entry)
            fam = record.family or entry.get("family", "")
            if (family and fam != family) or (wanted and wanted not in cats):
                continue
            result.append(ModelInfo(model_type=record.model_type, name=record.name or entry.get("name") or
                                    record.model_type, family=fam, categories=sorted(c.value for c in cats),
                                    inputs=list(record.inputs) or entry.get("inputs", []), on_server=True))
        return result

    # --- jobs -----------------------------------------------------------------------------------------------

    def new_run(self, job: Wan2GPJob) -> McpRun:
        return McpRun(job, self)

    def stop_job(self, record: JobRecord) -> bool:
        if not record.remote_job_id:
            return False
        try:
            self.require().cancel(record.remote_job_id)
        except ServerRestartedError:
            return False
        if self.book.register is not None:
            self.book.register.set_state(record.job_id, "cancelled", message="stopped on the server")
        return True


def schema_form(schema: ModelSchema, settings: GenerationSettings) -> ModelForm:
    """The model as the web UI's checks of the control inputs see it (its defaults, frame rule, resolutions and
    control modes, here from the server's model schema), once ``settings`` passed them."""
    model = schema.record.model_type
    form = ModelForm(model, dict(schema.defaults), frame_rule(schema), list(schema.resolutions),
                     control_choices={role: list(pairs) for role, pairs in schema.control_choices.items()})
    given = sorted(n for n in ("video_guide", "video_mask", "control_mode", "mask_mode", "refs_mode")
                   if getattr(settings, n) is not None) + (["image_refs"] if settings.image_refs else [])
    if given and not form.takes_control_video and "control" in schema.record.media_inputs.get("video", ()):
        raise Wan2GPValidationError(
            f"{model} takes a control video, but this server's model schema declares none of its control modes, "
            f"so none can be chosen ({', '.join(given)} given); use the server's web UI for this shot",
            field=given[0])
    check_control(settings, form)
    return form


def wangp_settings(settings: GenerationSettings, *, media: dict[str, Any]) -> dict[str, Any]:
    """The shot's settings by WanGP's own names, as ``wangp_generate`` takes them; media fields are given as
    the server's media ids (``media``), never as paths of this machine. The control modes are not WanGP's
    settings: they are sent as the ``video_prompt_type`` they made (``McpRun._as_sent``)."""
    data = settings.to_wangp_json()
    for key in ("mode", "model_type", "duration_seconds_hint", "client_id", "movie_director"):
        data.pop(key, None)
    for name in MEDIA_FIELDS:
        data.pop(name, None)
    data.update(media)
    if "image_prompt_type" not in data and (settings.image_start or settings.image_end):
        # WanGP ignores a start (end) image unless the prompt type names it, as its Generate button sets it
        data["image_prompt_type"] = ("S" if settings.image_start else "") + ("E" if settings.image_end else "")
    return data


class McpRun:
    """The run of one job over MCP (a new one, or a resumed one: ``job.state.resume``)."""

    def __init__(self, job: Wan2GPJob, transport: McpTransport) -> None:
        self.job, self.t = job, transport
        self.state = job.state

    def run(self, started: float) -> GenerationResult:
        job, conn = self.job, self.t.require()
        settings = self.t.settings
        if self.state.resume:
            job_id = self.state.remote_job_id
            assert job_id is not None
            sent = self.state.sent or job.settings
        else:
            sent, job_id = self._send(conn)
        deadline = started + settings.timeouts.job
        try:
            final = self._follow(conn, job_id, deadline)
        except ServerRestartedError as exc:
            if self.state.resume:
                raise JobLostError(f"lost: the WanGP server no longer has job {job.id} (it restarted)",
                                   reason="the server restarted", server=self.t.server_address, job_id=job.id,
                                   hint="submit the shot again") from exc
            # Said with our job's id (the connection knows only the server's).
            raise ServerRestartedError(f"the WanGP server stopped or restarted during job {job.id}: {exc.message}",
                                       server=self.t.server_address, job_id=job.id, hint=exc.hint) from exc
        return self._save(conn, final, sent, started)

    def _send(self, conn: McpConnection) -> tuple[GenerationSettings, str]:
        job = self.job
        model = str(job.settings.model)
        job.enter(JobPhase.PREPARING)
        job.report(status=JobStatus.UPLOADING, phase="Sending the inputs")
        sent = self._as_sent(conn, job.settings)
        media: dict[str, Any] = {}
        for name in MEDIA_FIELDS:
            value = getattr(job.settings, name, None)
            if not value:
                continue
            paths = value if isinstance(value, list) else [value]
            ids = []
            for path in paths:
                job.check_stop()
                ids.append(conn.upload(Path(path)))
            media[name] = ids if isinstance(value, list) else ids[0]
        source = wangp_settings(sent, media=media)
        job.check_stop()
        job.report(status=JobStatus.QUEUED, phase="Waiting for the server")
        job.book.wait_turn(job)
        try:
            job_id = conn.submit(model, source, stop=job.stop_signal)
        finally:
            job.book.turn_taken(job)
        state = self.state
        state.remote_job_id, state.task_queued = job_id, True
        identity = self.t.identity()
        state.app_id = identity[0] if identity else None
        state.sent = sent
        job.enter(JobPhase.SENT)
        job.book.note(job, "sent")
        return sent, job_id

    @staticmethod
    def _as_sent(conn: McpConnection, settings: GenerationSettings) -> GenerationSettings:
        """The settings as they are sent, so that the shot can be made again from its record: a duration in
        seconds becomes the model's frame count (its rule from the server), a random seed (-1) a chosen one, a
        length not given the model's default."""
        schema = conn.model_schema(str(settings.model))
        form = schema_form(schema, settings)
        updates: dict[str, Any] = {}
        if settings.seed == -1:
            updates["seed"] = _rng.randint(0, 2**31 - 1)
        if settings.video_length is None:
            updates.update(shot_shape(settings, form), seconds=None)
        elif settings.video_guide is not None and settings.resolution is None:
            updates["resolution"] = shot_shape(settings, form)["resolution"]
        video_prompt_type = video_prompt_type_for(settings, form)
        if video_prompt_type is not None:
            updates["extra"] = {**settings.extra, "video_prompt_type": video_prompt_type}
        return settings.model_copy(update=updates)

    def _follow(self, conn: McpConnection, job_id: str, deadline: float) -> JobSnapshot:
        job = self.job
        job.enter(JobPhase.QUEUED)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                job.stop(StopReason.DEADLINE)
                self._cancel(conn, job_id)
                raise Wan2GPTimeoutError(f"job {job.id} ran past its {self.t.settings.timeouts.job:.0f} s limit; "
                                         "it was stopped on the server", job_id=job.id)
            try:
                final = conn.wait(job_id, timeout=left, on_progress=self._on_progress, stop=job.stop_signal)
            except JobCancelledError:
                if job.stopping:
                    job.check_stop()
                raise
            if not job.stopping:
                return final
            if job.stop_reason is StopReason.DETACH:
                job.check_detached()
            self._cancel(conn, job_id)
            job.check_stop()

    def _cancel(self, conn: McpConnection, job_id: str) -> None:
        """WanGP's cancel, then wait (bounded) until the server says the job stopped: nothing left on the GPU."""
        try:
            conn.cancel(job_id)
            conn.wait(job_id, timeout=CANCEL_WAIT)
        except (JobCancelledError, ServerRestartedError):
            pass
        except Wan2GPError as exc:
            log.warning("job %s: stopping it on the server: %s", self.job.id, exc)

    def _on_progress(self, snapshot: JobSnapshot) -> None:
        job, progress = self.job, snapshot.progress
        if progress is None or snapshot.done:
            return
        changes: dict[str, Any] = {}
        if progress.phase or progress.status:
            changes["phase"] = progress.status or progress.phase
        if progress.step is not None and progress.total_steps:
            changes.update(step=progress.step, total=progress.total_steps)
        if progress.fraction is not None:
            changes["fraction"] = 0.05 + 0.9 * progress.fraction
        if progress.step is not None or (progress.percent or 0) > 0:
            if not self.state.processing_started:
                self.state.processing_started = True
                job.enter(JobPhase.RUNNING)
                job.book.note(job, "running")
            changes.update(status=JobStatus.RUNNING, queue_position=None)
        if changes:
            job.report(**changes)

    def _save(self, conn: McpConnection, final: JobSnapshot, sent: GenerationSettings,
              started: float) -> GenerationResult:
        job, settings = self.job, self.t.settings
        job.enter(JobPhase.COLLECTING)
        outputs = conn.outputs(final)
        if not outputs:
            raise JobLostError(f"lost: job {job.id} finished on the server but left no output",
                               reason="no output", server=self.t.server_address, job_id=job.id,
                               hint="check WanGP's console, and submit the shot again")
        job.enter(JobPhase.DOWNLOADING)
        job.report(status=JobStatus.DOWNLOADING, phase="Downloading", fraction=0.95)
        folder = job.output_dir
        saved: list[Path] = []
        info = None
        for output in outputs:
            suffix = Path(output.filename).suffix or ".mp4"
            dest = unique_path(folder, output_name(sent.prompt, sent.model, sent.seed, job.id, suffix))
            is_video = dest.suffix.lower() in (".mp4", ".mov")
            path = conn.download(output, dest, check=must_be_video if settings.verify_outputs and is_video else None)
            if settings.verify_outputs and is_video and info is None:
                info = check_video(path, frames=sent.video_length, fps=None, size=None)
            saved.append(path)
        video = next((p for p in saved if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm")), saved[0])
        used = {"resolution": f"{info.width}x{info.height}"} if info is not None and info.width else {}
        return GenerationResult(
            job_id=job.id, video_path=video, files=saved, settings=sent.model_copy(update=used), model=sent.model,
            frames=info.frames if info else None, width=info.width if info else None,
            height=info.height if info else None, fps=info.fps if info else None, server=self.t.server_address,
            wangp_version=None,  # not said over MCP (see McpTransport.identity)
            elapsed_seconds=time.monotonic() - started,
            sent_settings=sent.to_wangp_json(),  # as on the web UI: its media by local path, for Regenerate
        )

    def let_go(self) -> None:
        pass

    def release(self) -> None:
        pass
