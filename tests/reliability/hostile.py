"""A hostile WanGP for tests: an HTTP gateway in front of the emulator that rewrites what the server answers.

The emulator stays the honest server; the gateway forwards every request to it and lets a test change the
answer on the way back: ``/config`` and the API description (``rewrite_config``, ``rewrite_info``), the result
of a named endpoint (``rewrite_output``: e.g. a gallery that points at ``../../etc/passwd`` or at another host),
the raw lines of the event stream (``rewrite_sse``: malformed JSON, a stream cut in the middle of a line), or
serve its own paths (``routes``: a download far larger than announced, endless, or not a video), or cut an
answer half-way (``cut_answer``)::

    with HostileGateway(emulator.url) as gateway:
        gateway.rewrite_output = lambda api_name, data: evil(data) if api_name == "/refresh_gallery" else data
        client = Wan2GPClient(gateway.url, ...)

Every response is HTTP/1.0-style (``Connection: close``, the body ends when the connection does), so a cut is a
real cut. Runs on daemon threads; ``stop()`` closes it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "te", "trailer",
        "upgrade", "proxy-authorization", "proxy-authenticate"}

Route = Callable[["_Handler"], None]


class Cut(bytes):
    """Returned by ``rewrite_sse``: send these bytes with no end of line, then close (a message cut off)."""


class HostileGateway:
    """An HTTP server on ``127.0.0.1:<free port>`` forwarding to ``upstream`` (the emulator) and lying on demand.

    Attributes (set from the test, any time):
        rewrite_config: ``f(config) -> dict | bytes`` for ``/config``.
        rewrite_info: ``f(info) -> dict | bytes`` for the API description.
        rewrite_output: ``f(api_name, data) -> data`` for each ``process_completed`` of a named endpoint
            (``data`` is the list of all the endpoint's outputs, as the server sends it).
        rewrite_sse: ``f(line: bytes) -> bytes | Cut | None`` for each raw line of the event stream; ``None``
            cuts the stream right there, ``Cut(b"...")`` after sending a piece of a line (the connection closes).
        routes: ``{path: handler}`` served by the gateway itself; ``handler(request)`` writes the answer.
        cut_answer: ``f(path, request_body) -> bool``; True: the answer's headers announce its whole length, half
            its body is sent, then the connection closes (a server that died while it answered).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite_config: Callable[[dict], Any] | None = None
        self.rewrite_info: Callable[[dict], Any] | None = None
        self.rewrite_output: Callable[[str, list], list] | None = None
        self.rewrite_sse: Callable[[bytes], bytes | None] | None = None
        self.routes: dict[str, Route] = {}
        self.cut_answer: Callable[[str, bytes | None], bool] | None = None
        self.requests: list[str] = []
        self._events: dict[str, str] = {}  # event_id -> api_name
        self._api_names: dict[int, str] = {}
        self._http = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0))
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-gateway", daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def __enter__(self) -> HostileGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_name(self, fn_index: Any) -> str:
        if not self._api_names:
            config = self._http.get(self.upstream + "/config").json()
            for i, dep in enumerate(config.get("dependencies", [])):
                if dep.get("api_name"):
                    self._api_names[int(dep.get("id", i))] = "/" + dep["api_name"]
        return self._api_names.get(int(fn_index), "") if isinstance(fn_index, int) else ""


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: HostileGateway
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    # --- helpers for routes ---------------------------------------------------------------------------

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def stream(self, status: int, chunks: Iterator[bytes], headers: dict[str, str] | None = None) -> None:
        """A close-delimited body: no length, it ends when the connection closes (or never)."""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(ConnectionError, OSError):
            for chunk in chunks:
                self.wfile.write(chunk)

    # --- forwarding -----------------------------------------------------------------------------------

    def _handle(self) -> None:
        try:
            self._serve()
        except (ConnectionError, OSError, httpx.HTTPError):
            pass  # the client or the upstream went away: nothing to answer

    def _serve(self) -> None:
        owner = self.owner
        path = urllib.parse.urlsplit(self.path).path
        owner.requests.append(f"{self.command} {self.path}")
        route = owner.routes.get(path)
        if route is not None:
            route(self)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
        headers["Host"] = f"127.0.0.1:{owner.port}"  # gradio builds file URLs from it: they point at us
        request = owner._http.build_request(self.command, owner.upstream + self.path, headers=headers, content=body)
        try:
            response = owner._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.send(502, f"upstream: {exc}".encode())
            return
        try:
            if path.endswith("/queue/data") and response.status_code == 200:
                self._forward_sse(response)
                return
            data = response.read()
            data = self._rewrite(path, body, data)
            out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
            if owner.cut_answer is not None and owner.cut_answer(path, body):
                self.send(response.status_code, data[: len(data) // 2], {**out, "Content-Length": str(len(data))})
                return
            self.send(response.status_code, data, out)
        finally:
            response.close()

    def _rewrite(self, path: str, body: bytes | None, data: bytes) -> bytes:
        owner = self.owner
        if path.endswith("/config") and owner.rewrite_config is not None:
            return _encode(owner.rewrite_config(json.loads(data)))
        if path.endswith("/info") and owner.rewrite_info is not None:
            return _encode(owner.rewrite_info(json.loads(data)))
        if path.endswith("/queue/join") and body:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                event_id = json.loads(data)["event_id"]
                owner._events[event_id] = owner.api_name(json.loads(body).get("fn_index"))
        return data

    def _forward_sse(self, response: httpx.Response) -> None:
        owner = self.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        buffer = b""
        with contextlib.suppress(ConnectionError, OSError, httpx.HTTPError):
            for chunk in response.iter_raw():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    line = self._rewrite_event(line)
                    if owner.rewrite_sse is not None:
                        line = owner.rewrite_sse(line)
                        if line is None:
                            return  # cut: the connection closes here
                        if isinstance(line, Cut):
                            self.wfile.write(bytes(line))
                            return  # cut in the middle of a message
                    self.wfile.write(line + b"\n")
                    self.wfile.flush()

    def _rewrite_event(self, line: bytes) -> bytes:
        owner = self.owner
        if owner.rewrite_output is None or not line.startswith(b"data:"):
            return line
        try:
            message = json.loads(line[5:])
        except ValueError:
            return line
        if message.get("msg") != "process_completed" or not isinstance(message.get("output"), dict):
            return line
        api_name = owner._events.get(message.get("event_id"), "")
        data = message["output"].get("data")
        if api_name and isinstance(data, list):
            message["output"]["data"] = owner.rewrite_output(api_name, data)
        return b"data: " + json.dumps(message).encode()


def _encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()
