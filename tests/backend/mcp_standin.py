"""A small WanGP MCP server for the MCP connection's tests, until the project's MCP emulator is merged.

Built with the official SDK's FastMCP, stateless with JSON responses, as WanGP serves it; its endpoint is
mounted at ``/mcp/`` so that ``POST /mcp`` answers 307, as 12.60 does. API v1 as 12.60 and 13+ serve it, and
API v2 with progressive discovery, cursor pages and argument schemas; upload and download tickets (one use).
Generations take ``step_seconds`` a step and write a real MP4. Prompt markers: ``[[fail]]`` fails the job at the
generation stage. The shapes and texts follow ``tests/captures/`` (head_mcp_*.json.gz,
v13_mcp_v2_contract.json.gz).
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import av
import jsonschema
import numpy as np
import uvicorn
from mcp.server.fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MODELS = {
    "t2v_1.3B": {"name": "Wan2.1 Text2video 1.3B", "family": "wan", "inputs": ["text"], "image": [], "video": []},
    "i2v": {"name": "Wan2.1 Image2video 480p 14B", "family": "wan", "inputs": ["text", "image"],
            "image": ["start", "end"], "video": []},
    "vace_1.3B": {"name": "Vace 1.3B", "family": "wan", "inputs": ["text", "image", "video"],
                  "image": ["reference"], "video": ["control", "mask"]},
    "t2v": {"name": "Wan2.1 Text2video 14B", "family": "wan", "inputs": ["text"], "image": [], "video": []},
    "ltxv_13B": {"name": "LTX Video 13B", "family": "ltxv", "inputs": ["text"], "image": [], "video": []},
}
ROLES = {"image": ["start", "end", "reference", "control", "mask"], "video": ["continue", "control", "mask"]}


def _record(model: str, arrays: bool) -> dict[str, Any]:
    m = MODELS[model]
    if arrays:
        media = {k: m[k] for k in ("image", "video") if m[k]}
        caps = ["text_to_video", "lora"] + (["image_to_video"] if "start" in m["image"] else [])
    else:
        media = {k: {r: r in m[k] for r in ROLES[k]} for k in ("image", "video")}
        caps = {"text_to_video": True, "image_to_video": "start" in m["image"], "lora": True}
    return {"model_type": model, "name": m["name"], "family": m["family"], "main_output": ["video"],
            "inputs": m["inputs"], "media_inputs": media, "capabilities": caps}


def _schema(model: str, arrays: bool) -> dict[str, Any]:
    fps, step, low, high = (30, 8, 9, 257) if MODELS[model]["family"] == "ltxv" else (16, 4, 5, 97)
    return {"metadata": {**_record(model, arrays), "fps": fps, "frames_minimum": low, "frames_steps": step,
                         "frames_maximum": high}}


def _defaults(model: str) -> dict[str, Any]:
    return {"prompt": "A large orange octopus", "resolution": "832x480", "video_length": 17 if model != "ltxv_13B"
            else 17, "num_inference_steps": 4, "seed": -1, "guidance_scale": 5, "flow_shift": 5.0,
            "sample_solver": "unipc", "model_type": model}


class _Job:
    def __init__(self, server: StandIn, source: dict[str, Any]) -> None:
        self.id = uuid.uuid4().hex
        self.server = server
        self.source = source
        self.created = self.updated = time.time()
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def event(self, kind: str, data: Any) -> None:
        with self.lock:
            self.updated = time.time()
            self.events.append({"kind": kind, "timestamp": self.updated, "data": data})
            del self.events[:-500]

    def _finish(self, errors: list[dict[str, Any]], files: list[str], items: list[dict[str, Any]]) -> None:
        cancelled = bool(errors) and all(e["stage"] == "cancelled" for e in errors)
        result = {"success": not errors, "cancelled": cancelled, "generated_files": files, "errors": errors,
                  "total_tasks": 1, "successful_tasks": 0 if errors else 1, "failed_tasks": 1 if errors else 0,
                  "artifacts": [], "gallery_items": items}
        for e in errors:
            self.event("error", e)
        self.event("completed", {k: v for k, v in result.items() if k != "gallery_items"})
        with self.lock:
            self.result = result
        self.done.set()

    def _run(self) -> None:
        s = self.source
        steps = int(s.get("num_inference_steps") or 4)
        self.event("started", {"tasks": 1})
        self.event("status", "Loading model ...")
        for step in range(steps + 1):
            self.event("progress", {"phase": "inference", "status": f"Denoising | {step}/{steps}",
                                    "progress": 20 + int(70 * step / steps), "current_step": step,
                                    "total_steps": steps, "raw_phase": "Denoising", "unit": None})
            if step == steps:
                break
            if "[[fail]]" in str(s.get("prompt")) and step == 1:
                return self._finish([{"message": "CUDA out of memory (stand-in)", "task_index": 1, "task_id": 1,
                                      "stage": "generation", "cancelled": False}], [], [])
            if self.cancel.wait(self.server.step_seconds):
                return self._finish([{"message": "Generation was cancelled", "task_index": 1, "task_id": 1,
                                      "stage": "cancelled", "cancelled": True}], [], [])
        self.event("progress", {"phase": "decoding", "status": "VAE Decoding", "progress": 95,
                                "current_step": None, "total_steps": steps})
        width, height = (int(v) for v in str(s.get("resolution", "832x480")).split("x"))
        name = f"2026-12-02-{self.id[:6]}_seed{s.get('seed')}.mp4"
        path = self.server.outputs / name
        _write_mp4(path, int(s.get("video_length") or 17), width, height)
        self.event("stream", {"stream": "stdout", "text": f"New video saved to Path: outputs/{name}"})
        item = self.server.add_gallery(path, "video")
        items = [] if self.server.flavour == "v12" else [self.server.compact(item)]
        self._finish([], [str(path)], items)

    def snapshot(self, event_limit: int | None) -> dict[str, Any]:
        limit = max(0, min(500, 20 if event_limit is None else event_limit))
        with self.lock:
            return {"job_id": self.id, "done": self.done.is_set(), "cancel_requested": self.cancel.is_set(),
                    "webui_submission_ready": False, "webui_load_queue_token": "", "created_at": self.created,
                    "updated_at": self.updated, "events": self.events[-limit:] if limit else [],
                    "result": self.result}


def _write_mp4(path: Path, frames: int, width: int, height: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            frame = np.full((height, width, 3), (i * 9) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class StandIn:
    """Serve in a thread: ``StandIn(api_version=2).start()``; ``.url`` is the MCP endpoint (``/mcp``)."""

    def __init__(self, *, api_version: int = 2, flavour: str = "v13", mcp_async: bool = False,
                 step_seconds: float = 0.05, port: int | None = None, root: Path, token: str | None = None) -> None:
        self.api_version, self.flavour, self.mcp_async = api_version, flavour, mcp_async
        self.step_seconds = step_seconds
        self.port = port or free_port()
        self.root = root
        self.outputs = root / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.http_log: list[tuple[str, str, int]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    # --- state -----------------------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.job_store: dict[str, _Job] = {}
        self.refused = 0  # generations refused because one was running
        self.gallery: list[dict[str, Any]] = []
        self.tickets: dict[str, tuple[str, Any, float]] = {}
        self.cursors: dict[str, list[Any]] = {}

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of the store, oldest first (as ``EmulatorServer.jobs()``)."""
        return [{"job_id": j.id, "done": j.done.is_set(), "cancel_requested": j.cancel.is_set(),
                 "result": j.result} for j in self.job_store.values()]

    def add_gallery(self, path: Path, media_type: str) -> dict[str, Any]:
        media_id = ("audio:" if media_type == "audio" else "visual:") + hashlib.sha1(
            str(path).lower().encode()).hexdigest()[:12]
        item = {"gallery_id": media_id, "media_id": media_id, "path": str(path), "media_type": media_type,
                "filename": path.name}
        self.gallery.insert(0, item)
        return item

    def compact(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"media_id": item["media_id"], "gallery": "visual", "media_type": item["media_type"],
                "filename": item["filename"], "selected": True, "in_gallery": True}

    def full(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"gallery_id": item["gallery_id"], "gallery": "visual", "index": 0,
                "path": "outputs/" + Path(item["path"]).name, "media_type": item["media_type"], "settings": {}}

    def _media(self, media_id: str) -> dict[str, Any]:
        for item in self.gallery:
            if item["media_id"] == media_id:
                return item
        raise KeyError(f"Unknown WanGP media_id: {media_id}")

    def _generate(self, source: Any, wait: bool, timeout_s: float | None, event_limit: int) -> dict[str, Any]:
        if not isinstance(source, dict):
            raise ValueError("source must be a settings object. Nothing was submitted.")
        if any(not j.done.is_set() for j in self.job_store.values()):
            self.refused += 1
            raise RuntimeError("WanGP session already has a generation in progress")
        model = source.get("model_type")
        if model not in MODELS:
            raise ValueError(f"source.model_type must be a known model ({model}). Nothing was submitted.")
        for key, (kind, role) in {"image_start": ("image", "start"), "video_guide": ("video", "control")}.items():
            if key in source:
                self._media(source[key])
                if role not in MODELS[model][kind]:
                    raise ValueError(f"source.{key}: input is unsupported in this model/output mode (model "
                                     f"{model}). Nothing was submitted.")
        job = _Job(self, source)
        self.job_store[job.id] = job
        if wait:
            if not job.done.wait(timeout_s):
                if self.api_version == 1:
                    raise TimeoutError("WanGP session job timed out")
                return {**job.snapshot(event_limit), "status": "timeout", "waiting_timed_out": True}
        return job.snapshot(event_limit)

    def _job(self, job_id: str) -> _Job:
        if job_id not in self.job_store:
            raise KeyError(f"Unknown WanGP job_id: {job_id}")
        return self.job_store[job_id]

    def _noise(self) -> None:  # the server's own request log lands in the running job's events (12.60)
        for job in self.job_store.values():
            if not job.done.is_set():
                job.event("stream", {"stream": "stderr", "text": "INFO     Processing request of type"})
                job.event("stream", {"stream": "stderr", "text": "         CallToolRequest"})

    def _ticket(self, kind: str, payload: Any) -> str:
        token = uuid.uuid4().hex
        self.tickets[token] = (kind, payload, time.time() + 600)
        return f"/wangp_api/gallery/{kind}/{token}"

    # --- tools ---------------------------------------------------------------------------------------------------

    def _build(self) -> FastMCP:
        with warnings.catch_warnings():  # mcp 1.26's FastMCP settings under a newer pydantic-settings
            warnings.filterwarnings("ignore", message=".*has an incomplete definition.*")
            server = FastMCP("WanGP", stateless_http=True, json_response=True, streamable_http_path="/mcp/")
        log = self.calls

        def tool(fn: Any, name: str | None = None) -> None:
            server.add_tool(fn, name=name or fn.__name__)

        if self.api_version == 1:
            def wangp_generate(source: dict[str, Any], wait: bool = False, timeout_s: float | None = None,
                               event_limit: int = 20) -> dict[str, Any]:
                log.append(("wangp_generate", {"source": source, "wait": wait}))
                return self._generate(source, wait, timeout_s, event_limit)

            def wangp_get_job(job_id: str, event_limit: int = 20) -> dict[str, Any]:
                log.append(("wangp_get_job", {"job_id": job_id}))
                self._noise()
                return self._job(job_id).snapshot(event_limit)

            def wangp_cancel_job(job_id: str, event_limit: int = 20) -> dict[str, Any]:
                log.append(("wangp_cancel_job", {"job_id": job_id}))
                job = self._job(job_id)
                job.cancel.set()
                return job.snapshot(event_limit)

            def wangp_list_models(limit: int = 10, offset: int = 0) -> list[dict[str, Any]]:
                names = list(MODELS)[offset:offset + min(limit, 10)]
                return [_record(m, False) for m in names]

            def wangp_get_model_schema(model_type: str) -> dict[str, Any]:
                if model_type not in MODELS:
                    raise KeyError(f"Unknown model_type: {model_type}")
                return _schema(model_type, False)

            def wangp_get_default_settings(model_type: str) -> dict[str, Any]:
                if model_type not in MODELS:
                    raise KeyError(f"Unknown model_type: {model_type}")
                return _defaults(model_type)

            def wangp_list_gallery(media_type: str = "all", limit: int = 50) -> list[dict[str, Any]]:
                items = self.gallery[:limit]
                return [self.full(i) if self.flavour == "v12" else self.compact(i) for i in items]

            def wangp_create_gallery_upload(filename: str) -> dict[str, Any]:
                return {"upload_url": self._ticket("upload", filename), "method": "PUT", "filename": filename,
                        "expires_in_seconds": 600, "max_bytes": 8589934592}

            for fn in (wangp_generate, wangp_get_job, wangp_cancel_job, wangp_list_models, wangp_get_model_schema,
                       wangp_get_default_settings, wangp_list_gallery, wangp_create_gallery_upload):
                tool(fn)
            if self.flavour == "v12":
                def wangp_create_gallery_download(gallery_id: str) -> dict[str, Any]:
                    item = self._media(gallery_id)
                    return {"gallery_id": gallery_id, "download_url": self._ticket("download", item),
                            "filename": item["filename"], "size": Path(item["path"]).stat().st_size}
                tool(wangp_create_gallery_download)

                def wangp_get_gallery_item(gallery_id: str) -> dict[str, Any]:
                    return self.full(self._media(gallery_id))
                tool(wangp_get_gallery_item)
            else:
                def wangp_create_gallery_download(media_id: str) -> dict[str, Any]:  # type: ignore[misc]
                    item = self._media(media_id)
                    return {"media_id": media_id, "download_url": self._ticket("download", item),
                            "filename": item["filename"], "size": Path(item["path"]).stat().st_size}
                tool(wangp_create_gallery_download)

                def wangp_models(query: str = "", filters: dict[str, Any] | None = None, limit: int = 10,
                                 offset: int = 0) -> dict[str, Any]:
                    names = list(MODELS)
                    page = names[offset:offset + min(limit, 2)]  # small pages: paging is exercised
                    return {"models": [_record(m, True) for m in page], "total": len(names),
                            "returned": len(page), "offset": offset, "has_more": offset + len(page) < len(names)}
                tool(wangp_models)

                def wangp_model(model_type: str, view: str = "schema") -> dict[str, Any]:
                    if model_type not in MODELS:
                        raise KeyError(f"Unknown model_type: {model_type}")
                    return _defaults(model_type) if view == "defaults" else _schema(model_type, True)
                tool(wangp_model)
            return server

        # --- API v2 -----------------------------------------------------------------------------------------
        paging = {"limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                  "cursor": {"type": ["string", "null"], "default": None}}

        def obj(properties: dict[str, Any], required: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
            return {"type": "object", "properties": properties, "required": list(required),
                    "additionalProperties": False}

        def paged(key: str, items: list[Any], args: dict[str, Any], per_page: int) -> dict[str, Any]:
            cursor = args.get("cursor")
            if cursor:
                if cursor not in self.cursors:
                    raise ValueError("Invalid or expired cursor, or changed filters. Repeat the original search "
                                     "without cursor.")
                items = self.cursors.pop(cursor)
            n = min(int(args.get("limit", 20)), per_page)
            page, rest = items[:n], items[n:]
            answer = {"status": "done", key: page, "count": len(page), "has_more": bool(rest)}
            if rest:
                token = uuid.uuid4().hex
                self.cursors[token] = rest
                answer["next_cursor"] = token
                answer["next_call"] = {"action": "search", "arguments": {**args, "cursor": token}}
            return answer

        wait_schema: dict[str, Any] = {"type": "boolean", "default": True}
        if not self.mcp_async:
            wait_schema["const"] = True
        ev = {"type": "integer", "minimum": 0, "maximum": 500, "default": 0}
        job_args = obj({"job_id": {"type": "string"}, "event_limit": {"anyOf": [{"type": "integer"},
                                                                                   {"type": "null"}]}}, ["job_id"])

        def get_job(a: dict[str, Any]) -> dict[str, Any]:
            self._noise()
            return self._job(a["job_id"]).snapshot(a.get("event_limit"))

        def cancel_job(a: dict[str, Any]) -> dict[str, Any]:
            job = self._job(a["job_id"])
            job.cancel.set()
            return job.snapshot(a.get("event_limit"))

        def upload(a: dict[str, Any]) -> dict[str, Any]:
            return {"upload_url": self._ticket("upload", a["filename"]), "method": "PUT",
                    "filename": a["filename"], "expires_in_seconds": 600, "max_bytes": 8589934592}

        def download(a: dict[str, Any]) -> dict[str, Any]:
            item = self._media(a["media_id"])
            return {"media_id": item["media_id"], "download_url": self._ticket("download", item),
                    "filename": item["filename"], "media_type": item["media_type"],
                    "size": Path(item["path"]).stat().st_size, "expires_in_seconds": 600}

        def model_of(model_type: str) -> str:
            if model_type not in MODELS:
                raise ValueError(f"Unknown model_type: {model_type}")
            return model_type

        tools: dict[str, dict[str, tuple[dict[str, Any], Any]]] = {
            "wangp_models": {"search": (obj({"query": {"type": "string"}, **paging}),
                                        lambda a, **_: paged("models", [_record(m, True) for m in MODELS], a, 2))},
            "wangp_model": {
                "capabilities": (obj({}), lambda a, model_type: _schema(model_of(model_type), True)),
                "defaults": (obj({}), lambda a, model_type: _defaults(model_of(model_type)))},
            "wangp_list_gallery": {"list": (obj({"media_type": {"type": "string"}, **paging}),
                                            lambda a, **_: {**paged("media", [self.compact(i) for i in
                                                                              self.gallery], a, 100)})},
            "wangp_generate": {"generate": (
                obj({"source": {"anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"},
                                                                 "minItems": 1}]},
                     "wait": wait_schema, "timeout_s": {"type": ["number", "null"], "minimum": 0},
                     "event_limit": ev}, ["source"]),
                lambda a, **_: self._generate(a["source"], a.get("wait", True), a.get("timeout_s"),
                                              a.get("event_limit", 0)))},
            "wangp_session": {"get_job": (job_args, lambda a, **_: get_job(a)),
                              "cancel_job": (job_args, lambda a, **_: cancel_job(a)),
                              "create_gallery_upload": (obj({"filename": {"type": "string"}}, ["filename"]),
                                                        lambda a, **_: upload(a)),
                              "create_gallery_download": (obj({"media_id": {"type": "string"}}, ["media_id"]),
                                                          lambda a, **_: download(a))},
        }

        def invoke(tool_name: str, action: str | None, arguments: dict[str, Any] | None, **top: Any) -> dict:
            log.append((tool_name, {"action": action, "arguments": arguments, **top}))
            actions = tools[tool_name]
            if "model_type" in top:
                model_of(top["model_type"])
            if action is None:
                if arguments is not None:
                    raise ValueError("arguments requires an action at the top level")
                return {"status": "discovery", "actions": {n: f"{n}." for n in actions}, "usage": "..."}
            if action not in actions:
                raise ValueError(f"Unknown or unavailable action: {action}. Omit action to discover actions.")
            schema, run = actions[action]
            if arguments is None:
                return {"status": "schema", "action": {"name": action, "description": "", "parameters": schema}}
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(arguments),
                            key=lambda e: list(e.path))
            if errors:
                where = ".".join(str(p) for p in errors[0].path) or "arguments"
                raise ValueError(f"{where}: {errors[0].message}. Required arguments: "
                                 f"{', '.join(schema.get('required') or []) or 'none'}. To read the contract, "
                                 f"repeat this call with action='{action}' and arguments=null.")
            return run(arguments, **top)

        def make(name: str) -> Any:
            if name == "wangp_model":
                def fn(model_type: str, action: str | None = None, arguments: dict[str, Any] | None = None) -> dict:
                    return invoke(name, action, arguments, model_type=model_type)
            else:
                def fn(action: str | None = None, arguments: dict[str, Any] | None = None) -> dict:  # type: ignore
                    return invoke(name, action, arguments)
            return fn

        for name in tools:
            tool(make(name), name)
        def other(action: str | None = None, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
            return {"status": "discovery", "actions": {}}

        for extra in ("wangp_deepy_templates", "wangp_io", "wangp_toolbox"):  # tolerated, never called
            tool(other, extra)
        return server

    # --- HTTP routes and serving ----------------------------------------------------------------------------------

    def _app(self) -> Any:
        fast = self._build()

        @fast.custom_route("/wangp_api/gallery/upload/{token}", methods=["PUT"])
        async def put(request: Request) -> Response:
            ticket = self.tickets.pop(request.path_params["token"], None)
            if ticket is None or ticket[0] != "upload" or ticket[2] < time.time():
                return JSONResponse({"error": "Upload expired or not found."}, 404)
            body = await request.body()
            folder = self.outputs / "mcp_uploads" / uuid.uuid4().hex
            folder.mkdir(parents=True)
            path = folder / Path(ticket[1]).name
            path.write_bytes(body)
            item = self.add_gallery(path, "image" if path.suffix in (".png", ".jpg") else "video")
            reply = self.full(item) if self.flavour == "v12" and self.api_version == 1 else self.compact(item)
            return JSONResponse({"status": "uploaded", "size": len(body), **reply})

        @fast.custom_route("/wangp_api/gallery/download/{token}", methods=["GET"])
        async def get(request: Request) -> Response:
            ticket = self.tickets.pop(request.path_params["token"], None)
            if ticket is None or ticket[0] != "download":
                return JSONResponse({"error": "Download expired or not found."}, 404)
            return Response(Path(ticket[1]["path"]).read_bytes(), media_type="video/mp4")

        app = fast.streamable_http_app()
        token, http_log = self.token, self.http_log

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = dict(scope.get("headers") or [])
                status: list[int] = []

                async def recording_send(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        status.append(message["status"])
                    await send(message)

                if token and headers.get(b"authorization") != f"Bearer {token}".encode():
                    http_log.append((scope["method"], scope["path"], 401))
                    await JSONResponse({"error": "invalid_token"}, 401)(scope, receive, send)
                    return
                await app(scope, receive, recording_send)
                http_log.append((scope["method"], scope["path"], status[0] if status else 0))
                return
            await app(scope, receive, send)

        return guarded

    def start(self) -> StandIn:
        self._reset()
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP stand-in did not start")
            time.sleep(0.02)
        return self

    def stop(self, *, crash: bool = False) -> None:
        """Stop serving; ``crash``: at once, as a crashed server does (open connections dropped). Jobs are
        forgotten either way (WanGP keeps them in memory)."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = crash
            if self._thread is not None:
                self._thread.join(10)
            self._server = None
            for job in self.job_store.values():  # their threads end with the server
                job.cancel.set()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
