"""McpConnection: one synchronous, thread-safe connection to WanGP's MCP server (API v1 or v2).

The official ``mcp`` SDK is asyncio; this project is threaded. Each connection runs one event loop on a
daemon thread, where the SDK's session lives; the public methods hand it coroutines and wait for them, each
with a deadline. WanGP serves streamable HTTP in stateless JSON mode (one POST, one JSON answer), so the
session holds no server-side state: when a transport failure kills it (the SDK then cancels everything it
runs), the next call opens a new one.

Example::

    with McpConnection.open("http://127.0.0.1:7866/mcp") as mcp:
        job_id = mcp.submit("t2v_1.3B", {"prompt": "a red fox in snow", "video_length": 17, "seed": 1})
        final = mcp.wait(job_id, timeout=600, on_progress=lambda s: print(s.progress))
        mcp.download(mcp.outputs(final)[0], Path("shots/fox.mp4"))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import mimetypes
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..._urls import tls_context
from .._config import Retries, Timeouts, first_warning, normalize_url, security_warnings
from .._enums import DEFAULT_RULE, FrameRule
from .._errors import (
    JobCancelledError,
    JobFailedError,
    ServerBusyError,
    ServerRestartedError,
    UnsupportedServerError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
    did_you_mean,
    redact,
)
from .._files import RemoteFile, checked_url, download, safe_name
from .._schemas import Resolution
from ._contract import (
    TRANSFER_TOOLS_V1,
    Contract,
    ModelRecord,
    ModelSchema,
    ToolInfo,
    detect_contract,
    error_text,
    result_data,
)
from ._refusals import refusal_error, root_cause, transport_error
from ._snapshot import JobSnapshot, McpOutput, McpProgress

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MCP_URL = "http://127.0.0.1:7866/mcp"  # loopback; WanGP's docs use port 7866 for --mcp
# The shortest request deadline between us and the server: the Python SDK's default is 30 s, the TypeScript
# SDK cuts at 60 s, reverse proxies commonly at 30-60 s. A blocking wait on the server stays below it...
REQUEST_DEADLINE = 30.0
# ... by this much, which covers the submission itself and the trip back.
WAIT_MARGIN = 5.0
# Events asked for per poll. The server's own request log adds two `stream` events per poll (12.60 capture),
# and the default window (20) then held only 4-5 progress events; 100 keeps every step of a poll interval.
POLL_EVENTS = 100
POLL_INTERVAL = 1.0  # seconds between polls of a running job (WanGP's guide: every 1-2 s)
# The shortest hold asked of a v2 server that must wait (no --mcp-async): a positive number, because a server
# that read 0 as "no timeout" would hold the call for the whole job, past every deadline.
MIN_SERVER_WAIT = 0.5
KEEP_FINISHED = 200  # final snapshots kept (a finished job is not asked again); older ones are forgotten
GALLERY_PAGE = 50  # 12.60's Gallery records of the newest outputs, to find a finished job's media id
MAX_UPLOAD_BYTES = 8 * 1024**3  # WanGP's ticket limit (max_bytes 8589934592)
UPLOAD_SUFFIXES = {  # what WanGP's upload ticket accepts (_IMAGE/_VIDEO/_AUDIO_EXTENSIONS)
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff",
    ".mp4", ".mov", ".mkv", ".webm", ".avi",
    ".wav", ".mp3", ".aac", ".m4a", ".flac", ".ogg", ".opus",
}
# Generation settings that take media (a Gallery media id), and the model's media role each needs.
MEDIA_SETTINGS: dict[str, tuple[str, str]] = {
    "image_start": ("image", "start"), "image_end": ("image", "end"), "image_refs": ("image", "reference"),
    "image_guide": ("image", "control"), "image_mask": ("image", "mask"), "video_guide": ("video", "control"),
    "video_mask": ("video", "mask"), "video_source": ("video", "continue"), "audio_guide": ("audio", "prompt"),
}
MEDIA_ID_PREFIXES = ("visual:", "audio:")
SEED_MAX = 2**32 - 1


class McpConnection:
    """A connection to one WanGP MCP server. Build it with :meth:`open`; close it (or use ``with``).

    Attributes:
        url: the MCP endpoint (after a redirect of ``/mcp`` to ``/mcp/``, the one that answers).
        contract: the tool contract the server speaks (:class:`Contract`).
        async_allowed: v2 only: the server takes ``wait=false`` (``--mcp-async``); v1 always does.
        security_warnings: what is unsafe about this server (non-loopback http, no token).
    """

    def __init__(self, url: str, *, token: str | None = None, timeouts: Timeouts | None = None,
                 retries: Retries | None = None, request_deadline: float = REQUEST_DEADLINE,
                 poll_interval: float = POLL_INTERVAL, max_download_bytes: int = 2 * 1024**3) -> None:
        try:
            self.url = normalize_url(url)
        except ValueError as exc:
            raise Wan2GPValidationError(f"{exc}; e.g. {DEFAULT_MCP_URL}", field="url") from None
        self.server = redact(self.url)
        self.timeouts = timeouts or Timeouts()
        self.retries = retries or Retries()
        if request_deadline <= WAIT_MARGIN:
            raise Wan2GPValidationError(f"request_deadline must be over {WAIT_MARGIN:g} s", field="request_deadline")
        self.request_deadline = request_deadline
        self.poll_interval = poll_interval
        self.max_download_bytes = max_download_bytes
        self._token = token
        self.security_warnings = security_warnings(self.url, has_auth=bool(token))
        self.contract: Contract | None = None
        self.async_allowed = False
        self.server_info: dict[str, Any] = {}
        self.tools: dict[str, ToolInfo] = {}
        # the SDK's side: one loop on one thread, one session at a time (see _Session)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wan2gp-mcp", daemon=True)
        self._sdk: _Session | None = None
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._opening: asyncio.Lock | None = None
        self._http: httpx.Client | None = None  # tickets: uploads and downloads
        self._closed = False
        # caches
        self._lock = threading.Lock()
        self._schemas: dict[tuple[str, str], dict[str, Any]] = {}  # v2 (tool, action) -> parameters
        self._actions: dict[str, set[str]] = {}  # v2 tool -> its actions
        self._models: list[ModelRecord] | None = None
        self._model_schemas: dict[str, ModelSchema] = {}
        self._progress: dict[str, McpProgress] = {}
        self._finished: dict[str, JobSnapshot] = {}
        # the client-side queue: WanGP runs one generation at a time and refuses a second one
        self._turn = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._running: str | None = None  # our job the server runs (or one adopted from an earlier program)

    # --- opening and closing -------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str = DEFAULT_MCP_URL, *, token: str | None = None, timeouts: Timeouts | None = None,
             **options: Any) -> McpConnection:
        """Connect: ``initialize``, then every page of ``tools/list``, and tell the contract from the tools.

        Parameters:
            url: the MCP endpoint, e.g. ``http://127.0.0.1:7866/mcp``.
            token: a bearer token for servers started with ``--mcp-auth``; sent on every request and ticket.
            timeouts: bounded waits (:class:`Timeouts`: ``connect``, ``call``, ``download``, ``job``).
            options: ``retries``, ``request_deadline`` (the shortest request deadline on the way, default 30 s),
                ``poll_interval``, ``max_download_bytes``.

        Raises:
            Wan2GPConnectionError: unreachable, refused access (401/403), Host refused (421).
            UnsupportedServerError: no MCP endpoint there, or not a WanGP server this client knows.
        """
        connection = cls(url, token=token, timeouts=timeouts, **options)
        try:
            connection._connect()
        except BaseException:
            connection.close()
            raise
        return connection

    def _connect(self) -> None:
        for warning in self.security_warnings:
            if first_warning(self.server, warning):
                log.warning("WanGP MCP at %s: %s", self.server, warning)
        self._thread.start()
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._http = httpx.Client(headers=headers, follow_redirects=False, verify=tls_context(),
                                  timeout=httpx.Timeout(self.timeouts.download, connect=self.timeouts.connect))
        self._sdk = self._run(self._new_session(), self.timeouts.connect + 5)
        info = self._sdk.init.serverInfo
        self.server_info = {"name": info.name, "version": info.version,
                            "protocol": self._sdk.init.protocolVersion}
        tools = self._list_tools()
        self.tools = {t.name: t for t in tools}
        self.contract = detect_contract(tools, server=self.server)
        if self.contract.is_v2:
            wait = self._action_schema("wangp_generate", "generate").get("properties", {}).get("wait", {})
            self.async_allowed = "const" not in wait
        else:
            self.async_allowed = True  # v1: wait defaults to false
        log.info("connected to WanGP's MCP server at %s (%s, mcp %s)", self.server, self.contract.value,
                 self.server_info.get("version"))

    def close(self) -> None:
        """Close the session and its thread. Jobs go on on the server; their ids let a new connection see them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._turn:  # submits waiting their turn give up (nothing of theirs was sent)
            self._turn.notify_all()
        if self._thread.is_alive():
            sdk = self._sdk
            if sdk is not None:
                closing = asyncio.run_coroutine_threadsafe(sdk.close(), self._loop)
                try:
                    closing.result(5.0)
                except (TimeoutError, concurrent.futures.CancelledError):
                    pass
            with self._lock:
                for future in self._inflight:
                    future.cancel()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        if not self._loop.is_running():
            self._loop.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> McpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the SDK, on its loop ------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        closed = Wan2GPConnectionError("the MCP connection is closed", server=self.server,
                                       hint="open a new one with McpConnection.open()")
        with self._lock:  # close() cancels what is in flight: no caller waits on a stopped loop
            if self._closed or not self._thread.is_alive():
                coro.close()
                raise closed
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._inflight.add(future)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise Wan2GPTimeoutError(f"no answer from the WanGP MCP server within {timeout:.0f} s",
                                     server=self.server) from None
        except concurrent.futures.CancelledError:
            raise closed from None
        finally:
            with self._lock:
                self._inflight.discard(future)

    async def _new_session(self) -> _Session:
        session = _Session(self)
        await session.start()
        if session.redirected_to and session.redirected_to != self.url:
            # POST /mcp answered 307 -> /mcp/ (12.60): talk to /mcp/ directly, or every request is sent twice
            log.info("WanGP's MCP endpoint is %s (redirected from %s)", session.redirected_to, self.url)
            self.url = session.redirected_to
            await session.close()
            session = _Session(self)
            await session.start()
        return session

    async def _session(self) -> _Session:
        if self._opening is None:  # made on the loop, which every caller of this runs on
            self._opening = asyncio.Lock()
        async with self._opening:  # calls that find the session dead open one new session, not one each
            sdk = self._sdk
            if sdk is None or sdk.dead:
                sdk = self._sdk = await self._new_session()
            return sdk

    def call(self, tool: str, arguments: Mapping[str, Any], *, deadline: float | None = None,
             job_id: str | None = None, idempotent: bool = True) -> Any:
        """Call one tool; its answer (``structuredContent``), or the project error a refusal means.

        ``idempotent`` calls are tried again, on a new session, after a dropped connection (not after a
        refused one: nothing listens there); a generation never is.
        """
        deadline = deadline or self.timeouts.call
        attempts = self.retries.attempts if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                result = self._run(self._call(tool, dict(arguments), deadline, job_id), deadline + 5)
                break
            except Wan2GPConnectionError as exc:
                unreachable = "cannot reach" in exc.message
                if attempt == attempts or unreachable or isinstance(exc, Wan2GPTimeoutError):
                    raise
                pause = self.retries.pause(attempt)
                log.info("MCP call %s failed (%s); trying again in %.1f s", tool, exc, pause)
                time.sleep(pause)
        if getattr(result, "isError", False):
            raise refusal_error(error_text(result), server=self.server, job_id=job_id)
        return result_data(result)

    async def _call(self, tool: str, arguments: dict[str, Any], deadline: float, job_id: str | None) -> Any:
        what = f"the call {tool}"
        try:
            sdk = await self._session()
        except BaseException as exc:  # noqa: BLE001 - translated
            raise transport_error(exc, server=self.server, job_id=job_id, what="connecting") from None
        return await sdk.call_tool(tool, arguments, deadline, job_id=job_id, what=what)

    def _list_tools(self) -> list[ToolInfo]:
        async def every_page() -> list[ToolInfo]:
            sdk = await self._session()
            return await sdk.list_tools()
        return self._run(every_page(), self.timeouts.call + 5)

    # --- v2: progressive discovery --------------------------------------------------------------------------

    def _action_schema(self, tool: str, action: str, **top: Any) -> dict[str, Any]:
        """The parameters of a v2 action, read once (``arguments`` null) before the action is first called."""
        key = (tool, action)
        with self._lock:
            if key in self._schemas:
                return self._schemas[key]
        if tool not in self._actions:
            discovery = self.call(tool, {**top})
            actions = discovery.get("actions") if isinstance(discovery, Mapping) else None
            names = set(actions) if isinstance(actions, Mapping) else \
                {a.get("name") for a in actions or [] if isinstance(a, Mapping)}
            with self._lock:
                self._actions[tool] = {str(n) for n in names if n}
        if action not in self._actions[tool]:
            raise UnsupportedServerError(
                f"this WanGP's {tool} has no action {action!r} (it has: {', '.join(sorted(self._actions[tool]))})",
                server=self.server, hint="media transfer needs an HTTP transport (not stdio)"
                if action.startswith("create_gallery") else None)
        described = self.call(tool, {**top, "action": action, "arguments": None})
        spec = described.get("action") if isinstance(described, Mapping) else None
        parameters = spec.get("parameters") if isinstance(spec, Mapping) else None
        parameters = dict(parameters) if isinstance(parameters, Mapping) else {}
        with self._lock:
            self._schemas[key] = parameters
        return parameters

    def _v2(self, tool: str, action: str, arguments: Mapping[str, Any], *,
            optional: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a v2 action. ``optional`` arguments are sent only where the action's schema declares them."""
        top: dict[str, Any] = {k: kwargs.pop(k) for k in ("model_type", "media") if k in kwargs}
        declared = self._action_schema(tool, action, **top).get("properties", {})
        args = dict(arguments)
        args.update({k: v for k, v in dict(optional or {}).items() if k in declared})
        return self.call(tool, {**top, "action": action, "arguments": args}, **kwargs)

    # --- models -----------------------------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        """The server's model catalog, every page of it (v2: cursors followed to the end)."""
        with self._lock:
            if self._models is not None:
                return list(self._models)
        records: list[Any] = []
        if self.contract is Contract.V2:
            records = self._v2_pages("wangp_models", "search", {"limit": 100}, "models")
        elif self.contract is Contract.V1_13:
            offset = 0
            while True:
                page = self.call("wangp_models", {"query": "", "limit": 50, "offset": offset})
                items = page.get("models") or [] if isinstance(page, Mapping) else []
                records += items
                offset += len(items)
                if not items or not page.get("has_more"):
                    break
        else:
            offset = 0
            while True:  # 12.60: at most 10 per page, no total
                items = self.call("wangp_list_models", {"limit": 10, "offset": offset})
                items = items if isinstance(items, list) else [items] if isinstance(items, Mapping) else []
                records += items
                offset += len(items)
                if len(items) < 10:
                    break
        models = [ModelRecord.parse(r) for r in records if isinstance(r, Mapping) and r.get("model_type")]
        with self._lock:
            self._models = models
        return list(models)

    def _v2_pages(self, tool: str, action: str, arguments: Mapping[str, Any], key: str,
                  *, until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
        items: list[Any] = []
        args = dict(arguments)
        for _ in range(10_000):  # a bound: a server that always says has_more would loop forever
            try:
                page = self._v2(tool, action, args)
            except Wan2GPValidationError as exc:
                if "cursor" in args and "expired cursor" in exc.message:
                    raise Wan2GPServerError(f"the server's page cursor for {tool} {action} expired while "
                                            "reading it", server=self.server, hint="try again") from None
                raise
            page = page if isinstance(page, Mapping) else {}
            items += [i for i in page.get(key) or []]
            if not page.get("has_more") or (until and until(items)):
                return items
            following = page.get("next_call")
            if isinstance(following, Mapping) and isinstance(following.get("arguments"), Mapping):
                args = dict(following["arguments"])
            elif page.get("next_cursor"):
                args = {**arguments, "cursor": page["next_cursor"]}
            else:
                return items
        return items

    def model_schema(self, model: str) -> ModelSchema:
        """One model's limits (frames, fps), media inputs, capabilities and defaults, from the server."""
        with self._lock:
            if model in self._model_schemas:
                return self._model_schemas[model]
        try:
            if self.contract is Contract.V2:
                schema = self._v2("wangp_model", "capabilities", {}, model_type=model)
                defaults = self._v2("wangp_model", "defaults", {}, model_type=model)
            elif self.contract is Contract.V1_13:
                schema = self.call("wangp_model", {"model_type": model, "view": "schema"})
                defaults = self.call("wangp_model", {"model_type": model, "view": "defaults"})
            else:
                schema = self.call("wangp_get_model_schema", {"model_type": model})
                defaults = self.call("wangp_get_default_settings", {"model_type": model})
        except Wan2GPValidationError as exc:
            if exc.field in (None, "model_type") and "model_type" in exc.message:
                raise self._unknown_model(model) from None
            raise
        if not isinstance(schema, Mapping):
            raise self._unknown_model(model)
        parsed = ModelSchema.parse(schema, defaults if isinstance(defaults, Mapping) else {})
        with self._lock:
            self._model_schemas[model] = parsed
        return parsed

    def _unknown_model(self, model: str) -> Wan2GPValidationError:
        try:
            names = [m.model_type for m in self.models()]
        except Wan2GPError:
            names = []
        return Wan2GPValidationError(f"the server has no model {model!r}{did_you_mean(model, names)}",
                                     field="model_type", server=self.server, hint="list its models with models()")

    # --- validation -------------------------------------------------------------------------------------------

    def validate(self, model: str, settings: Mapping[str, Any]) -> ModelSchema:
        """Check ``settings`` (WanGP's own setting names) against the server's schema for ``model``.

        Frame counts against the model's rule, the resolution's form (and the server's list, when it gives
        one), numbers and their ranges, and media inputs: each must be a Gallery media id (see :meth:`upload`)
        for a role the model has. Raises :class:`Wan2GPValidationError` (with ``field``); nothing is sent.
        """
        if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
            raise Wan2GPValidationError("settings must be a dict of WanGP setting names to values")
        given = settings.get("model_type")
        if given not in (None, model):
            raise Wan2GPValidationError(f"settings name model {given!r} but the job is for {model!r}",
                                        field="model_type")
        for name, value in settings.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise Wan2GPValidationError(f"{name}: {value!r} is not a JSON value (text, number, list, ...)",
                                            field=name) from None
        schema = self.model_schema(model)
        for name, value in settings.items():
            self._check_one(schema, name, value)
        image_start = settings.get("image_start")
        prompt_type = str(settings.get("image_prompt_type", schema.defaults.get("image_prompt_type")) or "")
        if image_start and "S" not in prompt_type:
            raise Wan2GPValidationError(
                f"image_start is given but image_prompt_type is {prompt_type!r}: WanGP would ignore the start "
                "image; add image_prompt_type='S' (or 'SE' with an end image)", field="image_prompt_type")
        return schema

    def _check_one(self, schema: ModelSchema, name: str, value: Any) -> None:
        model = schema.record.model_type

        def fail(message: str) -> Wan2GPValidationError:
            return Wan2GPValidationError(f"{name}: {message}", field=name, server=self.server)

        if name == "video_length":
            if not _is_int(value) or value < 1:
                raise fail(f"must be a whole number of frames, not {value!r}")
            rule = frame_rule(schema)
            if not rule.is_valid(value):
                low = rule.nearest(value)
                options = sorted({low, min(low + rule.step, rule.last)} - {value})
                raise fail(f"{value} frames does not fit {model} ({rule.step}n+{rule.minimum % rule.step or rule.step}"
                           f", from {rule.minimum} to {rule.last}); use {' or '.join(map(str, options))}")
        elif name == "resolution":
            try:
                text = str(Resolution.parse(value))
            except ValueError as exc:
                raise fail(str(exc).splitlines()[0]) from None
            if schema.resolutions and text not in schema.resolutions:
                raise fail(f"{model} does not take {text}; it takes: {', '.join(schema.resolutions)}")
        elif name == "seed":
            if not _is_int(value) or not -1 <= value <= SEED_MAX:
                raise fail(f"must be a whole number from -1 (random) to {SEED_MAX}, not {value!r}")
        elif name == "num_inference_steps":
            if not _is_int(value) or not 1 <= value <= 1000:
                raise fail(f"must be a whole number of steps from 1 to 1000, not {value!r}")
        elif name in ("guidance_scale", "flow_shift"):
            if not _is_number(value) or not 0 <= value <= 100:
                raise fail(f"must be a number from 0 to 100, not {value!r}")
        elif name == "prompt":
            if not isinstance(value, str) or not value.strip():
                raise fail("must be a text describing the shot")
        elif name in MEDIA_SETTINGS:
            kind, role = MEDIA_SETTINGS[name]
            values = value if isinstance(value, list) else [value]
            for item in values:
                if not isinstance(item, str) or not item.startswith(MEDIA_ID_PREFIXES):
                    raise fail(f"must be a Gallery media id ('visual:...'), not {str(item)[:80]!r}: upload the "
                               "file with upload() first (the server never reads this machine's paths)")
            roles = schema.record.media_inputs.get(kind, frozenset())
            if values and role not in roles:
                takes = ", ".join(f"{k} {'/'.join(sorted(r))}" for k, r in schema.record.media_inputs.items())
                raise fail(f"{model} takes no {role} {kind} (its media inputs: {takes or 'none'})")
        else:
            default = schema.defaults.get(name)
            if _is_number(default) and value is not None and not _is_number(value):
                raise fail(f"must be a number like its default {default!r}, not {value!r}")
            if isinstance(default, str) and value is not None and not isinstance(value, str):
                raise fail(f"must be a text like its default {default!r}, not {value!r}")

    def prepare(self, model: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The ``source`` sent for ``settings``: validated, with ``model_type``, and ``resolution``,
        ``video_length`` and ``seed`` filled from the model's defaults when missing (v2 would otherwise fill
        them from WanGP's UI settings, not from the model)."""
        schema = self.validate(model, settings)
        source = {"model_type": model, **settings}
        for key, fallback in (("resolution", None), ("video_length", None), ("seed", -1)):
            if source.get(key) is None:
                value = schema.defaults.get(key, fallback)
                if value is not None:
                    source[key] = value
        return source

    # --- generation -------------------------------------------------------------------------------------------

    def submit(self, model: str, settings: Mapping[str, Any], *, block: float = 0.0,
               stop: threading.Event | None = None, queue_timeout: float | None = None) -> str:
        """Validate and submit one generation; its WanGP job id.

        WanGP runs one generation at a time and refuses a second one, so submissions wait their turn here
        (first come, first served) until our previous job is done; a job of another client makes us wait
        and try again. Nothing is sent before the turn comes.

        Parameters:
            block: how long the server may hold the call waiting for the job (v2 without ``--mcp-async``
                must wait; the wait is cut below the request deadline, and the job id comes back either way).
                v1 never waits on the server: its timed-out wait loses the job id.
            stop: set it to give up while waiting for the turn (:class:`JobCancelledError`, nothing sent).
            queue_timeout: how long to wait for the turn (default ``timeouts.job``).

        Raises:
            Wan2GPValidationError: bad settings (nothing sent), or refused by the server before submission.
            Wan2GPTimeoutError: the turn did not come in time, or the server did not answer the submission.
            JobCancelledError: ``stop`` was set before the job was sent.
        """
        source = self.prepare(model, settings)
        ticket = object()
        deadline = time.monotonic() + (queue_timeout if queue_timeout is not None else self.timeouts.job)
        with self._turn:
            self._queue.append(ticket)
        try:
            while True:
                if self._closed:
                    raise Wan2GPConnectionError("the MCP connection was closed before the job was sent",
                                                server=self.server)
                if stop is not None and stop.is_set():
                    raise JobCancelledError("the job was cancelled before it was sent: nothing reached the server",
                                            server=self.server)
                with self._turn:
                    mine = self._queue[0] is ticket and self._running is None
                    running = self._running if self._queue[0] is ticket else None
                if mine:
                    try:
                        job_id = self._send(source, block)
                    except ServerBusyError:  # another client's generation: ours waits, nothing was queued
                        log.info("WanGP at %s runs another client's job; waiting", self.server)
                    else:
                        return job_id
                elif running is not None:
                    self._poll_quietly(running)  # the head of the queue watches the running job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Wan2GPTimeoutError(
                        f"the server stayed busy for {queue_timeout or self.timeouts.job:.0f} s; the job was not "
                        "sent", server=self.server, hint="try again later, or raise the queue timeout")
                with self._turn:
                    if not (self._queue[0] is ticket and self._running is None):
                        self._turn.wait(min(self.poll_interval, remaining))
                if mine:  # refused as busy: leave the server a moment
                    (stop or threading.Event()).wait(min(self.poll_interval, max(0.0, remaining)))
        finally:
            with self._turn:
                self._queue.remove(ticket)
                self._turn.notify_all()

    def _listening(self) -> bool:
        """False when a TCP connect to the server's address is refused now: its process is gone. Anything else
        (it accepts, or the network is slow or down) is not taken as a stop."""
        import socket

        parts = urllib.parse.urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=self.timeouts.connect):
                return True
        except ConnectionRefusedError:
            return False
        except OSError:
            return True

    def _send(self, source: dict[str, Any], block: float) -> str:
        arguments: dict[str, Any] = {}
        if self.contract is Contract.V2:
            wait = block > 0 or not self.async_allowed
            arguments = {"source": source, "wait": wait}
            if wait:  # the job id comes back before any deadline on the way
                arguments["timeout_s"] = max(MIN_SERVER_WAIT, min(block, self.request_deadline - WAIT_MARGIN))
        try:
            if self.contract is Contract.V2:
                data = self._v2("wangp_generate", "generate", arguments, optional={"event_limit": POLL_EVENTS},
                                deadline=self.request_deadline, idempotent=False)
            else:
                data = self.call("wangp_generate", {"source": source, "wait": False},
                                 deadline=self.request_deadline, idempotent=False)
        except Wan2GPTimeoutError:
            raise Wan2GPTimeoutError(
                f"WanGP did not answer the submission within {self.request_deadline:.0f} s: whether the job "
                "started is unknown (the server refuses another one while it runs)", server=self.server,
                hint="look at WanGP's console; submit again once it answers") from None
        except Wan2GPConnectionError as exc:
            if "cannot reach" in exc.message or self._listening():
                raise
            # the answer broke off and nothing listens now: the server died while it took the job
            raise Wan2GPConnectionError(
                "the WanGP MCP server stopped during the submission; nothing listens now. WanGP keeps jobs in "
                "memory, so whatever it had started is lost", server=self.server,
                hint="restart WanGP and submit the shot again") from None
        if not isinstance(data, Mapping) or not data.get("job_id"):
            raise Wan2GPServerError(f"the server accepted the generation but gave no job id: {str(data)[:200]}",
                                    server=self.server)
        snapshot = JobSnapshot.parse(data)
        with self._turn:
            self._running = snapshot.job_id  # until a snapshot says it is done (maybe this one: a short job)
        self._remember(snapshot)
        log.info("WanGP job %s submitted to %s", snapshot.job_id, self.server)
        return snapshot.job_id

    def _remember(self, snapshot: JobSnapshot) -> JobSnapshot:
        with self._turn:
            if snapshot.progress is not None:
                self._progress[snapshot.job_id] = snapshot.progress
            if snapshot.done:
                self._finished[snapshot.job_id] = snapshot
                while len(self._finished) > KEEP_FINISHED:
                    self._finished.pop(next(iter(self._finished)))
                self._progress.pop(snapshot.job_id, None)
                if self._running == snapshot.job_id:
                    self._running = None
                    self._turn.notify_all()
            elif self._running is None and not self._queue:
                self._running = snapshot.job_id  # a job adopted after our restart holds the server too
        return snapshot

    def _forget(self, job_id: str) -> None:
        with self._turn:
            self._progress.pop(job_id, None)
            if self._running == job_id:
                self._running = None
                self._turn.notify_all()

    def _poll_quietly(self, job_id: str) -> None:
        try:
            self.snapshot(job_id)
        except ServerRestartedError:
            pass  # forgotten: the slot is free
        except Wan2GPError as exc:
            log.debug("polling job %s failed: %s", job_id, exc)

    def snapshot(self, job_id: str) -> JobSnapshot:
        """The job as the server sees it now (a finished job's last snapshot is kept and not asked again).

        Raises :class:`ServerRestartedError` when the server no longer knows the job (it restarted: the job is
        lost), :class:`Wan2GPConnectionError` when it can't be reached.
        """
        with self._turn:
            if job_id in self._finished:
                return self._finished[job_id]
            previous = self._progress.get(job_id)
        try:
            if self.contract is Contract.V2:
                data = self._v2("wangp_session", "get_job", {"job_id": job_id},
                                optional={"event_limit": POLL_EVENTS}, job_id=job_id)
            else:
                data = self.call("wangp_get_job", {"job_id": job_id, "event_limit": POLL_EVENTS}, job_id=job_id)
        except ServerRestartedError:
            self._forget(job_id)
            raise
        if not isinstance(data, Mapping):
            raise Wan2GPServerError(f"the server answered get_job for {job_id} with no snapshot",
                                    server=self.server, job_id=job_id)
        return self._remember(JobSnapshot.parse(data, previous=previous))

    def wait(self, job_id: str, timeout: float, *, on_progress: Callable[[JobSnapshot], None] | None = None,
             stop: threading.Event | None = None) -> JobSnapshot:
        """Poll the job until it is done, at most ``timeout`` seconds; its final snapshot.

        Each poll is one short request, so no request deadline on the way is ever near. ``on_progress`` gets
        each snapshot whose progress changed. ``stop``: stop waiting (the job goes on; its snapshot returns).

        Raises:
            JobFailedError: the job failed (``stage`` and ``server_message`` are WanGP's).
            JobCancelledError: the job was cancelled.
            Wan2GPTimeoutError: still running after ``timeout`` (``job_id`` is in the error: the job goes on).
            ServerRestartedError: the server stopped or restarted: the job is lost.
        """
        deadline = time.monotonic() + timeout
        seen: McpProgress | None = None
        reconnect_by: float | None = None
        while True:
            try:
                snapshot = self.snapshot(job_id)
                reconnect_by = None
            except ServerRestartedError:
                raise
            except Wan2GPConnectionError as exc:
                if self._closed:
                    raise
                # Nothing listens (the poll's own connect, or a probe after a request cut mid-way): the server
                # stopped, its jobs with it.
                if "cannot reach" in exc.message or not self._listening():
                    self._forget(job_id)
                    raise ServerRestartedError(
                        f"the WanGP MCP server stopped while job {job_id} ran: WanGP keeps jobs in memory, so "
                        "the job is lost", server=self.server, job_id=job_id,
                        hint="restart WanGP and submit the shot again") from None
                reconnect_by = reconnect_by or time.monotonic() + self.timeouts.reconnect
                if time.monotonic() > reconnect_by:
                    raise
                snapshot = None
            if snapshot is not None:
                if on_progress is not None and (snapshot.done or snapshot.progress != seen):
                    seen = snapshot.progress
                    on_progress(snapshot)
                if snapshot.done:
                    snapshot.raise_for_state(server=self.server)
                    return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Wan2GPTimeoutError(f"job {job_id} still runs after {timeout:.0f} s; it goes on on the server",
                                         server=self.server, job_id=job_id,
                                         hint="wait again with its job id, or cancel it")
            if (stop or threading.Event()).wait(min(self.poll_interval, remaining)) and snapshot is not None:
                return snapshot

    def cancel(self, job_id: str) -> JobSnapshot:
        """Ask the server to stop the job (WanGP's cancel); the snapshot right after. The job is done once a
        later snapshot says so (WanGP stops within the current step)."""
        with self._turn:
            if job_id in self._finished:
                return self._finished[job_id]
        if self.contract is Contract.V2:
            data = self._v2("wangp_session", "cancel_job", {"job_id": job_id}, job_id=job_id)
        else:
            data = self.call("wangp_cancel_job", {"job_id": job_id}, job_id=job_id)
        log.info("cancel of WanGP job %s sent to %s", job_id, self.server)
        return self._remember(JobSnapshot.parse(data if isinstance(data, Mapping) else {"job_id": job_id}))

    # --- files ------------------------------------------------------------------------------------------------

    def outputs(self, snapshot: JobSnapshot) -> list[McpOutput]:
        """A completed job's outputs with their media ids. 12.60 gives none in the snapshot
        (``gallery_items`` is empty): they are found in the Gallery by file name."""
        if snapshot.state != "completed":
            snapshot.raise_for_state(server=self.server)
            raise Wan2GPError(f"job {snapshot.job_id} is still running", server=self.server, job_id=snapshot.job_id)
        found = [o for o in snapshot.outputs if o.media_id]
        if found or not snapshot.generated_files:
            return found
        wanted = [_basename(f) for f in snapshot.generated_files]
        if self.contract is Contract.V2:
            records = self._v2_pages("wangp_list_gallery", "list", {"limit": 100}, "media",
                                     until=lambda items: _matches(items, wanted))
        else:
            records = self.call("wangp_list_gallery", {"media_type": "all", "limit": GALLERY_PAGE})
            records = records if isinstance(records, list) else [records] if isinstance(records, Mapping) else []
        by_name: dict[str, McpOutput] = {}
        for record in records:
            if isinstance(record, Mapping):
                output = McpOutput.parse(record)
                by_name.setdefault(_basename(output.server_path or output.filename), output)
        outputs = [by_name[name] for name in wanted if name in by_name and by_name[name].media_id]
        if not outputs:
            raise JobFailedError(f"job {snapshot.job_id} finished but its output is not in the server's Gallery",
                                 server=self.server, job_id=snapshot.job_id)
        return outputs

    def _ticket(self, kind: str, argument: str, value: str) -> Mapping[str, Any]:
        if self.contract is Contract.V2:
            data = self._v2("wangp_session", f"create_gallery_{kind}", {argument: value})
        else:
            if not TRANSFER_TOOLS_V1 <= set(self.tools):
                raise UnsupportedServerError("this WanGP MCP server offers no file transfer (stdio transport?)",
                                             server=self.server, hint="run WanGP with --mcp-transport streamable-http")
            data = self.call(f"wangp_create_gallery_{kind}", {argument: value})
        if not isinstance(data, Mapping) or not isinstance(data.get(f"{kind}_url"), str):
            raise Wan2GPServerError(f"the server gave no {kind} ticket: {str(data)[:200]}", server=self.server)
        return data

    def _origin(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/"

    def upload(self, path: str | Path) -> str:
        """Send a local file (start/end/reference image, control video, audio) through a one-use upload ticket;
        its Gallery media id, to give as the setting's value."""
        path = Path(path)
        if not path.is_file():
            raise Wan2GPValidationError(f"{path} is not a file", field="path")
        suffix = path.suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise Wan2GPValidationError(f"WanGP takes no {suffix or 'extension-less'} files; give one of "
                                        f"{', '.join(sorted(UPLOAD_SUFFIXES))}", field="path")
        size = path.stat().st_size
        if size == 0:
            raise Wan2GPValidationError(f"{path} is empty", field="path")
        name = safe_name(path.stem) + suffix  # our own name: WanGP keeps it, the extension tells the kind
        for attempt in range(1, self.retries.attempts + 1):
            ticket = self._ticket("upload", "filename", name)  # one use: a new one for each attempt
            announced = ticket.get("max_bytes")
            limit = announced if isinstance(announced, int) else MAX_UPLOAD_BYTES
            if size > limit:
                raise Wan2GPValidationError(f"{path.name} is {size} bytes, over the server's {limit} limit",
                                            field="path")
            url = checked_url(ticket["upload_url"], self._origin())
            assert self._http is not None
            try:
                with path.open("rb") as body:
                    response = self._http.put(url, content=_chunks(body), headers={
                        "Content-Length": str(size),
                        "Content-Type": mimetypes.guess_type(path.name)[0] or "application/octet-stream"})
            except httpx.TransportError as exc:
                if attempt == self.retries.attempts:
                    raise transport_error(exc, server=self.server, what=f"uploading {path.name}") from None
                time.sleep(self.retries.pause(attempt))
                continue
            if response.status_code != 200:
                reason = _json_error(response)
                if response.status_code in (400, 413):
                    raise Wan2GPValidationError(f"WanGP refused {path.name}: {reason}", field="path",
                                                server=self.server)
                raise Wan2GPServerError(f"uploading {path.name} failed (HTTP {response.status_code}: {reason})",
                                        server=self.server)
            reply = response.json() if response.content else {}
            media_id = reply.get("media_id") or reply.get("gallery_id") if isinstance(reply, Mapping) else None
            if not media_id:
                raise Wan2GPServerError(f"the server took {path.name} but gave no media id", server=self.server)
            log.info("uploaded %s to %s as %s", path.name, self.server, media_id)
            return str(media_id)
        raise AssertionError("unreachable")

    def download(self, output: McpOutput, dest: str | Path, *, check: Callable[[Path], None] | None = None) -> Path:
        """Fetch one output through a one-use download ticket to ``dest``: streamed to a temporary name in
        ``dest``'s folder, its size checked against the ticket (and ``check`` run), then renamed. The
        server's file name and paths are never used as local paths."""
        if not output.media_id:
            raise Wan2GPValidationError("this output has no media id to download", field="output")
        dest = Path(dest)
        argument = "gallery_id" if self.contract is Contract.V1_12 else "media_id"
        for attempt in range(1, self.retries.attempts + 1):
            ticket = self._ticket("download", argument, output.media_id)
            size = ticket.get("size") if _is_int(ticket.get("size")) else None
            remote = RemoteFile(url=checked_url(ticket["download_url"], self._origin()),
                                name=str(ticket.get("filename") or output.filename or "output"), size=size)
            assert self._http is not None
            try:
                return download(remote, dest, client=self._http, max_bytes=self.max_download_bytes,
                                timeout=self.timeouts.download, check=check)
            except Wan2GPConnectionError:
                if attempt == self.retries.attempts:
                    raise
                time.sleep(self.retries.pause(attempt))
        raise AssertionError("unreachable")


class _Session:
    """One SDK session (``streamable_http_client`` + ``ClientSession``), held open by a task on the loop.

    The SDK runs each request in its transport's task group: one failed request (refused connection, HTTP
    401) cancels the group and every request in it. The holder task records that cause; calls waiting on the
    session then fail with it, and the connection opens a new session for the next call.
    """

    def __init__(self, owner: McpConnection) -> None:
        self.owner = owner
        self.url = owner.url
        self.redirected_to: str | None = None
        self.session: Any = None
        self.init: Any = None
        self.death: BaseException | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Task[None] | None = None

    @property
    def dead(self) -> bool:
        return self._holder is None or self._holder.done()

    async def start(self) -> None:
        self._ready = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._holder = asyncio.create_task(self._hold())
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.owner.timeouts.connect)
        except TimeoutError:
            await self.close()
            raise Wan2GPTimeoutError(f"{self.owner.server} accepted the connection but did not answer",
                                     server=self.owner.server, hint="WanGP may be frozen or still starting") from None
        except BaseException as exc:  # noqa: BLE001 - translated
            await self.close()
            raise transport_error(exc, server=self.owner.server, what="connecting") from None

    async def _hold(self) -> None:
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        assert self._ready is not None and self._stop is not None
        owner = self.owner

        async def on_response(response: httpx.Response) -> None:
            if response.status_code in (307, 308) and response.request.url == httpx.URL(self.url):
                location = response.headers.get("location")
                if location:
                    target = str(response.request.url.join(location))
                    if _same_origin(target, self.url):
                        self.redirected_to = target

        headers = {"Authorization": f"Bearer {owner._token}"} if owner._token else None
        # Reads wait longer than any call's own deadline: the SDK's deadline answers first, the session lives.
        timeout = httpx.Timeout(owner.timeouts.connect, read=max(owner.timeouts.call, owner.request_deadline) + 30)
        try:
            async with httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=True, verify=tls_context(),
                                         event_hooks={"response": [on_response]}) as http:
                async with streamable_http_client(self.url, http_client=http, terminate_on_close=False) as streams:
                    async with ClientSession(streams[0], streams[1], message_handler=self._on_message) as session:
                        self.init = await session.initialize()
                        self.session = session
                        self._ready.set_result(None)
                        await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - kept for the waiting calls (see _guarded)
            self.death = self.death or root_cause(exc)  # an unreadable answer (_on_message) came first
            if not self._ready.done():
                self._ready.set_exception(self.death)

    async def _on_message(self, message: Any) -> None:
        """The SDK hands an answer it could not read (cut off mid-body: the server died while answering, or a
        garbled body) to this handler, not to the request that waits for it: that request would wait for its
        whole deadline. The session ends here instead, so its waiting calls fail at once with the cause. (The
        SDK's other notice here, a late answer to a request it already gave up, is no reason to end it.)"""
        if isinstance(message, httpx.HTTPError | OSError | ValueError):  # ValueError: pydantic's, a garbled body
            self.death = root_cause(message)
            if self._stop is not None:
                self._stop.set()

    async def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._holder is not None and not self._holder.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._holder), 2.0)
            except BaseException:  # noqa: BLE001 - a session that won't close in time is dropped
                self._holder.cancel()

    async def list_tools(self) -> list[ToolInfo]:
        tools: list[ToolInfo] = []
        cursor: str | None = None
        for _ in range(1000):  # cursor paging, followed to the end (bounded)
            page = await self._guarded(self.session.list_tools(cursor=cursor) if cursor else
                                       self.session.list_tools(), self.owner.timeouts.call, None, "tools/list")
            tools += [ToolInfo.from_sdk(t) for t in page.tools]
            cursor = page.nextCursor
            if not cursor:
                break
        return tools

    async def call_tool(self, tool: str, arguments: dict[str, Any], deadline: float, *, job_id: str | None,
                        what: str) -> Any:
        return await self._guarded(
            self.session.call_tool(tool, arguments, read_timeout_seconds=timedelta(seconds=deadline)),
            deadline, job_id, what)

    async def _guarded(self, request: Coroutine[Any, Any, T], deadline: float, job_id: str | None,
                       what: str) -> T:
        """Run an SDK request; if the session dies meanwhile, fail with the cause of its death."""
        from mcp.shared.exceptions import McpError

        server = self.owner.server
        assert self._holder is not None
        task = asyncio.ensure_future(request)
        await asyncio.wait({task, self._holder}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            raise transport_error(self.death or ConnectionError("the MCP session closed"), server=server,
                                  job_id=job_id, what=what)
        try:
            return task.result()
        except McpError as exc:
            if exc.error.code == 408:  # the SDK's own deadline for this request
                raise Wan2GPTimeoutError(f"{what} got no answer within {deadline:.0f} s", server=server,
                                         job_id=job_id, hint="the server is busy or frozen") from None
            if self.death is not None:
                raise transport_error(self.death, server=server, job_id=job_id, what=what) from None
            raise Wan2GPServerError(f"{what} failed: {exc.error.message}", server=server, job_id=job_id) from None
        except Wan2GPError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            raise transport_error(exc, server=server, job_id=job_id, what=what) from None
        except RuntimeError as exc:  # the SDK's check of an answer against the tool's output schema
            raise Wan2GPServerError(f"{what}: the server's answer does not match its own schema ({exc})",
                                    server=server, job_id=job_id) from None


def frame_rule(schema: ModelSchema) -> FrameRule:
    """The model's frame rule as the server's schema states it (WanGP's defaults where it says nothing)."""
    return FrameRule(
        fps=schema.fps or DEFAULT_RULE.fps,
        step=schema.frames_step or DEFAULT_RULE.step,
        minimum=schema.frames_minimum or DEFAULT_RULE.minimum,
        maximum=schema.frames_maximum or DEFAULT_RULE.maximum,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _basename(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def _matches(records: list[Any], wanted: list[str]) -> bool:
    names = {_basename(str(r.get("path") or r.get("filename") or "")) for r in records if isinstance(r, Mapping)}
    return all(w in names for w in wanted)


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _chunks(body: Any, size: int = 1024 * 1024) -> Any:
    while chunk := body.read(size):
        yield chunk


def _json_error(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or "no reason given"
    return str(data.get("error") if isinstance(data, Mapping) else data)[:200]
