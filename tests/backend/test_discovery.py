"""Discovery against real servers on loopback: two WanGP emulators, an unrelated HTTP server, a fake MCP
server, a TCP service that is not HTTP and a closed port. Nothing but 127.0.0.1 is ever probed."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import captures
import pytest

from blender_movie_director.backend import discovery
from blender_movie_director.backend.discovery import (
    DEFAULT_PORTS,
    ServiceKind,
    _read_config_head,
    clear_cache,
    discover,
    find_wangp,
    is_loopback,
    probe,
)


class _Plain(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<html>hello</html>" if self.path == "/" else b"not found"
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class _Mcp(_Plain):
    """Answers like FastMCP's stateless streamable HTTP (WanGP's ``wgp.py --mcp``): server name "WanGP"."""

    name = "WanGP"

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length))
        if self.path != "/mcp" or request.get("method") != "initialize":
            return super().do_POST()
        body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {
            "protocolVersion": "2025-03-26", "capabilities": {"tools": {}},
            "serverInfo": {"name": self.name, "version": "1.10.1"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _OtherMcp(_Mcp):
    name = "some-other-tool"


def _serve(handler) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_http() -> Iterator[str]:
    yield from _serve(_Plain)


@pytest.fixture
def wangp_mcp() -> Iterator[str]:
    yield from _serve(_Mcp)


@pytest.fixture
def other_mcp() -> Iterator[str]:
    yield from _serve(_OtherMcp)


@pytest.fixture
def not_http() -> Iterator[str]:
    """A TCP service that greets in its own protocol and closes (like an SSH or SMTP server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    thread.join(2)
    listener.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_default_ports_are_wangp_and_mcp_ports() -> None:
    assert DEFAULT_PORTS[:11] == tuple(range(7860, 7871))
    assert 7866 in DEFAULT_PORTS and 8000 in DEFAULT_PORTS
    assert len(DEFAULT_PORTS) == len(set(DEFAULT_PORTS)) == 12  # 7866 is both a web UI and an MCP port


def test_closed_ports_are_reported_fast() -> None:
    ports = [_free_port() for _ in range(13)]
    started = time.perf_counter()
    results = discover(ports=ports, include_env=False, max_age=0)
    elapsed = time.perf_counter() - started
    assert [s.kind for s in results] == [ServiceKind.CLOSED] * len(set(ports))
    assert not any(s.kind.listening for s in results)
    assert elapsed < 1.0, elapsed


def test_scan_classifies_everything_that_answers(emulator_v12, emulator_v6, plain_http, wangp_mcp, other_mcp,
                                                 not_http) -> None:
    closed = _free_port()
    urls = {"v12": emulator_v12.url, "v6": emulator_v6.url, "http": plain_http, "mcp": wangp_mcp,
            "other_mcp": other_mcp, "not_http": not_http}
    ports = [_port(u) for u in urls.values()] + [closed]
    started = time.perf_counter()
    results = discover(ports=ports, include_env=False, max_age=0)
    elapsed = time.perf_counter() - started
    by_port = {_port(s.url): s for s in results}

    v12, v6 = by_port[_port(emulator_v12.url)], by_port[_port(emulator_v6.url)]
    assert (v12.kind, v12.wangp_version) == (ServiceKind.WANGP, emulator_v12.version)
    assert (v6.kind, v6.wangp_version) == (ServiceKind.WANGP, emulator_v6.version)
    assert v12.wangp_version != v6.wangp_version
    assert v12.gradio_version and v12.latency_ms is not None
    assert by_port[_port(plain_http)].kind is ServiceKind.HTTP
    assert by_port[_port(wangp_mcp)].kind is ServiceKind.WANGP_MCP
    assert by_port[_port(wangp_mcp)].server_name == "WanGP"
    assert by_port[_port(other_mcp)].kind is ServiceKind.MCP
    assert by_port[_port(not_http)].kind is ServiceKind.NOT_HTTP
    assert by_port[closed].kind is ServiceKind.CLOSED
    assert elapsed < 1.5, elapsed
    # JSON-able, as the CLI prints it
    assert json.loads(json.dumps([s.to_dict() for s in results]))[0]["kind"] in {k.value for k in ServiceKind}


def test_other_gradio_app_is_gradio_not_wangp() -> None:
    import gradio as gr

    with gr.Blocks(title="Some other app", analytics_enabled=False) as demo:
        gr.Markdown("# Hello")
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        info = probe(demo.local_url)
    finally:
        demo.close()
    assert info.kind is ServiceKind.GRADIO
    assert info.title == "Some other app" and info.gradio_version == gr.__version__
    assert info.wangp_version is None


def test_priority_order_env_and_find_wangp(emulator_v12, emulator_v6, plain_http, monkeypatch) -> None:
    monkeypatch.setenv("WAN2GP_URL", emulator_v6.url)
    results = discover([plain_http], ports=[_port(emulator_v12.url)], max_age=0)
    assert [(s.source, s.kind) for s in results] == [
        ("configured", ServiceKind.HTTP), ("env", ServiceKind.WANGP), ("port", ServiceKind.WANGP)]
    # the first WanGP in priority order: WAN2GP_URL before the port scan
    assert find_wangp([plain_http], ports=[_port(emulator_v12.url)], max_age=0).url == emulator_v6.url
    # the same URL named twice is probed once
    assert len(discover([emulator_v6.url, emulator_v6.url.rstrip("/")], scan_loopback=False, max_age=0)) == 1


def test_results_are_cached_briefly(plain_http) -> None:
    port = _port(plain_http)
    first = discover(ports=[port], include_env=False)
    assert first[0].kind is ServiceKind.HTTP
    started = time.perf_counter()
    again = discover(ports=[port], include_env=False)
    assert (time.perf_counter() - started) < 0.005 and again == first
    fresh = discover(ports=[port], include_env=False, max_age=0)
    assert fresh[0].kind is ServiceKind.HTTP and fresh[0] is not first[0]


def test_cache_expires(plain_http, monkeypatch) -> None:
    port = _port(plain_http)
    first = discover(ports=[port], include_env=False)
    clock = [time.monotonic() + discovery.CACHE_SECONDS + 1]
    monkeypatch.setattr(discovery.time, "monotonic", lambda: clock[0])
    assert discover(ports=[port], include_env=False)[0] is not first[0]


class _Chunks:
    """A streamed response that records how much of the body was read."""

    def __init__(self, text: str, size: int = 16 * 1024) -> None:
        self.chunks = [text[i:i + size] for i in range(0, len(text), size)]
        self.read = 0

    def iter_text(self) -> Iterator[str]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


@pytest.mark.parametrize("version", sorted(captures.RELEASES))
def test_real_wangp_config_is_recognised_from_its_first_chunk(version) -> None:
    text = gzip.decompress(captures.path(f"{captures.RELEASES[version]}_config.json").read_bytes()).decode()
    response = _Chunks(text)
    config, found, gradio = _read_config_head(response)  # type: ignore[arg-type]
    assert found == version
    assert gradio and gradio.startswith("5.")
    assert response.read == 1 < len(response.chunks)  # stopped at the header; megabytes left unread


def test_small_gradio_config_is_read_whole() -> None:
    text = json.dumps({"version": "5.29.0", "components": [{"id": 1, "type": "markdown",
                       "props": {"value": "# Hello"}}], "title": "WanGP"})
    config, found, gradio = _read_config_head(_Chunks(text, size=7))  # type: ignore[arg-type]
    assert config is not None and config["title"] == "WanGP" and found is None and gradio == "5.29.0"


def test_is_loopback() -> None:
    assert is_loopback("http://127.0.0.1:7860") and is_loopback("localhost:7860") and is_loopback("http://[::1]:1/")
    assert not is_loopback("http://192.168.1.20:7860") and not is_loopback("https://example.org")
