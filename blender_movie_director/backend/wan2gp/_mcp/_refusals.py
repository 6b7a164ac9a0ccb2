"""What a refused MCP call (``isError``) means, as the project's errors; and the SDK's own errors translated.

WanGP's refusals carry no code, only text (``wangp-mcp.md`` section 3, ``v13_mcp_v2_contract.json``
``errors.catalog``), so they are told apart by the phrases below, first match wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from .._errors import (
    ServerBusyError,
    ServerRestartedError,
    UnsupportedServerError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
    redact,
    translate,
)

_Make = Callable[[str, str | None, str | None], Wan2GPError]  # (message, server, job_id) -> error


def _field_of(message: str) -> str | None:
    """The setting named at the start of a v2 refusal (``source.image_start: ...`` -> ``image_start``)."""
    match = re.match(r"\s*([\w.\[\]]+):", message)
    if not match or match.group(1) == "arguments":
        return None
    return re.sub(r"\[\d+\]", "", match.group(1)).split(".")[-1]


def _validation(hint: str | None = None) -> _Make:
    def make(message: str, server: str | None, job_id: str | None) -> Wan2GPError:
        return Wan2GPValidationError(f"WanGP refused the request: {message}", field=_field_of(message),
                                     server=server, job_id=job_id, hint=hint)
    return make


def _busy(message: str, server: str | None, job_id: str | None) -> Wan2GPError:
    return ServerBusyError("WanGP is running another generation and refused this one (nothing was submitted)",
                           server=server, job_id=job_id, hint="wait for it to finish, then submit again")


def _lost(message: str, server: str | None, job_id: str | None) -> Wan2GPError:
    return ServerRestartedError(
        f"WanGP does not know job {job_id or '?'}: the server restarted since it was submitted (WanGP keeps its "
        "jobs in memory), so the job is lost", server=server, job_id=job_id, hint="submit the shot again")


def _unsupported(message: str, server: str | None, job_id: str | None) -> Wan2GPError:
    return UnsupportedServerError(f"the WanGP MCP server lacks what this client asked for: {message}",
                                  server=server, job_id=job_id, hint="update WanGP, or report its version")


# (phrase, error) in order: the first phrase found in the refusal's text decides.
REFUSALS: tuple[tuple[str, _Make], ...] = (
    ("already has a generation in progress", _busy),
    ("Unknown WanGP job_id", _lost),
    ("Unknown model_type", _validation("list the server's models with models()")),
    ("Unknown WanGP media_id", _validation("the server forgot the uploaded file (it restarted?): upload it again")),
    ("Direct filesystem paths are disabled", _validation("upload the file with upload() and give its media id")),
    ("Nothing was submitted", _validation()),
    ("Required arguments:", _validation()),
    ("validation error for", _validation()),
    ("filename must have a supported", _validation()),
    ("Unknown tool:", _unsupported),
    ("Unknown or unavailable action", _unsupported),
)


def refusal_error(message: str, *, server: str | None = None, job_id: str | None = None) -> Wan2GPError:
    """The error a refused call means; :class:`Wan2GPServerError` with WanGP's text when no phrase matches."""
    for phrase, make in REFUSALS:
        if phrase in message:
            return make(message, server, job_id)
    return Wan2GPServerError(f"WanGP refused the call: {redact(message)}", server=server, job_id=job_id)


def transport_error(exc: BaseException, *, server: str | None, job_id: str | None = None,
                    what: str = "the request") -> Wan2GPError:
    """An HTTP or SDK failure under an MCP call, as the most specific project error."""
    exc = root_cause(exc)
    if isinstance(exc, Wan2GPError):
        return exc
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if code in (401, 403):
            return Wan2GPConnectionError(
                f"the WanGP MCP server refused access (HTTP {code})", server=server, job_id=job_id,
                hint="give the server's bearer token (token=...); a WanGP restart revokes every token")
        if code == 421:
            return Wan2GPConnectionError(
                "the WanGP MCP server refused the Host header (HTTP 421, its DNS-rebinding check)", server=server,
                job_id=job_id, hint="connect through 127.0.0.1 or localhost, as the server listens on loopback")
        if code in (404, 405, 406, 400):
            return UnsupportedServerError(
                f"no MCP endpoint answered at {server} (HTTP {code})", server=server, job_id=job_id,
                hint="start WanGP with --mcp --mcp-transport streamable-http and give its /mcp URL")
        return Wan2GPConnectionError(f"HTTP {code} from the WanGP MCP server during {what}", server=server,
                                     job_id=job_id)
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Wan2GPConnectionError(f"the WanGP MCP server's TLS certificate is not trusted during {what}: {exc}",
                                     server=server, job_id=job_id,
                                     hint="if the server has a certificate of its own, set SSL_CERT_FILE to it (or "
                                          "to the authority that signed it)")
    if isinstance(exc, httpx.ConnectError):
        return Wan2GPConnectionError(f"cannot reach the WanGP MCP server during {what}", server=server,
                                     job_id=job_id, hint="check that WanGP runs with --mcp and the URL is right")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        # the server took the request, then the answer broke off: it may have stopped, or only the link dropped
        return Wan2GPConnectionError(f"the connection dropped during {what}: {exc}", server=server,
                                     job_id=job_id, hint="the server may have stopped or restarted")
    if isinstance(exc, TimeoutError):
        return Wan2GPTimeoutError(f"{what} got no answer in time", server=server, job_id=job_id,
                                  hint="the server is busy or frozen; its console tells which")
    return translate(exc, server=server, job_id=job_id, what=what)


def root_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, skipping the cancellations they carry."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not _is_cancel(e)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def _is_cancel(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError) or type(exc).__name__ == "Cancelled"
