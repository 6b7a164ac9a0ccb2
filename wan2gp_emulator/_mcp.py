"""WanGP's MCP server (``wgp.py --mcp --mcp-transport streamable-http``), emulated with the official ``mcp`` SDK.

What it follows:

* 12.60 (flavour ``v12``, API v1 only): the captured real server, ``tests/captures/head_mcp_tools_list.json.gz``
  (the tool list is served verbatim from ``data/mcp_v12.60_tools.json.gz``), ``head_mcp_probe_calls.json`` and
  ``head_mcp_success_flow.json`` (snapshots, events, tickets, the 307 of ``/mcp``).
* 13.x (flavour ``v13``): ``v13_mcp_v2_contract.json``, read from WanGP's source, not from a running server:
  API v2 by default (nine tools, progressive discovery, cursor paging, capability lists), or API v1 as 13.x serves
  it (``--mcp-api-version 1``: the 12.60 tools plus ``wangp_models``/``wangp_model``..., ``media_id`` names).

How it is built: the SDK's low-level ``Server`` (tools/list, tools/call, prompts, resources) behind the SDK's
``StreamableHTTPSessionManager`` (stateless, JSON responses, the SDK's Host-header check), mounted at ``/mcp`` so
that ``POST /mcp`` answers 307 to ``/mcp/`` as 12.60 does. Tool arguments are checked the way FastMCP checks
them (a pydantic model per tool, named ``<tool>Arguments``), so refusals carry FastMCP's texts. Tools run
synchronously on the server's event loop, as WanGP's plain functions do under FastMCP: a blocking ``wait`` holds
up every other request. Generations run on the web-UI emulator's engine (``_wangp.WanGP``: its queue worker,
fault switches and synthetic media), one job at a time.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import mimetypes
import os
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from . import _catalog, _media
from ._wangp import WanGP

MCP_VERSIONS = {"v12": "12.60", "v13": "13.01"}

JOB_EVENT_LIMIT = 20  # --job-event-limit: get_job/cancel_job (and every v1 tool) default
MAX_EVENTS = 500  # _MAX_STORED_EVENTS: events kept per job; event_limit is clamped to 0..500
TICKET_TTL = 600.0  # upload/download tickets live 10 minutes and serve once
MAX_UPLOAD_BYTES = 8 * 1024**3  # 8 GiB
PAGE_SIZE, PAGE_MAX, PAGE_MAX_CHARS = 20, 100, 6000  # v2 cursor paging (mcp_paging.py)
SNAPSHOT_TTL, SNAPSHOT_COUNT = 600.0, 16

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
AUDIO_EXT = {".wav", ".mp3", ".aac", ".m4a", ".flac", ".ogg", ".opus"}
MEDIA_KEYS = ("image_start", "image_end", "image_refs", "image_guide", "image_mask", "video_guide", "video_guide2",
              "video_mask", "video_source", "audio_guide", "audio_guide2", "audio_source")

BUSY = "WanGP session already has a generation in progress"
CANCELLED = "Generation was cancelled"
V1_TIMEOUT = "WanGP session job timed out"
BAD_CURSOR = "Invalid or expired cursor, or changed filters. Repeat the original search without cursor."
PATHS_DISABLED = ("Direct filesystem paths are disabled for this MCP server. Use a media_id returned by "
                  "wangp_list_gallery for {key}, or restart with filesystem reads enabled.")
V2_USAGE = ("Omit action to list actions; pass action with arguments=null to read its contract; pass action with an "
            "arguments object to execute it.")
# v1 default settings (wangp_get_default_settings) are WanGP's defaults "filtered to relevant fields": the keys the
# 12.60 capture shows for t2v_1.3B, plus the media-mode keys a model with image inputs needs.
# WanGP's model definition keys that declare the modes of the control inputs (13.x _validate_generation_media
# reads them), and the control input each one is about.
CONTROL_DECLARATIONS = (("guide_preprocessing", "video_guide"), ("mask_preprocessing", "video_mask"),
                        ("image_ref_choices", "image_refs"))
DEFAULT_SETTING_KEYS = ("prompt", "image_mode", "image_prompt_type", "resolution", "video_length",
                        "num_inference_steps", "seed", "guidance_phases", "guidance_scale", "sample_solver",
                        "flow_shift", "repeat_generation", "multi_prompts_gen_type", "RIFLEx_setting")


def default_api_version(flavour: str, requested: int | None) -> int:
    if flavour == "v12":
        if requested not in (None, 1):
            raise ValueError("WanGP 12.60 serves only MCP API v1 (--mcp-api-version came with 13.01)")
        return 1
    version = 2 if requested is None else int(requested)
    if version not in (1, 2):
        raise ValueError(f"mcp_api_version must be 1 or 2, not {requested!r}")
    return version


class ToolRefusal(Exception):
    """A refused call: FastMCP reports it as ``Error executing tool <name>: <text>`` with isError true."""


# ---------------------------------------------------------------------------------------------- schemas and arguments
def _prop(kind: str | list[str], default: Any = ..., nullable: bool = False, title: str | None = None,
          **extra: Any) -> dict:
    """One FastMCP-style property schema (``title`` only when given: v2 schemas strip titles)."""
    base: dict[str, Any] = {"type": kind} if isinstance(kind, str) else {"anyOf": [{"type": k} for k in kind]}
    base.update(extra)
    schema: dict[str, Any] = {"anyOf": [base, {"type": "null"}]} if nullable else base
    if default is not ...:
        schema["default"] = default
    if title:
        schema["title"] = title
    return schema


def _title(name: str) -> str:
    return " ".join(part.capitalize() for part in name.split("_"))


def fastmcp_schema(tool: str, props: dict[str, tuple], required: tuple[str, ...] = ()) -> dict:
    """The inputSchema FastMCP derives from a Python signature: {name: (kind, default, nullable)}."""
    properties = {}
    for name, (kind, default, nullable) in props.items():
        properties[name] = _prop(kind, default, nullable, title=_title(name))
    schema: dict[str, Any] = {"properties": properties}
    if required:
        schema["required"] = list(required)
    schema.update({"title": f"{tool}Arguments", "type": "object"})
    return schema


_PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "boolean": bool, "number": float,
                             "object": dict[str, Any], "array": list[Any], "null": type(None)}


def _py_type(schema: dict) -> Any:
    if "anyOf" in schema:
        options = [_py_type(s) for s in schema["anyOf"]]
        out = options[0]
        for option in options[1:]:
            out = out | option
        return out
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        return _py_type({"anyOf": [{"type": k} for k in kind]})
    if kind == "array" and schema.get("items", {}).get("type") == "object":
        return list[dict[str, Any]]
    return _PY_TYPES[kind]


def argument_model(tool: str, schema: dict) -> type[pydantic.BaseModel]:
    """A pydantic model like FastMCP's ``<tool>Arguments`` (``extra='forbid'`` where WanGP v2 sets it)."""
    required = set(schema.get("required", ()))
    fields: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        annotation = _py_type(prop)
        fields[name] = (annotation, ... if name in required else prop.get("default"))
    extra = "forbid" if schema.get("additionalProperties") is False else "ignore"
    config = pydantic.ConfigDict(extra=extra, arbitrary_types_allowed=True)
    return pydantic.create_model(f"{tool}Arguments", __config__=config, **fields)


@dataclass
class ToolDef:
    name: str
    description: str
    input_schema: dict
    output_schema: dict | None
    handler: Any  # fn(args: dict) -> result
    model: type[pydantic.BaseModel] | None = None

    @property
    def wraps_result(self) -> bool:
        return bool(self.output_schema and "result" in self.output_schema.get("properties", {}))

    def tool(self) -> types.Tool:
        return types.Tool(name=self.name, description=self.description, inputSchema=self.input_schema,
                          outputSchema=self.output_schema)


# ---------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    job_id: str
    created_at: float
    updated_at: float
    events: list[dict] = field(default_factory=list)
    result: dict | None = None
    done: bool = False
    cancel_requested: bool = False
    finished: threading.Event = field(default_factory=threading.Event)
    state: dict = field(default_factory=dict)

    def add(self, kind: str, data: Any) -> None:
        now = time.time()
        self.events.append({"kind": kind, "timestamp": now, "data": data})
        del self.events[:-MAX_EVENTS]
        self.updated_at = now

    def snapshot(self, event_limit: int | None, gallery_items: list[dict]) -> dict:
        limit = JOB_EVENT_LIMIT if event_limit is None else max(0, min(MAX_EVENTS, int(event_limit)))
        events = copy.deepcopy(self.events[-limit:]) if limit else []
        result = None
        if self.result is not None:
            result = dict(copy.deepcopy(self.result), gallery_items=gallery_items)
        return {"job_id": self.job_id, "done": self.done, "cancel_requested": self.cancel_requested,
                "webui_submission_ready": False, "webui_load_queue_token": "", "created_at": self.created_at,
                "updated_at": self.updated_at, "events": events, "result": result}


@dataclass
class GalleryItem:
    media_id: str
    path: Path
    media_type: str  # image | video | audio
    settings: dict

    @property
    def gallery(self) -> str:
        return "audio" if self.media_type == "audio" else "visual"


@dataclass
class Ticket:
    created: float
    filename: str
    path: Path | None = None  # downloads


def _media_type(name: str) -> str | None:
    ext = Path(name).suffix.lower()
    return "image" if ext in IMAGE_EXT else "video" if ext in VIDEO_EXT else "audio" if ext in AUDIO_EXT else None


def media_id_for(path: Path, media_type: str) -> str:
    """gallery_media_ids: '<visual|audio>:' + the first 12 hex digits of the SHA-1 of the case-folded path."""
    normalised = str(path).replace("\\", "/").casefold()
    prefix = "audio" if media_type == "audio" else "visual"
    return f"{prefix}:{hashlib.sha1(normalised.encode('utf-8')).hexdigest()[:12]}"


class McpServer:
    """One emulated WanGP MCP server: tools over the SDK, its job store, Gallery and ticket routes."""

    def __init__(self, engine: WanGP, *, flavour: str, api_version: int, allow_async: bool,
                 auth_token: str | None, host: str, port: int, inspect: bool = False) -> None:
        self.engine = engine
        self.inspect = inspect  # GET /emulator/info, /emulator/events, /emulator/jobs: see EmulatorServer
        self.flavour = flavour
        self.api_version = api_version
        self.allow_async = allow_async
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.v12 = flavour == "v12"
        self.id_key = "gallery_id" if self.v12 else "media_id"  # 12.60 calls the Gallery ids gallery_id
        self.lock = threading.RLock()
        self.jobs_by_id: dict[str, Job] = {}
        self.gallery: list[GalleryItem] = []
        self.selected: dict[str, str] = {}  # gallery kind -> media id
        self.uploads: dict[str, Ticket] = {}
        self.downloads: dict[str, Ticket] = {}
        self.snapshots: OrderedDict[str, tuple[float, str, list]] = OrderedDict()
        self._last_log_second = ""
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self.tools = self._build_tools()

    # ------------------------------------------------------------------ life cycle
    def start(self, ready_seconds: float) -> None:
        import uvicorn

        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning",
                                lifespan="on", access_log=False)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True, name="wangp-emulator-mcp")
        self._thread.start()
        deadline = time.monotonic() + ready_seconds
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the MCP emulator did not start on {self.host}:{self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._uvicorn = self._thread = None

    def jobs(self) -> list[dict]:
        with self.lock:
            return [{"job_id": j.job_id, "done": j.done, "cancel_requested": j.cancel_requested,
                     "result": copy.deepcopy(j.result)} for j in self.jobs_by_id.values()]

    # ------------------------------------------------------------------ HTTP
    def app(self) -> Starlette:
        server = Server("WanGP")  # serverInfo.version: the mcp package's version, as on the real server
        tools = self.tools

        @server.list_tools()
        async def list_tools() -> list[types.Tool]:
            return [t.tool() for t in tools.values()]

        @server.call_tool(validate_input=False)  # FastMCP validates with its pydantic model, not the schema
        async def call_tool(name: str, arguments: dict) -> Any:
            return self.call(name, arguments)

        @server.list_prompts()
        async def list_prompts() -> list[types.Prompt]:
            return [types.Prompt(name="wangp_agent", title="WanGP Agent Guide",
                                 description="Instructions for discovering WanGP models, building settings, running "
                                             "jobs, and handling media.", arguments=[])]

        @server.get_prompt()
        async def get_prompt(name: str, arguments: dict | None) -> types.GetPromptResult:
            text = "Use wangp_generate to run generations and wangp_get_job to follow them (WanGP emulator)."
            return types.GetPromptResult(messages=[types.PromptMessage(
                role="user", content=types.TextContent(type="text", text=text))])

        @server.list_resources()
        async def list_resources() -> list[types.Resource]:
            return [types.Resource(name=r["name"], title=r.get("title"), uri=r["uri"],
                                   description=r.get("description"), mimeType=r.get("mimeType"))
                    for r in _v12_capture()["resources"]]

        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=self.host in ("127.0.0.1", "localhost", "::1"),
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
        manager = StreamableHTTPSessionManager(app=server, json_response=True, stateless=True,
                                               security_settings=security)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette):  # noqa: ANN202
            async with manager.run():
                yield

        async def mcp_endpoint(scope, receive, send):  # noqa: ANN001, ANN202
            if not await self._authorised(scope, send):
                return
            await manager.handle_request(scope, receive, send)

        routes = [
            # A Mount, as FastMCP 1.10 made it: POST /mcp answers 307 to /mcp/ (captured on 12.60).
            Mount("/mcp", app=mcp_endpoint),
            Route("/wangp_api/gallery/upload/{token}", self._upload, methods=["PUT"]),
            Route("/wangp_api/gallery/download/{token}", self._download, methods=["GET"]),
        ]
        if self.inspect:
            info = {"flavour": self.flavour, "version": MCP_VERSIONS[self.flavour], "api_version": self.api_version}
            routes += [Route("/emulator/info", lambda request: JSONResponse(info)),
                       Route("/emulator/events", lambda request: JSONResponse(self.engine.events())),
                       Route("/emulator/jobs", lambda request: JSONResponse(self.jobs()))]
        return Starlette(routes=routes, lifespan=lifespan)

    def _bearer_ok(self, headers: dict[str, str]) -> bool:
        if not self.auth_token:
            return True
        given = headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {self.auth_token}".encode())

    async def _authorised(self, scope: dict, send: Any) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self._bearer_ok(headers):
            return True
        response = self._unauthorised()
        await response(scope, None, send)
        return False

    @staticmethod
    def _unauthorised() -> Response:
        # The SDK's RequireAuthMiddleware answer.
        return JSONResponse({"error": "invalid_token", "error_description": "Authentication required"},
                            status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token", '
                                                      'error_description="Authentication required"'})

    async def _upload(self, request: Request) -> Response:
        if not self._bearer_ok(dict(request.headers)):
            return self._unauthorised()
        with self.lock:
            ticket = self.uploads.pop(request.path_params["token"], None)  # single use, even when failing
        if ticket is None or time.monotonic() - ticket.created > TICKET_TTL:
            return JSONResponse({"error": "Upload expired or not found."}, status_code=404)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return JSONResponse({"error": "Invalid Content-Length header."}, status_code=400)
            if int(declared) > MAX_UPLOAD_BYTES:
                return JSONResponse({"error": f"Upload exceeds the {MAX_UPLOAD_BYTES}-byte limit."}, status_code=413)
        folder = self.engine.output_dir / "mcp_uploads" / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ticket.filename
        size = 0
        with path.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    out.close()
                    path.unlink(missing_ok=True)
                    return JSONResponse({"error": f"Upload exceeds the {MAX_UPLOAD_BYTES}-byte limit."},
                                        status_code=413)
                out.write(chunk)
        media_type = _media_type(ticket.filename) or "image"
        problem = _check_media(path, media_type)
        if problem:
            path.unlink(missing_ok=True)
            return JSONResponse({"error": problem}, status_code=400)
        item = self._register(path, media_type, {})
        return JSONResponse({"status": "uploaded", "size": size, **self._record(item, full=self.v12)})

    async def _download(self, request: Request) -> Response:
        if not self._bearer_ok(dict(request.headers)):
            return self._unauthorised()
        with self.lock:
            ticket = self.downloads.pop(request.path_params["token"], None)
        if ticket is None or ticket.path is None or time.monotonic() - ticket.created > TICKET_TTL \
                or not ticket.path.is_file():
            return JSONResponse({"error": "Download expired or not found."}, status_code=404)
        from urllib.parse import quote

        mime = mimetypes.guess_type(ticket.filename)[0] or "application/octet-stream"
        return Response(ticket.path.read_bytes(), media_type=mime,
                        headers={"Content-Disposition": f"attachment; filename*=utf-8''{quote(ticket.filename)}"})

    # ------------------------------------------------------------------ calls
    def call(self, name: str, arguments: dict) -> Any:
        tool = self.tools.get(name)
        if tool is None:
            raise ValueError(f"Unknown tool: {name}")  # the SDK's text, without the "Error executing" prefix
        self._log_request()
        try:
            args = tool.model.model_validate(arguments).model_dump() if tool.model else dict(arguments)
            result = tool.handler(args)
        except Exception as exc:  # noqa: BLE001 - FastMCP's Tool.run wraps every exception of a tool this way
            text = repr(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ValueError(f"Error executing tool {name}: {text}") from None
        if tool.wraps_result:
            items = result if isinstance(result, list) else [result] if result is not None else []
            content = [types.TextContent(type="text", text=json.dumps(item, indent=2)) for item in items]
            return content, {"result": result}
        return [types.TextContent(type="text", text=json.dumps(result, indent=2))], result

    def _log_request(self) -> None:
        """The server's own request log goes to stderr, which a running job captures as 'stream' events."""
        with self.lock:
            running = [j for j in self.jobs_by_id.values() if not j.done]
            stamp = datetime.now().strftime("[%m/%d/%y %H:%M:%S]")
            head = stamp if stamp != self._last_log_second else " " * len(stamp)
            self._last_log_second = stamp
            for job in running:
                job.add("stream", {"stream": "stderr",
                                   "text": f"{head} INFO     Processing request of type            server.py:619"})
                job.add("stream", {"stream": "stderr", "text": " " * 29 + "CallToolRequest" + " " * 36})

    # ------------------------------------------------------------------ tool tables
    def _build_tools(self) -> dict[str, ToolDef]:
        if self.api_version == 2:
            table = self._v2_tools()
        else:
            table = self._v1_tools()
        for tool in table:
            tool.model = argument_model(tool.name, tool.input_schema)
        return {t.name: t for t in table}

    def _v1_tools(self) -> list[ToolDef]:
        handlers = {
            "wangp_list_models": self.v1_list_models, "wangp_search_models": self.v1_search_models,
            "wangp_list_model_defs": self.v1_list_model_defs, "wangp_get_model": self.v1_get_model,
            "wangp_get_model_metadata": self.v1_get_model_metadata,
            "wangp_get_model_availability": self.v1_get_model_availability,
            "wangp_list_model_availability": self.v1_list_model_availability,
            "wangp_get_default_settings": self.v1_get_default_settings, "wangp_list_loras": self.v1_list_loras,
            "wangp_get_model_schema": self.v1_get_model_schema, "wangp_list_gallery": self.v1_list_gallery,
            "wangp_get_gallery_item": self.v1_get_gallery_item,
            "wangp_get_gallery_selection": self.v1_get_gallery_selection,
            "wangp_create_gallery_upload": self.create_upload, "wangp_create_gallery_download": self.create_download,
            "wangp_list_deepy_templates": lambda a: [],
            "wangp_get_deepy_template_settings": self.v1_template_settings,
            "wangp_postprocess": self.v1_postprocess, "wangp_toolbox": self.v1_toolbox,
            "wangp_generate": self.v1_generate, "wangp_get_job": self.get_job, "wangp_cancel_job": self.cancel_job,
        }
        captured = {t["name"]: t for t in _v12_capture()["tools"]}
        table = []
        for name, tool in captured.items():
            table.append(ToolDef(name, tool["description"], copy.deepcopy(tool["inputSchema"]),
                                 copy.deepcopy(tool.get("outputSchema")), handlers[name]))
        if self.v12:
            return table
        return self._v13_v1_delta(table)

    def _v13_v1_delta(self, table: list[ToolDef]) -> list[ToolDef]:
        """13.x's API v1: the 12.60 tools with v1_delta_12_60_to_13 applied (schemas regenerated FastMCP-style)."""
        removed = {"wangp_get_gallery_item", "wangp_get_gallery_selection"}
        table = [t for t in table if t.name not in removed]
        for tool in table:
            if tool.output_schema and "result" not in tool.output_schema.get("properties", {}):
                tool.output_schema["additionalProperties"] = True  # mcp 1.30's dict output schema
            props = tool.input_schema["properties"]
            if tool.name == "wangp_list_loras":
                props["name"] = _prop("string", None, nullable=True, title="Name")
            elif tool.name == "wangp_list_gallery":
                props["selected_only"] = _prop("boolean", False, title="Selected Only")
            elif tool.name == "wangp_create_gallery_download":
                tool.input_schema = fastmcp_schema(tool.name, {"media_id": ("string", ..., False)}, ("media_id",))
            elif tool.name == "wangp_postprocess":
                tool.input_schema = fastmcp_schema(tool.name, {
                    "media_id": ("string", None, True), "path": ("string", None, True),
                    "process": ("string", None, True), "parameters": ("object", None, True)})

        def dict_out(name: str) -> dict:
            return {"additionalProperties": True, "title": f"{name}DictOutput", "type": "object"}

        added = [
            ("wangp_models", "Search WanGP models with filters; records give capabilities and media roles as lists.",
             {"query": ("string", "", False), "filters": ("object", None, True), "limit": ("integer", 10, False),
              "offset": ("integer", 0, False)}, (), self.v13_models),
            ("wangp_model", "Return one model's schema, definition or defaults (view).",
             {"model_type": ("string", ..., False), "view": ("string", "schema", False),
              "property": ("string", None, True)}, ("model_type",), self.v13_model),
            ("wangp_model_settings", "List or read a model's saved settings and accelerator profiles.",
             {"model_type": ("string", ..., False), "setting_id": ("string", None, True)}, ("model_type",),
             lambda a: {"model_type": self._info(a["model_type"]).model_type, "settings": []}),
            ("wangp_get_media_settings", "Return the settings that made one Gallery media file.",
             {"media_id": ("string", None, True), "path": ("string", None, True)}, (), self.v13_media_settings),
            ("wangp_io", "Discover or run authorized file actions.",
             {"action": ("string", None, True), "arguments": ("object", None, True)}, (),
             lambda a: {"status": "discovery", "actions": [], "count": 0}),
            ("wangp_notify", "Show a notification in WanGP.",
             {"message": ("string", ..., False), "title": ("string", "Deepy notification", False)}, ("message",),
             self.notify),
            ("wangp_artifact", "Deepy working collections and ledgers.",
             {"action": ("string", None, True), "arguments": ("object", None, True)}, (),
             lambda a: {"status": "discovery", "actions": {}}),
        ]
        for name, description, props, required, handler in added:
            table.append(ToolDef(name, description, fastmcp_schema(name, props, required), dict_out(name), handler))
        return table

    # ------------------------------------------------------------------ models
    def _info(self, model_type: str, *, quoted: bool = True) -> _catalog.ModelInfo:
        """The model, or the refusal: quoted where WanGP raises KeyError, plain where it raises ValueError."""
        info = _catalog.model("v12", str(model_type))
        if info is None:
            text = f"Unknown model_type: {model_type}"
            raise KeyError(text) if quoted else ToolRefusal(text)
        return info

    def _catalog_infos(self) -> list[_catalog.ModelInfo]:
        return sorted(_catalog.models("v12").values(), key=lambda i: i.model_type)

    @staticmethod
    def _maps(info: _catalog.ModelInfo) -> tuple[dict, dict]:
        """12.60's boolean maps of media roles and capabilities, from what the emulator knows of the model."""
        image_in = "image" in info.inputs
        video_in = "video" in info.inputs
        video_out = info.output == "video"
        control = _catalog.takes_control_video(info)  # VACE: a control video, its mask, reference images
        image = {"start": image_in and video_out, "end": info.needs_end_image, "reference": control,
                 "single_reference": False, "multiple_references": control, "background": False,
                 "injected_frames": False, "control": False, "mask": False}
        video = {"continue": video_in and video_out, "last": video_in and video_out, "control": control,
                 "mask": control}
        audio = {"prompt": "audio" in info.inputs, "output": info.output == "audio"}
        caps = {"text_to_video": video_out and "text" in info.inputs, "image_to_video": image_in and video_out,
                "video_to_video": video_in and video_out, "text_to_image": info.output == "image",
                "image_to_image": info.output == "image" and image_in, "text_to_audio": info.output == "audio",
                "audio_to_audio": False, "audio_to_video": video_out and "audio" in info.inputs,
                "audio_output": info.output == "audio", "inpainting": control, "outpainting": False,
                "reference_images": control, "background_image": False, "injected_frames": False,
                "control_image": False, "control_video": control, "video_continuation": video_in and video_out,
                "sliding_window": video_in and video_out, "lora": True}
        return {"image": image, "video": video, "audio": audio}, caps

    def model_record(self, info: _catalog.ModelInfo, *, lists: bool) -> dict:
        roles, caps = self._maps(info)
        record: dict[str, Any] = {
            "model_type": info.model_type, "family": info.family, "family_label": info.family_label,
            "base_model_type": info.base_model_type, "finetune": info.base_model_type != info.model_type,
            "main_output": list(info.main_output), "outputs": list(info.main_output), "inputs": list(info.inputs)}
        if lists:  # 13.x wangp_models / v2: arrays of the true names; empty kinds left out
            record["name"] = info.name
            record["capabilities"] = [k for k, v in caps.items() if v]
            record["media_inputs"] = {kind: [r for r, on in rs.items() if on] for kind, rs in roles.items()
                                      if any(rs.values())}
            return {k: v for k, v in record.items() if v not in (None, "", [], {})}
        record.update(media_inputs=roles, capabilities=caps, name=info.name)
        return record

    def model_schema(self, info: _catalog.ModelInfo, *, lists: bool) -> dict:
        metadata = self.model_record(info, lists=lists)
        metadata.update(description=info.name, fps=info.fps, frames_minimum=info.frames_minimum,
                        frames_steps=info.frames_steps)
        if not lists:
            metadata.update(infos="", prompt_infos="", sliding_window=metadata["capabilities"]["sliding_window"])
        metadata["frames_maximum"] = info.frames_maximum
        if _catalog.takes_control_video(info):
            # The modes of the three control dropdowns, under the names of WanGP's model definition keys and in
            # the {"choices": [[label, value], ...]} form its _declared_choice_values reads. Not captured: see
            # the README ("What the emulator could not know (MCP)").
            choices = _catalog.control_choices("v12", info)
            metadata.update({key: {"choices": [list(pair) for pair in choices[role]]}
                             for key, role in CONTROL_DECLARATIONS})
        return {"metadata": metadata}

    def default_settings(self, info: _catalog.ModelInfo) -> dict:
        full = self.engine.default_settings(info.model_type)
        out = {k: full[k] for k in DEFAULT_SETTING_KEYS if k in full and (k != "image_prompt_type" or full[k])}
        out["model_type"] = info.model_type
        return out

    def _filtered(self, args: dict) -> list[_catalog.ModelInfo]:
        import fnmatch

        def match(value: Any, pattern: str | None) -> bool:
            if pattern is None:
                return True
            values = value if isinstance(value, (list, tuple)) else [value]
            return any(fnmatch.fnmatch(str(v).casefold(), pattern.casefold()) for v in values)

        query = (args.get("query") or "").casefold()
        out = []
        for info in self._catalog_infos():
            if not (match(info.family, args.get("family")) and match(info.base_model_type,
                                                                      args.get("base_model_type"))
                    and match(info.model_type, args.get("model_type"))
                    and match(list(info.main_output), args.get("main_output"))
                    and match(list(info.inputs), args.get("inputs")) and match(info.name, args.get("name"))):
                continue
            if query and query not in " ".join((info.model_type, info.name, info.family)).casefold():
                continue
            out.append(info)
        return out

    def v1_list_models(self, args: dict) -> list[dict]:
        infos = self._filtered(args)
        start = max(0, int(args["offset"]))
        return [self.model_record(i, lists=False) for i in infos[start:start + max(0, min(10, int(args["limit"])))]]

    def v1_search_models(self, args: dict) -> dict:
        infos = self._filtered(args)
        offset, limit = max(0, int(args.get("offset") or 0)), max(1, min(50, int(args.get("limit") or 10)))
        page = infos[offset:offset + limit]
        return {"matches": [self.model_record(i, lists=False) for i in page], "total_matches": len(infos),
                "returned": len(page), "offset": offset, "has_more": offset + len(page) < len(infos)}

    def v1_list_model_defs(self, args: dict) -> list[dict]:
        infos = self._filtered(args)
        start = max(0, int(args.get("offset") or 0))
        return [self.v1_get_model({"model_type": i.model_type}) for i in infos[start:start + 10]]

    def v1_get_model(self, args: dict) -> dict | None:
        info = _catalog.model("v12", str(args["model_type"]))
        if info is None:
            return None
        return {"model_type": info.model_type, "name": info.name, "architecture": info.base_model_type,
                "description": info.name, "URLs": [], "metadata": self.model_record(info, lists=False)}

    def v1_get_model_metadata(self, args: dict) -> dict | None:
        info = _catalog.model("v12", str(args["model_type"]))
        return self.model_record(info, lists=False) if info is not None else None

    def _availability(self, info: _catalog.ModelInfo) -> dict:
        if self.engine.missing_weights:
            return {"model_type": info.model_type, "status": "missing", "status_code": 0,
                    "indicator": "black_square", "available": False}
        return {"model_type": info.model_type, "status": "available", "status_code": 2,
                "indicator": "green_square", "available": True}

    def v1_get_model_availability(self, args: dict) -> dict:
        return self._availability(self._info(args["model_type"]))

    def v1_list_model_availability(self, args: dict) -> list[dict]:
        return [self._availability(i) for i in self._filtered(args)[:10]]

    def v1_get_default_settings(self, args: dict) -> dict:
        return self.default_settings(self._info(args["model_type"]))

    def v1_get_model_schema(self, args: dict) -> dict | None:
        info = _catalog.model("v12", str(args["model_type"]))
        return self.model_schema(info, lists=False) if info is not None else None

    def v1_list_loras(self, args: dict) -> dict:
        info = self._info(args["model_type"])
        return {"model_type": info.model_type, "supported": True, "loras": [], "count": 0}

    def v1_template_settings(self, args: dict) -> dict:
        raise ToolRefusal(f"Unknown Deepy template: {args['template']}")

    def v1_postprocess(self, args: dict) -> dict:
        media = args.get("path") or args.get("media_id") or ""
        return {"status": "discovery", "path": media, "media_type": _media_type(str(media)) or "video",
                "processes": [], "count": 0}

    def v1_toolbox(self, args: dict) -> dict:
        if args.get("action") is not None:
            raise ToolRefusal(f"Unknown toolbox action: {args['action']}")
        return {"status": "discovery", "actions": [], "count": 0}

    def v13_models(self, args: dict) -> dict:
        filters = dict(args.get("filters") or {})
        for key in filters:
            if key not in ("family", "base_model_type", "finetune", "model_type", "main_output", "inputs", "name"):
                raise ToolRefusal(f"Unknown model filter: {key}")
        infos = self._filtered({**filters, "query": args.get("query")})
        offset, limit = max(0, int(args["offset"])), max(1, min(50, int(args["limit"])))
        page = infos[offset:offset + limit]
        return {"models": [self.model_record(i, lists=True) for i in page], "total": len(infos),
                "returned": len(page), "offset": offset, "has_more": offset + len(page) < len(infos)}

    def v13_model(self, args: dict) -> dict:
        view = args.get("view") or "schema"
        info = self._info(args["model_type"], quoted=view in ("schema", "definition"))
        if args.get("property") is not None and view != "definition":
            raise ToolRefusal("property is supported only with view='definition'")
        if view == "defaults":
            return self.default_settings(info)
        if view == "definition":
            return self._definition(info, args.get("property"))
        return self.model_schema(info, lists=True)

    def _definition(self, info: _catalog.ModelInfo, prop: str | None) -> dict:
        definition = {"name": info.name, "architecture": info.base_model_type, "description": info.name,
                      "URLs": [_settings_model_filename(info.model_type)], "fps": info.fps}
        if prop is None:
            return {"model_type": info.model_type, "definition": definition}
        if prop not in definition:
            raise ToolRefusal(
                f"Unknown model definition property: {prop} for {info.model_type}. Read available properties: call "
                f'wangp_model with {{"model_type": ..., "action": "definition", "arguments": {{}}}}. Shared setting '
                "meanings: wangp://docs/settings.")
        return {"model_type": info.model_type, "property": prop, "value": definition[prop]}

    def v13_media_settings(self, args: dict) -> dict:
        if bool(args.get("media_id")) == bool(args.get("path")):
            raise ToolRefusal("Pass exactly one of media_id or path.")
        if args.get("path"):
            raise ToolRefusal(PATHS_DISABLED.format(key="path"))
        item = self._item(args["media_id"])
        return {"status": "done", "source": "WanGP", "media_id": item.media_id, "media_type": item.media_type,
                "filename": item.path.name, "settings": copy.deepcopy(item.settings)}

    def notify(self, args: dict) -> dict:
        if not args.get("message"):
            raise ToolRefusal("message is required")
        return {"status": "sent", "title": args.get("title") or "Deepy notification", "message": args["message"]}

    # ------------------------------------------------------------------ gallery and tickets
    def _register(self, path: Path, media_type: str, settings: dict, *, select: bool = True) -> GalleryItem:
        """Add a file to the Gallery. An upload is selected; a generated file only when nothing is (captured:
        after an upload, the i2v result stayed unselected)."""
        item = GalleryItem(media_id_for(path.resolve(), media_type), path.resolve(), media_type, settings)
        with self.lock:
            self.gallery = [g for g in self.gallery if g.media_id != item.media_id] + [item]
            if select or item.gallery not in self.selected:
                self.selected[item.gallery] = item.media_id
        return item

    def _item(self, media_id: str) -> GalleryItem:
        with self.lock:
            for item in self.gallery:
                if item.media_id == media_id and item.path.is_file():
                    return item
        raise KeyError(f"Unknown WanGP {self.id_key}: {media_id}")

    def _relative(self, path: Path) -> str:
        try:
            return "outputs/" + path.relative_to(self.engine.output_dir).as_posix()
        except ValueError:
            return str(path)

    def _record(self, item: GalleryItem, *, full: bool) -> dict:
        with self.lock:
            kind_items = [g for g in self.gallery if g.gallery == item.gallery]
            index = kind_items.index(item) if item in kind_items else 0
            selected = self.selected.get(item.gallery) == item.media_id
        if full:  # 12.60: full record with the path (relative to the WanGP folder) and the settings
            path = str(item.path) if "mcp_uploads" in item.path.parts else self._relative(item.path)
            record = {"gallery_id": item.media_id, "gallery": item.gallery, "index": index, "path": path,
                      "media_type": item.media_type, "selected": selected, "in_gallery": True,
                      "settings": copy.deepcopy(item.settings)}
            if selected and item.media_type == "video":
                record["current_time_seconds"] = None  # the selected video's play position (none here)
            return record
        record: dict[str, Any] = {"media_id": item.media_id, "gallery": item.gallery, "media_type": item.media_type,
                                  "filename": item.path.name,
                                  "description": str(item.settings.get("prompt", ""))[:80],
                                  "source": "WanGP", "selected": selected, "in_gallery": True}
        if item.media_type == "video":
            frames, fps, width, height = _video_stats(item.path)
            record.update(resolution=f"{width}x{height}", frame_count=frames, fps=fps,
                          duration_seconds=round(frames / fps, 3) if fps else None)
        elif item.media_type == "image":
            with contextlib.suppress(Exception):
                image = _media.open_image(str(item.path))
                record["resolution"] = f"{image.width}x{image.height}"
        return {k: v for k, v in record.items() if v is not None}

    def v1_list_gallery(self, args: dict) -> list[dict]:
        media_type = args.get("media_type") or "all"
        limit = max(1, min(500, int(args.get("limit") or 50)))
        with self.lock:
            items = [g for g in self.gallery if media_type == "all" or g.media_type == media_type]
            if args.get("selected_only"):
                items = [g for g in items if self.selected.get(g.gallery) == g.media_id]
        return [self._record(g, full=self.v12) for g in items[-limit:]]

    def v1_get_gallery_item(self, args: dict) -> dict:
        return self._record(self._item(args["gallery_id"]), full=True)

    def v1_get_gallery_selection(self, args: dict) -> list[dict]:
        with self.lock:
            ids = [v for k, v in self.selected.items() if args.get("media_type", "all") in ("all", k)]
        return [self._record(self._item(i), full=True) for i in ids]

    def create_upload(self, args: dict) -> dict:
        filename = os.path.basename(str(args["filename"]).replace("\\", "/"))
        if _media_type(filename) is None:
            raise ToolRefusal("filename must have a supported image, video, or audio extension")
        token = uuid.uuid4().hex
        with self.lock:
            self.uploads[token] = Ticket(time.monotonic(), filename)
        return {"upload_url": f"/wangp_api/gallery/upload/{token}", "method": "PUT", "filename": filename,
                "expires_in_seconds": int(TICKET_TTL), "max_bytes": MAX_UPLOAD_BYTES}

    def create_download(self, args: dict) -> dict:
        item = self._item(args[self.id_key])
        token = uuid.uuid4().hex
        with self.lock:
            self.downloads[token] = Ticket(time.monotonic(), item.path.name, item.path)
        return {self.id_key: item.media_id, "download_url": f"/wangp_api/gallery/download/{token}",
                "filename": item.path.name, "media_type": item.media_type, "size": item.path.stat().st_size,
                "expires_in_seconds": int(TICKET_TTL)}

    # ------------------------------------------------------------------ jobs
    def _job(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs_by_id.get(str(job_id))
        if job is None:
            raise KeyError(f"Unknown WanGP job_id: {job_id}")
        return job

    def _snapshot(self, job: Job, event_limit: int | None) -> dict:
        items: list[dict] = []
        if job.result is not None and not self.v12:  # 12.60 leaves gallery_items empty (captured)
            for path in job.result["generated_files"]:
                media_type = _media_type(path) or "video"
                with contextlib.suppress(KeyError):
                    items.append(self._record(self._item(media_id_for(Path(path), media_type)), full=False))
        with self.lock:
            return job.snapshot(event_limit, items)

    def get_job(self, args: dict) -> dict:
        return self._snapshot(self._job(args["job_id"]), args.get("event_limit"))

    def cancel_job(self, args: dict) -> dict:
        job = self._job(args["job_id"])
        with self.lock:
            if not job.done:
                job.cancel_requested = True
                job.updated_at = time.time()
                self.engine.gen(job.state)["abort"] = True
        return self._snapshot(job, args.get("event_limit"))

    def _tasks(self, source: Any, v2: bool) -> list[tuple[str, dict]]:
        """The settings of each task of ``source`` (Export Settings format), with their paths for messages."""
        def settings_of(value: Any, path: str) -> tuple[str, dict]:
            if not isinstance(value, dict):
                raise ToolRefusal(f"{path} must be a settings or task object. Nothing was submitted.")
            for key in ("params", "settings"):
                if isinstance(value.get(key), dict):
                    return f"{path}.{key}", value[key]
            return path, value

        if isinstance(source, dict) and isinstance(source.get("tasks"), list):
            items = [settings_of(t, f"source.tasks[{i}]") for i, t in enumerate(source["tasks"])]
            if not items:
                raise ToolRefusal("source.tasks must be a non-empty task list. Nothing was submitted.")
        elif isinstance(source, list):
            items = [settings_of(t, f"source[{i}]") for i, t in enumerate(source)]
            if not items:
                raise ToolRefusal("source must be a non-empty task list. Nothing was submitted.")
        else:
            items = [settings_of(source, "source")]
        if v2:
            for path, settings in items:
                model_type = settings.get("model_type") or settings.get("base_model_type")
                if not isinstance(model_type, str) or not model_type:
                    raise ToolRefusal(f"{path}.model_type must be a non-empty string for generation. "
                                      "Nothing was submitted.")
        return items

    def _resolve_media(self, path: str, settings: dict) -> dict:
        out = dict(settings)
        for key in MEDIA_KEYS:
            value = out.get(key)
            if value in (None, "", []):
                continue
            values = value if isinstance(value, list) else [value]
            resolved = []
            for v in values:
                if isinstance(v, str) and v.startswith(("visual:", "audio:")):
                    resolved.append(str(self._item(v).path))
                else:
                    raise ToolRefusal(PATHS_DISABLED.format(key=key))
            out[key] = resolved if isinstance(value, list) else resolved[0]
        return out

    def _v2_checks(self, path: str, settings: dict, info: _catalog.ModelInfo) -> None:
        """CORE_V13 _validate_generation_media: media the model cannot use, or that its mode would ignore."""
        roles, _ = self._maps(info)
        image_type = str(settings.get("image_prompt_type", info.default_image_prompt_type) or "")
        checks = [("image_start", roles["image"]["start"] or info.needs_start_image, "S" in image_type,
                   "image_prompt_type containing S"),
                  ("image_end", roles["image"]["end"] or image_type.count("E") > 0, "E" in image_type,
                   "an enabled end-image mode"),
                  ("video_source", roles["video"]["continue"], "V" in image_type, "image_prompt_type containing V")]
        # The control inputs, as 13.x's _validate_generation_media checks them: a control video needs a "V" mode,
        # its mask an "A" one that does not keep the control video unchanged ("U").
        video_type = str(settings.get("video_prompt_type") or "")
        control = _catalog.takes_control_video(info) and info.output == "video"
        checks += [("video_guide", control, "V" in video_type, "an enabled Control Video mode"),
                   ("video_mask", control, "V" in video_type and "A" in video_type and "U" not in video_type,
                    "an enabled Control Video mask mode")]
        for key, supported, active, requirement in sorted(checks):
            if settings.get(key) in (None, "", []):
                continue
            if not supported:
                raise ToolRefusal(f"{path}.{key}: input is unsupported in this model/output mode "
                                  f"(model {info.model_type}). Nothing was submitted.")
            if not active:
                raise ToolRefusal(f"{path}.{key}: input would be ignored; requires {requirement} "
                                  f"(model {info.model_type}). Nothing was submitted.")
        if settings.get("image_refs") not in (None, "", []):
            refs = [v for _, v in _catalog.control_choices("v12", info)["image_refs"] if "I" in v] if control else []
            wanted = [v for v in refs if ("F" in v) == ("F" in video_type)]
            if not wanted:
                raise ToolRefusal(f"{path}.image_refs: reference-image conditioning is unsupported "
                                  f"(model {info.model_type}). Nothing was submitted.")
            if not any(set(v) <= set(video_type) for v in wanted):
                raise ToolRefusal(f"{path}.image_refs: input would be ignored or uses an unsupported mode; "
                                  f"video_prompt_type must include one of {wanted} (model {info.model_type}). "
                                  "Nothing was submitted.")

    def submit(self, source: Any, *, v2: bool) -> Job:
        tasks = self._tasks(source, v2)
        prepared = []
        for path, settings in tasks:
            model_type = str(settings.get("model_type") or settings.get("base_model_type") or "")
            info = _catalog.model("v12", model_type)
            if v2 and info is not None:
                self._v2_checks(path, settings, info)
            prepared.append((info, model_type, self._resolve_media(path, settings)))
        with self.lock:
            if any(not j.done for j in self.jobs_by_id.values()):
                raise ToolRefusal(BUSY)  # _submit_tasks: one job at a time; nothing is queued
            now = time.time()
            job = Job(uuid.uuid4().hex, now, now)
            job.state = self.engine.initial_state()
            job.state["_session"] = f"mcp-{job.job_id[:8]}"
            self.jobs_by_id[job.job_id] = job
        threading.Thread(target=self._run, args=(job, prepared), daemon=True,
                         name=f"wangp-emulator-mcp-job-{job.job_id[:8]}").start()
        return job

    def _run(self, job: Job, prepared: list[tuple[_catalog.ModelInfo | None, str, dict]]) -> None:
        """WanGP's own shared/api.py run_cli_job, emulated: the engine's queue worker, its commands as job events."""
        engine, state = self.engine, job.state
        gen = engine.gen(state)
        errors: list[dict] = []
        files: list[str] = []
        with self.lock:
            job.add("started", {"tasks": len(prepared)})
        client_base = f"api_{time.time_ns()}"
        queued: list[tuple[dict, dict]] = []
        for index, (info, model_type, settings) in enumerate(prepared, start=1):
            if info is None:
                errors.append(self._error(f"Unknown model_type: {model_type}", index, index, "validation"))
                continue
            inputs = engine.default_settings(info.model_type)
            inputs.update({k: v for k, v in settings.items() if v is not None or k in MEDIA_KEYS})
            inputs.setdefault("image_prompt_type", info.default_image_prompt_type)
            inputs["client_id"] = f"{client_base}_{index}"
            message = engine._validate(info, inputs)
            if message:
                errors.append(self._error(message, index, index, "validation"))
                continue
            start = _media.open_image(inputs.get("image_start"))
            end = _media.open_image(inputs.get("image_end"))
            params = engine._task_params(info, inputs, str(inputs.get("prompt") or ""), start, end)
            task = engine._add_task(state, params)
            queued.append((task, {k: settings.get(k, inputs.get(k)) for k in inputs
                                  if k in settings or k in DEFAULT_SETTING_KEYS or k == "client_id"}))
        gen["prompts_max"] = len(queued)
        last = {"phase": "inference", "progress": 0, "step": None, "total": None, "raw": "", "loaded": False,
                "aborted_output": False}
        known_files = set(gen.get("file_list", []))
        task_of = {t["id"]: (i, t, s) for i, (t, s) in enumerate(queued, start=1)}

        def current() -> tuple[int, dict | None, dict]:
            with engine.lock:
                head = gen["queue"][0] if gen["queue"] else None
            if head is None:
                return len(queued), None, {}
            return task_of.get(head["id"], (0, head, {}))

        def task_or_params() -> dict | None:
            _, task, _ = current()
            return (task or {}).get("params")

        def send(command: tuple) -> None:
            name, data = command
            with self.lock:
                if name == "status":
                    if data in ("Generating...", "Video Generation Aborted"):
                        return  # not job events on the captured server
                    last["loaded"] = last["loaded"] or data == "Model loaded"
                    job.add("status", data)
                elif name == "refresh_models":
                    job.add("refresh_models", str(time.time()))
                elif name == "progress":
                    event = self._progress(data, last)
                    if event["raw_phase"] == "Aborting":
                        return  # captured: a cancelled job's last progress event is its last completed step
                    if event["phase"] == "encoding_text" and last["loaded"]:
                        # Captured quirk: after a model load, "Encoding Prompt" comes with the denoising phase
                        # of step 0 (its total steps known already).
                        event.update(phase="inference", progress=20, current_step=0,
                                     total_steps=int((task_or_params() or {}).get("num_inference_steps") or 0),
                                     raw_phase="Denoising")
                    job.add("progress", event)
                    if event["current_step"] == 0 and event["raw_phase"] == "Denoising" \
                            and event["status"] != "Encoding Prompt":
                        job.add("progress", dict(event))  # captured: step 0 is reported twice
                elif name == "preview":
                    decoding = last["phase"] == "decoding"
                    job.add("preview", {"has_image_preview": True, "phase": last["phase"], "status": last["raw"],
                                        "progress": 90 if decoding else last["progress"],
                                        "current_step": None if decoding else last["step"],
                                        "total_steps": None if decoding else last["total"]})
                elif name == "info":
                    job.add("info", data)
                elif name == "output":
                    if last["aborted_output"]:
                        return  # after a cancel the engine refreshes twice; the captured job shows one output
                    last["aborted_output"] = job.cancel_requested
                    index, task, settings = current()
                    new = [p for p in gen.get("file_list", []) + gen.get("audio_file_list", [])
                           if p not in known_files]
                    for path in new:
                        known_files.add(path)
                        files.append(str(Path(path).resolve()))
                        kind = _media_type(path) or "video"
                        noun = {"video": "video", "image": "image", "audio": "audio"}[kind]
                        job.add("stream", {"stream": "stdout",
                                           "text": f"New {noun} saved to Path: {self._relative(Path(path))}"})
                        self._register(Path(path), kind, self._item_settings(task, settings), select=False)
                    job.add("output", None)
                elif name == "error":
                    index, task, _ = current()
                    errors.append(self._error(str(data), index, index, "generation"))
                    job.add("error", errors[-1])

        if queued:
            engine._queue_worker(state, send)
        with self.lock:
            if job.cancel_requested and not any(e["stage"] != "cancelled" for e in errors):
                errors.append(self._error(CANCELLED, 1, 1, "cancelled"))
                job.add("error", errors[-1])
            gen["queue"] = []
            cancelled = bool(errors) and all(e["cancelled"] for e in errors)
            failed = len({e["task_index"] for e in errors})
            result = {"success": not errors, "cancelled": cancelled, "generated_files": files, "errors": errors,
                      "total_tasks": len(prepared), "successful_tasks": len(prepared) - failed,
                      "failed_tasks": failed, "artifacts": []}
            job.add("completed", copy.deepcopy(result))
            job.result = result
            job.done = True
        job.finished.set()

    @staticmethod
    def _error(message: str, task_index: int, task_id: int, stage: str) -> dict:
        return {"message": message, "task_index": task_index, "task_id": task_id, "stage": stage,
                "cancelled": stage == "cancelled"}

    @staticmethod
    def _progress(data: Any, last: dict) -> dict:
        """WanGP's own shared/api.py _normalize_phase: the engine's gr.Progress sample as a progress event."""
        if isinstance(data[0], tuple):
            (step, total), message = data[0], str(data[1])
            raw = message.split(" - ")[-1].split(" | ")[0]
            phase = {"VAE Decoding": "decoding", "Aborting": "cancelled"}.get(raw, "inference")
            progress = 95 if phase == "decoding" else 20 + int(64 * step / max(total, 1))
            last.update(phase=phase, progress=progress, step=step, total=total, raw=raw)
            return {"phase": phase, "status": message.split(" - ")[-1], "progress": progress,
                    "current_step": step, "total_steps": total, "raw_phase": raw, "unit": None}
        raw = str(data[1]).split(" - ")[-1]
        last.update(phase="encoding_text", progress=18, step=None, total=None, raw=raw)
        return {"phase": "encoding_text", "status": raw, "progress": 18, "current_step": None,
                "total_steps": None, "raw_phase": raw, "unit": None}

    def _item_settings(self, task: dict | None, settings: dict) -> dict:
        params = (task or {}).get("params", {})
        info = _catalog.model("v12", str(params.get("model_type") or ""))
        out = {"client_id": params.get("client_id", "")}
        out.update({k: v for k, v in settings.items() if k != "client_id" and not k.startswith("_")})
        out["model_type"] = params.get("model_type")
        if info is not None:
            out["model_filename"] = _settings_model_filename(info.model_type)
            out["type"] = f"WanGP v{self.engine.version} by DeepBeepMeep - {info.name}"
        out["settings_version"] = self.engine.behaviour.settings_version
        now = datetime.now()
        out.update(creation_date=now.strftime("%Y-%m-%dT%H:%M:%S"), creation_timestamp=int(now.timestamp()))
        return json.loads(json.dumps(out, default=str))

    def _wait(self, job: Job, timeout_s: float | None) -> bool:
        """Blocks the caller (and, as on WanGP, the event loop it runs on) until the job ends or time is up."""
        return job.finished.wait(None if timeout_s is None else max(0.0, float(timeout_s)))

    def v1_generate(self, args: dict) -> dict:
        job = self.submit(args["source"], v2=False)
        if args.get("wait") and not self._wait(job, args.get("timeout_s")):
            raise TimeoutError(V1_TIMEOUT)  # SessionJob.result: the job runs on, its id is not returned
        return self._snapshot(job, args.get("event_limit"))

    # ------------------------------------------------------------------ API v2
    def _v2_tools(self) -> list[ToolDef]:
        contract = _v2_contract()
        schemas = contract["conventions"]["input_schemas"]
        plain = schemas["action_arguments_only"]
        specs = [
            ("wangp_models", "Find WanGP models (cursor pages); query alone is a shortcut for action='search'.",
             schemas["wangp_models"]),
            ("wangp_model", "One model: capabilities and limits, definition, defaults, saved settings, LoRAs.",
             schemas["wangp_model"]),
            ("wangp_deepy_templates", "Deepy's preset recipes per usage, with merged settings.", plain),
            ("wangp_list_gallery", "Current and remembered Gallery media of this server session.", plain),
            ("wangp_io", "Authorized file navigation and editing.", plain),
            ("wangp_toolbox", "Media utilities of the Deepy toolbox.", plain),
            ("wangp_generate", "Run a generation and get its job.", plain),
            ("wangp_postprocess", "Post-processing on existing media.", schemas["wangp_postprocess"]),
            ("wangp_session", "Jobs, notifications and Gallery transfer tickets.", plain),
        ]
        table = []
        for name, description, schema in specs:
            output = {"additionalProperties": True, "title": f"{name}DictOutput", "type": "object"}
            table.append(ToolDef(name, description, copy.deepcopy(schema), output,
                                 lambda args, name=name: self.v2_call(name, args)))
        return table

    def _v2_actions(self, tool: str, args: dict) -> dict[str, dict]:
        """{action: {summary, description, parameters, run}} of one v2 tool."""
        tools = _v2_contract()["tools"]

        def schema_of(t: str, a: str) -> dict:
            return _clean_schema(tools[t]["actions"][a]["arguments"])

        if tool == "wangp_models":
            return {"search": {"summary": "Search models by query, filters, specialities and preferences.",
                               "parameters": schema_of("wangp_models", "search"), "run": self.v2_search,
                               "paged": True},
                    "specialities": {"summary": "List model specialities.",
                                     "parameters": schema_of("wangp_models", "specialities"),
                                     "run": self.v2_specialities, "paged": True}}
        if tool == "wangp_model":
            empty = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
            info = self._info(args["model_type"], quoted=False)  # V2 known_model, before discovery
            return {"capabilities": {"summary": "Capabilities, media roles and frame limits.", "parameters": empty,
                                     "run": lambda a: self.model_schema(info, lists=True)},
                    "defaults": {"summary": "The model's default settings.", "parameters": empty,
                                 "run": lambda a: self.default_settings(info)},
                    "definition": {"summary": "The model definition; one property with property=<key>.",
                                   "parameters": {"type": "object", "properties": {"property": {"type": "string"}},
                                                  "required": [], "additionalProperties": False},
                                   "run": lambda a: self._definition(info, a.get("property"))},
                    "saved_settings": {"summary": "Saved settings and accelerator profiles.", "parameters": empty,
                                       "run": lambda a: {"status": "done", "settings": [], "count": 0,
                                                         "has_more": False, "next_cursor": None}},
                    "loras": {"summary": "LoRA ids for activated_loras.",
                              "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                                             "required": [], "additionalProperties": False},
                              "run": lambda a: {"status": "done", "model_type": info.model_type, "loras": [],
                                                "count": 0}}}
        if tool == "wangp_generate":
            parameters = schema_of("wangp_generate", "generate")
            parameters["properties"]["wait"].pop("_note", None)
            if self.allow_async:
                parameters["properties"]["wait"].pop("const", None)
            return {"generate": {"summary": "Run a generation from settings (Export Settings format).",
                                 "parameters": parameters, "run": self.v2_generate}}
        if tool == "wangp_session":
            names = ("get_job", "cancel_job", "notify", "create_gallery_upload", "create_gallery_download")
            runs = {"get_job": self.get_job, "cancel_job": self.cancel_job, "notify": self.notify,
                    "create_gallery_upload": self.create_upload, "create_gallery_download": self.create_download}
            summaries = {"get_job": "Poll a generation job.", "cancel_job": "Request cancellation of a job.",
                         "notify": "Show a notification.", "create_gallery_upload": "Create a one-use PUT URL.",
                         "create_gallery_download": "Create a one-use GET URL for a Gallery item."}
            return {n: {"summary": summaries[n], "parameters": schema_of("wangp_session", n), "run": runs[n]}
                    for n in names}
        if tool == "wangp_list_gallery":
            return {"list": {"summary": "List Gallery media, newest first.",
                             "parameters": schema_of("wangp_list_gallery", "list"), "run": self.v2_gallery,
                             "paged": True}}
        return {}  # wangp_deepy_templates, wangp_io, wangp_toolbox, wangp_postprocess: not emulated

    def v2_call(self, tool: str, args: dict) -> dict:
        action, arguments = args.get("action"), args.get("arguments")
        if tool == "wangp_models" and args.get("query") is not None:
            if action is not None or arguments is not None:
                raise ToolRefusal("Pass query alone, or use action='search' with query inside arguments alongside "
                                  "advanced filters.")
            action, arguments = "search", {"query": args["query"]}
        actions = self._v2_actions(tool, args)
        if action is None:
            if arguments is not None:
                raise ToolRefusal('arguments requires an action at the top level, beside arguments: '
                                  '{"action":"<action>","arguments":{...}}. Omit both to discover actions.')
            listing = {}
            for name, spec in actions.items():
                no_params = not spec["parameters"].get("properties")
                listing[name] = spec["summary"] + (" Execute with arguments={}." if no_params else "")
            return {"status": "discovery", "actions": listing, "usage": V2_USAGE}
        spec = actions.get(action)
        if spec is None:
            raise ToolRefusal(f"Unknown or unavailable action: {action}. Omit action to discover available actions.")
        if arguments is None:
            described: dict[str, Any] = {"name": action, "description": spec["summary"],
                                         "parameters": spec["parameters"]}
            if spec.get("paged"):
                described["limitations"] = ("Paged: count is per page; repeat with next_cursor until has_more is "
                                            "false. Cursors expire 10 minutes after the first page.")
            return {"status": "schema", "action": described}
        validator = jsonschema.Draft202012Validator(spec["parameters"])
        problems = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path])
        if problems:
            first = problems[0]
            where = ".".join(str(p) for p in first.absolute_path) or "arguments"
            required = ", ".join(spec["parameters"].get("required", [])) or "none"
            raise ToolRefusal(f"{where}: {first.message}. Required arguments: {required}. To read the contract, "
                              f"repeat this call with action='{action}' and arguments=null (the entire object, not "
                              "a nested value).")
        return spec["run"](arguments)

    def _page(self, kind: str, identity: dict, items_fn: Any, args: dict, extra: dict | None = None,
              next_action: str | None = None) -> dict:
        """mcp_paging.ResultPages.page: snapshot on the first call, then pages of at most 6000 JSON characters."""
        key = json.dumps(identity, sort_keys=True)
        now = time.monotonic()
        with self.lock:
            for cursor_id in [c for c, (t, _, _) in self.snapshots.items() if now - t > SNAPSHOT_TTL]:
                del self.snapshots[cursor_id]
            cursor = args.get("cursor")
            if cursor:
                snapshot_id, _, offset_text = str(cursor).partition(".")
                entry = self.snapshots.get(snapshot_id)
                if entry is None or entry[1] != key or not offset_text.isdigit():
                    raise ToolRefusal(BAD_CURSOR)
                items, offset = entry[2], int(offset_text)
            else:
                items, offset = items_fn(), 0
                snapshot_id = secrets.token_hex(8)
                self.snapshots[snapshot_id] = (now, key, items)
                while len(self.snapshots) > SNAPSHOT_COUNT:
                    self.snapshots.popitem(last=False)
        result: dict[str, Any] = {"status": "done"}
        if args.get("summary_only"):
            result.update({kind: [], "count": 0, "has_more": bool(items), "next_cursor": None,
                           "summary": {"stored_results": len(items), "expires_in_seconds": int(SNAPSHOT_TTL)}})
            return {**result, **(extra or {})}
        limit = int(args.get("limit") or PAGE_SIZE)
        page, chars = [], 0
        for item in items[offset:offset + limit]:
            size = len(json.dumps(item))
            if size > PAGE_MAX_CHARS:
                raise ToolRefusal("One result exceeds the page budget. Narrow the query or request a smaller "
                                  "excerpt.")
            if page and chars + size > PAGE_MAX_CHARS:
                break
            page.append(item)
            chars += size
        end = offset + len(page)
        has_more = end < len(items)
        next_cursor = f"{snapshot_id}.{end}" if has_more else None
        result.update({kind: page, "count": len(page), "has_more": has_more, "next_cursor": next_cursor})
        result.update(extra or {})
        if has_more and next_action:
            same = {k: v for k, v in args.items() if k not in ("cursor", "summary_only")}
            result["next_call"] = {"action": next_action, "arguments": {**same, "cursor": next_cursor}}
        return result

    def v2_search(self, args: dict) -> dict:
        filters = dict(args.get("filters") or {})
        capabilities = filters.pop("capabilities", None) or []
        identity = {k: args[k] for k in ("query", "filters", "specialities", "preferences") if k in args}

        def items() -> list[dict]:
            records = [self.model_record(i, lists=True)
                       for i in self._filtered({**filters, "query": args.get("query")})]
            return [r for r in records if all(c in r.get("capabilities", []) for c in capabilities)]

        preferences = {"speed": "any", "size": "any", **(args.get("preferences") or {})}
        page = self._page("models", identity, items, args, None, "search")
        page.update(match="exact" if page["count"] or page.get("summary") else "none", preferences=preferences)
        return page

    def v2_specialities(self, args: dict) -> dict:
        identity = {"filters": args.get("filters") or {}}
        return self._page("specialities", identity, lambda: [], args, None, "specialities")

    def v2_gallery(self, args: dict) -> dict:
        media_type = args.get("media_type", "all")
        identity = {"media_type": media_type, "selected_only": bool(args.get("selected_only"))}

        def items() -> list[dict]:
            with self.lock:
                chosen = [g for g in reversed(self.gallery) if media_type == "all" or g.media_type == media_type]
                if identity["selected_only"]:
                    chosen = [g for g in chosen if self.selected.get(g.gallery) == g.media_id]
            return [self._record(g, full=False) for g in chosen]

        return self._page("media", identity, items, args)

    def v2_generate(self, args: dict) -> dict:
        source = copy.deepcopy(args["source"])
        for settings in _settings_dicts(source):  # v2 fills what is missing (from the model defaults, here)
            info = _catalog.model("v12", str(settings.get("model_type") or ""))
            if info is not None:
                for key, value in (("seed", -1), ("resolution", info.default_resolution),
                                   ("video_length", info.default_frames)):
                    if settings.get(key) is None and (key != "video_length" or info.output == "video"):
                        settings[key] = value
        job = self.submit(source, v2=True)
        event_limit = args.get("event_limit", 0)
        if args.get("wait", True) and not self._wait(job, args.get("timeout_s")):
            snapshot = self._snapshot(job, event_limit)
            snapshot.update(status="timeout", waiting_timed_out=True)
            return snapshot
        return self._snapshot(job, event_limit)


# ---------------------------------------------------------------------------------------------- helpers
def _settings_dicts(source: Any) -> list[dict]:
    if isinstance(source, dict) and isinstance(source.get("tasks"), list):
        source = source["tasks"]
    items = source if isinstance(source, list) else [source]
    out = []
    for item in items:
        if isinstance(item, dict):
            inner = next((item[k] for k in ("params", "settings") if isinstance(item.get(k), dict)), item)
            out.append(inner)
    return out


def _clean_schema(schema: Any) -> Any:
    """The contract's schemas carry notes ('_note', 'description' kept): drop the underscored keys."""
    if isinstance(schema, dict):
        return {k: _clean_schema(v) for k, v in schema.items() if not k.startswith("_")}
    if isinstance(schema, list):
        return [_clean_schema(v) for v in schema]
    return schema


def _settings_model_filename(model_type: str) -> str:
    from ._settings import model_filename

    return model_filename(model_type)


def _check_media(path: Path, media_type: str) -> str | None:
    """The upload check: PIL verify for images, a stream probe for videos, a readable header for audio."""
    try:
        if media_type == "image":
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
        elif media_type == "video":
            import av

            with av.open(str(path)) as container:
                if not container.streams.video:
                    return "The uploaded file has no video stream."
        elif path.stat().st_size == 0:
            return "The uploaded audio file is empty."
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a 400 with the reason
        return f"Uploaded file is not a valid {media_type}: {exc}"
    return None


def _video_stats(path: Path) -> tuple[int, float, int, int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        return int(stream.frames or 0), (int(fps) if fps.is_integer() else round(fps, 3)), stream.width, \
            stream.height


_CACHE: dict[str, Any] = {}


def _v12_capture() -> dict:
    if "v12" not in _CACHE:
        raw = resources.files(__package__).joinpath("data/mcp_v12.60_tools.json.gz").read_bytes()
        _CACHE["v12"] = json.loads(gzip.decompress(raw))
    return _CACHE["v12"]


def _v2_contract() -> dict:
    if "v2" not in _CACHE:
        raw = resources.files(__package__).joinpath("data/mcp_v13_contract.json.gz").read_bytes()
        _CACHE["v2"] = json.loads(gzip.decompress(raw))
    return _CACHE["v2"]


__all__ = ["MCP_VERSIONS", "McpServer", "default_api_version"]
