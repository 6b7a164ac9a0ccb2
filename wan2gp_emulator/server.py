"""The in-process emulator server: start, stop, introspect."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import Response

from . import _spec
from ._app import build_app  # imports gradio: start() itself then takes about half a second
from ._wangp import WanGP

READY_SECONDS = 30.0  # how long a started server may take to answer its first request (a loaded machine)


def _wait_ready(url: str, seconds: float) -> None:
    """Wait until the server answers a small request, tolerating slow answers; RuntimeError after ``seconds``."""
    import httpx

    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "gradio_api/app_id", timeout=5, trust_env=False).status_code == 200:
                return
            last = "an HTTP error"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise RuntimeError(f"the emulator started at {url} but gave {last} for {seconds:.0f} s: is the machine "
                       "overloaded, or a proxy or firewall in the way of 127.0.0.1?")


def ensure_event_loop() -> None:
    """Gradio 5.29 makes each app's stop event with ``asyncio.get_event_loop()`` and gets None in a thread with no
    current loop: any thread but the main one, or the main one after an ``asyncio.run``. Every event stream of
    that server then fails with HTTP 500 (``'NoneType' object has no attribute 'wait'``). So the thread that
    builds a server is given a loop if it has none (gradio only needs one to exist; it runs its own)."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmulatorServer:
    """A WanGP web UI emulator (real Gradio 5.29 server) running in this process.

    Parameters:
        flavour: the WanGP release whose API is served: ``"v6"`` (6.31), ``"v8"`` (8.11), ``"v9"`` (9.81),
            ``"v11"`` (11.66) or ``"v12"`` (12.60).
        host: interface to bind; loopback by default.
        port: TCP port; ``None`` or ``0`` picks a free one.
        output_dir: where generated files go; ``None`` makes a temporary directory that :meth:`stop` removes.
        step_seconds: duration of one emulated denoising step.
        missing_weights: every generation fails as a WanGP without weights does (Hugging Face cache error).
        crash_after_steps: the process exits (``os._exit``) after that many denoising steps, as on a crash.
            Only sensible for a server in its own process (``python -m wan2gp_emulator``).
        load_seconds: each model load lasts that much longer, silently (no status text, no progress), as when
            WanGP downloads weights.
        state_dir: where ``wgp_config.json`` (the last model used, read at start-up) is kept; ``None``: the
            output directory. Use the same folder across restarts to keep the model, as WanGP does (8.11 on).
        real_size: also build the rest of the release's real UI, inert and hidden (12.60 only), so that
            ``/config`` (2.6 MB) and the API description (4.5 MB) have the real size: for benchmarks of connecting.
        mcp: serve WanGP's MCP server (``wgp.py --mcp --mcp-transport streamable-http``) instead of the web UI,
            built with the official ``mcp`` SDK; :attr:`url` is then the MCP endpoint ``http://HOST:PORT/mcp``.
            Flavours ``"v12"`` (12.60: API v1 only) and ``"v13"`` (13.x: API v2 by default, v1 on request).
        mcp_api_version: ``1`` or ``2`` (``--mcp-api-version``); ``None``: the flavour's default (v12: 1, v13: 2).
            v12 serves only 1.
        mcp_async: allow ``wait=false`` in API v2 (``--mcp-async``); API v1 always allows it.
        mcp_auth: a bearer token every MCP request and ticket route must carry (``Authorization: Bearer <token>``);
            stands in for WanGP's OAuth (``--mcp-auth``), whose token it would be.
        inspect: also serve ``GET /emulator/info``, ``/emulator/events`` and ``/emulator/sessions`` (web UI) or
            ``/emulator/jobs`` (MCP) as JSON: the flavour and version, :meth:`events`, :meth:`sessions`,
            :meth:`jobs`, for tests that run the server in another process
            (:class:`~wan2gp_emulator.process.EmulatorProcess`). A real WanGP has no such routes, and no client
            of ours reads them.

    Example::

        with EmulatorServer("v12", step_seconds=0) as server:
            client = gradio_client.Client(server.url)
    """

    def __init__(
        self,
        flavour: str = "v12",
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        step_seconds: float = 0.5,
        missing_weights: bool = False,
        crash_after_steps: int | None = None,
        load_seconds: float = 0.0,
        state_dir: str | os.PathLike[str] | None = None,
        real_size: bool = False,
        mcp: bool = False,
        mcp_api_version: int | None = None,
        mcp_async: bool = False,
        mcp_auth: str | None = None,
        inspect: bool = False,
    ) -> None:
        if mcp:
            from ._mcp import MCP_VERSIONS, default_api_version

            if flavour not in MCP_VERSIONS:
                raise ValueError(f"the MCP server is emulated for flavours {sorted(MCP_VERSIONS)}, not {flavour!r}")
            mcp_api_version = default_api_version(flavour, mcp_api_version)
            self.version = MCP_VERSIONS[flavour]
        elif flavour not in _spec.VERSIONS:
            raise ValueError(f"flavour must be one of {sorted(_spec.VERSIONS)}, not {flavour!r}"
                             + (" (v13 is emulated only as an MCP server: mcp=True)" if flavour == "v13" else ""))
        else:
            self.version = _spec.VERSIONS[flavour]
        self.flavour = flavour
        self.mcp = mcp
        self.mcp_api_version = mcp_api_version
        self.mcp_async = mcp_async
        self.mcp_auth = mcp_auth
        self.inspect = inspect
        self.base_url: str | None = None  # the server's origin, "http://HOST:PORT/" (ticket URLs are relative to it)
        self._mcp_server: Any = None
        self.host = host
        self._requested_port = port or 0
        self._owns_output_dir = output_dir is None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.step_seconds = step_seconds
        self.missing_weights = missing_weights
        self.crash_after_steps = crash_after_steps
        self.load_seconds = load_seconds
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.real_size = real_size
        self.port: int | None = None
        self.url: str | None = None
        self._demo: Any = None
        self._engine: Any = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------- life cycle
    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT/``)."""
        with self._lock:
            if self.url is not None:
                return self.url
            if self.output_dir is None:
                self.output_dir = Path(tempfile.mkdtemp(prefix=f"wan2gp-emulator-{self.flavour}-"))
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.output_dir = self.output_dir.resolve()
            if self.mcp:
                return self._start_mcp()
            ensure_event_loop()
            engine = WanGP(self.flavour, output_dir=self.output_dir, step_seconds=self.step_seconds,
                           missing_weights=self.missing_weights, crash_after_steps=self.crash_after_steps,
                           load_seconds=self.load_seconds, state_dir=self.state_dir)
            demo, _ = build_app(engine, real_size=self.real_size)
            # WanGP calls no queue(): gradio's default, one call at a time per event across all sessions.
            demo.queue(default_concurrency_limit=1)
            port = self._requested_port or _free_port(self.host)
            # _frontend=False skips gradio's own "is localhost reachable" check: one HEAD of the 1.4 MB page with a
            # 3 s timeout, which fails the start on a loaded machine; _wait_ready below asks more patiently.
            demo.launch(server_name=self.host, server_port=port, prevent_thread_lock=True, quiet=True,
                        show_api=True, share=False, inbrowser=False, allowed_paths=[str(self.output_dir)],
                        show_error=False, _frontend=False)
            try:
                here = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # bound to all: ask loopback
                _wait_ready(f"http://{here}:{port}/", READY_SECONDS)
            except RuntimeError:
                with contextlib.redirect_stdout(io.StringIO()):
                    demo.close()
                raise
            # Gradio's queue loop sleeps 50 ms when idle; 10 ms shortens every call by ~20 ms on average (a server
            # timing only: the API and its messages are unchanged).
            if getattr(demo, "_queue", None) is not None and hasattr(demo._queue, "sleep_when_free"):
                demo._queue.sleep_when_free = 0.01

            def download(token: str) -> Response:
                job = engine.pop_download(token)
                if job is None:
                    return Response("Download expired or not found", status_code=404)
                from urllib.parse import quote

                headers = {"Content-Disposition":
                           f"attachment; filename=\"{job.filename}\"; filename*=UTF-8''{quote(job.filename)}"}
                return Response(job.data, media_type=job.mime_type, headers=headers)

            demo.app.add_api_route("/wangp_api/download/{token}", download, methods=["GET"])
            if self.inspect:
                info = {"flavour": self.flavour, "version": self.version}
                demo.app.add_api_route("/emulator/info", lambda: info, methods=["GET"])
                demo.app.add_api_route("/emulator/events", engine.events, methods=["GET"])
                demo.app.add_api_route("/emulator/sessions", engine.sessions, methods=["GET"])
            self._demo, self._engine = demo, engine
            self.port = port
            self.url = self.base_url = f"http://{self.host}:{port}/"
            return self.url

    def _start_mcp(self) -> str:
        from ._mcp import McpServer

        # The MCP server runs on 12.60's generation engine (no 13.x web UI was captured; the engine is the same).
        engine = WanGP("v12", output_dir=self.output_dir, step_seconds=self.step_seconds,
                       missing_weights=self.missing_weights, crash_after_steps=self.crash_after_steps,
                       load_seconds=self.load_seconds, state_dir=self.state_dir)
        server = McpServer(engine, flavour=self.flavour, api_version=self.mcp_api_version,
                           allow_async=self.mcp_async, auth_token=self.mcp_auth, host=self.host,
                           port=self._requested_port or _free_port(self.host), inspect=self.inspect)
        server.start(READY_SECONDS)
        self._mcp_server, self._engine = server, engine
        self.port = server.port
        self.base_url = f"http://{self.host}:{server.port}/"
        self.url = self.base_url + "mcp"
        return self.url

    def stop(self) -> None:
        """Abort running generations, close the server and free the port. Safe to call twice."""
        with self._lock:
            demo, engine, mcp_server = self._demo, self._engine, self._mcp_server
            self._demo = self._mcp_server = None
            if engine is not None:
                engine.stopping.set()
            if mcp_server is not None:
                mcp_server.stop()
            if demo is not None:
                with contextlib.redirect_stdout(io.StringIO()):  # gradio prints "Closing server running on ..."
                    demo.close()
            self.url = self.base_url = None
            if self._owns_output_dir and self.output_dir is not None and engine is not None:
                shutil.rmtree(self.output_dir, ignore_errors=True)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -------------------------------------------------------------- introspection (for tests)
    def sessions(self) -> dict[str, dict]:
        """Per Gradio session: model_type, queue [{id, client_id, prompt, model_type}], generating,
        status_display (the session's refresh_status_async loops while it is true), gallery, audio_gallery."""
        return self._engine.sessions() if self._engine is not None else {}

    def events(self) -> list[dict]:
        """Everything that happened, in order: queued/removed/started/step/completed/aborted/failed/cleared."""
        return self._engine.events() if self._engine is not None else []

    def jobs(self) -> list[dict]:
        """MCP only: every job of the server's job store, oldest first: {job_id, done, cancel_requested, result}."""
        return self._mcp_server.jobs() if self._mcp_server is not None else []

    def __repr__(self) -> str:
        return f"EmulatorServer(flavour={self.flavour!r}, url={self.url!r})"
