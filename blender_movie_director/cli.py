"""``movie-director``: the command line, a thin layer over the public API.

Commands: ``demo``, ``generate``, ``status``, ``models``, ``queue``, ``abort``, ``clear``, ``discover``,
``endpoints``, ``export-settings``. ``--json`` on every command prints exactly one JSON document on stdout
(errors as ``{"error": {...}}``); progress and notices go to stderr. Exit codes (see ``docs/cli.md``)::

    0    success
    1    unexpected error, or a missing optional part (the emulator for ``demo``)
    2    bad arguments or settings (Wan2GPValidationError); nothing was sent
    3    the server can't be reached, or a wait timed out (Wan2GPConnectionError, Wan2GPTimeoutError)
    4    the server is not a usable WanGP (UnsupportedServerError)
    5    the server reported an error, or the job failed (Wan2GPServerError, JobFailedError)
    130  cancelled (Ctrl-C, JobCancelledError); a running job is stopped on the server first

The server is ``--server``, else ``WAN2GP_URL``, else the first WanGP web UI found on this machine
(``discover``), else ``http://127.0.0.1:7860``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .backend.wan2gp import (
    GenerationResult,
    GenerationSettings,
    JobCancelledError,
    JobProgress,
    ModelCategory,
    UnsupportedServerError,
    Wan2GPClient,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPJob,
    Wan2GPServerError,
    Wan2GPValidationError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_UNSUPPORTED = 4
EXIT_SERVER = 5
EXIT_CANCELLED = 130  # 128 + SIGINT, as shells report a Ctrl-C

DEFAULT_SERVER = "http://127.0.0.1:7860"
DEMO_PROMPT = "a paper boat drifting down a rain-soaked street at dusk, cinematic lighting"
# How long Ctrl-C waits for the server to acknowledge the cancel (WanGP stops between two denoising steps;
# a real step of a 14B model can take tens of seconds). A second Ctrl-C stops waiting.
CANCEL_WAIT_SECONDS = 30.0
# Emulator step length for the demo: slow enough to watch the progress bar, fast enough for a ~10 s demo.
DEMO_STEP_SECONDS = 0.15

log = logging.getLogger("blender_movie_director.cli")


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code of an error."""
    if isinstance(exc, JobCancelledError | KeyboardInterrupt):
        return EXIT_CANCELLED
    if isinstance(exc, Wan2GPValidationError | UsageError):
        return EXIT_USAGE
    if isinstance(exc, UnsupportedServerError):
        return EXIT_UNSUPPORTED
    if isinstance(exc, Wan2GPConnectionError):
        return EXIT_CONNECTION
    if isinstance(exc, Wan2GPServerError):
        return EXIT_SERVER
    if isinstance(exc, CliError):
        return exc.code
    return EXIT_ERROR


# The library's names in messages, as this command spells them (errors come from the library, which speaks
# Python; here they must name the flags and commands the user types).
_CLI_WORDS = {
    "num_inference_steps": "--steps", "video_length": "--frames", "image_start": "--image-start",
    "image_end": "--image-end", "negative_prompt": "--negative", "model_type": "--model",
    "`movie-director models` (or client.list_models())": "`movie-director models`",
    "client.list_models()": "`movie-director models`",
    "Wan2GPClient.resume_job(record)": "`movie-director collect JOB`",
}
# A validation error's field (the library's name or its alias) -> the flag that sets it.
_FIELD_FLAGS = {
    "video_length": "--frames", "frames": "--frames", "num_inference_steps": "--steps", "steps": "--steps",
    "image_start": "--image-start", "image_end": "--image-end", "negative_prompt": "--negative",
    "negative": "--negative", "model": "--model", "model_type": "--model", "seconds": "--seconds",
    "resolution": "--resolution", "seed": "--seed", "prompt": "PROMPT",
}
_CLI_PATTERN = re.compile("|".join(re.escape(word) if not word[0].isalpha() else rf"(?<![\w-]){re.escape(word)}\b"
                                   for word in sorted(_CLI_WORDS, key=len, reverse=True)))


def speak_cli(text: str | None) -> str | None:
    """A library message in the command's own words: ``num_inference_steps`` -> ``--steps``, and so on."""
    if not text:
        return text
    return _CLI_PATTERN.sub(lambda m: _CLI_WORDS[m.group(0)], text)


class UsageError(Exception):
    """Bad command-line arguments."""


class CliError(Exception):
    """An error of the command line itself, with its exit code and a hint."""

    def __init__(self, message: str, *, code: int = EXIT_ERROR, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.hint = message, code, hint


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print and sys.exit(2)
        raise UsageError(f"{self.prog}: {message}")


# --- output ----------------------------------------------------------------------------------------------


class _Output:
    """Where everything is written: one JSON document on stdout with ``--json``, text otherwise.

    The streams are looked up at each write (tests capture them)."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json = json_mode
        self.quiet = quiet

    def result(self, data: dict[str, Any], text: str | None = None) -> None:
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        elif text is not None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        if not self.quiet:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def warn(self, message: str) -> None:
        sys.stderr.write(f"warning: {message}\n")
        sys.stderr.flush()

    def error(self, exc: BaseException, code: int, verbose: bool = False) -> None:
        message = speak_cli(getattr(exc, "message", None) or str(exc) or type(exc).__name__) or ""
        hint = speak_cli(getattr(exc, "hint", None))
        field = str(getattr(exc, "field", None) or "")
        flag = _FIELD_FLAGS.get(field) or _FIELD_FLAGS.get(field.split(".")[0])  # "resolution.width": --resolution
        if flag and flag not in message:
            message = f"{flag}: {message}"  # which of the user's flags the message is about
        if isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        if self.json:
            error: dict[str, Any] = {"type": type(exc).__name__, "message": message, "exit_code": code}
            for name in ("hint", "server", "job_id", "field"):
                value = hint if name == "hint" else getattr(exc, name, None)
                if value is not None:
                    error[name] = value
            sys.stdout.write(json.dumps({"error": error}, indent=2, default=_json_default) + "\n")
            sys.stdout.flush()
        text = f"{'cancelled' if code == EXIT_CANCELLED else 'error'}: {message}"
        if hint and hint not in message:
            text += f"\n  hint: {hint}"
        if code == EXIT_ERROR and not isinstance(exc, Wan2GPError | CliError):
            text = f"error: internal error: {type(exc).__name__}: {exc}"
            if verbose:
                text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
            else:
                text += "\n  (run with -v for the traceback)"
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _ProgressDisplay:
    """A job's progress on stderr: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, *, quiet: bool = False, rich_mode: bool | None = None) -> None:
        self.quiet = quiet
        self.rich = sys.stderr.isatty() if rich_mode is None else rich_mode
        self._lock = threading.Lock()
        self._last: tuple[Any, ...] | None = None
        self._progress: Any = None
        self._task: Any = None
        self._stopped = False

    def start(self) -> None:
        if self.quiet or not self.rich:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[status]:<11}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[steps]}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("shot", total=1000, status="starting", steps="", detail="")
        self._progress.start()

    def update(self, job: Wan2GPJob, p: JobProgress) -> None:
        """A progress callback (runs on the job's thread)."""
        if self.quiet:
            return
        status = p.status.value
        steps = f"step {p.step}/{p.total}" if p.step is not None and p.total else ""
        details = []
        if p.phase and not _is_number(p.phase):  # WanGP's refresh ids (timestamps) come as status text
            details.append(p.phase[:40])
        if p.queue_position is not None and status == "queued":  # Gradio's rank: 0 = the next to run
            details.append("next in line" if p.queue_position == 0 else f"{p.queue_position} ahead in line")
        if p.eta_seconds is not None and status == "running":
            details.append(f"ETA {p.eta_seconds:.0f} s")
        with self._lock:
            if self._stopped:
                return
            if self._progress is not None:
                self._progress.update(self._task, completed=round(p.fraction * 1000), status=status,
                                      steps=steps, detail="  ".join(details))
                return
            key = (status, p.phase, p.step, p.queue_position)
            if key == self._last:
                return
            self._last = key
            line = f"[{status}] {p.fraction:4.0%}"
            if steps:
                line += f" {steps}"
            if details:
                line += "  " + "  ".join(details)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


# --- shared helpers ----------------------------------------------------------------------------------------


def _resolve_server(args: argparse.Namespace, out: _Output) -> str:
    """--server, else WAN2GP_URL, else the first WanGP found on this machine, else the default."""
    from .backend import discovery
    from .backend.discovery import configured_urls, find_wangp
    from .backend.wan2gp._config import first_warning, security_warnings
    from .backend.wan2gp._errors import redact

    url = getattr(args, "server", None)
    if not url:
        env = configured_urls()
        if env:
            url = env[0]
        else:
            found = find_wangp(include_env=False, ports=discovery.DEFAULT_PORTS)
            if found is not None:
                url = found.url
                out.note(f"using WanGP {found.wangp_version or ''} found at {found.url}".replace("  ", " "))
            else:
                url = DEFAULT_SERVER
    if "://" not in url:
        url = "http://" + url
    server = redact(url.rstrip("/"))
    has_auth = bool(os.environ.get("WAN2GP_USERNAME") and os.environ.get("WAN2GP_PASSWORD"))
    for warning in security_warnings(url, has_auth=has_auth):  # said here once; the client then says nothing
        if first_warning(server, warning):
            out.warn(f"WanGP at {server}: {warning}" + ("; prefer an SSH tunnel or HTTPS"
                                                        if "not encrypted" in warning else ""))
    return url


def _client(url: str, output_dir: Path | None = None) -> Wan2GPClient:
    from .backend.wan2gp._cache import ApiCache, default_cache_dir

    # A new process reconnects to a known web UI with one small request (its app id): see ApiCache.
    return Wan2GPClient(url, output_dir=output_dir, api_cache=ApiCache(default_cache_dir()))


def _validation_error(exc: Any, prefix: str = "") -> Wan2GPValidationError:
    """pydantic's ValidationError as a one-line Wan2GPValidationError."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if field and not message.startswith(field):
        message = f"{field}: {message}"
    return Wan2GPValidationError(prefix + message, field=field or None)


def _settings_from(data: dict[str, Any]) -> GenerationSettings:
    from pydantic import ValidationError

    try:
        return GenerationSettings(**data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    """The shot's settings: ``--settings FILE`` first, then the options given on the command line."""
    data: dict[str, Any] = {}
    if getattr(args, "settings", None):
        path = Path(args.settings).expanduser()
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise Wan2GPValidationError(f"settings file not found: {path}", field="settings") from None
        except (OSError, ValueError) as exc:
            raise Wan2GPValidationError(f"cannot read the settings file {path}: {exc}", field="settings") from None
        if not isinstance(loaded, dict):
            raise Wan2GPValidationError(f"{path} is not a WanGP settings file (a JSON object)", field="settings")
        if "prompt" not in loaded and args.prompt:
            loaded = {**loaded, "prompt": args.prompt}
        from pydantic import ValidationError

        try:
            base = GenerationSettings.from_wangp_json(loaded)
        except ValidationError as exc:
            raise _validation_error(exc, prefix=f"{path.name}: ") from None
        data = base.model_dump(exclude_unset=True)
        data["model"] = base.model
    overrides = {
        "prompt": args.prompt,
        "model": args.model,
        "negative_prompt": args.negative,
        "resolution": args.resolution,
        "num_inference_steps": args.steps,
        "seed": args.seed,
        "image_start": args.image_start,
        "image_end": args.image_end,
    }
    if args.frames is not None:
        data.pop("seconds", None)
        overrides["video_length"] = args.frames
    if args.seconds is not None:
        data.pop("video_length", None)
        overrides["seconds"] = args.seconds
    data.update({k: v for k, v in overrides.items() if v is not None})
    if not data.get("prompt"):
        raise UsageError("give a PROMPT (or a --settings file with a prompt)")
    return _settings_from(data)


def _run_job(client: Wan2GPClient, settings: GenerationSettings, out: _Output) -> GenerationResult:
    """Submit, show progress, wait; on Ctrl-C cancel the job on the server and wait (bounded) for it."""
    return _follow_job(client, client.submit(settings), out)


def _follow_job(client: Wan2GPClient, job: Any, out: _Output) -> GenerationResult:
    """Show a job's progress and wait for it; on Ctrl-C cancel it on the server and wait (bounded) for it."""
    display = _ProgressDisplay(quiet=out.quiet)
    finished = threading.Event()
    job.add_progress_callback(display.update)
    job.add_done_callback(lambda _job: finished.set())
    display.start()
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        display.stop()
        out.note("cancelling the job on the server... (Ctrl-C again to stop waiting)")
        job.cancel()
        try:
            if not finished.wait(CANCEL_WAIT_SECONDS):
                out.warn(f"the server did not confirm the cancel within {CANCEL_WAIT_SECONDS:.0f} s")
        except KeyboardInterrupt:
            pass
        raise JobCancelledError(f"job {job.id} was cancelled", job_id=job.id, server=client.server_address,
                                hint="cancelled on the server") from None
    finally:
        display.stop()
    return job.result(timeout=0)


def _move_result(result: GenerationResult, target: Path) -> GenerationResult:
    target.parent.mkdir(parents=True, exist_ok=True)
    moved = result.video_path.replace(target)
    files = [moved if f == result.video_path else f for f in result.files]
    return result.model_copy(update={"video_path": moved, "files": files})


def _result_json(result: GenerationResult) -> dict[str, Any]:
    data = result.model_dump(mode="json")
    data["duration_seconds"] = result.duration
    return data


def _result_text(result: GenerationResult) -> str:
    parts = []
    if result.frames:
        parts.append(f"{result.frames} frames")
    if result.width and result.height:
        parts.append(f"{result.width}x{result.height}")
    if result.fps:
        parts.append(f"{result.fps:g} fps")
    if result.duration:
        parts.append(f"{result.duration:.2f} s")
    parts.append(f"made in {result.elapsed_seconds:.1f} s")
    return f"saved {result.video_path}\n  {', '.join(parts)}; model {result.model}, seed {result.settings.seed}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- commands ----------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: _Output) -> int:
    try:
        from wan2gp_emulator import EmulatorServer
    except ImportError as exc:
        raise CliError(f"the demo needs the built-in WanGP emulator, which is not installed ({exc})",
                       hint='install it with: pip install -e ".[emulator]"') from None
    settings = _settings_from({"prompt": args.prompt or DEMO_PROMPT, "seconds": args.seconds,
                               "resolution": args.resolution, "num_inference_steps": args.steps,
                               "seed": args.seed})
    output = Path(args.output).expanduser().resolve()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="movie-director-demo-") as server_files:
        server = EmulatorServer(flavour=args.flavour, host="127.0.0.1", port=None, output_dir=server_files,
                                step_seconds=args.step_seconds)
        # Gradio prints to stdout ("Closing server running on port ...") and warns about its own
        # deprecations: keep stdout for the result (one JSON document with --json) and stderr readable.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            url = server.start()
        try:
            out.note(f"started the built-in WanGP emulator ({server.version}) at {url}: no GPU, no WanGP "
                     "needed; the clip is a synthetic test pattern")
            with _client(url, output) as client:
                result = _run_job(client, settings, out)
        finally:
            with contextlib.redirect_stdout(sys.stderr):
                server.stop()
    data = _result_json(result)
    data["demo"] = {"emulator_flavour": args.flavour, "emulator_version": server.version,
                    "total_seconds": round(time.monotonic() - started, 2)}
    out.result(data, _result_text(result) + "\n  the emulator is stopped. Next: movie-director generate "
               "\"your prompt\" --server http://127.0.0.1:7860 against a real WanGP")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace, out: _Output) -> int:
    settings = _settings_from_args(args)
    target: Path | None = None
    output_dir: Path | None = None
    if args.output:
        path = Path(args.output).expanduser()
        if path.is_dir() or args.output.endswith(("/", "\\")) or not path.suffix:
            output_dir = path
        else:
            target, output_dir = path, path.parent
    url = _resolve_server(args, out)
    with _client(url, output_dir) as client:
        result = _run_job(client, settings, out)
    if target is not None:
        result = _move_result(result, target.resolve())
    out.result(_result_json(result), _result_text(result))
    return EXIT_OK


def cmd_export_settings(args: argparse.Namespace, out: _Output) -> int:
    settings = _settings_from_args(args)
    document = settings.to_wangp_json()
    if args.output:
        path = Path(args.output).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        out.result({"path": str(path.resolve()), "settings": document}, f"wrote {path}")
    else:
        out.result(document if not out.json else {"path": None, "settings": document},
                   json.dumps(document, indent=2))
    return EXIT_OK


def _status_code(report: Any) -> int:
    if not report.reachable or report.kind is None:  # down, or too slow to say what it is (a timeout)
        return EXIT_CONNECTION
    return EXIT_OK if report.is_wangp else EXIT_UNSUPPORTED


def _status_text(report: Any) -> str:
    if not report.reachable:
        return f"down     {report.url}  ({report.error or 'not reachable'})"
    if not report.is_wangp:
        what = f"not WanGP ({report.kind})"
    elif report.wangp_version:
        what = f"WanGP {report.wangp_version}"
    else:  # an MCP server's initialize names the mcp package's version, not WanGP's
        what = "WanGP's MCP server (version not said)" if report.kind == "wangp-mcp" else "WanGP"
    parts = [f"{report.state:<8} {report.url}  {what}"]
    if report.latency_ms is not None:
        parts.append(f"{report.latency_ms:.1f} ms")
    if report.gradio_version:
        parts.append(f"gradio {report.gradio_version}")
    if report.server_waiting is not None:
        parts.append(f"{report.server_waiting} waiting")
    if report.current_model:
        parts.append(f"model {report.current_model}" + ("" if report.queue_length is not None else " (at its start)"))
    return "  ".join(parts)


def cmd_status(args: argparse.Namespace, out: _Output) -> int:
    from .backend.health import HealthEvent, HealthMonitor, check_health

    url = _resolve_server(args, out)
    if not args.watch:
        from .backend.wan2gp._cache import ApiCache, default_cache_dir

        report = check_health(url, timeout=args.timeout, api_cache=ApiCache(default_cache_dir()))
        out.result(report.to_dict(), _status_text(report))
        return _status_code(report)

    events: list[HealthEvent] = []

    def on_event(event: HealthEvent) -> None:
        events.append(event)
        if not out.json:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.report.checked_at))
            sys.stdout.write(f"{stamp}  {event.kind.value:<9} {_status_text(event.report)}\n")
            sys.stdout.flush()

    monitor = HealthMonitor([url], period=args.period, timeout=min(args.timeout, 0.8 * args.period),
                            on_event=on_event, max_rounds=args.count)
    out.note(f"watching {url} every {args.period:g} s (Ctrl-C to stop)")
    monitor.start()
    try:
        while monitor.running:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop()
    latest = monitor.latest()
    history = monitor.history()
    out.result({"server": url, "period": args.period, "checks": len(history),
                "events": [e.to_dict() for e in events],
                "latest": latest.to_dict() if latest else None,
                "history": [r.to_dict() for r in history]}, None)
    return _status_code(latest) if latest else EXIT_CONNECTION


def cmd_models(args: argparse.Namespace, out: _Output) -> int:
    url = _resolve_server(args, out)
    with _client(url) as client:
        models = client.list_models(family=args.family, category=args.category)
    rows = [(m.model_type, m.family, ",".join(m.categories), m.name[:50]) for m in models]
    out.result({"server": url, "count": len(models), "models": [m.model_dump(mode="json") for m in models]},
               _table(["model", "family", "categories", "name"], rows) + f"\n{len(models)} models")
    return EXIT_OK


_SESSION_NOTE = ("WanGP keeps a private queue per session: this command sees and stops only jobs of its own "
                 "session, not those started by the web page, Blender or another command")


def cmd_queue(args: argparse.Namespace, out: _Output) -> int:
    from .backend.health import check_health

    url = _resolve_server(args, out)
    with _client(url) as client:
        items = client.get_queue_status()
    report = check_health(url)
    rows = [(i.job_id, i.status.value, i.position, f"{i.progress:.0%}", i.model, i.prompt[:40]) for i in items]
    text = _table(["job", "status", "position", "progress", "model", "prompt"], rows) if rows else "no jobs"
    if report.server_waiting is not None:
        text += f"\n{report.server_waiting} call(s) waiting in the server's queue (all sessions)"
    out.result({"server": url, "jobs": [i.model_dump(mode="json") for i in items],
                "server_waiting": report.server_waiting, "note": _SESSION_NOTE}, text)
    return EXIT_OK


def cmd_abort(args: argparse.Namespace, out: _Output) -> int:
    if getattr(args, "job", None):
        return cmd_cancel(args, out)
    url = _resolve_server(args, out)
    with _client(url) as client:
        count = client.abort_generation()
    out.result({"server": url, "aborted": count, "note": _SESSION_NOTE},
               f"aborted {count} running job(s)\n  note: {_SESSION_NOTE}")
    return EXIT_OK


def cmd_clear(args: argparse.Namespace, out: _Output) -> int:
    url = _resolve_server(args, out)
    with _client(url) as client:
        count = client.clear_queue()
    out.result({"server": url, "cleared": count, "note": _SESSION_NOTE},
               f"cleared {count} job(s)\n  note: {_SESSION_NOTE}")
    return EXIT_OK


def _register() -> Any:
    from .backend.wan2gp._register import user_register

    return user_register()


def _registered(job_id: str) -> dict[str, Any]:
    try:
        return _register().find(job_id)
    except KeyError as exc:
        raise CliError(str(exc.args[0]), code=EXIT_USAGE, hint="`movie-director jobs` lists them") from None


def cmd_jobs(args: argparse.Namespace, out: _Output) -> int:
    entries = _register().entries(server=args.server.rstrip("/") if args.server else None)
    rows = []
    for e in entries:
        when = time.strftime("%m-%d %H:%M", time.localtime(e["updated"]))
        progress = f"{e['progress']:.0%}" if e.get("progress") is not None else ""
        prompt = str(e["record"].get("settings", {}).get("prompt", ""))[:32]
        rows.append((e["job_id"], e["state"], progress, when, e["server"], e.get("output") or prompt))
    text = _table(["job", "state", "progress", "updated", "server", "output / prompt"], rows) if rows else \
        "no shots in the register yet"
    out.result({"jobs": entries}, text)
    return EXIT_OK


def cmd_collect(args: argparse.Namespace, out: _Output) -> int:
    entry = _registered(args.job)
    if entry["state"] == "completed" and entry.get("output") and Path(entry["output"]).is_file():
        out.result({"job_id": entry["job_id"], "path": entry["output"]},
                   f"job {entry['job_id']} was collected already: {entry['output']}")
        return EXIT_OK
    output_dir = Path(args.output).expanduser() if args.output else None
    with _client(entry["server"], output_dir) as client:
        result = _follow_job(client, client.resume_job(entry["record"], output_dir=output_dir), out)
    out.result(_result_json(result), _result_text(result))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, out: _Output) -> int:
    entry = _registered(args.job)
    if entry["state"] not in ("sent", "running", "detached", "orphaned", "queued"):
        out.result({"job_id": entry["job_id"], "stopped": False, "state": entry["state"]},
                   f"job {entry['job_id']} is {entry['state']}: nothing to stop")
        return EXIT_OK
    with _client(entry["server"]) as client:
        stopped = client.stop_job(entry["record"])
    out.result({"job_id": entry["job_id"], "stopped": stopped},
               f"job {entry['job_id']}: " + ("stopped on the server" if stopped else
                                              "the server restarted since: the job is gone"))
    return EXIT_OK


def cmd_discover(args: argparse.Namespace, out: _Output) -> int:
    from .backend.discovery import DEFAULT_PORTS, discover, is_loopback

    for url in args.urls:
        if url.startswith("http://") and not is_loopback(url):
            out.warn(f"probing {url}, another machine, over plain HTTP")
    started = time.perf_counter()
    services = discover(args.urls, scan_loopback=not args.no_scan, ports=args.port or DEFAULT_PORTS,
                        connect_timeout=args.timeout, read_timeout=max(args.timeout, 3.0), max_age=0)
    elapsed = (time.perf_counter() - started) * 1000
    wangp = [s for s in services if s.is_web_ui]
    listening = [s for s in services if s.kind.listening]
    rows = [(s.url, s.kind.value, s.wangp_version or "", s.gradio_version or "", s.title or s.server_name or "",
             f"{s.latency_ms:.1f}" if s.latency_ms is not None else "") for s in listening]
    text = _table(["url", "kind", "wangp", "gradio", "title/server", "ms"], rows) if rows else \
        "nothing found"
    quiet_urls = [s.url for s in services if not s.kind.listening]
    if quiet_urls:
        text += f"\nnot listening: {len(quiet_urls)} of {len(services)} probed"
    text += f"\nscan took {elapsed:.0f} ms"
    out.result({"elapsed_ms": round(elapsed, 1), "probed": len(services),
                "selected": wangp[0].url if wangp else None, "wangp": [s.url for s in wangp],
                "services": [s.to_dict() for s in services]}, text)
    return EXIT_OK


def cmd_batch(args: argparse.Namespace, out: _Output) -> int:
    from .backend.batch import run_batch_cli

    if args.openjd:
        from .backend.farm import write_openjd_bundle

        template = write_openjd_bundle(args.shots, args.openjd)
        out.result({"template": template, "bundle": template.parent},
                   f"OpenJD job bundle written: {template.parent}\n  run it here: openjd run {template} "
                   f"-p ShotsFile={template.parent / 'shots.json'} -p OutputDir={template.parent / 'output'}\n"
                   f"  or submit it: deadline bundle submit {template.parent}")
        return EXIT_OK
    return run_batch_cli(args, out)


def cmd_shot(args: argparse.Namespace, out: _Output) -> int:
    from .backend.farm import end_task, run_shot_cli

    code = run_shot_cli(args, out, _resolve_server(args, out))
    if args.owns_process:  # the task's own process (the farm waits for it to end): skip the interpreter's teardown
        end_task(code)
    return code


def cmd_endpoints(args: argparse.Namespace, out: _Output) -> int:
    url = _resolve_server(args, out)
    with _client(url) as client:
        endpoints = client.endpoints
    if args.grep:
        needle = args.grep.lower()
        endpoints = {n: e for n, e in endpoints.items() if needle in n.lower()}
    lines = []
    for name, e in endpoints.items():
        params = ", ".join(f"{p['name']}: {p['type']}" + ("" if p["required"] else "=…") for p in e["parameters"])
        lines.append(f"{name}({params}) -> {e['returns']}")
    out.result({"server": url, "count": len(endpoints), "endpoints": endpoints},
               "\n".join(lines + [f"{len(endpoints)} endpoints"]))
    return EXIT_OK


# --- the parser --------------------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, server: bool) -> None:
    # SUPPRESS: given after the command, an option overrides; not given, the top-level value stays.
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout (errors as {\"error\": ...})")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress or notices on stderr")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log more (-vv: debug)")
    if server:
        parser.add_argument("--server", metavar="URL", default=argparse.SUPPRESS,
                            help="WanGP web UI (default: WAN2GP_URL, then discovery, then http://127.0.0.1:7860)")


def _add_shot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", metavar="PROMPT", help="what the shot shows")
    parser.add_argument("--model", metavar="M", help="WanGP model type (default t2v_1.3B)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, metavar="S", help="duration (turned into the model's frames)")
    length.add_argument("--frames", type=int, metavar="N", help="frame count (Wan: 4n+1)")
    parser.add_argument("--resolution", metavar="WxH", help='e.g. "832x480"')
    parser.add_argument("--steps", type=int, metavar="N", help="denoising steps")
    parser.add_argument("--seed", type=int, metavar="N", help="-1 for random")
    parser.add_argument("--negative", metavar="TEXT", help="negative prompt")
    parser.add_argument("--image-start", metavar="FILE", help="start image (image-to-video models)")
    parser.add_argument("--image-end", metavar="FILE", help="end image (needs --image-start)")
    parser.add_argument("--settings", metavar="FILE",
                        help="a WanGP settings JSON (its Export Settings, or export-settings); options override it")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="movie-director",
                     description="Generate video shots with a WanGP (Wan2GP) server. Powered by WanGP.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--json", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    parser.add_argument("--server", metavar="URL", default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, func: Callable[[argparse.Namespace, _Output], int], help_text: str, *,
                server: bool = True, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, aliases=list(aliases))
        _add_common(sub, server=server)
        sub.set_defaults(func=func)
        return sub

    demo = command("demo", cmd_demo, "make a short clip on the built-in emulator (no GPU, no WanGP needed)",
                   server=False)
    demo.add_argument("prompt", nargs="?", metavar="PROMPT", help="what the shot shows")
    demo.add_argument("-o", "--output", default="outputs", metavar="DIR", help="folder for the clip (./outputs)")
    demo.add_argument("--flavour", choices=("v12", "v11", "v9", "v8", "v6"), default="v12",
                      help="emulated WanGP release (12.60, 11.66, 9.81, 8.11, 6.31)")
    demo.add_argument("--seconds", type=float, default=2.0, metavar="S")
    demo.add_argument("--resolution", default="832x480", metavar="WxH")
    demo.add_argument("--steps", type=int, default=20, metavar="N")
    demo.add_argument("--seed", type=int, default=-1, metavar="N")
    demo.add_argument("--step-seconds", type=float, default=DEMO_STEP_SECONDS, metavar="S",
                      help="the emulator's time per denoising step")

    generate = command("generate", cmd_generate, "generate a shot, with live progress; Ctrl-C cancels it")
    _add_shot_options(generate)
    generate.add_argument("-o", "--output", metavar="OUT.mp4",
                          help="file name, or a folder (default WAN2GP_OUTPUT_DIR or ~/MovieDirector/shots)")

    export = command("export-settings", cmd_export_settings,
                     "write a shot's settings as a WanGP settings JSON (for --settings), without generating",
                     server=False)
    _add_shot_options(export)
    export.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")

    status = command("status", cmd_status, "is the server up, which WanGP, busy or idle")
    status.add_argument("--watch", action="store_true", help="keep checking and print every change")
    status.add_argument("--period", type=float, default=2.0, metavar="S", help="seconds between checks (--watch)")
    status.add_argument("--count", type=int, metavar="N", help="stop after N checks (--watch)")
    status.add_argument("--timeout", type=float, default=5.0, metavar="S", help="bound of one check")

    models = command("models", cmd_models, "list the server's models")
    models.add_argument("--family", metavar="F", help='e.g. "wan", "wan2_2", "ltx2"')
    models.add_argument("--category", metavar="C", choices=[c.value for c in ModelCategory])

    command("jobs", cmd_jobs, "every shot this user started on this machine, from any program (the register)")
    collect = command("collect", cmd_collect, "follow a shot from the register to its end and save its output",
                      aliases=["resume"])
    collect.add_argument("job", metavar="JOB", help="its id (or the start of it), as `movie-director jobs` shows")
    collect.add_argument("-o", "--output", metavar="DIR",
                         help="folder for the output (default: the one the shot was started with)")
    cancel = command("cancel", cmd_cancel, "stop a shot from the register on its server, whoever started it")
    cancel.add_argument("job", metavar="JOB", help="its id (or the start of it), as `movie-director jobs` shows")
    command("queue", cmd_queue, "this session's jobs, and how many calls wait on the server")
    abort = command("abort", cmd_abort, "stop a shot from the register on its server (as cancel JOB); without JOB, "
                    "this session's running generation")
    abort.add_argument("job", metavar="JOB", nargs="?", help="its id (or the start of it), as `movie-director jobs` "
                       "shows")
    command("clear", cmd_clear, "cancel this session's queued and running jobs")

    discover = command("discover", cmd_discover, "find WanGP servers on this machine (and the URLs given)",
                       server=False)
    discover.add_argument("urls", nargs="*", metavar="URL", help="other servers to probe (named hosts only)")
    discover.add_argument("--port", type=int, action="append", metavar="P",
                          help="loopback port to probe instead of the defaults (repeatable)")
    discover.add_argument("--no-scan", action="store_true", help="probe only the URLs given and WAN2GP_URL")
    discover.add_argument("--timeout", type=float, default=0.3, metavar="S", help="connect timeout per probe")

    endpoints = command("endpoints", cmd_endpoints, "the server's named API endpoints and their parameters")
    endpoints.add_argument("--grep", metavar="TEXT", help="only names containing TEXT")

    from .backend.batch import add_batch_arguments

    batch = command("batch", cmd_batch, "run many shots over one or more servers; resumable (journal on disk)")
    add_batch_arguments(batch)
    batch.add_argument("--openjd", metavar="DIR", help="write an OpenJD job bundle of the batch into DIR instead "
                       "of running it (docs/farm.md)")

    from .backend.farm import add_shot_arguments

    shot = command("shot", cmd_shot, "run shots of a batch file as a render-farm task: idempotent, OpenJD progress")
    add_shot_arguments(shot)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("blender_movie_director").setLevel(level)
    if verbose < 2:  # httpx logs every request at INFO
        logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never calls sys.exit). Run as the program (``argv`` None),
    ``shot`` ends the process itself once its work is written (see ``backend.farm.end_task``)."""
    given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _Output(json_mode="--json" in argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        out.error(exc, EXIT_USAGE)
        if not out.json:
            sys.stderr.write("run `movie-director --help` or `movie-director COMMAND --help`\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    out = _Output(json_mode=args.json, quiet=args.quiet)
    args.owns_process = given is None  # run as the program (movie-director, python -m), not called
    _setup_logging(args.verbose)
    try:
        return int(args.func(args, out))
    except KeyboardInterrupt as exc:
        out.error(exc, EXIT_CANCELLED)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - every error becomes a message and an exit code
        code = exit_code_for(exc)
        out.error(exc, code, verbose=args.verbose > 0)
        return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
