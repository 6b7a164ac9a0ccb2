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
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from gradio_client import Client
from gradio_client.utils import Communicator, StatusUpdate

from .errors import Wan2GPTimeoutError, translate

log = logging.getLogger(__name__)

StatusListener = Callable[[StatusUpdate, list[Any]], None]  # (update, outputs so far)

# Our own event-stream reader replaces gradio_client 1.x's; other majors keep theirs (untested here).
_OWN_STREAM = gradio_client.__version__.split(".")[0] == "1"
# One SSE line is one message; WanGP's largest (a whole form from fill_inputs) is ~100 KB. Past this the
# server is broken or hostile, and the stream is dropped rather than buffered.
MAX_EVENT_BYTES = 32 * 1024 * 1024
# /config and the API description of WanGP 12.60 are 2.6 MB and 4.5 MB; 25x that is no WanGP answer.
MAX_DESCRIBE_BYTES = 128 * 1024 * 1024
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
    """gradio_client's per-event message list; hands progress messages over as soon as they arrive.

    gradio_client's reader polls this list every 50 ms; a progress message is also delivered at once, from
    the SSE reader thread, to the call's listener (the regular, later delivery repeats it harmlessly).
    """

    def __init__(self, items: list[Any], deliver: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(items)
        self._deliver = deliver

    def append(self, message: Any) -> None:
        super().append(message)
        if isinstance(message, dict) and message.get("msg") == "progress":
            self._deliver(message)


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


class GradioSession(Client):
    """A gradio_client ``Client`` that can fork sessions, observes status, and never phones home."""

    _local = threading.local()

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
    ) -> GradioSession:
        """Connect: read ``/config`` and the API description once."""
        # The read timeout also bounds the SSE stream: gradio sends a heartbeat every ~15 s, so a stream
        # that says nothing for call_timeout seconds belongs to a frozen or vanished server.
        timeout = httpx.Timeout(max(call_timeout, describe_timeout), connect=connect_timeout)
        session = cls(
            url,
            max_workers=max_workers,
            verbose=False,
            auth=auth,
            httpx_kwargs={"timeout": timeout},
            headers=headers,
            download_files=False,  # outputs are fetched by our own checked downloader
            # Plain http:// has no TLS to verify; with verification on, gradio_client would still load the
            # certifi store into a new SSL context on every request (memory and ~ms per call).
            ssl_verify=not url.startswith("http://"),
            analytics_enabled=False,
        )
        session._watch_messages()
        return session

    def _telemetry_thread(self) -> None:  # gradio_client would send the server URL to Hugging Face
        return None

    def stream_messages(self, protocol: str) -> None:  # type: ignore[override]
        """Read the session's SSE stream into the per-event message lists (gradio's sse_v1..v3 protocol).

        Our own reader rather than gradio_client's, so that a session can close its stream (a detached job,
        a closing program) and so that a repeated ``process_completed`` (seen after cancels with gradio
        5.29) does not end the whole stream with a KeyError.
        """
        kwargs = dict(self.httpx_kwargs)
        kwargs.setdefault("timeout", httpx.Timeout(None))
        try:
            with httpx.Client(verify=self.ssl_verify, **kwargs) as http, http.stream(
                "GET", self.sse_url, params={"session_hash": self.session_hash}, headers=self.headers,
                cookies=self.cookies,
            ) as response:
                self._stream_response = response
                if self._streams_closed:
                    return
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    if not line.startswith("data:"):
                        raise ValueError(f"unexpected line in the server's event stream: {line[:80]!r}")
                    message = json.loads(line[5:])
                    kind = message.get("msg")
                    if kind == "heartbeat":
                        continue
                    if message.get("message") == "Server stopped unexpectedly.":
                        for pending in self.pending_messages_per_event.values():
                            pending.append(message)
                        return
                    if kind == "close_stream":
                        self.stream_open = False
                        return
                    event_id = message["event_id"]
                    self.pending_messages_per_event.setdefault(event_id, [])
                    self.pending_messages_per_event[event_id].append(message)
                    if kind == "process_completed":
                        self.pending_event_ids.discard(event_id)
                    if not self.pending_event_ids and protocol != "sse_v3":
                        self.stream_open = False
                        return
        except (httpx.RemoteProtocolError, httpx.StreamClosed, httpx.ReadError):
            return  # the stream was closed (by us, or the server went away): pending calls learn it below
        except BaseException:
            if self._streams_closed:
                return
            raise
        finally:
            self._stream_response = None

    def close_streams(self) -> None:
        """Close this session's event stream: its pending calls end (cancelled) and nothing waits on it.

        The server sees the session disconnect and stops following it; WanGP's own worker finishes the task
        in progress, which :meth:`Wan2GPClient.resume_job` can collect later.
        """
        self._streams_closed = True
        response = self._stream_response
        if response is not None:
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing a stream another thread reads may race; that is fine
                log.debug("closing the event stream", exc_info=True)

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
        self._stream_response: httpx.Response | None = None
        self._streams_closed = False
        self._observed: list[Communicator] = []
        self.pending_messages_per_event = _MessageLists(self)  # type: ignore[assignment]

    def fork(self, session_hash: str | None = None) -> GradioSession:
        """A new WanGP session on the same server, with nothing downloaded again.

        With ``session_hash``, the fork re-attaches to that existing session (its queue and gallery), which
        the server keeps while it runs.
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.session_hash = session_hash or str(uuid.uuid4())
        clone.cookies = dict(self.cookies)
        clone.endpoints = {}
        for key, endpoint in self.endpoints.items():
            copied = copy.copy(endpoint)
            copied.client = clone
            clone.endpoints[key] = copied
        # Per-session SSE stream bookkeeping (one stream per session_hash); the thread pool is shared.
        clone.stream_open = False
        clone.streaming_future = None
        clone._watch_messages()
        clone.pending_event_ids = set()
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

    def call(self, api_name: str, args: list[Any], *, timeout: float, what: str | None = None) -> CallResult:
        """Run one endpoint to completion within ``timeout`` seconds; foreign errors are translated."""
        what = what or api_name
        try:
            job = self.submit_observed(api_name, args)
        except Exception as exc:
            raise translate(exc, server=self.src, what=what) from exc
        try:
            value = job.result(timeout=timeout)
        except TimeoutError as exc:
            job.cancel()
            raise Wan2GPTimeoutError(f"{what} did not answer within {timeout:.0f} s", server=self.src,
                                     hint="the server is busy or frozen") from exc
        except BaseException as exc:
            raise translate(exc, server=self.src, what=what) from exc
        return CallResult(value, list(job.communicator.job.logs) if job.communicator else [])

    def close(self) -> None:
        self._kill_heartbeat.set()
        self.close_streams()
        if not getattr(self, "_is_fork", False):
            self.executor.shutdown(wait=False, cancel_futures=True)

    def __del__(self) -> None:
        # gradio_client's __del__ shuts its thread pool down; forks share the root's pool, and the root's
        # pool is shut down by close(). Nothing to do here.
        return None
