"""Errors of the Wan2GP backend: one root, translated where foreign errors enter.

::

    Wan2GPError                       everything this package raises
    ├── Wan2GPConnectionError         the server can't be reached (refused, reset, DNS, dropped stream)
    │   ├── Wan2GPTimeoutError        a bounded wait ran out (connect, a call, a job's deadline, a frozen server)
    │   └── ServerRestartedError      the server stopped or restarted during a job: the job is lost with it
    ├── Wan2GPValidationError         bad settings or inputs; nothing was sent to the server
    ├── UnsupportedServerError        not WanGP, or a WanGP whose generation chain can't be resolved
    ├── Wan2GPServerError             the server answered with an error (gr.Error / generic AppError)
    │   ├── JobFailedError            a generation ran and failed (missing weights, crash, nothing queued)
    │   │   └── JobLostError          the server no longer has the job (it restarted, its session expired)
    │   └── ServerBusyError           the server is busy and queued nothing (MCP: another generation; 503)
    └── JobCancelledError             the job was cancelled (by the caller)

gradio_client's ``AppError``, ``concurrent.futures.CancelledError``, httpx errors and the ``KeyError`` that
gradio_client 1.10 raises after a cancel are translated by :func:`translate` at the boundary.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import re
from collections.abc import Iterable

import httpx

__all__ = [
    "JobCancelledError",
    "JobFailedError",
    "JobLostError",
    "ServerBusyError",
    "ServerRestartedError",
    "UnsupportedServerError",
    "Wan2GPConnectionError",
    "Wan2GPError",
    "Wan2GPServerError",
    "Wan2GPTimeoutError",
    "Wan2GPValidationError",
]

_GENERIC_APP_ERROR = "The upstream Gradio app has raised an exception"
_MISSING_WEIGHTS = "cannot find the requested files in the local cache"
_RESTARTED = "Webform can not be used as the App has been restarted"


class Wan2GPError(Exception):
    """Root of every error of the Wan2GP backend.

    Attributes:
        server: the server URL (secrets removed), when known.
        job_id: the job concerned, when any.
        hint: what to do about it, in one sentence.
    """

    def __init__(
        self, message: str, *, server: str | None = None, job_id: str | None = None, hint: str | None = None
    ) -> None:
        self.message = message
        self.server = server
        self.job_id = job_id
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message
        if self.hint and self.hint not in text:
            text = f"{text} ({self.hint})"
        return text


class Wan2GPConnectionError(Wan2GPError):
    """The server could not be reached, or the connection dropped."""


class Wan2GPTimeoutError(Wan2GPConnectionError):
    """A bounded wait ran out."""


class ServerRestartedError(Wan2GPConnectionError):
    """The server stopped (crashed, was shut down) or restarted while a job ran: WanGP's queue and the job's
    session went with it, so the job can't be collected. Nothing partial is kept; submit the shot again."""


class Wan2GPValidationError(Wan2GPError, ValueError):
    """Bad settings or inputs, found before anything was sent.

    Attributes:
        field: the setting at fault, when one is.
    """

    def __init__(self, message: str, *, field: str | None = None, **kwargs) -> None:
        self.field = field
        super().__init__(message, **kwargs)


class UnsupportedServerError(Wan2GPError):
    """The server is not a WanGP web UI, or its generation chain can't be resolved.

    Attributes:
        missing: the roles or endpoints that could not be found.
    """

    def __init__(self, message: str, *, missing: Iterable[str] = (), **kwargs) -> None:
        self.missing = list(missing)
        super().__init__(message, **kwargs)


class Wan2GPServerError(Wan2GPError):
    """The server answered a call with an error."""


class JobFailedError(Wan2GPServerError):
    """A generation was accepted and then failed (or was silently not queued)."""


class JobLostError(JobFailedError):
    """The server no longer has a job it had accepted: it restarted, or the job's session expired, or the job was
    interrupted before WanGP queued it. Nothing of it can be collected; submitting the shot again is safe.

    Attributes:
        reason: what happened to it, in a few words ("the server restarted", ...).
    """

    def __init__(self, message: str, *, reason: str = "", **kwargs) -> None:
        self.reason = reason
        super().__init__(message, **kwargs)


class ServerBusyError(Wan2GPServerError):
    """The server refused a call because it is busy: WanGP's MCP server runs another generation (it takes one at
    a time and queues nothing), or the web UI's queue answered HTTP 503 (full, or the server is stopping).
    Nothing was queued: it is safe to try again later."""


class JobCancelledError(Wan2GPError):
    """The job was cancelled by the caller."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f'"{c}"' for c in close) + "?)"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from URLs, auth tokens and the given ``secrets`` from a message before it is shown
    or logged."""
    text = re.sub(r"(\w+://)[^/\s:@]+(:[^/\s@]*)?@", r"\1***:***@", text)
    text = re.sub(r"(?i)(password|passwd|token|authorization|cookie)(['\"]?\s*[:=]\s*['\"]?)(basic |bearer )?"
                  r"[^\s'\",}]+", r"\1\2***", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def is_generic_app_error(message: str) -> bool:
    """True for Gradio's "the app raised an exception" (no detail): what an uncaught server exception looks like."""
    return _GENERIC_APP_ERROR in message


def hint_for_server_message(message: str) -> str | None:
    """What to do about a known WanGP error message."""
    if _MISSING_WEIGHTS in message:
        return (
            "WanGP could not download the model files: give the WanGP machine internet access once, "
            "or copy the model weights into its ckpts folder"
        )
    if _RESTARTED in message:
        return "the WanGP server restarted during the request; submit the shot again"
    if _GENERIC_APP_ERROR in message:
        return "WanGP hit an internal error; its console shows the traceback"
    return None


def translate(exc: BaseException, *, server: str | None = None, job_id: str | None = None,
              what: str = "the request") -> Wan2GPError:
    """Turn a foreign exception into the most specific :class:`Wan2GPError`."""
    if isinstance(exc, Wan2GPError):
        return exc
    ctx = {"server": redact(server) if server else None, "job_id": job_id}
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError | concurrent.futures.TimeoutError):
        return Wan2GPTimeoutError(f"{what} timed out", hint="the server is slow or frozen; try again", **ctx)
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return Wan2GPConnectionError(
            f"cannot reach the WanGP server: {redact(str(exc)) or name}",
            hint="check that WanGP is running and the URL is right", **ctx,
        )
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if code in (401, 403):
            return Wan2GPConnectionError(
                f"the server refused access (HTTP {code})",
                hint="give the server's user and password (auth=...) or WAN2GP_USERNAME/WAN2GP_PASSWORD", **ctx,
            )
        return Wan2GPConnectionError(f"HTTP {code} from the server during {what}", **ctx)
    login_refused = isinstance(exc, ValueError) and str(exc).startswith("Could not login")  # gradio 5: HTTP 400
    if name == "AuthenticationError" or login_refused:  # gradio_client: /login refused, or /config needs a login
        return Wan2GPConnectionError(
            "the server refused the user name or password" if "Invalid credentials" in str(exc) or login_refused
            else "the server needs a user name and password",
            hint="give the server's user and password (auth=...) or WAN2GP_USERNAME/WAN2GP_PASSWORD", **ctx)
    if name == "QueueError":  # gradio_client: HTTP 503 from queue/join (full, or the server is stopping)
        return ServerBusyError(f"the server's queue is full during {what}", hint="try again later", **ctx)
    if name == "AppError":  # gradio_client.exceptions.AppError: a gr.Error or an unexpected server exception
        message = str(getattr(exc, "message", None) or exc) or "error"
        return Wan2GPServerError(redact(message), hint=hint_for_server_message(message), **ctx)
    if isinstance(exc, concurrent.futures.CancelledError):
        return Wan2GPConnectionError(
            f"the connection to the server was lost during {what}",
            hint="the server may have stopped or restarted", **ctx,
        )
    if isinstance(exc, KeyError) and "Could not find 'data' key" in str(exc):
        # gradio_client 1.10 against gradio 5.29, after a cancel or a closed stream
        return Wan2GPConnectionError(f"the server closed {what} without a result", **ctx)
    if isinstance(exc, ValueError) and ("Server stopped" in str(exc) or "Could not fetch" in str(exc)):
        return Wan2GPConnectionError(f"{redact(str(exc))} during {what}", **ctx)
    return Wan2GPError(f"{what} failed: {name}: {redact(str(exc))}", **ctx)
