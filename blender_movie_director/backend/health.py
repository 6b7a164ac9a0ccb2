"""Health of WanGP servers: one-off checks, and a monitor that checks in the background and reports changes.

A check says whether a server is reachable, how fast it answers, which WanGP (and Gradio) it is, which model
is current and whether it is busy. Without a client the check is a light probe (a few hundred bytes of
``/config`` on the first check and after a restart, then Gradio's tiny ``/gradio_api/app_id`` and
``/gradio_api/queue/status``); with a :class:`~blender_movie_director.backend.wan2gp.Wan2GPClient` it also
reports that client's jobs and model (:meth:`Wan2GPClient.get_server_status`).

What "busy" can mean: WanGP keeps a private queue per Gradio session, so no route tells a stranger that
*another* session is generating. Gradio's own queue does say how many calls are *waiting* server-wide
(``server_waiting``): more than zero means the GPU is taken and someone waits. With a client, its own
running jobs count too. Nothing waiting does not mean idle: one other session may be generating alone. So
``busy`` is True or None (unknown), never False, and the state reads "up" rather than "idle".

The monitor (pure Python, thread-safe, callback-based) is what ``movie-director status --watch`` uses (Blender's
panel asks its server's client instead). Callbacks run on the monitor's thread: GUI code would hand them to its
main thread.

Example::

    from blender_movie_director.backend.health import HealthMonitor

    monitor = HealthMonitor(["http://127.0.0.1:7860"], period=5.0)
    monitor.add_listener(lambda event: print(event.url, event.kind.value))
    monitor.start()
    ...
    monitor.stop()
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx

from ._urls import app_id_url, normalise_url, tls_context
from .discovery import ServiceKind, probe
from .wan2gp._errors import redact
from .wan2gp._webui.fingerprint import gradio_version, is_wangp, startup_model, wangp_version

if TYPE_CHECKING:
    from .wan2gp import Wan2GPClient
    from .wan2gp._cache import ApiCache

__all__ = ["HealthEvent", "HealthEventKind", "HealthMonitor", "HealthReport", "check_health"]

log = logging.getLogger(__name__)

# Loopback answers in milliseconds; a WanGP busy on the GPU may still take a while to answer HTTP, and its 2.6 MB
# /config (read once per server process) takes Gradio 0.16 s to build when idle, over 1 s when loaded.
DEFAULT_TIMEOUT = 5.0
# Checks are cheap (two tiny GETs), so every few seconds is fine; a restart is seen within two periods.
DEFAULT_PERIOD = 5.0
DEFAULT_HISTORY = 60  # checks kept per server: 5 minutes at the default period


@dataclass(frozen=True)
class HealthReport:
    """One health check of one server."""

    url: str
    reachable: bool
    checked_at: float  # time.time()
    latency_ms: float | None = None
    kind: str | None = None  # a discovery ServiceKind value: "wangp", "gradio", "closed", ...
    wangp_version: str | None = None
    gradio_version: str | None = None
    # with a client: the model it last used; without: the model a new web-UI session starts with (WanGP's model as
    # of its start; see fingerprint.startup_model)
    current_model: str | None = None
    busy: bool | None = None  # None: unknown
    queue_length: int | None = None  # the client's unfinished jobs (with a client)
    server_waiting: int | None = None  # calls waiting in Gradio's queue, all sessions
    app_id: str | None = None  # changes when the server process restarts
    error: str | None = None

    @property
    def state(self) -> str:
        """"down", "busy", "idle" (known not busy), or "up" (reachable, busy unknown)."""
        if not self.reachable:
            return "down"
        if self.busy is None:
            return "up"
        return "busy" if self.busy else "idle"

    @property
    def is_wangp(self) -> bool:
        return self.kind in (ServiceKind.WANGP.value, ServiceKind.WANGP_MCP.value)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state
        return data


class HealthEventKind(enum.StrEnum):
    UP = "up"  # reachable again (or for the first time)
    DOWN = "down"  # no longer reachable (or not at the first check)
    BUSY = "busy"
    IDLE = "idle"  # no longer known to be busy
    RESTARTED = "restarted"  # reachable throughout, but a new server process (its app id changed)


@dataclass(frozen=True)
class HealthEvent:
    """A change seen by the monitor."""

    url: str
    kind: HealthEventKind
    report: HealthReport
    previous: HealthReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "event": self.kind.value, "at": self.report.checked_at,
                "report": self.report.to_dict()}


# --- one check -------------------------------------------------------------------------------------------


def check_health(
    url: str,
    *,
    client: Wan2GPClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    previous: HealthReport | None = None,
    api_cache: ApiCache | None = None,
) -> HealthReport:
    """Check one server now. Never raises: an unreachable server is a report with ``reachable=False``.

    Parameters:
        client: a client of that server; adds its jobs, busy state and current model.
        previous: the last report of the same server; when the server is the same process (same app id),
            its version is taken from it instead of reading ``/config`` again.
        api_cache: an API cache where a client recorded this server process: the same, across programs.
    """
    base = normalise_url(url)
    shown = redact(base)
    now = time.time()
    connect = min(timeout, 1.0)
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=connect), trust_env=False,
                          verify=tls_context()) as http:
            response = http.get(app_id_url(base))
            latency = (time.perf_counter() - started) * 1000
            app_id = None
            if response.status_code == 200:
                try:
                    app_id = str(response.json().get("app_id"))
                except ValueError:
                    app_id = None
            waiting = None
            if app_id is not None:
                try:
                    queue = http.get(base + "gradio_api/queue/status")
                    if queue.status_code == 200:
                        waiting = int(queue.json().get("queue_size") or 0)
                except (httpx.HTTPError, ValueError, TypeError):
                    waiting = None
    except httpx.HTTPError as exc:
        return HealthReport(shown, False, now, kind=ServiceKind.CLOSED.value,
                            error=redact(str(exc)) or type(exc).__name__)

    same_process = (previous is not None and previous.reachable and previous.kind is not None and app_id
                    and previous.app_id == app_id)
    model = None
    seen = api_cache.seen(base, app_id) if api_cache is not None and app_id and not same_process else None
    identity = client.identity() if client is not None else None
    if identity is not None and identity[0] == app_id and not same_process:  # the client read /config already
        seen = {"wangp_version": identity[1], "gradio_version": identity[2]}
    if same_process:
        assert previous is not None
        kind, wangp, gradio, error = previous.kind, previous.wangp_version, previous.gradio_version, None
        model = previous.current_model
    elif seen is not None:
        kind, wangp, gradio, error = ServiceKind.WANGP.value, seen["wangp_version"], seen.get("gradio_version"), None
        model = seen.get("startup_model") if client is None else None
    else:
        config = _config(base, timeout) if app_id is not None else None  # a Gradio app: read /config once
        if config is not None and is_wangp(config):
            kind, wangp, gradio, error = ServiceKind.WANGP.value, wangp_version(config), gradio_version(config), None
            model = startup_model(config) if client is None else None
        else:
            info = probe(base, connect_timeout=connect, read_timeout=timeout)
            kind, wangp, gradio, error = info.kind.value, info.wangp_version, info.gradio_version, info.error
            if info.kind is ServiceKind.CLOSED:  # it went away between the two requests
                return HealthReport(shown, False, now, kind=kind, error=error)
            if info.kind is ServiceKind.TIMEOUT:  # it answered app_id: up, but too slow to say what it is yet
                kind, error = None, "reachable, but /config did not answer in time; identified at the next check"
    report = HealthReport(
        shown, True, now, latency_ms=round(latency, 2), kind=kind, wangp_version=wangp, gradio_version=gradio,
        busy=True if waiting else None, server_waiting=waiting, app_id=app_id, error=error, current_model=model,
    )
    if client is not None:
        report = _with_client(report, client)
    return report


def _config(base: str, timeout: float) -> dict[str, Any] | None:
    """The server's ``/config`` (2.6 MB on WanGP 12.60, once per server process), or None."""
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)), trust_env=False,
                          verify=tls_context()) as http:
            response = http.get(base + "config")
            config = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _with_client(report: HealthReport, client: Wan2GPClient) -> HealthReport:
    status = client.get_server_status()
    if not status.reachable:
        return replace(report, error=status.error or report.error)
    busy = True if status.busy or report.server_waiting else None  # see the module's docstring
    return replace(
        report,
        wangp_version=status.wangp_version or report.wangp_version,
        gradio_version=status.gradio_version or report.gradio_version,
        current_model=status.current_model or report.current_model,
        queue_length=status.queue_length,
        busy=busy,
    )


# --- the monitor -----------------------------------------------------------------------------------------

Listener = Callable[[HealthEvent], None]


@dataclass
class _Watched:
    url: str
    client: Wan2GPClient | None
    history: deque[HealthReport] = field(default_factory=deque)


class HealthMonitor:
    """Checks servers every ``period`` seconds on a background thread and reports changes.

    Parameters:
        urls: the servers to watch.
        period: seconds between the starts of two checks. A server that goes away, or comes back, is
            reported at the latest two periods later (a check is bounded by ``timeout`` < ``period``).
        timeout: bound of one check (default: the smaller of 2 s and 80 % of the period).
        history: how many reports to keep per server.
        clients: optional clients by URL, for their jobs, busy state and model.
        on_event: a first listener (see :meth:`add_listener`).
        max_rounds: stop the background checks after this many rounds (default: run until :meth:`stop`).
        api_cache: where clients recorded the servers' processes (see :func:`check_health`): a program's first
            check of a server a client of another program connected to does not read ``/config`` again.
        check: what one check is, called as :func:`check_health` is (its keywords included); the default is
            :func:`check_health`. Tests give a function that reads an in-memory server's state instead.

    Thread-safe: ``latest()``, ``history()``, ``add_listener()`` may be called from any thread. Listeners
    run on the monitor's thread, one event at a time; an exception in one is logged and ignored.
    """

    def __init__(
        self,
        urls: Iterable[str] | str,
        *,
        period: float = DEFAULT_PERIOD,
        timeout: float | None = None,
        history: int = DEFAULT_HISTORY,
        clients: Mapping[str, Wan2GPClient] | None = None,
        on_event: Listener | None = None,
        max_rounds: int | None = None,
        api_cache: ApiCache | None = None,
        check: Callable[..., HealthReport] | None = None,
    ) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        if isinstance(urls, str):
            urls = [urls]
        by_url = {normalise_url(u): c for u, c in (clients or {}).items()}
        self.period = float(period)
        self.timeout = float(timeout) if timeout is not None else min(DEFAULT_TIMEOUT, 0.8 * self.period)
        self._servers: dict[str, _Watched] = {}
        for url in urls:
            key = normalise_url(url)
            self._servers[key] = _Watched(key, by_url.get(key), deque(maxlen=max(1, history)))
        if not self._servers:
            raise ValueError("give at least one server URL")
        self._lock = threading.RLock()
        self._listeners: list[Listener] = [on_event] if on_event else []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()  # one round of checks at a time
        self.rounds = 0
        self.max_rounds = max_rounds  # the background checks end by themselves after this many rounds
        # where clients recorded the servers' processes: a new program's first check skips /config (2.6 MB on 12.60)
        self.api_cache = api_cache
        self._check = check or check_health

    # --- public ---------------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return list(self._servers)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` on every change; returns a function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def latest(self, url: str | None = None) -> HealthReport | None:
        """The last report of ``url`` (of the first server when not given), or None before the first check."""
        server = self._server(url)
        with self._lock:
            return server.history[-1] if server.history else None

    def history(self, url: str | None = None) -> list[HealthReport]:
        """The kept reports of a server, oldest first."""
        server = self._server(url)
        with self._lock:
            return list(server.history)

    def check_now(self) -> dict[str, HealthReport]:
        """Run one round of checks on the calling thread (in parallel over servers); fires events."""
        with self._round_lock:
            servers = list(self._servers.values())
            with self._lock:
                previous = {s.url: (s.history[-1] if s.history else None) for s in servers}
            if len(servers) == 1:
                s = servers[0]
                reports = [self._check(s.url, client=s.client, timeout=self.timeout, previous=previous[s.url],
                                       api_cache=self.api_cache)]
            else:
                with ThreadPoolExecutor(len(servers), thread_name_prefix="health-check") as pool:
                    reports = list(pool.map(
                        lambda s: self._check(s.url, client=s.client, timeout=self.timeout,
                                              previous=previous[s.url], api_cache=self.api_cache), servers))
            events: list[HealthEvent] = []
            with self._lock:
                for server, report in zip(servers, reports, strict=True):
                    server.history.append(report)
                    events.extend(_changes(server.url, previous[server.url], report))
                self.rounds += 1
                listeners = list(self._listeners)
            for event in events:
                for listener in listeners:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("health listener failed on %s", event.kind.value)
            return {s.url: r for s, r in zip(servers, reports, strict=True)}

    def start(self) -> HealthMonitor:
        """Start checking in the background (the first check at once). Idempotent."""
        with self._lock:
            if self.running:
                return self
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="health-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background checks and wait for the thread (at most ``timeout`` s, default one check)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.timeout + 1.0)
        self._thread = None

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- inside -----------------------------------------------------------------------------------------

    def _server(self, url: str | None) -> _Watched:
        if url is None:
            return next(iter(self._servers.values()))
        try:
            return self._servers[normalise_url(url)]
        except KeyError:
            raise KeyError(f"not monitored: {url}") from None

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # never let the monitor die silently
                log.exception("health check round failed")
            if self.max_rounds is not None and self.rounds >= self.max_rounds:
                break
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay < 0:  # a round took longer than a period: start again from now
                next_at, delay = time.monotonic(), 0.0
            if self._stop.wait(delay):
                break


def _changes(url: str, before: HealthReport | None, after: HealthReport) -> list[HealthEvent]:
    events: list[HealthEvent] = []
    was_up = before is not None and before.reachable
    if after.reachable and not was_up:
        events.append(HealthEvent(url, HealthEventKind.UP, after, before))
    elif not after.reachable and (before is None or was_up):
        events.append(HealthEvent(url, HealthEventKind.DOWN, after, before))
    elif (after.reachable and before is not None and before.app_id and after.app_id
          and before.app_id != after.app_id):
        events.append(HealthEvent(url, HealthEventKind.RESTARTED, after, before))
    if after.reachable:
        before_busy = bool(before.busy) if before is not None and before.reachable else False
        if bool(after.busy) != before_busy:  # IDLE: no longer known to be busy
            events.append(HealthEvent(url, HealthEventKind.BUSY if after.busy else HealthEventKind.IDLE,
                                      after, before))
    return events
