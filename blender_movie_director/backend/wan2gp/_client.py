"""Wan2GPClient: the facade over one WanGP server (its web UI, v6.31 to 12.x).

The client holds the settings, the book of its jobs (``_book.JobBook``: listing, start order, the register) and
one transport (the web UI's: ``_webui.transport.WebUiTransport``); each job it submits gets that transport's
runner. Nothing here speaks WanGP's protocol.

Example::

    from blender_movie_director.backend.wan2gp import Wan2GPClient, GenerationSettings

    with Wan2GPClient("http://127.0.0.1:7860", output_dir="shots") as client:
        job = client.submit(GenerationSettings(prompt="a red fox running through snow", frames=33, steps=8))
        job.add_progress_callback(lambda job, p: print(f"{p.status.value} {p.fraction:.0%} {p.phase}"))
        print(job.result().video_path)
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._urls import is_mcp_url
from ._book import JobBook
from ._config import ClientSettings, Retries, Timeouts, first_warning, security_warnings
from ._enums import HIGH_QUALITY_MODEL, QUICK_MODEL, ModelCategory
from ._errors import (
    JobLostError,
    Wan2GPError,
    Wan2GPValidationError,
    did_you_mean,
    redact,
    translate,
)
from ._files import sweep_partial_files
from ._jobs import JobRecord, Wan2GPJob
from ._register import JobRegister
from ._schemas import GenerationResult, GenerationSettings, ModelInfo, QueueItem, ServerStatus
from ._transport import Transport
from ._webui.transport import WebUiTransport

if TYPE_CHECKING:
    from ._cache import ApiCache
    from ._webui.endpoints import ServerApi

log = logging.getLogger(__name__)


class Wan2GPClient:
    """A client of one WanGP server, through its web UI or its MCP server. Thread-safe; jobs run on its own
    worker threads.

    Parameters:
        server_address: the WanGP web UI's URL (default ``WAN2GP_URL``, then ``http://127.0.0.1:7860``), or its MCP
            server's endpoint (``http://127.0.0.1:7866/mcp``, from ``wgp.py --mcp``).
        timeouts: bounded waits (:class:`Timeouts`); every wait has one.
        retries: retries of idempotent steps (connect, downloads); a generation is never resubmitted.
        output_dir: where finished shots are saved (default ``WAN2GP_OUTPUT_DIR``, then ``~/MovieDirector/shots``).
        auth: ``(user, password)`` when WanGP runs with gradio auth.
        max_jobs: how many jobs run their chain at once; more wait on our side.
        transport: ``"webui"`` or ``"mcp"``; by default ``"mcp"`` for a URL whose path ends in ``/mcp``. The MCP
            server's bearer token (``--mcp-auth``) is ``settings.token`` (``WAN2GP_TOKEN``).
        api_cache: an :class:`ApiCache` shared across programs: a reconnect to a known web UI then skips what it
            already told. The web UI's only: over MCP, ``tools/list`` is the description, and the cache is unused.

    Nothing happens on construction; :meth:`connect` (or the first call that needs the server) connects.
    """

    def __init__(
        self,
        server_address: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        retries: Retries | None = None,
        output_dir: str | Path | None = None,
        auth: tuple[str, str] | None = None,
        max_jobs: int | None = None,
        settings: ClientSettings | None = None,
        transport: str | Transport | None = None,
        api_cache: ApiCache | None = None,
    ) -> None:
        given: dict[str, Any] = {
            "url": server_address, "timeouts": timeouts, "retries": retries, "output_dir": output_dir,
            "max_jobs": max_jobs,
        }
        if auth is not None:
            given["username"], given["password"] = auth
        if settings is None:
            from pydantic import ValidationError

            try:
                settings = ClientSettings(**{k: v for k, v in given.items() if v is not None})
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first.get("loc", ())) or None
                message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
                raise Wan2GPValidationError(redact(f"{field}: {message}" if field else message),
                                            field=field) from None
        self.settings = settings
        self.server_address = redact(settings.url.rstrip("/"))
        # Shown by the CLI and Blender, and logged once on connect: a non-loopback http:// server, auth in clear.
        self.security_warnings: list[str] = security_warnings(
            settings.url, has_auth=bool((settings.username and settings.password) or settings.token))
        self._secrets = [secret.get_secret_value() for secret in (settings.password, settings.token) if secret]
        self._lock = threading.RLock()  # guards the connection
        # This user's shots across processes (_register.py): what a dead program left behind is healed from it.
        register = JobRegister(settings.state_dir) if settings.register_jobs else None
        self._book = JobBook(register, turn_timeout=settings.timeouts.call)
        if transport is None:
            transport = "mcp" if is_mcp_url(settings.url) else "webui"
        if transport == "webui":
            self._transport: Transport = WebUiTransport(settings, self.server_address, self._book, self._secrets)
        elif transport == "mcp":
            from ._mcp.transport import McpTransport

            self._transport = McpTransport(settings, self.server_address, self._book, self._secrets)
        elif isinstance(transport, str):
            raise Wan2GPValidationError(f"unknown transport {transport!r}; this client speaks webui (WanGP's web "
                                        "UI) and mcp (its MCP server, wgp.py --mcp)", field="transport")
        else:
            self._transport = transport
        if api_cache is not None and isinstance(self._transport, WebUiTransport):
            self._transport.api_cache = api_cache
        self._pool: ThreadPoolExecutor | None = None

    @property
    def register(self) -> JobRegister | None:
        """This user's register of jobs (shared with their other programs), or None when it is off."""
        return self._book.register

    @property
    def transport(self) -> str:
        """How this client talks to WanGP: ``"webui"`` (its Gradio web UI) or ``"mcp"`` (its MCP server)."""
        return self._transport.name

    @property
    def api_cache(self) -> ApiCache | None:
        """An ApiCache (_cache.py), set before connect(): a reconnect then skips what the server already told."""
        return getattr(self._transport, "api_cache", None)

    @api_cache.setter
    def api_cache(self, cache: ApiCache | None) -> None:
        self._web().api_cache = cache

    @property
    def poll_interval(self) -> float:
        """Seconds between two polls: of the gallery while re-attached to an interrupted run (web UI, 0.5 s),
        of a job's snapshot (MCP, 1 s: its server sends no notifications)."""
        return self._transport.poll_interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        if not seconds > 0:
            raise Wan2GPValidationError(f"poll_interval must be a positive number of seconds, not {seconds!r}",
                                        field="poll_interval")
        self._transport.poll_interval = seconds

    def _web(self) -> WebUiTransport:
        """The web UI's transport, for what only the web UI has (its endpoints, its API cache)."""
        if not isinstance(self._transport, WebUiTransport):
            raise Wan2GPValidationError(f"{self.server_address} is reached over {self._transport.name}, which has "
                                        "no Gradio endpoints", field="transport")
        return self._transport

    # --- connection -----------------------------------------------------------------------------------

    def connect(self) -> bool:
        """Connect: read the server's ``/config`` and resolve WanGP's chain (the API description, which only
        adds parameter names, is read in the background).

        Returns True when connected. Raises :class:`Wan2GPConnectionError` (unreachable, after retries),
        :class:`UnsupportedServerError` (not WanGP, or its chain can't be resolved).
        """
        with self._lock:
            if self._transport.connected and self._pool is not None:
                return True
            for warning in self.security_warnings:
                if first_warning(self.server_address, warning):
                    log.warning("WanGP at %s: %s", self.server_address, warning)
            self._transport.open()
            _hook_exit(self)
            self._pool = ThreadPoolExecutor(self.settings.max_jobs, thread_name_prefix="wan2gp-job")
            sweep_partial_files(Path(self.settings.output_dir))
            return True

    def _let_go(self) -> None:
        """The program is exiting without having closed this client: detach its unfinished jobs (they go on on
        the server; the register keeps them for ``movie-director collect``) and end its streams, so that nothing
        of ours holds the exit."""
        for job in self._book.unfinished():
            job.detach()
        self._transport.let_go()

    def disconnect(self, *, cancel_jobs: bool = True) -> None:
        """Close the connection. Unfinished jobs are cancelled on the server first (nothing is orphaned).

        A job that could not be stopped when it was cancelled (the server was frozen or unreachable) is still
        being stopped in the background: that is waited for too, up to ``timeouts.reconnect``, so that closing
        the client doesn't leave it running on the GPU.
        """
        jobs = self._book.unfinished()
        if cancel_jobs:
            for job in jobs:
                job.cancel()
        timeouts = self.settings.timeouts
        deadline = time.monotonic() + timeouts.call
        for job in jobs:
            job._done.wait(max(0.0, deadline - time.monotonic()))
        self._transport.wait_for_stoppers(timeouts.reconnect)
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._transport.close()

    close = disconnect

    def __enter__(self) -> Wan2GPClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    @property
    def connected(self) -> bool:
        return self._transport.connected

    def identity(self) -> tuple[str, str | None, str | None] | None:
        """(app id, WanGP version, Gradio version) of the server process this client connected to, or None
        when not connected. What a health check needs to know about a server it already asked for its app id."""
        return self._transport.identity()

    def _ensure_connected(self) -> None:
        if not self.connected:
            self.connect()

    def _require_api(self) -> ServerApi:
        """The web UI's resolved API (connecting first if needed)."""
        web = self._web()
        self._ensure_connected()
        return web.require_api()

    # --- generic endpoint access -----------------------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Every named endpoint of the server with its parameters (names, types, defaults) and returns."""
        self._require_api()
        return self._web().endpoints

    def call(self, endpoint: str, **params: Any) -> Any:
        """Call any named endpoint, checked against the server's own API description before sending.

        Runs on the client's own session (not a job's). Example: ``client.call("/refresh_gallery")``.
        """
        self._require_api()
        return self._web().call(endpoint, **params)

    # --- models -----------------------------------------------------------------------------------------

    def get_model_info(self, model: str) -> ModelInfo:
        """A model's rules from the server's form: fps, frame rule, resolutions, defaults."""
        self._ensure_connected()
        return self._transport.model_info(str(model))

    def list_models(self, *, family: str | None = None, category: ModelCategory | str | None = None) -> list[ModelInfo]:
        """Every model of the connected server, with catalog metadata; filter by family or category.

        The list is the server's own (its configuration tab's list of every model, read from ``/config``), so it
        holds every model the server can run whatever group its model dropdown shows. The catalog adds names,
        families and inputs for the models it knows.
        """
        self._ensure_connected()
        return self._transport.list_models(family=family, category=category)

    # --- jobs -------------------------------------------------------------------------------------------

    def submit(self, settings: GenerationSettings | dict[str, Any] | None = None, /, *,
               output_dir: str | Path | None = None, **kwargs: Any) -> Wan2GPJob:
        """Start a generation and return its job at once; the chain runs on a worker thread.

        ``settings`` may be a :class:`GenerationSettings`, a dict of them, or keyword arguments. ``output_dir``:
        where this job's files are saved (default: the client's ``output_dir``); its record keeps it, so that a
        resumed job saves there too.
        Raises :class:`Wan2GPValidationError` at once for settings that can't be right.
        """
        settings = _as_settings(settings, kwargs)
        self._ensure_connected()
        self._transport.check_settings(settings)
        job = self._new_job(settings, output_dir)
        self._track(job)
        return job

    def _new_job(self, settings: GenerationSettings, output_dir: str | Path | None) -> Wan2GPJob:
        folder = Path(output_dir).expanduser() if output_dir is not None else Path(self.settings.output_dir)
        job = Wan2GPJob(settings, book=self._book, server=self.server_address, output_dir=folder,
                        transport=self._transport.name, secrets=self._secrets)
        job.runner = self._transport.new_run(job)
        return job

    def _track(self, job: Wan2GPJob) -> None:
        """Run the job on the pool; keep it listed while unfinished, and the last finished ones."""
        self._book.add(job, in_order=not job.state.resume)
        pool = self._pool
        assert pool is not None
        pool.submit(job.run)

    def generate(self, settings: GenerationSettings | dict[str, Any] | None = None, /, *,
                 timeout: float | None = None, output_dir: str | Path | None = None,
                 **kwargs: Any) -> GenerationResult:
        """Generate and wait: ``submit(...).result()``. On timeout the job is cancelled on the server."""
        job = self.submit(settings, output_dir=output_dir, **kwargs)
        try:
            return job.result(timeout=timeout if timeout is not None else self.settings.timeouts.job + 60)
        except Wan2GPError:
            if not job.done():
                job.cancel()
            raise
        except BaseException:  # Ctrl-C while waiting: don't leave the GPU working for nobody
            job.cancel()
            raise

    def generate_quick(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """A fast preview: Wan 2.1 1.3B, 2 s (33 frames), 10 steps, unless overridden."""
        kwargs.setdefault("model", QUICK_MODEL)
        if "video_length" not in kwargs and "frames" not in kwargs and "seconds" not in kwargs:
            kwargs["frames"] = 33
        kwargs.setdefault("steps", 10)
        return self.generate(prompt=prompt, **kwargs)

    def generate_high_quality(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """The 14B Wan 2.1 model with its own default steps, frames and resolution, unless overridden."""
        kwargs.setdefault("model", HIGH_QUALITY_MODEL)
        return self.generate(prompt=prompt, **kwargs)

    def resume_job(self, record: dict[str, Any] | JobRecord, *, output_dir: str | Path | None = None) -> Wan2GPJob:
        """Track again a job saved with :meth:`Wan2GPJob.to_record` (after a restart of this program).

        The job re-attaches to its own session on the server: a finished output is fetched; a task still in
        the session's queue is run and followed; a job the server no longer has fails with
        :class:`JobLostError`. A job that never reached the server's queue is submitted again only if it was never
        sent. A record that is not one raises :class:`Wan2GPValidationError`.
        Its files are saved in ``output_dir`` if given, else in the folder its record names (the one it was
        started with), else (a record of an older version) in the client's.
        """
        saved = JobRecord.load(record)
        if saved.transport != self._transport.name:
            raise Wan2GPValidationError(
                f"job {saved.job_id} was made over WanGP's {saved.transport} transport; this client speaks "
                f"{self._transport.name}", field="record", hint="resume it with a client of the server it ran on")
        job = self._new_job(GenerationSettings(**saved.settings), output_dir or saved.output_dir)
        job.id = saved.job_id
        job.client_id = saved.client_id or job.client_id
        job.submitted_at = saved.submitted_at or job.submitted_at
        state = job.state
        if saved.reattachable and saved.sent_settings:
            state.resume = True
            state.session_hash, state.remote_job_id = saved.session_hash, saved.remote_job_id
            state.sent = GenerationSettings(**saved.sent_settings)
            state.task_queued = True
            state.processing_started = saved.processing_started
            state.app_id = saved.app_id
        elif saved.status != "queued":
            job._finish(error=JobLostError(
                f"lost: job {job.id} was interrupted before WanGP queued it", job_id=job.id,
                reason="interrupted before it was queued", server=self.server_address, hint="submit the shot again"))
            return job
        self._ensure_connected()
        if state.resume:  # this program follows it now: no other program's heal may take its session
            self._book.note(job, "running" if state.processing_started else "sent")
        self._track(job)
        return job

    def stop_job(self, record: dict[str, Any] | JobRecord) -> bool:
        """Stop a job from its record (``to_record()``, or the register's), whichever program started it: WanGP's
        abort and clear-queue in the job's own session. False when the server no longer has that session's
        process (it restarted); the job is then gone anyway."""
        self._ensure_connected()
        return self._transport.stop_job(JobRecord.load(record))

    def jobs(self) -> list[Wan2GPJob]:
        return self._book.jobs()

    def get_queue_status(self) -> list[QueueItem]:
        """This client's unfinished jobs, in order, with what the server says of each (position, progress)."""
        items = []
        waiting = 0
        for job in sorted(self.jobs(), key=lambda j: j.submitted_at):
            if job.done():
                continue
            p = job.progress
            position = p.queue_position
            if p.status.value == "queued" and position is None and not job.state.task_queued:
                position = waiting
                waiting += 1
            items.append(QueueItem(job_id=job.id, client_id=job.client_id, prompt=job.settings.prompt,
                                   model=job.settings.model, status=p.status, position=position,
                                   progress=p.fraction))
        return items

    def abort_generation(self) -> int:
        """Stop this client's running generations on the server. Returns how many were stopped."""
        running = [j for j in self.jobs() if j.status().value in ("running", "uploading", "downloading")]
        for job in running:
            job.cancel()
        return len(running)

    def clear_queue(self) -> int:
        """Cancel all of this client's unfinished jobs, queued and running. Returns how many."""
        pending = [j for j in self.jobs() if not j.done()]
        for job in pending:
            job.cancel()
        return len(pending)

    # --- status -------------------------------------------------------------------------------------------

    def get_server_status(self) -> ServerStatus:
        """Reachability, latency, versions, this client's queue and the admin session's model. Never raises."""
        status = ServerStatus(url=self.server_address, reachable=False)
        started = time.perf_counter()
        try:
            self._transport.ping()
            status.latency_ms = (time.perf_counter() - started) * 1000
            self._ensure_connected()
        except Exception as exc:  # noqa: BLE001 - status reports, it does not raise
            status.error = str(translate(exc, server=self.server_address, what="the status check"))
            return status
        jobs = [j for j in self.jobs() if not j.done()]
        status.reachable = True
        self._transport.fill_status(status)
        status.queue_length = len(jobs)
        # Our own running job makes it busy; otherwise it can't be known (another session may be generating).
        status.busy = True if any(j.status().value == "running" for j in jobs) else None
        running = [j for j in jobs if j.status().value == "running"]
        # the model of our shot on the GPU, else of the shot we sent last (its session is being set to it), else
        # of the last form read
        status.current_model = (running[0].settings.model if running else jobs[-1].settings.model if jobs
                                else self._transport.last_form_model())
        return status


_connected: weakref.WeakSet[Wan2GPClient] = weakref.WeakSet()  # clients a program may exit without closing
_exit_hooked = False


def _hook_exit(client: Wan2GPClient) -> None:
    """At exit, let go of every client still open (see ``Wan2GPClient._let_go``).

    Python joins the worker threads of every thread pool when it exits, before ``atexit`` functions run; a job
    still following the server, or an event stream waiting for its next byte, would hold the exit for minutes.
    ``threading._register_atexit`` runs before those joins (concurrent.futures uses it for them; it calls the
    last registered first, and ours is registered after concurrent.futures is imported). Plain ``atexit`` where
    that private hook is missing.
    """
    global _exit_hooked
    _connected.add(client)
    if _exit_hooked:
        return
    _exit_hooked = True

    def let_go_all() -> None:
        for open_client in list(_connected):
            try:
                open_client._let_go()
            except Exception:  # noqa: BLE001 - exiting: nothing may stop the others
                log.debug("letting go of %s at exit", open_client.server_address, exc_info=True)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(let_go_all)
        else:
            import atexit

            atexit.register(let_go_all)
    except RuntimeError:  # already shutting down
        pass


def _as_settings(settings: GenerationSettings | dict[str, Any] | None, kwargs: dict[str, Any]) -> GenerationSettings:
    from pydantic import ValidationError

    if isinstance(settings, GenerationSettings):
        return settings.model_copy(update=kwargs) if kwargs else settings
    data = dict(settings or {})
    data.update(kwargs)
    try:
        return GenerationSettings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""  # the setting as the caller named it
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        where = f"{field}: " if field and not message.startswith(field) else ""
        if first.get("type") == "extra_forbidden":
            names = list(GenerationSettings.model_fields) + _ALIASES
            message = f"unknown setting{did_you_mean(field, names)}; put WanGP-only settings in extra={{...}}"
        raise Wan2GPValidationError(f"{where}{message}", field=field or None) from None


_ALIASES = ["frames", "steps", "guidance", "negative", "loras", "model_type"]

_shared: dict[str, Wan2GPClient] = {}
_shared_lock = threading.Lock()


def get_wan2gp_client(server_address: str | None = None) -> Wan2GPClient:
    """A shared client per server address (thread-safe); connects on first use."""
    key = server_address or ClientSettings().url
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = Wan2GPClient(server_address)
        return client


def generate_quick_video(prompt: str, **kwargs: Any) -> str:
    """Generate a quick preview shot with the shared client; returns the saved video's path."""
    server = kwargs.pop("server_address", None)
    return str(get_wan2gp_client(server).generate_quick(prompt, **kwargs).video_path)


def generate_high_quality_video(prompt: str, **kwargs: Any) -> str:
    """Generate a high-quality shot with the shared client; returns the saved video's path."""
    server = kwargs.pop("server_address", None)
    return str(get_wan2gp_client(server).generate_high_quality(prompt, **kwargs).video_path)

