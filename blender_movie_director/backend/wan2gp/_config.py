"""Configuration: arguments, then ``WAN2GP_*`` environment variables, then the defaults below.

Every default lives here, with the reason for its number. Library code never reads ``os.environ``
itself; this settings object does, once, when it is built.
"""

from __future__ import annotations

import os
import random
import re
import threading
import urllib.parse
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .._urls import is_loopback

DEFAULT_SERVER = "http://127.0.0.1:7860"  # WanGP's default port (wgp.py --server-port)


def default_state_dir() -> Path:
    """Where this user's job register lives: the platform's folder for application state."""
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "MovieDirector"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "blender-movie-director"


def normalize_url(url: str) -> str:
    """A server URL as the client uses it: ``http(s)://host[:port][/path]`` (kept as given otherwise).

    ``127.0.0.1:7860`` and ``localhost`` get ``http://``. Anything that is not an http(s) URL is refused: given
    a bare name, gradio_client would look it up as a Hugging Face Space (a request to huggingface.co).
    """
    text = str(url).strip()
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        if re.fullmatch(r"[A-Za-z0-9.\-]+(:\d{1,5})?(/.*)?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?(/.*)?", text):
            text = "http://" + text
        else:
            raise ValueError(f"not a server URL: {text!r} (expected http://host:port)")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"the server URL must start with http:// or https://, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"the server URL has no host: {text!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"the server URL has an invalid port: {text!r}") from None
    return text


def security_warnings(url: str, *, has_auth: bool) -> list[str]:
    """What is unsafe about talking to ``url`` (shown by the CLI and Blender); empty for loopback."""
    warnings: list[str] = []
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        warnings.append("the server URL contains a user name or password; give them as auth=(user, password) "
                        "or WAN2GP_USERNAME/WAN2GP_PASSWORD instead")
    if parts.scheme == "http" and not is_loopback(url):
        warnings.append(f"{parts.hostname} is not this machine and http:// is not encrypted: prompts, images "
                        "and videos cross the network in clear" + (", and so do the user name and password"
                                                                  if has_auth else ""))
        if not has_auth:
            warnings.append(f"no user/password is set for {parts.hostname}: if WanGP listens on the network "
                            "without --auth, anyone who reaches it can use it")
    return warnings


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def first_warning(server: str, warning: str) -> bool:
    """True the first time this process is about to give ``warning`` about ``server``: a CLI command, a pool or
    Blender connects to one server many times, and the user needs to read it once."""
    with _warned_lock:
        if (server, warning) in _warned:
            return False
        _warned.add((server, warning))
        return True


class Timeouts(BaseModel):
    """Bounded waits, in seconds. Connection set-up is separate from the wall-clock wait for a job."""

    model_config = SettingsConfigDict(frozen=True)

    connect: float = Field(10.0, gt=0, description="TCP connect and the first /config read")
    # /config + API description of the real v12 UI is ~7 MB and took ~2.5 s on loopback; leave room
    # for a remote server.
    describe: float = Field(60.0, gt=0, description="downloading /config and the API description")
    call: float = Field(120.0, gt=0, description="one short chain call (model switch, form fill, add task)")
    # A real generation is minutes; a long one on a small GPU can be an hour or more.
    job: float = Field(6 * 3600.0, gt=0, description="whole generation, from submit to the saved file")
    # A job queued behind others, or behind a model download, hears only heartbeats for as long as that takes:
    # after this long without a status the server is probed, and the job waits on while the server answers.
    stall: float = Field(900.0, gt=0, description="status silence during a job before the server is probed")
    download: float = Field(600.0, gt=0, description="downloading one output file")
    # Re-attaching to a job whose program stopped mid-generation, on a WanGP that can't show its queue (6.x):
    # how long to wait for that run's output before running the task again.
    resume_wait: float = Field(900.0, gt=0, description="wait for an interrupted run's output (WanGP 6.x)")
    # A running job's event stream is busy (status and steps several times a second) and gradio sends a
    # heartbeat every 15 s when idle; after this much silence the server is probed (a few bytes), and a server
    # that does not answer the probe within `connect` seconds is taken as frozen or gone.
    heartbeat: float = Field(20.0, gt=0, description="silence on a job's stream before the server is probed")
    # After a dropped connection: how long to keep trying to reach the server again before the job fails.
    # A refused connection (nothing listening: the server stopped) fails at once.
    reconnect: float = Field(30.0, gt=0, description="trying to reach the server again after a drop")


_rng = random.Random()  # retry jitter; never the host program's global `random` state


class Retries(BaseModel):
    """Retries for idempotent steps only (connect, status, download). A generation is never resubmitted."""

    model_config = SettingsConfigDict(frozen=True)

    attempts: int = Field(3, ge=1, le=10)
    backoff: float = Field(0.5, ge=0, description="first delay; doubles each attempt, with jitter")
    max_backoff: float = Field(8.0, ge=0)

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): ``backoff`` doubling, capped at
        ``max_backoff``, with a jitter of -50 % to +50 % so that clients of one server don't retry in step. The one
        rule of every retry of the client, whether counted in attempts or bounded by a deadline."""
        return min(self.backoff * 2 ** (max(attempt, 1) - 1), self.max_backoff) * (0.5 + _rng.random())


class ClientSettings(BaseSettings):
    """Settings of a :class:`~blender_movie_director.backend.wan2gp.Wan2GPClient`.

    Environment variables: ``WAN2GP_URL``, ``WAN2GP_OUTPUT_DIR``, ``WAN2GP_USERNAME``, ``WAN2GP_PASSWORD``,
    ``WAN2GP_MAX_JOBS``, ``WAN2GP_TIMEOUTS__JOB`` (nested with ``__``) and so on.
    """

    model_config = SettingsConfigDict(env_prefix="WAN2GP_", env_nested_delimiter="__", extra="ignore")

    url: str = DEFAULT_SERVER
    output_dir: Path = Field(default_factory=lambda: Path.home() / "MovieDirector" / "shots")
    # The register of this user's shots, shared by every process (_register.py); WAN2GP_STATE_DIR moves it.
    state_dir: Path = Field(default_factory=default_state_dir)
    register_jobs: bool = True
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None  # a bearer token, for WanGP's MCP server started with --mcp-auth
    timeouts: Timeouts = Timeouts()
    retries: Retries = Retries()
    # Jobs whose chain runs at once; more wait on our side. WanGP runs one generation at a time anyway.
    max_jobs: int = Field(8, ge=1, le=64)
    # Largest output file accepted: a 10 s 1080p H.264 clip is ~30 MB; 2 GiB leaves a wide margin.
    max_download_bytes: int = Field(2 * 1024**3, ge=1)
    # Check each saved video's frames, size and fps against what was asked.
    verify_outputs: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_url(value)
