"""Find WanGP servers: the URLs you name, ``WAN2GP_URL``, and the usual ports on this machine.

Nothing here scans a network by itself: besides the URLs the caller names, only loopback (127.0.0.1) is
probed, on WanGP's default port and the next ones Gradio picks when it is taken (7860-7870), and on the usual
ports of WanGP's MCP server (7866 in its docs, 8000 as FastMCP's default). All probes run in parallel with
short timeouts; results are cached for a few seconds.

Each answer is classified (:class:`ServiceKind`):

``wangp``       a WanGP web UI; ``wangp_version`` says which (read from its Gradio ``/config`` header)
``wangp-mcp``   WanGP's MCP server (``wgp.py --mcp``, streamable HTTP at ``/mcp``, server name "WanGP")
``mcp``         another MCP server
``gradio``      another Gradio app
``http``        some other HTTP server
``not-http``    something listens but does not speak HTTP
``closed``      nothing listens (connection refused)
``timeout``     no answer within the timeout

Example::

    from blender_movie_director.backend.discovery import discover, find_wangp

    for service in discover():
        print(service.url, service.kind, service.wangp_version)
    server = find_wangp()  # the first WanGP web UI found, or None
"""

from __future__ import annotations

import enum
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ._urls import is_loopback, normalise_url, tls_context
from .wan2gp._errors import redact
from .wan2gp._webui.fingerprint import gradio_version, is_wangp, wangp_version

__all__ = [
    "DEFAULT_PORTS",
    "MCP_PORTS",
    "WEB_UI_PORTS",
    "ServiceInfo",
    "ServiceKind",
    "clear_cache",
    "configured_urls",
    "discover",
    "find_wangp",
    "is_loopback",
    "probe",
]

# WanGP's default (wgp.py --server-port 7860) and the next ports Gradio falls back to when it is taken.
WEB_UI_PORTS: tuple[int, ...] = tuple(range(7860, 7871))
# WanGP's MCP server: 7866 in its docs' examples, 8000 when --mcp-port is not given (FastMCP's default).
MCP_PORTS: tuple[int, ...] = (7866, 8000)
DEFAULT_PORTS: tuple[int, ...] = tuple(dict.fromkeys(WEB_UI_PORTS + MCP_PORTS))

# Loopback refuses a closed port in microseconds; an answer takes milliseconds. 0.3 s leaves room for a
# busy machine while keeping a whole scan (parallel) well under a second.
DEFAULT_CONNECT_TIMEOUT = 0.3
# Reading the start of /config: WanGP's header (with its version) is in the first ~300 bytes of the
# 2.6 MB v12 config, but Gradio builds the whole of it before the first byte (0.16 s on an idle machine, over 1 s
# on a loaded one), and a server busy generating is slower still.
DEFAULT_READ_TIMEOUT = 3.0
# How long a scan's results are reused.
CACHE_SECONDS = 5.0
# Stop reading /config after this much without finding WanGP's header: it is then "another Gradio app"
# (the real v12 config is ~2.6 MB; its header is within the first kilobyte).
_CONFIG_READ_LIMIT = 256 * 1024


class ServiceKind(enum.StrEnum):
    """What answered at a URL."""

    WANGP = "wangp"
    WANGP_MCP = "wangp-mcp"
    MCP = "mcp"
    GRADIO = "gradio"
    HTTP = "http"
    NOT_HTTP = "not-http"
    CLOSED = "closed"
    TIMEOUT = "timeout"

    @property
    def listening(self) -> bool:
        return self not in (ServiceKind.CLOSED, ServiceKind.TIMEOUT)


@dataclass(frozen=True)
class ServiceInfo:
    """One probed URL and what answered there."""

    url: str
    kind: ServiceKind
    source: str = "port"  # "configured" (named by the caller), "env" (WAN2GP_URL) or "port" (loopback scan)
    wangp_version: str | None = None
    gradio_version: str | None = None
    title: str | None = None
    server_name: str | None = None  # MCP serverInfo.name, or the HTTP Server header
    latency_ms: float | None = None  # time to the first answer (TCP connect for closed ports)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_wangp(self) -> bool:
        """WanGP, through either of its surfaces (the web UI, or its MCP server), as ``HealthReport.is_wangp``."""
        return self.kind in (ServiceKind.WANGP, ServiceKind.WANGP_MCP)

    @property
    def is_web_ui(self) -> bool:
        """WanGP's web UI: what ``Wan2GPClient`` drives."""
        return self.kind is ServiceKind.WANGP

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data


def configured_urls() -> list[str]:
    """``WAN2GP_URL`` when it is set (read through the client's settings object), else nothing."""
    from .wan2gp._config import ClientSettings

    settings = ClientSettings()  # type: ignore[call-arg]  # fields with defaults (pydantic-settings)
    return [settings.url] if "url" in settings.model_fields_set else []


# --- one probe ------------------------------------------------------------------------------------------


def _tcp_check(host: str, port: int, timeout: float) -> tuple[ServiceKind | None, float, str | None]:
    """Connect once: (None if open, else CLOSED/TIMEOUT), the time it took, the error."""
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return ServiceKind.TIMEOUT, (time.perf_counter() - started) * 1000, f"no answer within {timeout:g} s"
    except OSError as exc:
        return ServiceKind.CLOSED, (time.perf_counter() - started) * 1000, exc.strerror or str(exc)
    return None, (time.perf_counter() - started) * 1000, None


def _read_config_head(response: httpx.Response) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """Read a Gradio ``/config`` only as far as needed: (full config if it was read whole, WanGP version,
    Gradio version). Components are decoded one by one as they arrive, and reading stops at WanGP's header."""
    decoder = json.JSONDecoder()
    text = ""
    position: int | None = None  # where the next component starts, once the components list is found
    gradio: str | None = None
    for chunk in response.iter_text():
        text += chunk
        if gradio is None:
            start = text.find('"version"')
            if 0 <= start < 200:
                try:
                    colon = text.index(":", start)
                    gradio_value, _ = decoder.raw_decode(text, colon + 1 + _spaces(text, colon + 1))
                    gradio = str(gradio_value)
                except (ValueError, IndexError):
                    pass
        if position is None:
            marker = text.find('"components"')
            if marker >= 0:
                bracket = text.find("[", marker)
                if bracket >= 0:
                    position = bracket + 1
        while position is not None:
            position += _spaces(text, position)
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            if position >= len(text) or text[position] == "]":
                break
            try:
                component, end = decoder.raw_decode(text, position)
            except ValueError:
                break  # incomplete: wait for more text
            position = end
            version = wangp_version({"components": [component]}) if isinstance(component, dict) else None
            if version:
                return None, version, gradio
        if len(text) > _CONFIG_READ_LIMIT:
            return None, None, gradio
    try:
        config = json.loads(text)
    except ValueError:
        return None, None, gradio
    return (config, None, gradio) if isinstance(config, dict) else (None, None, gradio)


def _spaces(text: str, position: int) -> int:
    count = 0
    while position + count < len(text) and text[position + count] in " \t\r\n":
        count += 1
    return count


_MCP_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-03-26",
        "capabilities": {},
        "clientInfo": {"name": "blender-movie-director-discovery", "version": "1"},
    },
}


def _mcp_server_info(client: httpx.Client, base: str) -> dict[str, Any] | None:
    """POST a JSON-RPC ``initialize`` to ``/mcp``: the server's ``serverInfo`` if it is an MCP server."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        response = client.post(base + "mcp", json=_MCP_INITIALIZE, headers=headers)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body = response.text
    if "text/event-stream" in response.headers.get("content-type", ""):
        data_lines = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
        body = data_lines[0] if data_lines else ""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    session = response.headers.get("mcp-session-id")
    if session:  # a stateful server opened a session for us: close it again
        try:
            client.delete(base + "mcp", headers={"mcp-session-id": session})
        except httpx.HTTPError:
            pass
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        return None
    info = result.get("serverInfo")
    return info if isinstance(info, dict) else {"name": None}


def probe(
    url: str,
    *,
    source: str = "configured",
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> ServiceInfo:
    """Probe one URL (uncached) and classify what answers there. Never raises."""
    clients: list[httpx.Client] = []

    url = normalise_url(url)

    def own_client() -> httpx.Client:
        clients.append(_http_client(connect_timeout, read_timeout))
        return clients[-1]

    try:
        return _probe(url, source, connect_timeout, own_client)
    finally:
        for client in clients:
            client.close()


def _probe(url: str, source: str, connect_timeout: float, get_client: Callable[[], httpx.Client]) -> ServiceInfo:
    shown = redact(url)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    closed, latency, error = _tcp_check(host, port, connect_timeout)
    if closed is not None:
        return ServiceInfo(shown, closed, source, latency_ms=round(latency, 2), error=error)
    try:
        return _classify(get_client(), url, shown, source)
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
        return ServiceInfo(shown, ServiceKind.HTTP, source, error=f"{type(exc).__name__}: {redact(str(exc))}")


def _http_client(connect_timeout: float, read_timeout: float) -> httpx.Client:
    # trust_env=False: a proxy from the environment must not see (or answer for) loopback probes.
    return httpx.Client(timeout=httpx.Timeout(read_timeout, connect=connect_timeout), trust_env=False,
                        verify=tls_context(), follow_redirects=False,
                        headers={"User-Agent": "blender-movie-director-discovery"})


def _classify(client: httpx.Client, url: str, shown: str, source: str) -> ServiceInfo:
    started = time.perf_counter()
    latency: float | None = None
    server_header: str | None = None
    try:
        with client.stream("GET", url + "config") as response:
            latency = (time.perf_counter() - started) * 1000
            server_header = response.headers.get("server")
            content_type = response.headers.get("content-type", "")
            if response.status_code in (401, 403):
                # gradio with auth answers /config with 401 until logged in
                return ServiceInfo(shown, ServiceKind.GRADIO, source, latency_ms=round(latency, 2),
                                   server_name=server_header,
                                   error=f"HTTP {response.status_code}: the server needs a login")
            if response.status_code == 200 and "json" in content_type:
                config, version, gradio = _read_config_head(response)
                if version or (config is not None and is_wangp(config)):
                    return ServiceInfo(
                        shown, ServiceKind.WANGP, source, wangp_version=version or wangp_version(config or {}),
                        gradio_version=gradio or (gradio_version(config) if config else None),
                        title=(config or {}).get("title", "WanGP" if version else None),
                        latency_ms=round(latency, 2), server_name=server_header)
                if config is not None and ("components" in config or "dependencies" in config) or gradio:
                    return ServiceInfo(shown, ServiceKind.GRADIO, source, gradio_version=gradio,
                                       title=(config or {}).get("title"), latency_ms=round(latency, 2),
                                       server_name=server_header)
    except httpx.TimeoutException:
        return ServiceInfo(shown, ServiceKind.TIMEOUT, source, error="no HTTP answer in time")
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.LocalProtocolError) as exc:
        return ServiceInfo(shown, ServiceKind.NOT_HTTP, source, error=type(exc).__name__)
    except httpx.HTTPError as exc:
        return ServiceInfo(shown, ServiceKind.CLOSED, source, error=redact(str(exc)) or type(exc).__name__)
    info = _mcp_server_info(client, url)
    if info is not None:
        name = info.get("name")
        kind = ServiceKind.WANGP_MCP if name and "wangp" in str(name).lower().replace(" ", "") else ServiceKind.MCP
        return ServiceInfo(shown, kind, source, server_name=name, latency_ms=round(latency or 0.0, 2),
                           extra={"mcp_version": info.get("version")} if info.get("version") else {})
    return ServiceInfo(shown, ServiceKind.HTTP, source, latency_ms=round(latency or 0.0, 2), server_name=server_header)


# --- the scan --------------------------------------------------------------------------------------------

_cache: dict[tuple[Any, ...], tuple[float, list[ServiceInfo]]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget cached scan results."""
    with _cache_lock:
        _cache.clear()


def discover(
    urls: Iterable[str] = (),
    *,
    scan_loopback: bool = True,
    ports: Sequence[int] = DEFAULT_PORTS,
    include_env: bool = True,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_age: float = CACHE_SECONDS,
) -> list[ServiceInfo]:
    """Probe the named URLs, ``WAN2GP_URL`` and the loopback ports in parallel; one result per URL.

    Parameters:
        urls: servers to probe first (any host: only what is named here leaves this machine).
        scan_loopback: also probe ``http://127.0.0.1:<port>/`` for each of ``ports``.
        include_env: also probe ``WAN2GP_URL`` when it is set.
        max_age: reuse the results of an identical scan made less than this many seconds ago (0: never).

    Returns:
        :class:`ServiceInfo` per distinct URL, in priority order: named URLs, ``WAN2GP_URL``, then ports.
    """
    targets: dict[str, str] = {}
    for url in urls:
        targets.setdefault(normalise_url(url), "configured")
    if include_env:
        for url in configured_urls():
            targets.setdefault(normalise_url(url), "env")
    if scan_loopback:
        for port in ports:
            targets.setdefault(f"http://127.0.0.1:{int(port)}/", "port")
    key = (tuple(targets.items()), connect_timeout, read_timeout)
    now = time.monotonic()
    if max_age > 0:
        with _cache_lock:
            cached = _cache.get(key)
            if cached and now - cached[0] < max_age:
                return list(cached[1])
    results = _probe_all(list(targets.items()), connect_timeout, read_timeout)
    with _cache_lock:
        _cache[key] = (time.monotonic(), results)
    return list(results)


def _probe_all(targets: list[tuple[str, str]], connect_timeout: float, read_timeout: float) -> list[ServiceInfo]:
    if not targets:
        return []
    client: httpx.Client | None = None
    client_lock = threading.Lock()

    def shared_client() -> httpx.Client:
        # one HTTP client (one connection pool) for the whole scan, built only if some port is open
        nonlocal client
        with client_lock:
            if client is None:
                client = _http_client(connect_timeout, read_timeout)
            return client

    def run(target: tuple[str, str]) -> ServiceInfo:
        return _probe(target[0], target[1], connect_timeout, shared_client)

    try:
        with ThreadPoolExecutor(max_workers=min(len(targets), 32), thread_name_prefix="discovery") as pool:
            return list(pool.map(run, targets))
    finally:
        if client is not None:
            client.close()


def find_wangp(urls: Iterable[str] = (), **options: Any) -> ServiceInfo | None:
    """The first WanGP web UI found (named URLs first, then ``WAN2GP_URL``, then loopback ports), or None."""
    return next((s for s in discover(urls, **options) if s.kind is ServiceKind.WANGP), None)
