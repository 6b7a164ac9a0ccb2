"""A WanGP MCP job snapshot, typed. The same shape in API v1 and v2 (``wangp-mcp.md``, section 6).

WanGP's snapshot has no status field: the state is derived (running = not done; completed = ``result.success``;
cancelled = ``result.cancelled``; failed = neither). Progress is the newest ``progress`` (or ``preview``) event
in the event window. That window is small and the server's own request log fills it (two ``stream`` lines per
poll, seen on 12.60), so the connection asks for a wide window and remembers the last progress it saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import JobCancelledError, JobFailedError

JobState = Literal["running", "completed", "cancelled", "failed"]


@dataclass(frozen=True)
class McpProgress:
    """Where a job is: WanGP's phase, step and 0-100 estimate, and its status line."""

    phase: str | None = None
    status: str | None = None
    percent: float | None = None
    step: int | None = None
    total_steps: int | None = None
    timestamp: float = 0.0

    @property
    def fraction(self) -> float | None:
        return None if self.percent is None else max(0.0, min(1.0, self.percent / 100.0))


@dataclass(frozen=True)
class McpJobError:
    """One error of a finished job: WanGP's message and stage (validation, generation, cancelled, runtime)."""

    message: str
    stage: str | None = None
    task_index: int | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class McpOutput:
    """A finished job's output, as the Gallery knows it. ``media_id`` is what a download ticket is asked for;
    ``server_path`` is the server's own path, kept as text only to match Gallery records: never a local path."""

    media_id: str | None
    filename: str = ""
    media_type: str | None = None
    server_path: str | None = None
    resolution: str | None = None
    frame_count: int | None = None
    fps: float | None = None
    duration_seconds: float | None = None

    @classmethod
    def parse(cls, record: Mapping[str, Any]) -> McpOutput:
        media_id = record.get("media_id") or record.get("gallery_id")
        path = record.get("path")
        filename = record.get("filename") or (str(path).replace("\\", "/").rsplit("/", 1)[-1] if path else "")
        return cls(
            media_id=str(media_id) if media_id else None,
            filename=str(filename),
            media_type=_text(record.get("media_type")),
            server_path=_text(path),
            resolution=_text(record.get("resolution")),
            frame_count=_int(record.get("frame_count")),
            fps=_float(record.get("fps")),
            duration_seconds=_float(record.get("duration_seconds")),
        )


@dataclass(frozen=True)
class JobSnapshot:
    """What the server says about one job, at one moment."""

    job_id: str
    state: JobState
    done: bool
    cancel_requested: bool = False
    progress: McpProgress | None = None
    errors: tuple[McpJobError, ...] = ()
    outputs: tuple[McpOutput, ...] = ()
    generated_files: tuple[str, ...] = ()  # server paths: text, never opened
    waiting_timed_out: bool = False  # v2: a blocking wait ran out; the job goes on
    updated_at: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, previous: McpProgress | None = None) -> JobSnapshot:
        """Read a snapshot tolerantly. ``previous``: the last progress seen, kept when no event is newer."""
        events = [e for e in data.get("events") or [] if isinstance(e, Mapping)]
        result = data.get("result") if isinstance(data.get("result"), Mapping) else None
        done = bool(data.get("done")) or result is not None
        progress = previous
        for event in events:
            if event.get("kind") in ("progress", "status"):  # preview events repeat progress, rounded
                candidate = _progress(event, progress)
                if candidate is not None and (progress is None or candidate.timestamp >= progress.timestamp):
                    progress = candidate
        errors: list[McpJobError] = []
        outputs: list[McpOutput] = []
        files: list[str] = []
        state: JobState = "running"
        if done:
            result = result or {}
            errors = [_error(e) for e in result.get("errors") or [] if isinstance(e, Mapping)]
            if not errors:  # older servers: the errors only as events
                errors = [_error(e["data"]) for e in events if e.get("kind") == "error" and
                          isinstance(e.get("data"), Mapping)]
            outputs = [McpOutput.parse(g) for g in result.get("gallery_items") or [] if isinstance(g, Mapping)]
            files = [str(f) for f in result.get("generated_files") or [] if isinstance(f, str)]
            if result.get("success"):
                state = "completed"
            elif result.get("cancelled") or (errors and all(e.cancelled or e.stage == "cancelled" for e in errors)):
                state = "cancelled"
            else:
                state = "failed"
        return cls(
            job_id=str(data.get("job_id") or ""),
            state=state,
            done=done,
            cancel_requested=bool(data.get("cancel_requested")),
            progress=progress,
            errors=tuple(errors),
            outputs=tuple(outputs),
            generated_files=tuple(files),
            waiting_timed_out=bool(data.get("waiting_timed_out")) or data.get("status") == "timeout",
            updated_at=_float(data.get("updated_at")),
            raw=data,
        )

    def raise_for_state(self, *, server: str | None = None) -> None:
        """:class:`JobFailedError` (WanGP's stage and message) or :class:`JobCancelledError`; nothing if
        the job completed or still runs."""
        if self.state == "cancelled":
            raise JobCancelledError(f"job {self.job_id} was cancelled", server=server, job_id=self.job_id)
        if self.state == "failed":
            first = self.errors[0] if self.errors else McpJobError("the job failed without an error message")
            error = JobFailedError(f"WanGP failed the job at its {first.stage or 'unknown'} stage: {first.message}",
                                   server=server, job_id=self.job_id, hint=_hint(first.message))
            error.stage = first.stage  # type: ignore[attr-defined]
            error.server_message = first.message  # type: ignore[attr-defined]
            raise error


def _hint(message: str) -> str | None:
    from .._errors import hint_for_server_message

    return hint_for_server_message(message)


def _progress(event: Mapping[str, Any], previous: McpProgress | None) -> McpProgress | None:
    data = event.get("data")
    timestamp = _float(event.get("timestamp")) or 0.0
    if event.get("kind") == "status":  # a text only ('Loading model ...'): keep the numbers seen before
        text = data if isinstance(data, str) else (data.get("status") if isinstance(data, Mapping) else None)
        if not text:
            return None
        base = previous or McpProgress()
        return McpProgress(base.phase, str(text), base.percent, base.step, base.total_steps, timestamp)
    if not isinstance(data, Mapping):
        return None
    return McpProgress(
        phase=_text(data.get("phase")),
        status=_text(data.get("status")),
        percent=_float(data.get("progress")),
        step=_int(data.get("current_step")),
        total_steps=_int(data.get("total_steps")) or (previous.total_steps if previous else None),
        timestamp=timestamp,
    )


def _error(data: Mapping[str, Any]) -> McpJobError:
    return McpJobError(
        message=str(data.get("message") or "unknown error"),
        stage=_text(data.get("stage")),
        task_index=_int(data.get("task_index")),
        cancelled=bool(data.get("cancelled")),
    )


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
