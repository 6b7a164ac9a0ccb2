"""gradio_client sessions: one per job, forked from one connection without downloading anything again.

A gradio_client ``Client`` is one Gradio session, and WanGP keeps its whole state (model, form, queue, gallery)
per session. ``Client()`` downloads ``/config`` and the API description (~7 MB on WanGP 12) and builds an
``Endpoint`` per dependency: about 2.5 s. :meth:`GradioSession.fork` makes a new session from an existing one
in a few milliseconds by copying what was learnt and giving it a new ``session_hash``.

gradio_client keeps only the *latest* status of a call, so WanGP's ``gr.Info`` toasts (its only channel for
validation failures) and most progress updates are overwritten before anyone reads them.
:class:`_ObservedJobStatus` stands in for gradio_client's ``JobStatus`` and hands every update to a listener.

With gradio_client 1.x the session also reads the server's event stream (SSE) itself, because gradio_client's
reader (``Client.stream_messages``/``send_data``) has faults that matter over hours of jobs:

* an event that completes before its id is registered kills the stream (``KeyError`` in ``pending_event_ids``),
  and every call in flight on the session fails; an event sent while the server closes the stream is stranded;
* a line of any length is buffered (memory is unbounded against a broken or hostile server), a malformed line
  prints a traceback and kills the stream; nothing says when the server was last heard from;
* a dropped stream is silent, and a session's stream can't be closed from outside.

Here event ids are registered under a lock shared with the reader, lines are bounded, every line (heartbeats
included) stamps :attr:`GradioSession.last_heard`, a protocol violation is recorded in
:attr:`GradioSession.stream_failure`, and :meth:`GradioSession.close` ends the stream at once. ``/config`` and the
API description are downloaded with a size cap and a wall-clock deadline.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gradio_client
import httpx
from gradio_client import Client
from gradio_client.utils import Communicator, StatusUpdate

from ..._urls import tls_context
from .._config import Retries
from .._errors import (
    UnsupportedServerError,
    Wan2GPConnectionError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    translate,
)

log = logging.getLogger(__name__)

StatusListener = Callable[[StatusUpdate, list[Any]], None]  # (update, outputs so far)

# Our own event-stream reader replaces gradio_client 1.x's; other majors keep theirs (untested here).
_OWN_STREAM = gradio_client.__version__.split(".")[0] == "1"
# One SSE line is one message; WanGP's largest (a whole form from fill_inputs) is ~100 KB. Past this the
# server is broken or hostile, and the stream is dropped rather than buffered.
MAX_EVENT_BYTES = 32 * 1024 * 1024
# /config and the API description of WanGP 12.60 are 2.6 MB and 4.5 MB; 25x that is no WanGP answer.
MAX_DESCRIBE_BYTES = 128 * 1024 * 1024
# How long gradio_client's reader, asking for the next message of a call, waits for it before it looks again.
MESSAGE_WAIT = 1.0
# /config and the API description: the longest wait for the next byte before the server is taken as frozen.
MAX_SILENT_READ = 20.0
# gradio sends a heartbeat on an idle event stream every 15 s; a read that waits longer than this for any byte
# means the connection or the server is gone.
MIN_STREAM_READ = 30.0


class _ObservedJobStatus:
    """gradio_client's ``JobStatus`` (``latest_status`` + ``outputs``), reporting every status update."""

    def __init__(self, listener: StatusListener | None) -> None:
        from gradio_client.utils import create_initial_status_update

        self.outputs: list[Any] = []
        self.logs: list[tuple[str, str]] = []
        self._latest = create_initial_status_update()
        self._listener = listener

    @property
    def latest_status(self) -> StatusUpdate:
        return self._latest

    @latest_status.setter
    def latest_status(self, update: StatusUpdate) -> None:
        self._latest = update
        if update.log:
            self.logs.append(update.log)
        if self._listener is not None:
            try:
                self._listener(update, self.outputs)
            except Exception:  # a listener's bug must not break the SSE reader thread
                log.exception("status listener failed")


class _NotifyingList(list):
    """gradio_client's per-event message list; hands progress messages over as soon as they arrive, and wakes
    gradio_client's waiting call the moment a message arrives.

    gradio_client's reader asks ``len()`` of this list, and sleeps 50 ms when it is empty: each call's answer then
    waits 25 ms on average after it arrived (a shot makes five to eight calls). Here ``len()`` of an empty list
    waits for the next message instead (at most ``MESSAGE_WAIT``), so the reader goes on at once. A progress
    message is also delivered at once, from the SSE reader thread, to the call's listener (the regular, later
    delivery repeats it harmlessly).
    """

    def __init__(self, items: list[Any], deliver: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(items)
        self._deliver = deliver
        self._arrived = threading.Condition()

    def append(self, message: Any) -> None:
        with self._arrived:
            super().append(message)
            self._arrived.notify_all()
        if isinstance(message, dict) and message.get("msg") == "progress":
            self._deliver(message)

    def __len__(self) -> int:
        with self._arrived:
            if not super().__len__():
                self._arrived.wait(MESSAGE_WAIT)
            return super().__len__()

    def __bool__(self) -> bool:  # truthiness never waits
        return list.__len__(self) > 0


class _MessageLists(dict):
    """``pending_messages_per_event`` whose lists report progress messages at once."""

    def __init__(self, session: GradioSession) -> None:
        super().__init__()
        self._session = session

    def __setitem__(self, event_id: str, messages: list[Any]) -> None:
        def deliver(message: dict[str, Any], event_id: str = event_id) -> None:
            self._session._deliver_progress(event_id, message)

        existing = self.get(event_id)
        if existing is not None and not messages:
            # gradio_client sets an empty list after sending; messages the reader already stored for this
            # event (it can complete before the POST returns) must not be thrown away.
            return
        items = list(messages)
        if self._session._take_failed(event_id):
            items.append(None)  # the stream died before this call started waiting: wake it at once
        super().__setitem__(event_id, _NotifyingList(items, deliver))


class CallResult:
    """What one call returned, and the toasts (``gr.Info``/``gr.Warning``) the server sent with it."""

    def __init__(self, value: Any, logs: list[tuple[str, str]]) -> None:
        self.value = value
        self.logs = logs

    @property
    def messages(self) -> list[str]:
        return [text for text, _level in self.logs]


class _NullSet(set):
    """gradio_client adds every event id to ``pending_event_ids``; our reader keeps its own books, so the ids
    are dropped here instead of piling up on a long-lived session."""

    def add(self, item: Any) -> None:
        return None


class _StreamFailure(Exception):
    """The event stream broke the protocol (malformed line, wrong status, oversized message)."""


class _EventStreamEnded(Exception):
    """The server ended the event stream itself (stopping, or the session gone): a lost connection."""


class _Endpoints(dict):
    """gradio_client's ``Endpoint`` per event id, built on first use: a session calls about ten of the server's
    hundreds. A fork copies the root's (each ``Endpoint`` scans every component of ``/config`` once)."""

    def __init__(self, session: GradioSession) -> None:
        super().__init__()
        self._session = session

    def __missing__(self, fn_index: int) -> Any:
        from gradio_client.client import Endpoint

        session = self._session
        root = session._root
        if root is session:
            endpoint = Endpoint(session, fn_index, session._deps_by_id[fn_index], session.protocol)
        else:
            endpoint = copy.copy(root.endpoints[fn_index])
            endpoint.client = session
        self[fn_index] = endpoint
        return endpoint


class GradioSession(Client):
    """A gradio_client ``Client`` that can fork sessions, observes status, and never phones home.

    Attributes:
        last_heard: ``time.monotonic()`` of the last byte seen on this session's event stream (heartbeats count).
        stream_failure: why the event stream was dropped for a protocol violation, if it was.
    """

    _local = threading.local()
    _observed: list[Communicator]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("open a session with GradioSession.open(url, ...)")

    @classmethod
    def open(
        cls,
        url: str,
        *,
        auth: tuple[str, str] | None,
        connect_timeout: float,
        call_timeout: float,
        describe_timeout: float,
        max_workers: int,
        headers: dict[str, str] | None = None,
        config_source: Callable[[GradioSession], dict[str, Any]] | None = None,
    ) -> GradioSession:
        """Connect: log in if asked, and read ``/config`` (or take it from ``config_source``, e.g. an
        :class:`ApiCache` that knows the server). Nothing else is downloaded: the API description is read by
        :meth:`api_description` when a client needs it.

        gradio_client's own constructor also downloads the API description and builds an ``Endpoint`` for every
        one of the server's events (648 on WanGP 12.60, about half a second); here both wait until needed.
        """
        # Reads of short calls wait up to call_timeout for the server; the event stream's reads up to
        # MIN_STREAM_READ at least (gradio's heartbeat is every 15 s).
        timeout = httpx.Timeout(max(call_timeout, describe_timeout), connect=connect_timeout)
        session = cls.__new__(cls)
        session._describe_timeout = describe_timeout
        session._connect_timeout = connect_timeout
        session._stream_read = max(call_timeout, MIN_STREAM_READ)
        session.verbose = False
        session.hf_token = False
        session.download_files = False  # outputs are fetched by our own checked downloader
        session.output_dir = tempfile.gettempdir()
        session._skip_components = True
        session.headers = {"user-agent": f"gradio_client/{gradio_client.__version__}; blender-movie-director"}
        session.headers.update(headers or {})
        # gradio_client passes this to httpx on every request: a context built once, not the certifi store
        # loaded again for each call (50 ms of CPU).
        session.ssl_verify = tls_context()
        session.space_id = None
        session.cookies = {}
        session.src = url if url.endswith("/") else url + "/"
        session.httpx_kwargs = {"timeout": timeout}
        session.analytics_enabled = False
        if auth is not None:
            session._login(auth)
        session.config = (config_source or cls._get_config)(session)
        session._use_config(session.config)
        session.session_hash = str(uuid.uuid4())
        session._root = session
        session.endpoints = _Endpoints(session)
        session.executor = ThreadPoolExecutor(max_workers=max_workers)
        # Shared by the root and its forks: one connection pool (and one SSL context) instead of one per request
        # or per stream, which also keeps the process's memory flat over thousands of jobs.
        session._poster = httpx.Client(verify=session.ssl_verify, timeout=timeout)
        session._streamer = httpx.Client(verify=session.ssl_verify, timeout=timeout,
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=8))
        session._refresh_heartbeat = threading.Event()
        session._kill_heartbeat = threading.Event()
        session.heartbeat = threading.Thread(target=session._stream_heartbeat, daemon=True,
                                             name="wan2gp-heartbeat")
        session.heartbeat.start()
        session.stream_open = False
        session.streaming_future = None
        session.pending_event_ids = _NullSet() if _OWN_STREAM else set()  # type: ignore[assignment]
        session._init_stream_state()
        return session

    def _use_config(self, config: dict[str, Any]) -> None:
        """The URLs gradio_client's calls use, from the server's ``/config`` (as its constructor sets them)."""
        from gradio_client import utils as gc_utils
        from packaging import version

        self.protocol = config.get("protocol", "ws")
        self.api_prefix = str(config.get("api_prefix", "")).lstrip("/") + "/"
        self.src_prefixed = urllib.parse.urljoin(self.src, self.api_prefix).rstrip("/") + "/"
        self.api_url = urllib.parse.urljoin(self.src_prefixed, gc_utils.API_URL)
        old = self.protocol == "sse"
        self.sse_url = urllib.parse.urljoin(self.src_prefixed, gc_utils.SSE_URL_V0 if old else gc_utils.SSE_URL)
        self.heartbeat_url = urllib.parse.urljoin(self.src_prefixed, gc_utils.HEARTBEAT_URL)
        self.sse_data_url = urllib.parse.urljoin(self.src_prefixed,
                                                 gc_utils.SSE_DATA_URL_V0 if old else gc_utils.SSE_DATA_URL)
        self.ws_url = urllib.parse.urljoin(self.src_prefixed.replace("http", "ws", 1), gc_utils.WS_URL)
        self.upload_url = urllib.parse.urljoin(self.src_prefixed, gc_utils.UPLOAD_URL)
        self.reset_url = urllib.parse.urljoin(self.src_prefixed, gc_utils.RESET_URL)
        self.app_version = version.parse(str(config.get("version", "2.0")))
        # gradio_client's Endpoint reads parameter names from here for keyword calls; ours are all positional
        # (ServerApi binds names), so it stays empty and the 4.5 MB description is not kept twice.
        self._info: dict[str, Any] = {"named_endpoints": {}, "unnamed_endpoints": {}}
        self._deps_by_id = {d.get("id", i): d for i, d in enumerate(config.get("dependencies", []))}

    def _telemetry_thread(self) -> None:  # gradio_client would send the server URL to Hugging Face
        return None

    # --- /config and the API description: bounded --------------------------------------------------------

    def _bounded_get(self, url: str, what: str) -> tuple[int, bytes]:
        """GET with a size cap and a wall-clock deadline (a slow or endless answer can't hold us)."""
        deadline = time.monotonic() + self._describe_timeout
        body = bytearray()
        # Each read waits at most MAX_SILENT_READ (within connect and describe): Gradio may take a few seconds
        # to build a large app's API description on its first request, but a server that accepted the connection
        # and says nothing for longer is frozen. The whole download is bounded by the describe timeout.
        read = max(self._connect_timeout, min(self._describe_timeout, MAX_SILENT_READ))
        kwargs = {**self.httpx_kwargs, "timeout": httpx.Timeout(read, connect=self._connect_timeout)}
        with httpx.Client(verify=self.ssl_verify, **kwargs) as http:
            with http.stream("GET", url, headers=self.headers, cookies=self.cookies) as response:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DESCRIBE_BYTES:
                        raise UnsupportedServerError(
                            f"the server's {what} is larger than {MAX_DESCRIBE_BYTES // 2**20} MB: not a WanGP answer",
                            server=self.src, missing=[what])
                    if time.monotonic() > deadline:
                        raise Wan2GPTimeoutError(f"downloading the server's {what} took over "
                                                 f"{self._describe_timeout:.0f} s", server=self.src)
                return response.status_code, bytes(body)

    def _json_answer(self, url: str, what: str) -> dict[str, Any]:
        code, body = self._bounded_get(url, what)
        if code in (401, 403):
            raise Wan2GPConnectionError(
                f"the server refused access to its {what} (HTTP {code})", server=self.src,
                hint="give the server's user and password (auth=...) or WAN2GP_USERNAME/WAN2GP_PASSWORD")
        if code != 200:
            raise UnsupportedServerError(f"the server answered HTTP {code} for its {what}: not a Gradio app",
                                         server=self.src, missing=[what])
        try:
            value = json.loads(body)
        except ValueError:
            raise UnsupportedServerError(f"the server's {what} is not valid JSON (truncated or not a Gradio app)",
                                         server=self.src, missing=[what]) from None
        if not isinstance(value, dict):
            raise UnsupportedServerError(f"the server's {what} is not a JSON object", server=self.src,
                                         missing=[what])
        return value

    def _get_config(self) -> dict:
        config = self._json_answer(urllib.parse.urljoin(self.src, "config"), "/config")
        if not isinstance(config.get("dependencies", []), list) or not isinstance(config.get("components", []),
                                                                                   list):
            raise UnsupportedServerError("the server's /config has no usable dependency graph",
                                         server=self.src, missing=["/config dependencies"])
        return config

    def api_parameters(self) -> dict[str, list[list[Any]]]:
        """The parameter table of the server's API description (``endpoints.parameter_table``): what a client
        keeps of it. The 4.5 MB description of WanGP 12.60 parses into about 40 MB of objects; they are freed at
        once (by reference counting), and the memory handed back to the system, so that the process does not
        keep that peak."""
        from .endpoints import parameter_table

        table = parameter_table(self.api_description())
        _give_back_memory()
        return table

    def api_description(self) -> dict[str, Any]:
        """Download the server's API description (``/gradio_api/info``), bounded like ``/config``."""
        info = self._json_answer(urllib.parse.urljoin(self.src_prefixed, "info?serialize=False"),
                                 "API description")
        for key in ("named_endpoints", "unnamed_endpoints"):
            endpoints = info.get(key) or {}
            if not isinstance(endpoints, dict):
                raise UnsupportedServerError(f"the server's API description has a malformed {key!r}",
                                             server=self.src, missing=[key])
            info[key] = {a: e for a, e in endpoints.items() if isinstance(e, dict) and e.pop("show_api", True)}
        return info

    # --- status observation ---------------------------------------------------------------------------------

    def new_helper(self, fn_index: int) -> Communicator:  # called by submit(), on the caller's thread
        listener = getattr(self._local, "listener", None)
        helper = Communicator(
            threading.Lock(),
            _ObservedJobStatus(listener),  # type: ignore[arg-type]
            self.endpoints[fn_index].process_predictions,
            self.reset_url,
        )
        if listener is not None:
            self._observed = [h for h in self._observed if not h.thread_complete] + [helper]
        return helper

    def _deliver_progress(self, event_id: str, message: dict[str, Any]) -> None:
        from gradio_client.utils import ProgressUnit, Status

        helper = next((h for h in self._observed if h.event_id == event_id), None)
        if helper is None or "progress_data" not in message:
            return
        update = StatusUpdate(
            code=Status.PROGRESS, rank=None, queue_size=None, eta=None, success=None, time=None,
            progress_data=ProgressUnit.from_msg(message["progress_data"]),
        )
        status: _ObservedJobStatus = helper.job  # type: ignore[assignment]
        if status._listener is not None:
            try:
                status._listener(update, [])
            except Exception:
                log.exception("status listener failed")

    def _watch_messages(self) -> None:
        self._observed = []
        self.pending_messages_per_event = _MessageLists(self)  # type: ignore[assignment]

    # --- the event stream ---------------------------------------------------------------------------------

    def _init_stream_state(self) -> None:
        self._stream_lock = threading.Lock()
        self._outstanding: set[str] = set()  # events sent whose completion the reader has not seen
        self._completed_early: set[str] = set()  # completions seen before their POST returned
        self._failed: set[str] = set()  # events the stream died under before their call started waiting
        self._stream_running = False
        self._stream_response: httpx.Response | None = None
        self._closed = False
        self.last_heard = time.monotonic()
        self.stream_failure: str | None = None
        if _OWN_STREAM:
            self.pending_event_ids = _NullSet()
        self._watch_messages()

    def _take_failed(self, event_id: str) -> bool:
        lock = getattr(self, "_stream_lock", None)
        if lock is None:
            return False
        with lock:
            if event_id in self._failed:
                self._failed.discard(event_id)
                return True
            return False

    def send_data(self, data: dict[str, Any], hash_data: dict[str, Any], protocol: str) -> str:
        """POST an event to the queue; registers its id and makes sure a reader runs, under one lock."""
        if not _OWN_STREAM:
            return super().send_data(data, hash_data, protocol)
        from gradio_client.utils import QueueError

        if self._closed:
            raise Wan2GPConnectionError("the session is closed", server=self.src)
        headers = self.add_zero_gpu_headers(self.headers) if hasattr(self, "add_zero_gpu_headers") else self.headers
        response = self._poster.post(self.sse_data_url, json={**data, **hash_data}, headers=headers,
                                     cookies=self.cookies)
        if response.status_code == 503:
            raise QueueError("Queue is full! Please try again.")
        response.raise_for_status()
        try:
            event_id = str(response.json()["event_id"])
        except (ValueError, KeyError, TypeError):
            raise Wan2GPServerError(f"the server's answer to queue/join is malformed: {response.text[:200]!r}",
                                    server=self.src) from None
        with self._stream_lock:
            if event_id in self._completed_early:
                self._completed_early.discard(event_id)
            else:
                self._outstanding.add(event_id)
            if not self._stream_running:
                self._stream_running = True
                self.stream_open = True
                self.stream_failure = None  # a new stream: an earlier protocol failure no longer applies
                self.streaming_future = self.executor.submit(self._run_stream)
        return event_id

    def _run_stream(self) -> None:
        """Read the session's event stream until the server closes it with nothing outstanding, or it breaks."""
        failure: str | None = None
        try:
            while True:
                closed_by_server = self._read_stream()
                with self._stream_lock:
                    if closed_by_server and self._outstanding and not self._closed:
                        log.debug("session %s: stream closed by the server with %s outstanding; reading on",
                                  self.session_hash[:8], sorted(self._outstanding))
                        continue  # the server closed it while an event was being sent: read on
                    if not closed_by_server and self._outstanding:
                        failure = "the server's event stream ended early"
                    break
        except _StreamFailure as exc:
            failure = str(exc)
            self.stream_failure = failure
            log.warning("session %s: %s", self.session_hash[:8], failure)
        except _EventStreamEnded as exc:
            failure = str(exc)
            log.info("session %s: %s", self.session_hash[:8], failure)
        except Exception as exc:  # noqa: BLE001 - a transport error: the calls in flight see a lost connection
            failure = f"{type(exc).__name__}: {exc}"
            if not self._closed:
                log.info("session %s: event stream lost (%s)", self.session_hash[:8], failure)
        finally:
            with self._stream_lock:
                self._stream_running = False
                self.stream_open = False
                self._stream_response = None
                orphans = set(self._outstanding) if failure or self._closed else set()
                self._outstanding -= orphans
                for event_id in orphans:
                    messages = self.pending_messages_per_event.get(event_id)
                    if messages is None:
                        self._failed.add(event_id)
                    else:
                        messages.append(None)  # gradio_client's signal: the call ends with CancelledError

    def _read_stream(self) -> bool:
        """One connection of the event stream. True when the server closed it (close_stream)."""
        timeout = httpx.Timeout(self._stream_read, connect=getattr(self, "_connect_timeout", 10.0))
        http = self._streamer
        with http.stream("GET", self.sse_url, params={"session_hash": self.session_hash},
                         headers=self.headers, cookies=self.cookies, timeout=timeout) as response:
            with self._stream_lock:
                if self._closed:
                    return False
                self._stream_response = response
            if response.status_code != 200:
                head = next(response.iter_bytes(), b"")[:200]
                raise _StreamFailure(f"the event stream answered HTTP {response.status_code}: {head!r}")
            for line in _lines(response, MAX_EVENT_BYTES):
                self.last_heard = time.monotonic()
                if not line:
                    continue
                if not line.startswith("data:"):
                    raise _StreamFailure(f"the event stream sent a line that is not an event: {line[:80]!r}")
                try:
                    message = json.loads(line[5:])
                except ValueError:
                    raise _StreamFailure(f"the event stream sent malformed JSON: {line[:80]!r}") from None
                if not isinstance(message, dict) or not isinstance(message.get("msg"), str):
                    raise _StreamFailure(f"the event stream sent an event without a type: {line[:80]!r}")
                kind = message["msg"]
                if kind == "heartbeat":
                    continue
                if message.get("message") == "Server stopped unexpectedly.":
                    raise _EventStreamEnded("the server said it stopped unexpectedly")
                if kind == "unexpected_error" and message.get("event_id") is None:
                    # e.g. "404: Session not found." while the server still cleans up an earlier stream of
                    # this session: the events sent are lost, the calls fail and idempotent ones retry
                    raise _EventStreamEnded(f"the server dropped the session's stream: {message.get('message')}")
                if kind == "close_stream":
                    return True
                event_id = message.get("event_id")
                if not isinstance(event_id, str):
                    raise _StreamFailure(f"the event stream sent an event without an id: {line[:80]!r}")
                if kind == "process_completed" and not isinstance(message.get("output", {}), dict):
                    raise _StreamFailure(f"the event stream sent a malformed result: {line[:80]!r}")
                lists = self.pending_messages_per_event
                if event_id not in lists:
                    lists[event_id] = []
                lists[event_id].append(message)
                if kind == "process_completed":
                    with self._stream_lock:
                        if event_id in self._outstanding:
                            self._outstanding.discard(event_id)
                        else:
                            self._completed_early.add(event_id)
        return False

    # --- sessions -----------------------------------------------------------------------------------------

    def fork(self, session_hash: str | None = None) -> GradioSession:
        """A new WanGP session on the same server, with nothing downloaded again.

        With ``session_hash``, the fork re-attaches to that existing session (its queue and gallery), which
        the server keeps while it runs.
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.session_hash = session_hash or str(uuid.uuid4())
        clone.cookies = dict(self.cookies)
        clone.endpoints = _Endpoints(clone)  # built on first use, from the root's
        # Per-session SSE stream bookkeeping (one stream per session_hash); the thread pool is shared.
        clone.stream_open = False
        clone.streaming_future = None
        clone.pending_event_ids = _NullSet() if _OWN_STREAM else set()  # type: ignore[assignment]
        clone._init_stream_state()
        clone._refresh_heartbeat = threading.Event()
        clone._kill_heartbeat = threading.Event()
        clone._kill_heartbeat.set()  # forks open no heartbeat stream
        clone._is_fork = True
        return clone

    @property
    def executor_pool(self) -> ThreadPoolExecutor:
        return self.executor

    def submit_observed(self, api_name: str, args: list[Any], listener: StatusListener | None = None):
        """``submit`` with every status update sent to ``listener``; returns gradio_client's ``Job``."""
        self._local.listener = listener
        try:
            return self.submit(*args, api_name=api_name)
        finally:
            self._local.listener = None

    def call(self, api_name: str, args: list[Any], *, timeout: float, what: str | None = None,
             retries: Retries | None = None, retry_timeouts: bool = False) -> CallResult:
        """Run one endpoint to completion within ``timeout`` seconds; foreign errors are translated.

        ``retries`` only for idempotent calls (a form write, a read): a dropped connection (not a server error) is
        tried ``retries.attempts`` times in all, after :meth:`Retries.pause`; a timeout too with ``retry_timeouts``,
        for quick reads whose answer can be lost (Gradio drops a session's events when it notices that an earlier stream
        of the same session went away, which can be late on a loaded machine).
        """
        attempts = retries.attempts if retries is not None else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._call_once(api_name, args, timeout=timeout, what=what)
            except Wan2GPTimeoutError as exc:
                if not retry_timeouts or attempt >= attempts or self._closed:
                    raise
                log.info("%s: %s; asking again (%d of %d)", what or api_name, exc, attempt + 1, attempts)
            except Wan2GPConnectionError as exc:
                if attempt >= attempts or self._closed:
                    raise
                log.info("%s: %s; retrying (%d of %d)", what or api_name, exc, attempt + 1, attempts)
                time.sleep(retries.pause(attempt) if retries is not None else 0)
        raise AssertionError("unreachable")

    def _call_once(self, api_name: str, args: list[Any], *, timeout: float, what: str | None) -> CallResult:
        what = what or api_name
        try:
            job = self.submit_observed(api_name, args)
        except Exception as exc:
            raise translate(exc, server=self.src, what=what) from exc
        try:
            value = job.result(timeout=timeout)
        except TimeoutError as exc:
            cancel_quietly(job)
            raise Wan2GPTimeoutError(f"{what} did not answer within {timeout:.0f} s", server=self.src,
                                     hint="the server is busy or frozen") from exc
        except BaseException as exc:
            if self.stream_failure:
                raise Wan2GPServerError(f"{what} failed: {self.stream_failure}", server=self.src,
                                        hint="is this really WanGP? a proxy in between may alter its answers") from exc
            raise translate(exc, server=self.src, what=what) from exc
        return CallResult(value, list(job.communicator.job.logs) if job.communicator else [])

    def close_streams(self) -> None:
        """Close this session's event stream: its pending calls end (cancelled) and nothing waits on it.

        The server sees the session disconnect and stops following it; WanGP's own worker finishes the task
        in progress, which :meth:`Wan2GPClient.resume_job` can collect later. No call can be sent afterwards.
        """
        lock = getattr(self, "_stream_lock", None)
        if lock is None:
            return
        with lock:
            self._closed = True
            response = self._stream_response
        if response is not None:
            _wake_reader(response)
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing a stream another thread reads may race; that is fine
                log.debug("closing the event stream", exc_info=True)

    def close(self) -> None:
        """End the session's event stream (the server then drops its running events) and, for the root, its pool."""
        self._kill_heartbeat.set()
        self.close_streams()
        if not getattr(self, "_is_fork", False):
            self.executor.shutdown(wait=False, cancel_futures=True)
            for shared in (getattr(self, "_poster", None), getattr(self, "_streamer", None)):
                if shared is not None:
                    shared.close()

    def __del__(self) -> None:
        # gradio_client's __del__ shuts its thread pool down; forks share the root's pool, and the root's
        # pool is shut down by close(). Nothing to do here.
        return None


def _wake_reader(response: Any) -> None:
    """Shut the stream's socket down: a thread blocked reading it returns at once. Closing the response alone
    does not wake it (a socket closed under a blocked ``recv`` stays blocked on Linux), and the reader then
    waits for the server's next heartbeat, up to 15 s, holding a closing program's exit meanwhile."""
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or never connected
        pass


def _give_back_memory() -> None:
    """Return the pages a large JSON answer used to the system (glibc keeps them).

    Parsed JSON holds no reference cycles, so its objects are freed as soon as the last reference goes: a
    ``gc.collect()`` here freed nothing more (the same resident size after three connects, measured), and it
    cost a full collection on every connect, holding the GIL for 1.3 s in a process with 3 million objects."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): the memory is reused by Python later
        pass


def cancel_quietly(job: Any) -> None:
    """``Job.cancel()`` without blocking: gradio_client posts the cancel synchronously, and a frozen server
    would hold the caller for a whole read timeout."""
    threading.Thread(target=_cancel, args=(job,), name="wan2gp-cancel", daemon=True).start()


def _cancel(job: Any) -> None:
    try:
        job.cancel()
    except Exception as exc:  # noqa: BLE001 - best effort; the server may be gone
        log.debug("cancelling a call failed: %s", exc)


def _lines(response: httpx.Response, limit: int) -> Iterator[str]:
    """The lines of a streamed response, none longer than ``limit`` bytes."""
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line, buffer = buffer[:end], buffer[end + 1:]
            yield _decode(line.rstrip(b"\r"))
        if len(buffer) > limit:
            raise _StreamFailure(f"the event stream sent a message over {limit / 2**20:g} MB")
    # An unterminated last line is a message cut off with the connection: a drop, not a malformed message.


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise _StreamFailure(f"the event stream sent bytes that are not UTF-8: {line[:60]!r}") from None
