"""Server addresses, said once: how a URL is written, whether it is this machine, where Gradio's app id is,
and the certificates an ``https://`` one is checked against.

Every module that compares, prints or checks a server's URL uses these (discovery, health, the pool, the CLI,
the add-on), so that "http://127.0.0.1:7860", "127.0.0.1:7860/" and "http://127.0.0.1:7860" are one server.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import urllib.parse

__all__ = ["app_id_url", "is_loopback", "is_mcp_url", "normalise_url", "server_key", "tls_context"]


def normalise_url(url: str) -> str:
    """``url`` with a scheme (``http://`` when none) and one trailing slash: ``http://host:port/path/``."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


def server_key(url: str) -> str:
    """The server as shown and stored (register, caches, the add-on's tables): ``normalise_url`` without its
    trailing slash."""
    return normalise_url(url).rstrip("/")


def is_loopback(url: str) -> bool:
    """True when the URL's host is this machine (127.0.0.0/8, ::1, localhost). No name is resolved."""
    host = (urllib.parse.urlsplit(url if "://" in url else "http://" + url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_id_url(url: str, api_prefix: str | None = "/gradio_api") -> str:
    """Gradio's ``app_id`` route of the server at ``url``: a few bytes that change when the server restarts.
    ``api_prefix`` as its ``/config`` says (``/gradio_api`` on Gradio 5, none before)."""
    prefix = (api_prefix or "").strip("/")
    return normalise_url(url) + (f"{prefix}/app_id" if prefix else "app_id")


def is_mcp_url(url: str) -> bool:
    """True for an MCP endpoint (a path ending in ``/mcp``), as ``wgp.py --mcp`` serves it: ``http://host:7866/mcp``."""
    return urllib.parse.urlsplit(normalise_url(url)).path.rstrip("/").endswith("/mcp")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one certificate check of the process, for every HTTP client's ``verify=``: httpx's default (certifi's
    store, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), built once. An httpx client left to build its own loads the
    store again: 50 ms of CPU for each client, and clients are made per status poll, health check and session."""
    import httpx

    return httpx.create_ssl_context()
