"""Batches of shots: many settings at once over a :class:`ServerPool`, surviving the program through a journal.

A batch keeps a bounded number of shots in the pool (``max_in_flight``) and feeds it the next as each ends. Its
state is kept in a small *journal* on disk (JSON lines: a header with every shot's settings, then one line per
change of a shot; the last line of a shot wins; each line is flushed to disk before anything else happens).
:func:`resume_batch` reads the journal after a crash, a reboot or a Ctrl-C:

* a shot recorded as done (with its video still on disk) is never generated again;
* a shot whose task had reached a server re-attaches to it there (:meth:`ServerPool.resume`): a finished
  output is fetched, a running one followed; nothing runs twice;
* every other shot (pending, failed, cancelled, or lost with its server) is submitted again.

Example::

    from blender_movie_director.backend.pool import ServerPool
    from blender_movie_director.backend.batch import resume_batch, submit_batch

    with ServerPool(["http://gpu1:7860", "http://gpu2:7860"], output_dir="shots") as pool:
        batch = submit_batch(pool, [{"prompt": "a fox", "seed": 1}, {"prompt": "a hare", "seed": 2}],
                             journal="film.journal.jsonl")
        batch.add_progress_callback(lambda b, p: print(f"{p.finished_count}/{p.total}"))
        batch.wait()
        print([shot.result.video_path for shot in batch.shots if shot.result])
    # after a crash: resume_batch(pool, "film.journal.jsonl").wait()
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from .wan2gp._errors import JobCancelledError, Wan2GPConnectionError, Wan2GPError, Wan2GPValidationError
from .wan2gp._register import queued_by_client_id
from .wan2gp._schemas import MEDIA_FIELDS, GenerationResult, GenerationSettings

if TYPE_CHECKING:
    from .pool import PoolJob, ServerPool

__all__ = [
    "Batch",
    "BatchProgress",
    "Journal",
    "Shot",
    "ShotState",
    "add_batch_arguments",
    "load_shots",
    "resume_batch",
    "run_batch_cli",
    "submit_batch",
]

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
# Shots kept in the pool per running slot: one running and one ready to start the moment it ends.
IN_FLIGHT_PER_SLOT = 2


class ShotState(enum.StrEnum):
    PENDING = "pending"  # not sent to the pool yet
    RUNNING = "running"  # in the pool: queued there or generating
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (ShotState.DONE, ShotState.FAILED, ShotState.CANCELLED)


@dataclass
class Shot:
    """One shot of a batch: its settings, its state, and its result or error once finished."""

    index: int
    settings: GenerationSettings
    state: ShotState = ShotState.PENDING
    result: GenerationResult | None = None
    error: str | None = None
    server: str | None = None
    cached: bool = False
    job: PoolJob | None = field(default=None, repr=False)
    _record_key: tuple[Any, ...] | None = field(default=None, repr=False)
    _resume: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "state": self.state.value, "prompt": self.settings.prompt,
                "video": str(self.result.video_path) if self.result else None, "server": self.server,
                "cached": self.cached, "error": self.error}


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands."""

    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    pending: int
    cached: int  # of the done ones, how many came from the result cache
    fraction: float  # 0..1, running shots counted by their own progress

    @property
    def finished_count(self) -> int:
        return self.done + self.failed + self.cancelled

    @property
    def finished(self) -> bool:
        return self.finished_count == self.total


# --- the journal -------------------------------------------------------------------------------------------------


class Journal:
    """A batch's state on disk, as JSON lines: a header line, then one line per change of a shot.

    Appends are flushed and fsynced before :meth:`append` returns; a line torn by a crash (the last one) is
    ignored on reading. :meth:`compact` rewrites the file atomically (temporary file, fsync, rename). One
    process at a time: the journal is locked while a batch runs from it (where the OS has ``fcntl``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._lock_file: IO[str] | None = None

    @staticmethod
    def read(path: str | Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        """The header and, per shot index, its last recorded line. Raises ``ValueError`` if unreadable."""
        header: dict[str, Any] | None = None
        states: dict[int, dict[str, Any]] = {}
        with Path(path).expanduser().open("r", encoding="utf-8") as f:
            lines = f.read().split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number >= len(lines) - 1:
                    log.warning("journal %s: ignoring a torn last line", path)
                    continue
                raise ValueError(f"journal {path}: line {number} is not JSON") from None
            if record.get("type") == "batch":
                header = record
            elif record.get("type") == "shot" and isinstance(record.get("index"), int):
                states[record["index"]] = record
        if header is None:
            raise ValueError(f"journal {path} has no batch header")
        if header.get("version") != JOURNAL_VERSION:
            raise ValueError(f"journal {path} is version {header.get('version')}, this program reads "
                             f"{JOURNAL_VERSION}")
        return header, states

    def open(self, header: dict[str, Any], states: dict[int, dict[str, Any]] | None = None) -> None:
        """Write the header (and the shots' known states) atomically, then keep the file open for appends."""
        self._take_lock()
        states = states or {}
        lines = [json.dumps(header)] + [json.dumps(states[i]) for i in sorted(states)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str)
        with self._lock:
            if self._file is None:
                return
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_file is not None:
                self._lock_file.close()  # releases the lock
                self._lock_file = None

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock; one process at a time is then up to the user
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise Wan2GPValidationError(f"the batch journal {self.path} is in use by another process",
                                        field="journal", hint="wait for it to finish, or stop it first") from None
        self._lock_file = handle


# --- the batch -----------------------------------------------------------------------------------------------------

BatchCallback = Callable[["Batch", BatchProgress], None]


class Batch:
    """A batch of shots running on a pool. Thread-safe; returned by :func:`submit_batch` / :func:`resume_batch`.

    Attributes:
        id: the batch id (kept in the journal).
        shots: every shot, in the order given.
        journal: the journal file, if any.
    """

    def __init__(self, pool: ServerPool, shots: list[Shot], *, batch_id: str, journal: Journal | None,
                 max_in_flight: int, retries: int, use_cache: bool) -> None:
        self.id = batch_id
        self.pool = pool
        self.shots = shots
        self.journal = journal.path if journal is not None else None
        self.max_in_flight = max(1, max_in_flight)
        self.retries = retries
        self.use_cache = use_cache
        self._journal = journal
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._cancelled = False
        self._feeding = False
        self._dirty = False
        self._progress_callbacks: list[BatchCallback] = []
        self._started = time.monotonic()

    # --- public -----------------------------------------------------------------------------------------------

    @property
    def progress(self) -> BatchProgress:
        with self._lock:
            count = {state: 0 for state in ShotState}
            fraction = 0.0
            for shot in self.shots:
                count[shot.state] += 1
                if shot.state.finished:
                    fraction += 1.0
                elif shot.state is ShotState.RUNNING and shot.job is not None:
                    fraction += shot.job.progress.fraction
            return BatchProgress(
                total=len(self.shots), done=count[ShotState.DONE], failed=count[ShotState.FAILED],
                cancelled=count[ShotState.CANCELLED], running=count[ShotState.RUNNING],
                pending=count[ShotState.PENDING], cached=sum(1 for s in self.shots if s.cached),
                fraction=fraction / len(self.shots) if self.shots else 1.0)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every shot has finished (done, failed or cancelled). Returns False on timeout."""
        return self._done.wait(timeout)

    def results(self) -> list[GenerationResult | None]:
        """Per shot, in order: its result, or None (failed, cancelled, unfinished)."""
        with self._lock:
            return [shot.result for shot in self.shots]

    def failures(self) -> list[Shot]:
        with self._lock:
            return [s for s in self.shots if s.state in (ShotState.FAILED, ShotState.CANCELLED)]

    def cancel(self) -> int:
        """Cancel every unfinished shot: pending ones are dropped, running ones stopped on their servers.

        Returns how many shots were cancelled. Cancelled shots run again with :func:`resume_batch`.
        """
        with self._lock:
            self._cancelled = True
            pending = [s for s in self.shots if s.state is ShotState.PENDING]
            running = [s for s in self.shots if s.state is ShotState.RUNNING and s.job is not None]
            for shot in pending:
                shot.state, shot.error = ShotState.CANCELLED, "cancelled"
        for shot in pending:
            self._record(shot)
        for shot in running:
            assert shot.job is not None
            shot.job.cancel()
        self._changed()
        return len(pending) + len(running)

    def add_progress_callback(self, callback: BatchCallback) -> None:
        """``callback(batch, progress)`` on every change of a shot; runs on background threads."""
        self._progress_callbacks.append(callback)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: counts, elapsed time, every shot's state, video and error."""
        p = self.progress
        return {"batch": self.id, "journal": str(self.journal) if self.journal else None, "total": p.total,
                "done": p.done, "failed": p.failed, "cancelled": p.cancelled, "running": p.running,
                "pending": p.pending, "cached": p.cached,
                "elapsed_seconds": round(time.monotonic() - self._started, 3),
                "shots": [s.to_dict() for s in self.shots]}

    def __repr__(self) -> str:
        p = self.progress
        return f"<Batch {self.id} {p.finished_count}/{p.total} done={p.done} failed={p.failed}>"

    # --- inside -----------------------------------------------------------------------------------------------

    def _start(self) -> None:
        resumed = [s for s in self.shots if s._resume is not None and s.state is ShotState.PENDING]
        for shot in resumed:
            record, shot._resume = shot._resume, None
            with self._lock:
                shot.state = ShotState.RUNNING
            assert record is not None
            self._attach(shot, self.pool.resume(record))
        self._feed()
        self._changed()

    def _feed(self) -> None:
        """Send pending shots to the pool while fewer than ``max_in_flight`` are there. Never recurses: a shot
        that finishes at once (a cache hit) asks the feeding thread to look again."""
        with self._lock:
            if self._feeding:
                self._dirty = True
                return
            self._feeding = True
        while True:
            with self._lock:
                room = self.max_in_flight - sum(1 for s in self.shots if s.state is ShotState.RUNNING)
                picked = [] if self._cancelled else [s for s in self.shots if s.state is ShotState.PENDING][:room]
                if not picked:
                    if self._dirty:
                        self._dirty = False
                        continue
                    self._feeding = False
                    return
                for shot in picked:
                    shot.state = ShotState.RUNNING
            for shot in picked:
                try:
                    job = self.pool.submit(shot.settings, retries=self.retries, use_cache=self.use_cache)
                except Wan2GPError as exc:
                    with self._lock:
                        shot.state, shot.error = ShotState.FAILED, str(exc)
                    self._record(shot)
                    self._changed()
                    continue
                self._attach(shot, job)

    def _attach(self, shot: Shot, job: PoolJob) -> None:
        with self._lock:
            shot.job = job
        job.add_progress_callback(lambda j, p: self._on_progress(shot, j))
        job.add_done_callback(lambda j: self._on_done(shot, j))

    def _on_progress(self, shot: Shot, job: PoolJob) -> None:
        if job.done():
            return
        inner = job.job_record
        if inner is None:
            self._changed()
            return
        key = (job.server, inner.session_hash, inner.remote_job_id, inner.task_queued, inner.processing_started)
        if inner.task_queued and key != shot._record_key:
            record = job.to_record()
            shot._record_key = key  # the task is on a server now: a resume must re-attach to it
            with self._lock:
                shot.server = job.server
            self._write({"type": "shot", "index": shot.index, "state": ShotState.RUNNING.value, "record": record,
                         "t": time.time()})
        self._changed()

    def _on_done(self, shot: Shot, job: PoolJob) -> None:
        error = job.exception()
        with self._lock:
            shot.server = job.server
            if error is None:
                shot.state, shot.result, shot.cached, shot.error = ShotState.DONE, job.result(0), job.cached, None
            elif isinstance(error, JobCancelledError):
                shot.state, shot.error = ShotState.CANCELLED, str(error)
            else:
                shot.state, shot.error = ShotState.FAILED, str(error)
        self._record(shot)
        self._feed()
        self._changed()

    def _record(self, shot: Shot) -> None:
        record: dict[str, Any] = {"type": "shot", "index": shot.index, "state": shot.state.value,
                                  "server": shot.server, "t": time.time()}
        if shot.result is not None:
            record["result"] = shot.result.model_dump(mode="json", exclude={"settings"})
            record["cached"] = shot.cached
        if shot.error:
            record["error"] = shot.error
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        if self._journal is None:
            return
        try:
            self._journal.append(record)
        except OSError as exc:  # a full disk must not lose the shots themselves
            log.error("batch %s: could not write the journal: %s", self.id, exc)

    def _changed(self) -> None:
        progress = self.progress
        for callback in list(self._progress_callbacks):
            try:
                callback(self, progress)
            except Exception:
                log.exception("batch progress callback failed")
        if progress.finished and not self._done.is_set():
            if self._journal is not None:
                self._journal.close()
            self._done.set()


def _default_in_flight(pool: ServerPool) -> int:
    slots = max(1, len(pool.urls)) * pool.per_server_limit
    return IN_FLIGHT_PER_SLOT * slots


def submit_batch(pool: ServerPool, shots: Sequence[GenerationSettings | dict[str, Any]], *,
                 journal: str | Path | None = None, max_in_flight: int | None = None, retries: int = 0,
                 use_cache: bool = True, batch_id: str | None = None) -> Batch:
    """Run ``shots`` on ``pool``; returns the batch handle at once.

    Parameters:
        shots: settings (or dicts of them), one per shot.
        journal: a file to keep the batch's state in (JSON lines), for :func:`resume_batch`. An existing file
            is replaced.
        max_in_flight: shots in the pool at once (default: two per running slot of the pool).
        retries: per shot, as :meth:`ServerPool.submit`'s ``retries``.
        use_cache: False: generate even what the result cache has.

    Raises :class:`Wan2GPValidationError` (naming the shot) before anything is sent if a shot is invalid.
    """
    from .wan2gp._client import _as_settings

    batch_id = batch_id or uuid.uuid4().hex[:12]
    checked: list[Shot] = []
    for i, settings in enumerate(shots):
        try:
            request = _as_settings(settings, {})
        except Wan2GPValidationError as exc:
            raise Wan2GPValidationError(f"shot {i + 1}: {exc.message}", field=exc.field) from None
        if request.client_id is None:  # names the shot on the server (WanGP's queue, its events)
            request = request.model_copy(update={"client_id": f"bmd-{batch_id}-{i:04d}"})
        checked.append(Shot(i, request))
    if not checked:
        raise Wan2GPValidationError("the batch has no shots", field="shots")
    writer = None
    if journal is not None:
        writer = Journal(journal)
        writer.open({"type": "batch", "version": JOURNAL_VERSION, "id": batch_id, "created": time.time(),
                     "shots": [s.settings.model_dump(mode="json", exclude_unset=True) for s in checked],
                     "options": {"retries": retries, "use_cache": use_cache, "max_in_flight": max_in_flight}})
    batch = Batch(pool, checked, batch_id=batch_id, journal=writer,
                  max_in_flight=max_in_flight or _default_in_flight(pool), retries=retries, use_cache=use_cache)
    pool.start()
    batch._start()
    return batch


def resume_batch(pool: ServerPool, journal: str | Path, *, max_in_flight: int | None = None,
                 retries: int | None = None, use_cache: bool | None = None) -> Batch:
    """Continue the batch kept in ``journal``: what is done stays done; what was on a server re-attaches there;
    the rest runs again. Options not given are the batch's own (from the journal).

    Raises :class:`Wan2GPValidationError` when the journal can't be read.
    """
    try:
        header, states = Journal.read(journal)
    except (OSError, ValueError) as exc:
        raise Wan2GPValidationError(f"cannot resume from {journal}: {exc}", field="journal") from None
    options = header.get("options") or {}
    retries = int(options.get("retries") or 0) if retries is None else retries
    use_cache = bool(options.get("use_cache", True)) if use_cache is None else use_cache
    max_in_flight = max_in_flight or options.get("max_in_flight") or _default_in_flight(pool)
    shots: list[Shot] = []
    kept: dict[int, dict[str, Any]] = {}
    on_servers = queued_by_client_id()
    for i, data in enumerate(header.get("shots") or []):
        state = states.get(i) or {}
        try:
            settings = GenerationSettings(**data)
            invalid = None
        except ValidationError as exc:  # e.g. an input file gone since: a done shot stays done all the same
            settings = GenerationSettings.model_construct(**data)
            invalid = f"invalid settings: {exc.errors()[0].get('msg')}"
        shot = Shot(i, settings, server=state.get("server"))
        result = _restore_result(state, settings)
        if state.get("state") == ShotState.DONE.value and result is not None:
            shot.state, shot.result, shot.cached = ShotState.DONE, result, bool(state.get("cached"))
            kept[i] = state
        elif invalid is not None:
            shot.state, shot.error = ShotState.FAILED, invalid
            kept[i] = {"type": "shot", "index": i, "state": ShotState.FAILED.value, "error": invalid}
        elif state.get("state") == ShotState.RUNNING.value and state.get("record"):
            shot._resume = state["record"]
            kept[i] = state
        elif (entry := on_servers.get(str(settings.client_id))) is not None:
            # The program died after the shot reached a server's queue and before the journal heard of it: the
            # register of jobs (shared by this user's programs) has its record, so it re-attaches instead of
            # being queued a second time.
            shot._resume = {"settings": data, "server": entry["server"], "job": entry["record"], "retries": 0}
            kept[i] = {"type": "shot", "index": i, "state": ShotState.RUNNING.value, "record": shot._resume,
                       "t": time.time()}
        shots.append(shot)
    if not shots:
        raise Wan2GPValidationError(f"the journal {journal} holds no shots", field="journal")
    writer = Journal(journal)
    writer.open({**header, "resumed": time.time()}, kept)  # compacted: one line per shot that has a state
    batch = Batch(pool, shots, batch_id=str(header.get("id")), journal=writer, max_in_flight=int(max_in_flight),
                  retries=retries, use_cache=use_cache)
    pool.start()
    batch._start()
    return batch


def _restore_result(state: dict[str, Any], settings: GenerationSettings) -> GenerationResult | None:
    """A done shot's result from its journal line, if its video is still there."""
    data = state.get("result")
    if not isinstance(data, dict):
        return None
    try:
        result = GenerationResult.model_validate({**data, "settings": settings})
    except ValidationError:
        return None
    if not Path(result.video_path).is_file():
        log.warning("shot %s: its video %s is gone; it will be generated again", state.get("index"),
                    result.video_path)
        return None
    return result


# --- shots files ------------------------------------------------------------------------------------------------------


def load_shots(path: str | Path) -> list[GenerationSettings]:
    """Read a shots file: a JSON list whose items are settings (dicts) or paths of WanGP settings files.

    ``{"defaults": {...}, "shots": [...]}`` is accepted too (defaults apply to every dict shot). Relative paths
    (settings files, input images) are relative to the shots file. WanGP's own settings format (its "Export
    Settings" JSON) is recognised.

    Raises :class:`Wan2GPValidationError` naming the shot at fault.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Wan2GPValidationError(f"cannot read the shots file {path}: {exc.strerror or exc}",
                                    field="shots") from None
    except ValueError as exc:
        raise Wan2GPValidationError(f"the shots file {path} is not valid JSON: {exc}", field="shots") from None
    defaults: dict[str, Any] = {}
    if isinstance(data, dict) and isinstance(data.get("shots"), list):
        defaults = dict(data.get("defaults") or {})
        data = data["shots"]
    if not isinstance(data, list) or not data:
        raise Wan2GPValidationError(f"the shots file {path} must hold a non-empty JSON list of shots", field="shots")
    base = path.parent
    shots = []
    for i, item in enumerate(data):
        where = f"shot {i + 1}"
        if isinstance(item, str):
            file = (base / item).expanduser()
            try:
                item = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise Wan2GPValidationError(f"{where}: cannot read the settings file {file}: {exc}",
                                            field="shots") from None
            item_base, wangp = file.parent, True
        elif isinstance(item, dict):
            item, item_base, wangp = {**defaults, **item}, base, False
        else:
            raise Wan2GPValidationError(f"{where}: expected settings (an object) or a settings file name",
                                        field="shots")
        shots.append(_shot_settings(_relative_to(item, item_base), where, wangp))
    return shots


def _relative_to(item: dict[str, Any], base: Path) -> dict[str, Any]:
    item = dict(item)
    for name in MEDIA_FIELDS:
        value = item.get(name)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            item[name] = str(base / value)
        elif isinstance(value, list):
            item[name] = [str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v for v in value]
    return item


def _shot_settings(item: dict[str, Any], where: str, wangp: bool) -> GenerationSettings:
    try:
        if wangp:
            return GenerationSettings.from_wangp_json(item)
        try:
            return GenerationSettings(**item)
        except ValidationError as exc:
            if not any(e.get("type") == "extra_forbidden" for e in exc.errors()):
                raise
            return GenerationSettings.from_wangp_json(item)  # WanGP's own names for its settings
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise Wan2GPValidationError(f"{where}: {name + ': ' if name else ''}{message}", field=name or None) from None


# --- the command line: `movie-director batch` ------------------------------------------------------------------------


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``movie-director batch``'s own arguments to its sub-parser (the CLI adds --json/-q/-v/--server)."""
    parser.add_argument("shots", metavar="SHOTS.json",
                        help="a JSON list of shot settings, or of WanGP settings files (paths relative to it)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the batch in the journal: done shots stay done, nothing runs twice")
    start.add_argument("--fresh", action="store_true", help="start over even if a journal exists (it is kept as .old)")
    parser.add_argument("--servers", nargs="+", metavar="URL", action="extend",
                        help="WanGP servers to use (also comma-separated); default: --server, WAN2GP_URL, "
                             "then the WanGP servers found on this machine")
    parser.add_argument("--journal", metavar="FILE", help="the batch's journal (default: SHOTS.journal.jsonl)")
    parser.add_argument("-o", "--output", metavar="DIR", help="folder for the videos (default WAN2GP_OUTPUT_DIR)")
    parser.add_argument("--max-in-flight", type=int, metavar="N", help="shots in the pool at once")
    parser.add_argument("--per-server", type=int, default=1, metavar="N", help="jobs running at once per server")
    parser.add_argument("--retries", type=int, default=0, metavar="N",
                        help="run a shot again elsewhere when its server is lost mid-run (default 0)")
    parser.add_argument("--no-cache", action="store_true", help="generate even shots the result cache has")
    parser.add_argument("--cache-dir", metavar="DIR", help="cache folder (default ~/.cache/blender-movie-director)")
    parser.add_argument("--wait-for-server", type=float, default=900.0, metavar="S",
                        help="how long shots wait while no server is up before they fail (default 900)")


class _Display:
    """One progress display for the whole batch: a rich bar on a terminal, one line per finished shot otherwise."""

    def __init__(self, total: int, *, quiet: bool, rich_mode: bool) -> None:
        self.quiet, self.rich = quiet, rich_mode
        self._lock = threading.Lock()
        self._seen: set[int] = set()
        self._progress: Any = None
        self._task: Any = None
        if quiet or not rich_mode:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                  console=Console(stderr=True))
        self._task = self._progress.add_task("batch", total=total, detail="")
        self._progress.start()

    def update(self, batch: Batch, p: BatchProgress) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._progress is not None:
                detail = f"running {p.running}  failed {p.failed}" + (f"  cached {p.cached}" if p.cached else "")
                self._progress.update(self._task, completed=p.finished_count, detail=detail)
                return
            for shot in batch.shots:
                if shot.state.finished and shot.index not in self._seen:
                    self._seen.add(shot.index)
                    what = shot.result.video_path.name if shot.result else shot.error or ""
                    sys.stderr.write(f"[{p.finished_count}/{p.total}] shot {shot.index + 1} {shot.state.value}"
                                     f"{' (cached)' if shot.cached else ''}: {what}\n")
            sys.stderr.flush()

    def stop(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


def _servers_from(args: argparse.Namespace) -> list[str]:
    urls = [u.strip() for item in (getattr(args, "servers", None) or []) for u in item.split(",") if u.strip()]
    if not urls and getattr(args, "server", None):
        urls = [args.server]
    if not urls:
        from .discovery import configured_urls, discover

        urls = configured_urls() or [s.url for s in discover(include_env=False) if s.is_web_ui]
    if not urls:
        raise Wan2GPConnectionError("no WanGP server given or found on this machine",
                                    hint="start WanGP, or name servers with --servers URL ...")
    return [u if "://" in u else "http://" + u for u in urls]


def run_batch_cli(args: argparse.Namespace, out: Any) -> int:
    """``movie-director batch SHOTS.json [--resume|--fresh] [--servers URL ...]``; returns the exit code.

    ``out`` is the CLI's output object (``json``, ``quiet``, ``note()``, ``warn()``, ``result(data, text)``).
    Exit codes: 0 every shot done; 5 some shot failed; 130 interrupted (running shots are cancelled on their
    servers; ``--resume`` runs them again); errors raised (bad shots file: usage, no server: connection) get
    the CLI's codes for their class.
    """
    from .pool import ServerPool

    shots_path = Path(args.shots).expanduser()
    journal = Path(args.journal).expanduser() if getattr(args, "journal", None) else \
        shots_path.with_name(shots_path.stem + ".journal.jsonl")
    resume = bool(getattr(args, "resume", False))
    if journal.exists() and not resume:
        if not getattr(args, "fresh", False):
            raise Wan2GPValidationError(f"a journal of this batch exists: {journal}", field="journal",
                                        hint="add --resume to continue it, or --fresh to start over")
        os.replace(journal, journal.with_name(journal.name + ".old"))
    if resume and not journal.exists():
        raise Wan2GPValidationError(f"nothing to resume: no journal {journal}", field="journal",
                                    hint="run the batch without --resume first")
    shots = None if resume else load_shots(shots_path)
    urls = _servers_from(args)
    pool = ServerPool(urls, output_dir=getattr(args, "output", None), per_server_limit=args.per_server,
                      cache_dir=getattr(args, "cache_dir", None), wait_for_server=args.wait_for_server)
    display: _Display | None = None
    try:
        if not pool.wait_for_servers(1, timeout=10.0):
            out.warn(f"no server of {', '.join(urls)} is up yet; shots wait up to {args.wait_for_server:.0f} s")
        if resume:
            batch = resume_batch(pool, journal, max_in_flight=args.max_in_flight,
                                 use_cache=False if args.no_cache else None,
                                 retries=args.retries if args.retries else None)
        else:
            assert shots is not None
            batch = submit_batch(pool, shots, journal=journal, max_in_flight=args.max_in_flight,
                                 retries=args.retries, use_cache=not args.no_cache)
        p = batch.progress
        out.note(f"batch {batch.id}: {p.total} shots on {len(urls)} server(s)"
                 + (f", {p.done} already done" if p.done else "") + f"; journal {journal}")
        display = _Display(p.total, quiet=bool(out.quiet or out.json), rich_mode=sys.stderr.isatty())
        batch.add_progress_callback(display.update)
        display.update(batch, batch.progress)
        try:
            while not batch.wait(0.5):
                pass
        except KeyboardInterrupt:
            display.stop()
            out.note("interrupted: cancelling the running shots on their servers (Ctrl-C again to stop waiting)")
            batch.cancel()
            try:
                batch.wait(30.0)  # WanGP stops between two denoising steps
            except KeyboardInterrupt:
                pass
            raise
    finally:
        if display is not None:
            display.stop()
        pool.close()
    summary = batch.summary()
    summary["servers"] = pool.view().to_dict()["servers"]
    p = batch.progress
    lines = [f"{p.done}/{p.total} shots done" + (f" ({p.cached} from the cache)" if p.cached else "")
             + (f", {p.failed} failed" if p.failed else "") + (f", {p.cancelled} cancelled" if p.cancelled else "")
             + f" in {summary['elapsed_seconds']:.1f} s"]
    for shot in batch.failures():
        lines.append(f"  shot {shot.index + 1} {shot.state.value}: {shot.error}")
    if p.failed or p.cancelled:
        lines.append(f"  run again with --resume to retry them (journal {journal})")
    out.result(summary, "\n".join(lines))
    if p.cancelled and not p.failed:
        return 130  # the CLI's EXIT_CANCELLED
    return 0 if p.done == p.total else 5  # the CLI's EXIT_OK / EXIT_SERVER
