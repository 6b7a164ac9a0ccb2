"""A pool of WanGP servers: each job goes to the server that can start it soonest.

Dispatch
    A job goes to an idle server first, then to the server with the shortest queue; among equals, to one that
    already has the job's model loaded (a model switch costs minutes on a real GPU; ``model_switch_cost``
    weighs it in queue places). Each server runs ``per_server_limit`` jobs at once (one by default); the
    others wait in the pool, in that server's queue, and an idle server takes waiting work from the others.
    The queues are the pool's own: nothing waits on a server where it could be stranded.
Health
    Every server is checked every ``health_period`` seconds (:mod:`..health`). A server that goes down gets
    no new work and its queued jobs move to the other servers at once. Its running job fails with the reason
    once the server has been down for ``lost_after`` seconds, or at once when the job's connection drops; it
    runs again elsewhere only if it was submitted with ``retries`` (a job that never reached the server's
    queue moves on freely: nothing of it ran). A server that comes back rejoins the pool.
Caches
    Clients connect through an :class:`ApiCache` (reconnecting to a known server downloads almost nothing),
    and a fixed-seed request already made returns the saved video from the :class:`ResultCache`
    (``use_cache=False`` opts out per call; ``seed=-1`` never hits).

Example::

    from blender_movie_director.backend.pool import ServerPool

    with ServerPool(["http://gpu1:7860", "http://gpu2:7860"], output_dir="shots") as pool:
        jobs = [pool.submit(prompt=p, seed=7) for p in ("a fox", "a hare", "an owl")]
        print(pool.view())
        for job in jobs:
            print(job.result().video_path)
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._urls import normalise_url
from .health import HealthEvent, HealthEventKind, HealthMonitor, HealthReport
from .wan2gp._cache import ApiCache, ModelListCache, ResultCache, default_cache_dir
from .wan2gp._client import Wan2GPClient, _as_settings
from .wan2gp._config import Retries, Timeouts
from .wan2gp._enums import JobStatus
from .wan2gp._errors import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    UnsupportedServerError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPValidationError,
    translate,
)
from .wan2gp._jobs import JobHandle, JobRecord, Wan2GPJob
from .wan2gp._schemas import GenerationResult, GenerationSettings, JobProgress

if TYPE_CHECKING:
    from .batch import Batch

__all__ = ["PoolJob", "PoolView", "ServerPool", "ServerView"]

log = logging.getLogger(__name__)

# One running job per server: WanGP generates one shot at a time per GPU, and a second job sent meanwhile
# would only wait in WanGP's queue, where it can't move to another server.
DEFAULT_PER_SERVER_LIMIT = 1
# Health checks every 5 s (the monitor's default): a dead server is noticed within two periods.
DEFAULT_HEALTH_PERIOD = 5.0
# A server down this long has lost its running jobs. A dropped connection fails the job sooner; this bounds
# the wait on a server that vanished without closing anything (power cut, network gone).
DEFAULT_LOST_AFTER = 30.0
# Jobs with no server up fail after this long (a server rebooting overnight takes a few minutes).
DEFAULT_WAIT_FOR_SERVER = 900.0
# A model switch weighs as half a queue place: an idle server without the model still beats a busy one
# with it, and among equals the one with the model wins.
DEFAULT_MODEL_SWITCH_COST = 0.5
# A job whose sending fails (connection trouble, server still up) is sent again at most this many times in all.
_START_ATTEMPTS = 3
# Rechecks of a server after an odd failure: a stopping Gradio answers 503s for a moment before it is gone.
_CONFIRM_PAUSE = 0.5
# The scheduler wakes at least this often to check expiries (lost servers, waits for a server).
_TICK = 0.25


# --- views ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerView:
    """One server of the pool, as the pool sees it now."""

    url: str
    state: str  # "idle", "busy", "down", "unknown" (not checked yet), "unsupported" (not a usable WanGP)
    wangp_version: str | None
    model: str | None  # the model loaded (the last one the pool started there), when known
    running: tuple[str, ...]  # pool job ids
    queued: tuple[str, ...]  # pool job ids, in order
    limit: int
    completed: int
    failed: int
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PoolView:
    """The whole pool: every server, and the jobs waiting for any server."""

    servers: tuple[ServerView, ...]
    waiting: tuple[str, ...]  # pool job ids no server can take now (none up)

    def to_dict(self) -> dict[str, Any]:
        return {"servers": [s.to_dict() for s in self.servers], "waiting": list(self.waiting)}

    def __str__(self) -> str:
        lines = [f"{'server':<32} {'state':<11} {'WanGP':<7} {'model':<22} {'run':>3} {'queue':>5} {'done':>5} "
                 f"{'fail':>4}"]
        for s in self.servers:
            lines.append(f"{s.url:<32} {s.state:<11} {s.wangp_version or '-':<7} {(s.model or '-')[:22]:<22} "
                         f"{len(s.running):>3} {len(s.queued):>5} {s.completed:>5} {s.failed:>4}")
        if self.waiting:
            lines.append(f"{len(self.waiting)} job(s) waiting for a server")
        return "\n".join(lines)


# --- jobs ------------------------------------------------------------------------------------------------------

@dataclass
class _Attempt:
    number: int
    server: _Server
    app_id: str | None
    resume: dict[str, Any] | None = None  # a Wan2GPJob record to re-attach to instead of submitting
    job: Wan2GPJob | None = None
    abandoned: bool = False
    heard_at: float = 0.0  # time.monotonic() of the run's last progress: a live stream outweighs a failed check


class PoolJob(JobHandle):
    """A job of the pool: like :class:`Wan2GPJob` (same status, progress, result, cancel and callbacks), but
    it may run on any server of the pool, and move while it has not started.

    Attributes:
        id: the pool's job id.
        settings: what was asked.
        output_dir: where its video is saved, when not in the pool's folder.
        server: the server it runs (or ran) on, once dispatched.
        cached: True when the result came from the result cache (nothing was generated).
        retries: how many times it may run again elsewhere after its server was lost mid-run.
        history: one entry per server it was sent to, with the outcome.
    """

    _label = "pool job"

    def __init__(self, pool: ServerPool, settings: GenerationSettings, *, retries: int = 0, use_cache: bool = True,
                 pinned: str | None = None, resume: dict[str, Any] | None = None,
                 output_dir: Path | None = None) -> None:
        super().__init__(JobProgress(phase="waiting for a server"))
        self.settings = settings
        self.output_dir = output_dir  # None: the pool's folder
        self.retries = retries
        self.use_cache = use_cache
        self.server: str | None = None
        self.cached = False
        self.history: list[dict[str, Any]] = []
        self.submitted_at = time.time()
        self._pool = pool
        self._seq = next(pool._seq)
        self._pinned = pinned  # a resumed job must run where its task is
        self._resume = resume
        self._attempt: _Attempt | None = None
        self._retries_used = 0
        self._start_failures = 0
        self._cancel_requested = False

    # --- public -----------------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job: taken out of the pool's queue, or stopped on its server (as :meth:`Wan2GPJob.cancel`).

        Returns False if it had already finished.
        """
        return self._pool._cancel(self)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record, for :meth:`ServerPool.resume` after this program stopped.

        While the job runs, it holds its server and its :meth:`Wan2GPJob.to_record`, so that the resumed job
        re-attaches to the same task instead of generating the shot again.
        """
        attempt = self._attempt
        job = attempt.job if attempt is not None else None
        return {
            "pool_job_id": self.id,
            "settings": self.settings.model_dump(mode="json", exclude_unset=True),
            "status": self.status().value,
            "server": self.server,
            "job": job.to_record() if job is not None else None,
            "retries": self.retries,
            "output_dir": str(self.output_dir) if self.output_dir is not None else None,
        }

    @property
    def job_record(self) -> JobRecord | None:
        """The record of the job on its current server, once it has one there."""
        attempt = self._attempt
        job = attempt.job if attempt is not None else None
        return job.record() if job is not None else None

    @property
    def _folder(self) -> Path | None:
        """Where its video goes: its own folder, else the pool's (None: the client's)."""
        return self.output_dir or self._pool.output_dir

    def __repr__(self) -> str:
        return f"<PoolJob {self.id} {self.status().value} on {self.server or '-'} {self.settings.prompt[:30]!r}>"

    # --- inside -----------------------------------------------------------------------------------------

    def _set_progress(self, progress: JobProgress) -> None:
        with self._lock:
            if self.done():
                return
            version = self._publish(progress)
        self._tell_progress(progress, version)

    def _note(self, phase: str, status: JobStatus = JobStatus.QUEUED) -> None:
        with self._lock:
            progress = self._progress.model_copy(update={"status": status, "phase": phase, "fraction": 0.0,
                                                         "step": None, "total": None, "queue_position": None})
        self._set_progress(progress)

    def _quiet_note(self, phase: str) -> None:
        """Update the phase without calling back: the pool calls this under its lock."""
        with self._lock:
            if not self.done():
                self._progress = self._progress.model_copy(update={"status": JobStatus.QUEUED, "phase": phase})


# --- servers -----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Server:
    url: str
    limit: int
    state: str = "unknown"  # "up", "down", "unknown", "unsupported"
    client: Wan2GPClient | None = None
    monitor: HealthMonitor | None = None
    queue: deque[PoolJob] = field(default_factory=deque)
    running: dict[str, PoolJob] = field(default_factory=dict)  # dispatched: starting or running
    model: str | None = None
    models: frozenset[str] | None = None  # the server's model list (cached), once connected
    version: str | None = None
    app_id: str | None = None
    external_busy: bool = False  # generating for someone else (calls waiting in its Gradio queue)
    released_at: float = 0.0  # time.time() when the pool's last job there ended: older "busy" reports were us
    down_since: float | None = None
    completed: int = 0
    failed: int = 0
    last_error: str | None = None
    last_start: float = 0.0
    removed: bool = False

    @property
    def load(self) -> int:
        return len(self.running) + len(self.queue) + (1 if self.external_busy and not self.running else 0)


# --- the pool ----------------------------------------------------------------------------------------------------


class ServerPool:
    """Several WanGP servers used as one. Thread-safe.

    Parameters:
        urls: the servers (more can be added with :meth:`add_server`, or found with ``discover=True``).
        output_dir: where finished shots are saved (as :class:`Wan2GPClient`'s ``output_dir``).
        timeouts, retries: for each server's client (:class:`Timeouts`, :class:`Retries`).
        per_server_limit: jobs running at once on one server.
        health_period: seconds between two health checks of a server.
        lost_after: seconds a server may be down before its running jobs are given up.
        wait_for_server: seconds jobs wait while no server is up before they fail (None: forever).
        model_switch_cost: how many queue places a model switch is worth when choosing a server.
        cache_dir: the caches' folder (default ``~/.cache/blender-movie-director``).
        api_cache, result_cache: True (a cache in ``cache_dir``), False (none), or a cache to share.
        discover: also use the WanGP servers :func:`..discovery.discover` finds on this machine at start.
        client_factory: ``factory(url) -> Wan2GPClient`` to build clients yourself.
        health_check: one health check, called as :func:`..health.check_health` (default); with
            ``client_factory``, what lets the pool run on clients of another transport (the tests' in-memory one).

    Nothing happens on construction; :meth:`start` (or the context manager, or the first submit) checks the
    servers and starts the scheduler. :meth:`close` cancels what is unfinished and closes every client.
    """

    def __init__(
        self,
        urls: Iterable[str] | str = (),
        *,
        output_dir: str | Path | None = None,
        timeouts: Timeouts | None = None,
        retries: Retries | None = None,
        per_server_limit: int = DEFAULT_PER_SERVER_LIMIT,
        health_period: float = DEFAULT_HEALTH_PERIOD,
        health_timeout: float | None = None,
        lost_after: float = DEFAULT_LOST_AFTER,
        wait_for_server: float | None = DEFAULT_WAIT_FOR_SERVER,
        model_switch_cost: float = DEFAULT_MODEL_SWITCH_COST,
        cache_dir: str | Path | None = None,
        api_cache: ApiCache | bool = True,
        result_cache: ResultCache | bool = True,
        discover: bool = False,
        client_factory: Callable[[str], Wan2GPClient] | None = None,
        health_check: Callable[..., HealthReport] | None = None,
    ) -> None:
        if per_server_limit < 1:
            raise ValueError("per_server_limit must be at least 1")
        self.output_dir = Path(output_dir).expanduser() if output_dir is not None else None
        self.timeouts = timeouts
        self.client_retries = retries
        self.per_server_limit = per_server_limit
        self.health_period = health_period
        self.health_timeout = health_timeout
        self.lost_after = lost_after
        self.wait_for_server = wait_for_server
        self.model_switch_cost = model_switch_cost
        self.discover = discover
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.api_cache: ApiCache | None = (api_cache if isinstance(api_cache, ApiCache)
                                           else ApiCache(cache_root) if api_cache else None)
        self.result_cache: ResultCache | None = (result_cache if isinstance(result_cache, ResultCache)
                                                 else ResultCache(cache_root) if result_cache else None)
        self.model_lists = ModelListCache()
        self._factory = client_factory or self._default_client
        self._health_check = health_check
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._servers: dict[str, _Server] = {}
        self._waiting: deque[PoolJob] = deque()
        self._jobs: dict[str, PoolJob] = {}
        # Identical fixed-seed requests in flight: the first runs, the others wait for its result (see _admit).
        self._leaders: dict[str, PoolJob] = {}
        self._followers: dict[str, list[PoolJob]] = {}
        self._none_up_since: float | None = None
        self._started = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._starter: ThreadPoolExecutor | None = None
        for url in [urls] if isinstance(urls, str) else urls:
            self._add(url, None)

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> ServerPool:
        """Check every server once (in parallel), then keep checking them and dispatching. Idempotent."""
        with self._lock:
            if self._started:
                return self
            if self._closing:
                raise Wan2GPError("the pool is closed")
            self._started = True
            self._starter = ThreadPoolExecutor(8, thread_name_prefix="pool-start")
        if self.discover:
            from .discovery import discover as discover_servers

            for service in discover_servers():
                if service.is_web_ui:
                    self._add(service.url, None)
        with self._lock:
            servers = [s for s in self._servers.values() if s.monitor is None]
        self._watch(servers)
        self._thread = threading.Thread(target=self._loop, name="pool-scheduler", daemon=True)
        self._thread.start()
        return self

    def close(self, *, cancel: bool = True) -> None:
        """Stop: cancel unfinished jobs (on their servers too) unless ``cancel=False``, close every client."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            jobs = [j for j in self._jobs.values() if not j.done()]
            servers = list(self._servers.values())
            self._wake.notify_all()
        for server in servers:
            if server.monitor is not None:
                server.monitor.stop(timeout=0.5)
        if cancel:
            for job in jobs:
                job.cancel()
        for server in servers:
            if server.client is not None:
                server.client.disconnect(cancel_jobs=cancel)
        for job in jobs:  # those still waiting in the pool (never dispatched) end here
            job._finish(error=JobCancelledError(f"pool job {job.id}: the pool was closed", job_id=job.id))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        if self._starter is not None:
            self._starter.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ServerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- servers ------------------------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        with self._lock:
            return [s.url for s in self._servers.values() if not s.removed]

    def add_server(self, url: str, *, limit: int | None = None) -> None:
        """Add a server (checked at once when the pool is started). Adding a known server does nothing."""
        server = self._add(url, limit)
        if server is not None and self._started:
            self._watch([server])

    def remove_server(self, url: str) -> None:
        """Take a server out: its queued jobs move to the others; its running jobs finish there first."""
        key = normalise_url(url)
        with self._lock:
            server = self._servers.get(key)
            if server is None or server.removed:
                return
            server.removed = True
            moved = self._take_queue(server)
            for job in moved:
                self._assign(job)
            idle = not server.running
            self._wake.notify_all()
        if server.monitor is not None:
            server.monitor.stop(timeout=0.5)
        if idle and server.client is not None:
            server.client.disconnect()

    def wait_for_servers(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` servers are up (at most ``timeout`` s). Returns whether they are."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(s.state == "up" for s in self._servers.values() if not s.removed) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, _TICK))
        return True

    def view(self) -> PoolView:
        """Every server's state, queue, running jobs and model; the jobs waiting for any server."""
        with self._lock:
            servers = []
            for s in self._servers.values():
                if s.removed:
                    continue
                state = s.state
                if state == "up":
                    state = "busy" if s.running or s.external_busy else "idle"
                servers.append(ServerView(
                    url=s.url, state=state, wangp_version=s.version, model=s.model,
                    running=tuple(s.running), queued=tuple(j.id for j in s.queue), limit=s.limit,
                    completed=s.completed, failed=s.failed, last_error=s.last_error))
            return PoolView(tuple(servers), tuple(j.id for j in self._waiting))

    def jobs(self) -> list[PoolJob]:
        """The pool's jobs (unfinished ones, and finished ones still referenced), oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j._seq)

    # --- jobs ---------------------------------------------------------------------------------------------------

    def submit(self, settings: GenerationSettings | dict[str, Any] | None = None, /, *, retries: int = 0,
               use_cache: bool = True, output_dir: str | Path | None = None, **kwargs: Any) -> PoolJob:
        """Queue a generation on the pool; returns its job at once.

        Parameters:
            settings: a :class:`GenerationSettings`, a dict of them, or keyword arguments.
            retries: how many times the job may run again on another server when its server is lost
                while it runs (0: it fails with the reason). Generation failures are never retried.
            use_cache: False skips the result cache for this call (the result is still stored).
            output_dir: where this job's video is saved (default: the pool's ``output_dir``).

        Raises :class:`Wan2GPValidationError` at once for settings that can't be right.
        """
        request = _as_settings(settings, kwargs)
        if retries < 0:
            raise Wan2GPValidationError("retries must be 0 or more", field="retries")
        self.start()
        job = PoolJob(self, request, retries=retries, use_cache=use_cache,
                      output_dir=Path(output_dir).expanduser() if output_dir is not None else None)
        hit = self._cache_lookup(job) if use_cache else None
        with self._lock:
            if self._closing:
                raise Wan2GPError("the pool is closed")
            self._jobs[job.id] = job
        if hit is not None:
            self._finish_cached(job, hit)
        else:
            self._admit(job)
        return job

    def _admit(self, job: PoolJob) -> None:
        """Dispatch a job, unless an identical fixed-seed request is already in flight: then it waits for that
        one and takes its result from the result cache (the same shot is not generated twice at once)."""
        key = self._twin_key(job)
        with self._lock:
            if self._closing:  # a follower whose leader ended as the pool closed
                job._finish(error=JobCancelledError(f"pool job {job.id}: the pool was closed", job_id=job.id))
                return
            leader = self._leaders.get(key) if key else None
            if leader is not None and not leader.done():
                self._followers.setdefault(leader.id, []).append(job)
                job._quiet_note(f"waiting for the identical job {leader.id}")
                return
            if key:
                self._leaders[key] = job
            self._assign(job)
            self._wake.notify_all()
        if key:
            job.add_done_callback(lambda leader: self._leader_done(key, leader))

    def _twin_key(self, job: PoolJob) -> str | None:
        """What makes two requests the same shot, on any server (None: never deduplicated)."""
        if self.result_cache is None or not job.use_cache or job._resume is not None:
            return None
        return self.result_cache.key(job.settings, "any server")

    def _leader_done(self, key: str, leader: PoolJob) -> None:
        """The job that identical requests waited for ended: they take its result, or, if it has none (it
        failed or was cancelled), the first of them runs and the others wait for it."""
        with self._lock:
            if self._leaders.get(key) is leader:
                del self._leaders[key]
            followers = [f for f in self._followers.pop(leader.id, []) if not f.done()]
        made_by = leader.result(0).wangp_version if leader.exception() is None else None
        for follower in followers:
            # the leader's own release first: the pool may not have checked that server's version yet
            hit = self._cache_lookup(follower, first=made_by) if made_by else None
            if hit is not None:
                self._finish_cached(follower, hit)
            else:
                self._admit(follower)

    def _finish_cached(self, job: PoolJob, hit: GenerationResult) -> None:
        job.cached, job.server = True, normalise_url(hit.server)
        job._finish(result=hit)
        self._forget_later(job)

    def resume(self, record: dict[str, Any]) -> PoolJob:
        """Track again a job saved with :meth:`PoolJob.to_record` (by a program that stopped).

        A job whose task reached its server's queue re-attaches to it on that server (nothing runs twice);
        if that server is not in the pool or its task is gone, the shot is submitted again.
        """
        settings = GenerationSettings(**record["settings"])
        output_dir = Path(record["output_dir"]) if record.get("output_dir") else None
        inner = record.get("job")
        server = normalise_url(record["server"]) if record.get("server") else None
        resumable = bool(inner and JobRecord.load(inner).reattachable and server)
        with self._lock:
            known = server is not None and server in self._servers and not self._servers[server].removed
        if not (resumable and known):
            return self.submit(settings, retries=int(record.get("retries") or 0), use_cache=True,
                               output_dir=output_dir)
        self.start()
        job = PoolJob(self, settings, retries=int(record.get("retries") or 0), pinned=server, resume=inner,
                      output_dir=output_dir)
        with self._lock:
            self._jobs[job.id] = job
            self._assign(job)
            self._wake.notify_all()
        return job

    def submit_batch(self, shots: Sequence[GenerationSettings | dict[str, Any]], **options: Any) -> Batch:
        """Run many shots: see :func:`..batch.submit_batch` for the options (journal, in-flight bound...)."""
        from .batch import submit_batch

        return submit_batch(self, shots, **options)

    # --- inside: clients and health -------------------------------------------------------------------------------

    def _default_client(self, url: str) -> Wan2GPClient:
        return Wan2GPClient(url, output_dir=self.output_dir, timeouts=self.timeouts, retries=self.client_retries,
                            max_jobs=self.per_server_limit + 1, api_cache=self.api_cache)

    def _add(self, url: str, limit: int | None) -> _Server | None:
        key = normalise_url(url)
        with self._lock:
            existing = self._servers.get(key)
            if existing is not None and not existing.removed:
                return None
            server = _Server(key, limit or self.per_server_limit)
            self._servers[key] = server
            return server

    def _watch(self, servers: list[_Server]) -> None:
        """Check these servers once, in parallel, then monitor them in the background."""
        for server in servers:
            server.monitor = HealthMonitor(server.url, period=self.health_period, timeout=self.health_timeout,
                                           on_event=self._on_health, api_cache=self.api_cache,
                                           check=self._health_check)
        if len(servers) > 1:
            with ThreadPoolExecutor(len(servers), thread_name_prefix="pool-check") as pool:
                list(pool.map(lambda s: s.monitor.check_now(), servers))
        elif servers:
            assert servers[0].monitor is not None
            servers[0].monitor.check_now()
        for server in servers:
            assert server.monitor is not None
            server.monitor.start()

    def _on_health(self, event: HealthEvent) -> None:
        report = event.report
        lost: list[tuple[PoolJob, _Attempt]] = []
        with self._lock:
            server = self._servers.get(normalise_url(event.url))
            if server is None or server.removed:
                return
            if event.kind is HealthEventKind.DOWN:
                self._mark_down(server, report.error or "unreachable")
            elif event.kind in (HealthEventKind.UP, HealthEventKind.RESTARTED):
                lost = self._mark_up(server, report)
            if report.reachable and report.checked_at > server.released_at:
                server.external_busy = bool(report.busy) and not server.running  # while ours run: can't tell
            self._wake.notify_all()
        for job, attempt in lost:
            self._lose(job, attempt, f"{server.url} restarted")

    def _mark_down(self, server: _Server, reason: str) -> None:
        if server.state != "down":
            log.warning("WanGP server %s is down: %s", server.url, reason)
            server.down_since = time.monotonic()
        server.state, server.last_error = "down", reason
        for job in self._take_queue(server):
            self._assign(job)

    def _mark_up(self, server: _Server, report: HealthReport) -> list[tuple[PoolJob, _Attempt]]:
        """The server answers (again). Returns the running jobs it lost (a new server process)."""
        if not report.is_wangp and report.kind is not None:
            server.state, server.last_error = "unsupported", f"not a WanGP web UI ({report.kind})"
            for job in self._take_queue(server):
                self._assign(job)
            return []
        restarted = bool(server.app_id and report.app_id and server.app_id != report.app_id)
        if server.state != "up":
            log.info("WanGP server %s is up (WanGP %s)", server.url, report.wangp_version)
        server.state, server.down_since, server.last_error = "up", None, None
        server.version = report.wangp_version or server.version
        server.app_id = report.app_id or server.app_id
        lost: list[tuple[PoolJob, _Attempt]] = []
        if restarted:
            lost = [(j, j._attempt) for j in server.running.values() if j._attempt is not None]
            server.model, server.models = None, None
            old, server.client = server.client, None  # the next job connects again (warm API cache)
            self.model_lists.invalidate(server.url)
            if old is not None:
                threading.Thread(target=old.disconnect, kwargs={"cancel_jobs": True}, daemon=True).start()
        return lost

    def _server_lost(self, server: _Server, attempt: _Attempt, *, confirm: int = 0) -> tuple[bool, str]:
        """After a job failed oddly: is its server gone (down, or a new process)? Checks now, and ``confirm``
        more times ``_CONFIRM_PAUSE`` apart while it still looks fine (a stopping server answers errors for a
        moment before it stops answering at all)."""
        monitor = server.monitor
        if monitor is None:
            return False, ""
        for check in range(confirm + 1):
            if check:
                time.sleep(_CONFIRM_PAUSE)
            try:
                report = monitor.check_now()[server.url]  # fires DOWN/RESTARTED events as it finds them
            except Exception:  # noqa: BLE001 - a failed check is no verdict
                log.exception("health check of %s failed", server.url)
                return False, ""
            if not report.reachable:
                return True, f"{server.url} is down ({report.error or 'unreachable'})"
            if attempt.app_id and report.app_id and report.app_id != attempt.app_id:
                return True, f"{server.url} restarted"
        return False, ""

    # --- inside: scheduling ---------------------------------------------------------------------------------------

    def _usable(self) -> list[_Server]:
        return [s for s in self._servers.values() if s.state == "up" and not s.removed]

    def _tail_model(self, server: _Server) -> str | None:
        """The model the server will have loaded when its queue is done."""
        if server.queue:
            return server.queue[-1].settings.model
        running = list(server.running.values())
        return running[-1].settings.model if running else server.model

    def _lacks(self, server: _Server, model: str) -> bool:
        """True when the server's model list leaves ``model`` out while another usable server lists it.

        Model lists are a preference, not a rule: a model no list names (a user's finetune) goes anywhere.
        """
        if server.models is None or model in server.models:
            return False
        return any(s.models is not None and model in s.models for s in self._usable())

    def _assign(self, job: PoolJob) -> None:
        """Put an undispatched job in the queue of the server that can start it soonest (lock held)."""
        if job.done() or job._cancel_requested:
            return
        if job._pinned is not None:
            server = self._servers.get(job._pinned)
            if server is not None and server.state == "up" and not server.removed:
                server.queue.appendleft(job)
                job._quiet_note(f"queued on {server.url}")
                return
            if server is None or server.removed or server.state == "unsupported":
                job._pinned, job._resume = None, None  # nowhere to re-attach: a fresh run
            else:
                self._waiting.append(job)  # wait for its server to come back (or to be given up)
                job._quiet_note(f"waiting for {server.url}")
                return
        model = job.settings.model
        candidates = [s for s in self._usable() if not self._lacks(s, model)]
        if not candidates:
            self._waiting.append(job)
            job._quiet_note("waiting for a server")
            return

        def cost(s: _Server) -> tuple[float, int, float]:
            wait = max(0, s.load - s.limit + 1)  # jobs that must end before this one can start there
            switch = 0.0 if self._tail_model(s) == model else self.model_switch_cost
            return (wait + switch, s.load, s.last_start)

        best = min(candidates, key=cost)
        best.queue.append(job)
        job._quiet_note(f"queued on {best.url}")

    def _take_queue(self, server: _Server) -> list[PoolJob]:
        jobs = list(server.queue)
        server.queue.clear()
        return jobs

    def _next_for(self, server: _Server) -> PoolJob | None:
        """The job a free slot of ``server`` should start: its own queue first, then waiting or queued work
        from the others (the same model preferred, then the oldest). A server busy for someone else takes
        nothing from the others' queues: their jobs would only wait behind that work."""
        if server.queue:
            return server.queue.popleft()
        pools: list[deque[PoolJob]] = [self._waiting]
        if not server.external_busy:
            pools += [s.queue for s in self._servers.values() if s is not server]
        best: tuple[tuple[int, int], deque[PoolJob], PoolJob] | None = None
        for queue in pools:
            for job in queue:
                if job._pinned is not None and job._pinned != server.url:
                    continue
                if self._lacks(server, job.settings.model):
                    continue
                rank = (0 if job.settings.model == (server.model or job.settings.model) else 1, job._seq)
                if best is None or rank < best[0]:
                    best = (rank, queue, job)
        if best is None:
            return None
        best[1].remove(best[2])
        return best[2]

    def _plan(self) -> list[tuple[_Server, PoolJob, _Attempt]]:
        """Dispatch what can start now (lock held)."""
        starts = []
        now = time.monotonic()
        for server in sorted(self._usable(), key=lambda s: (len(s.running) + s.external_busy, s.last_start)):
            while len(server.running) < server.limit:
                job = self._next_for(server)
                if job is None:
                    break
                if job.done() or job._cancel_requested:
                    continue
                attempt = _Attempt(len(job.history) + 1, server, server.app_id, resume=job._resume, heard_at=now)
                job._attempt, job.server = attempt, server.url
                job.history.append({"server": server.url, "started_at": time.time(), "outcome": None})
                server.running[job.id] = job
                server.model = job.settings.model
                server.last_start = now
                starts.append((server, job, attempt))
        return starts

    def _expire(self) -> list[tuple[PoolJob, _Attempt | None, str]]:
        """Jobs to give up now (lock held): running on a server down too long; waiting with no server up."""
        now = time.monotonic()
        expired: list[tuple[PoolJob, _Attempt | None, str]] = []
        for server in self._servers.values():
            if server.state == "down" and server.down_since is not None and now - server.down_since > self.lost_after:
                for job in list(server.running.values()):
                    attempt = job._attempt
                    # A job whose own stream brought progress within the patience is not given up on the health
                    # checks alone: a loaded server may miss a check's deadline while it generates.
                    if attempt is not None and not attempt.abandoned and now - attempt.heard_at > self.lost_after:
                        expired.append((job, attempt, f"{server.url} has been down for "
                                                          f"{now - server.down_since:.0f} s"))
        for job in [j for j in self._waiting if j._pinned is not None]:
            pinned = self._servers.get(job._pinned or "")
            gone = pinned is None or pinned.removed or pinned.state == "unsupported" or (
                pinned.state == "down" and pinned.down_since is not None and now - pinned.down_since > self.lost_after)
            if gone:
                self._waiting.remove(job)
                job._pinned, job._resume = None, None  # its task is out of reach: run it afresh elsewhere
                self._assign(job)
        if self._usable():
            self._none_up_since = None
        elif self._none_up_since is None:
            self._none_up_since = now
        if (self.wait_for_server is not None and self._none_up_since is not None
                and now - self._none_up_since > self.wait_for_server):
            for job in list(self._waiting):
                self._waiting.remove(job)
                expired.append((job, None, f"no WanGP server of the pool has been up for {self.wait_for_server:.0f} s"))
        return expired

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                starts = self._plan()
                expired = self._expire()
                if not starts and not expired:
                    self._wake.wait(_TICK)
                    continue
            for server, job, attempt in starts:
                assert self._starter is not None
                try:
                    self._starter.submit(self._start, server, job, attempt)
                except RuntimeError:  # shut down: the pool is closing
                    return
            for job, lost_attempt, reason in expired:
                if lost_attempt is not None:
                    self._lose(job, lost_attempt, reason)
                else:
                    job._finish(error=Wan2GPConnectionError(
                        f"pool job {job.id}: {reason}", job_id=job.id,
                        hint="start a WanGP server, or add one to the pool, then submit the shot again"))
                    self._forget_later(job)

    # --- inside: running a job --------------------------------------------------------------------------------------

    def _client_for(self, server: _Server) -> Wan2GPClient:
        with self._lock:
            client = server.client
            if client is None:
                client = server.client = self._factory(server.url)
        client.connect()
        if server.models is None:
            try:
                server.models = frozenset(m.model_type for m in self.model_lists.get(client))
            except Wan2GPError as exc:
                log.info("no model list from %s: %s", server.url, exc)
        return client

    def _start(self, server: _Server, job: PoolJob, attempt: _Attempt) -> None:
        """Send a dispatched job to its server (on a starter thread: connecting may take a while)."""
        job._note(f"starting on {server.url}", JobStatus.UPLOADING)
        try:
            client = self._client_for(server)
            if attempt.resume is not None:
                inner = client.resume_job(attempt.resume, output_dir=job._folder)
            else:
                inner = client.submit(job.settings, output_dir=job._folder)
        except Wan2GPValidationError as exc:
            self._release(server, job, attempt, outcome="invalid")
            job._finish(error=exc)
            self._forget_later(job)
            return
        except Exception as exc:  # noqa: BLE001 - nothing reached the server's queue: the job may move
            error = translate(exc, server=server.url, job_id=job.id, what="sending the job")
            lost, reason = (False, "") if isinstance(error, UnsupportedServerError) else self._server_lost(server,
                                                                                                          attempt)
            with self._lock:
                if isinstance(error, UnsupportedServerError):
                    server.state, server.last_error = "unsupported", str(error)
                    for queued in self._take_queue(server):
                        self._assign(queued)
                elif not lost:
                    server.last_error = str(error)
            job._start_failures += 1
            retry = isinstance(error, Wan2GPConnectionError) and job._start_failures < _START_ATTEMPTS
            if not lost and not retry and not isinstance(error, UnsupportedServerError):
                self._release(server, job, attempt, outcome=f"failed: {error}")
                job._finish(error=error)
                self._forget_later(job)
                return
            log.info("pool job %s could not start on %s (%s); it moves on", job.id, server.url, reason or error)
            self._requeue(server, job, attempt, outcome=f"not started: {reason or error}")
            return
        with self._lock:
            attempt.job = inner
            stop = attempt.abandoned or job._cancel_requested
        if stop:
            inner.cancel()
        inner.add_progress_callback(lambda _j, p: self._on_progress(job, attempt, p))
        inner.add_done_callback(lambda j: self._on_done(job, attempt, j))

    def _on_progress(self, job: PoolJob, attempt: _Attempt, progress: JobProgress) -> None:
        attempt.heard_at = time.monotonic()
        if job._attempt is attempt and not attempt.abandoned and not progress.status.finished:
            job._set_progress(progress.model_copy(update={"server": attempt.server.url}))

    def _on_done(self, job: PoolJob, attempt: _Attempt, inner: Wan2GPJob) -> None:
        """A job's run on a server ended (on the run's worker thread)."""
        if attempt.abandoned or job._attempt is not attempt:
            return
        server = attempt.server
        error = inner.exception()
        if error is None:
            result = inner.result(0)
            self._release(server, job, attempt, outcome="completed")
            if self.result_cache is not None:
                self.result_cache.store(result, job.settings)
            job._finish(result=result)
            self._forget_later(job)
            return
        if isinstance(error, JobCancelledError) and job._cancel_requested:
            self._release(server, job, attempt, outcome="cancelled")
            job._finish(error=error)
            self._forget_later(job)
            return
        if attempt.resume is not None and isinstance(error, JobLostError):
            log.info("pool job %s: its task is gone from %s; running it again", job.id, server.url)
            with self._lock:
                job._pinned, job._resume = None, None
            self._requeue(server, job, attempt, outcome=f"lost: {error}")
            return
        if not isinstance(error, Wan2GPValidationError | JobCancelledError):
            lost, reason = self._server_lost(server, attempt, confirm=2)
            if lost:
                self._lose(job, attempt, f"{reason}: {error}")
                return
            if not isinstance(error, JobFailedError) and not inner.state.processing_started:
                job._start_failures += 1  # nothing was generated: the job may move on, a bounded number of times
                if job._start_failures < _START_ATTEMPTS:
                    log.info("pool job %s did not start on %s (%s); it moves on", job.id, server.url, error)
                    self._requeue(server, job, attempt, outcome=f"not started: {error}")
                    return
        with self._lock:
            server.last_error = str(error)
        self._release(server, job, attempt, outcome=f"failed: {error}", failed=True)
        job._finish(error=error)
        self._forget_later(job)

    def _lose(self, job: PoolJob, attempt: _Attempt, reason: str) -> None:
        """The job's server is gone: run the job elsewhere if it may, else fail it with the reason."""
        with self._lock:
            if attempt.abandoned or job._attempt is not attempt or job.done():
                return
            attempt.abandoned = True
            inner = attempt.job
            reached = inner is not None and inner.state.task_queued
            server = attempt.server
            server.running.pop(job.id, None)
            job._attempt = None
            job._pinned, job._resume = None, None
            job.history[-1]["outcome"] = f"lost: {reason}"
            again = not job._cancel_requested and (not reached or job._retries_used < job.retries)
            if again:
                if reached:
                    job._retries_used += 1
                    server.failed += 1
                self._assign(job)
            else:
                server.failed += 1
            self._wake.notify_all()
        if inner is not None and not inner.done():
            inner.cancel()  # sets a flag: the run's thread stops what it can and ends
        if again:
            log.warning("pool job %s: %s; running it elsewhere", job.id, reason)
            return
        if job._cancel_requested:
            error: Wan2GPError = JobCancelledError(f"pool job {job.id} was cancelled", job_id=job.id)
        else:
            error = JobLostError(
                f"pool job {job.id} was lost: {reason}", reason=reason, server=server.url, job_id=job.id,
                hint="its shot was not finished; submit it again, or submit with retries=1 to let the pool do it")
        job._finish(error=error)
        self._forget_later(job)

    def _release(self, server: _Server, job: PoolJob, attempt: _Attempt, *, outcome: str,
                 failed: bool = False) -> None:
        with self._lock:
            if server.running.get(job.id) is job:
                del server.running[job.id]
            if job._attempt is attempt:
                job._attempt = None
            if job.history:
                job.history[-1]["outcome"] = outcome
            if outcome == "completed":
                server.completed += 1
            elif failed:
                server.failed += 1
            if not server.running:  # a "busy" seen so far may have been our own work: wait for a new check
                server.external_busy, server.released_at = False, time.time()
            close = server.removed and not server.running
            self._wake.notify_all()
        if close and server.client is not None:
            threading.Thread(target=server.client.disconnect, daemon=True).start()

    def _requeue(self, server: _Server, job: PoolJob, attempt: _Attempt, *, outcome: str) -> None:
        with self._lock:
            if server.running.get(job.id) is job:
                del server.running[job.id]
            attempt.abandoned = True
            job._attempt = None
            if job.history:
                job.history[-1]["outcome"] = outcome
            if job._cancel_requested:
                cancelled = True
            else:
                cancelled = False
                self._assign(job)
            self._wake.notify_all()
        if cancelled:
            job._finish(error=JobCancelledError(f"pool job {job.id} was cancelled", job_id=job.id))
            self._forget_later(job)

    def _cancel(self, job: PoolJob) -> bool:
        with self._lock:
            if job.done():
                return False
            job._cancel_requested = True
            queued = False
            for queue in [self._waiting] + [s.queue for s in self._servers.values()]:
                if job in queue:
                    queue.remove(job)
                    queued = True
            attempt = job._attempt
            inner = attempt.job if attempt is not None else None
            self._wake.notify_all()
        if queued or attempt is None:
            job._finish(error=JobCancelledError(f"pool job {job.id} was cancelled", job_id=job.id))
            self._forget_later(job)
        elif inner is not None:
            inner.cancel()
        # else: still starting; _start cancels the run as soon as it exists
        return True

    def _forget_later(self, job: PoolJob) -> None:
        """Finished jobs are dropped from :meth:`jobs` (the caller keeps its own reference)."""
        with self._lock:
            self._jobs.pop(job.id, None)

    def _cache_lookup(self, job: PoolJob, *, first: str | None = None) -> GenerationResult | None:
        cache = self.result_cache
        if cache is None or job.settings.seed == -1:
            return None
        with self._lock:
            known = [s.version for s in self._servers.values()
                     if s.version and not s.removed and s.state != "unsupported"]
        versions = list(dict.fromkeys(([first] if first else []) + known))
        for version in versions:
            hit = cache.lookup(job.settings, version, output_dir=job._folder, job_id=job.id)
            if hit is not None:
                return hit
        return None
