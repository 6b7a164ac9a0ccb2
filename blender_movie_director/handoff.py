"""Shots handed to a background runner: ``movie-director batch`` with its journal, in a process of its own.

Blender's Generate All (by default) does not run its shots inside Blender: it writes them to a shots file and
starts the batch runner (:mod:`backend.batch`) on this machine, detached (a new session: it is not Blender's
child any more, and Blender quitting, or crashing, leaves it running). The runner keeps every shot's state in
its journal; Blender reads that journal to show progress and to place each finished shot, and the .blend keeps
the journal's path on each job, so that a file opened the next morning places what was made overnight.

Plain Python, no bpy: what runs on Blender's main thread here is a file write and a process start (a few
milliseconds); reading a journal imports the backend, which Blender does on a worker thread.

Files, in ``<output folder>/.movie_director/`` (``paths``)::

    <batch>.shots.json        the shots (WanGP settings, one per job, in order; client ids name the jobs)
    <batch>.journal.jsonl     the runner's journal (backend/batch.py); ``.lock`` beside it while it runs
    <batch>.pid               the runner's process id (to stop it: SIGINT, which cancels on the server)
    <batch>.log               the runner's output
    <batch>.adopted.json      shots handed over as Blender quit: their jobs' records (``hand_over``)
    handed/<job key>.json     where such a job went: its journal and its place in it

Single shots (Generate, From Frame, Extend, Regenerate) run inside Blender, with their steps. When Blender quits
and the artist chose "Keep running when Blender closes", the ones not finished are handed over to a runner of
their own (:func:`hand_over`): Blender lets go of them, writes their records, and the runner re-attaches to each
one's task on the server (the same session: nothing is generated twice) and downloads it. The .blend saved
before the quit does not know that journal: each job's ``handed/<key>.json`` says where it went
(:func:`handed_over`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FOLDER = ".movie_director"
# A runner that has not taken its journal's lock this long after it was started never will (it died or could
# not start): it is started again. Starting Python and importing the backend takes 1-3 s on a loaded machine.
START_GRACE = 60.0
# Shots handed over as Blender quits: the runner waits (at most this long) for Blender to be gone before it
# imports the backend and connects, which takes about a CPU-second that Blender's own exit should not share.
AFTER = "--after-pid"
AFTER_WAIT = 10.0
RUNNER_NICENESS = 10  # the runner's CPU priority below Blender's (Unix "nice"; 0 is the default, 19 the lowest)


@dataclass(frozen=True)
class Paths:
    shots: Path
    journal: Path
    pid: Path
    log: Path
    exit: Path  # the runner's exit code, written as it ends
    cancelled: Path  # the user cancelled the run: it is never started again
    adopted: Path  # shots Blender let go of as it quit, with their jobs' records (hand_over)


def paths(output_dir: str | os.PathLike[str], batch: str) -> Paths:
    """Where a background batch's files are (see the module docstring)."""
    return _paths(Path(output_dir).expanduser() / FOLDER, batch)


def _paths(base: Path, batch: str) -> Paths:
    return Paths(*(base / f"{batch}.{ext}" for ext in ("shots.json", "journal.jsonl", "pid", "log", "exit",
                                                       "cancelled", "adopted.json")))


def paths_of(journal: str | os.PathLike[str]) -> Paths:
    """A batch's files from its journal's path (what a job in the .blend keeps)."""
    path = Path(journal)
    return _paths(path.parent, path.name.removesuffix(".journal.jsonl"))


def _write_json(path: Path, data: Any) -> None:
    """A JSON file, written whole or not at all (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_shots(path: Path, shots: list[dict[str, Any]]) -> None:
    """The shots file, written whole or not at all (temporary name, fsync, rename)."""
    if not shots:
        raise ValueError("a background batch needs at least one shot")
    _write_json(path, shots)


def _package_parent() -> str:
    """The folder that holds this package (a checkout, site-packages, or Blender's extensions repository)."""
    return str(Path(__file__).resolve().parent.parent)


def command(p: Paths, server: str, output_dir: str, *, resume: bool = False, after: int = 0) -> list[str]:
    """The runner's command line: ``movie-director batch`` run by this Python (Blender's own, in Blender).
    ``after``: a process id the runner waits to see gone before it starts its work (:func:`main`)."""
    module = f"{Path(__file__).resolve().parent.name}.handoff"  # in Blender, not bl_ext.<repo>.<name>
    args = [sys.executable, "-m", module, "batch", str(p.shots), "--journal", str(p.journal),
            "--servers", server, "-o", str(output_dir), "--json", "--no-cache",
            "--cache-dir", str(p.journal.parent / "cache")]
    return args + (["--resume"] if resume else []) + ([AFTER, str(after)] if after else [])


def start(p: Paths, server: str, output_dir: str, *, resume: bool = False,
          auth: tuple[str, str] | None = None, after: int = 0) -> int:
    """Start the runner, detached: it survives this process. Returns its process id (also in ``p.pid``).
    ``after``: the runner waits for that process to end before it starts its work (see :func:`main`).

    The package's folder and this process's ``sys.path`` go to the runner as ``PYTHONPATH`` (in Blender, the
    add-on's bundled wheels are there); a password goes through the environment, never the command line.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_package_parent(), *[e for e in sys.path if e and os.path.isdir(e)]])
    if auth is not None:
        env["WAN2GP_USERNAME"], env["WAN2GP_PASSWORD"] = auth
    p.log.parent.mkdir(parents=True, exist_ok=True)
    p.exit.unlink(missing_ok=True)
    extra: dict[str, Any] = {}
    if os.name == "nt":  # no sessions: a process group of its own, no console, not killed with Blender's
        extra["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined]
    else:
        extra["start_new_session"] = True
    with p.log.open("ab") as log:
        process = subprocess.Popen(command(p, server, output_dir, resume=resume, after=after),
                                   stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log, env=env, close_fds=True, **extra)
    if hasattr(os, "setpriority"):  # background work, mostly waiting on the server: Blender's UI (or its exit,
        try:  # when shots are handed over as it quits) comes first on the CPU
            os.setpriority(os.PRIO_PROCESS, process.pid, RUNNER_NICENESS)
        except OSError:
            pass
    p.pid.write_text(f"{process.pid} {time.time():.3f}\n", encoding="utf-8")
    return process.pid


def runner_holds(p: Paths) -> bool:
    """True while a runner has the journal (its lock is taken). Where the OS has no ``fcntl``: the pid file's
    process is alive."""
    try:
        import fcntl
    except ImportError:
        return _pid_alive(_pid(p)[0])
    lock = p.journal.with_name(p.journal.name + ".lock")
    if not lock.exists():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _pid(p: Paths) -> tuple[int, float]:
    try:
        pid, started = p.pid.read_text(encoding="utf-8").split()
        return int(pid), float(started)
    except (OSError, ValueError):
        return 0, 0.0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:  # a runner that ended but was not reaped yet (Blender's child) is a zombie: not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running(p: Paths) -> bool:
    """True while the runner's process lives (starting up, or running the batch)."""
    return exit_code(p) is None and _pid_alive(_pid(p)[0])


def stop(p: Paths) -> bool:
    """Ask the runner to stop: SIGINT, on which it cancels its running shots on the server (WanGP's abort) and
    marks the rest cancelled in the journal. Returns False if no runner has the journal."""
    p.cancelled.parent.mkdir(parents=True, exist_ok=True)
    p.cancelled.write_text(f"{time.time():.3f}\n", encoding="utf-8")  # never started again, whatever happens
    pid, _started = _pid(p)
    if not (runner_holds(p) or running(p)):  # still starting counts: it reads the mark before it sends anything
        return False
    try:
        os.kill(pid, signal.CTRL_C_EVENT if os.name == "nt" else signal.SIGINT)  # type: ignore[attr-defined]
    except OSError:
        return False
    return True


def _handed_path(output_dir: str | os.PathLike[str], key: str) -> Path:
    return Path(output_dir).expanduser() / FOLDER / "handed" / f"{key}.json"


def hand_over(output_dir: str, server: str, jobs: list[tuple[str, dict[str, Any]]], *,
              auth: tuple[str, str] | None = None) -> Paths:
    """Hand shots Blender let go of (as it quits) to a runner of their own, which finishes them on the server.

    ``jobs``: ``(job key, Wan2GPJob.to_record())`` of each, taken before it was let go. The runner makes its
    journal from these records (:func:`_adopt`) and resumes it: each job re-attaches to its task in its own
    session on the server (a task queued there is run, a finished one is fetched), so nothing runs twice; a job
    whose task never reached the server's queue is sent again. A few milliseconds here: files and a process
    start, nothing on the network. Returns the runner's files.
    """
    batch = f"quit-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    p = paths(output_dir, batch)
    records = [{"settings": record["settings"], "server": record.get("server") or server, "job": record,
                "retries": 0} for _key, record in jobs]
    write_shots(p.shots, [record["settings"] for _key, record in jobs])
    _write_json(p.adopted, {"records": records, "keys": [key for key, _record in jobs]})
    for index, (key, _record) in enumerate(jobs):
        _write_json(_handed_path(output_dir, key), {"journal": str(p.journal), "index": index})
    start(p, server, output_dir, auth=auth, after=os.getpid())
    return p


def handed_over(output_dir: str, key: str) -> tuple[str, int] | None:
    """``(journal, index)`` of a job handed to a runner as Blender quit (:func:`hand_over`), else None."""
    try:
        data = json.loads(_handed_path(output_dir, key).read_text(encoding="utf-8"))
        return str(data["journal"]), int(data["index"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _adopt(p: Paths) -> None:
    """The journal of a run handed over at quit: each shot running, with its pool record (``hand_over``), so
    that ``--resume`` re-attaches every one instead of sending it again (backend/batch.py: resume_batch)."""
    from .backend.batch import JOURNAL_VERSION, Journal

    records = json.loads(p.adopted.read_text(encoding="utf-8"))["records"]
    now = time.time()
    header = {"type": "batch", "version": JOURNAL_VERSION, "id": p.journal.name.removesuffix(".journal.jsonl"),
              "created": now, "shots": [r["settings"] for r in records],
              "options": {"retries": 0, "use_cache": False, "max_in_flight": None}}
    journal = Journal(p.journal)
    journal.open(header, {i: {"type": "shot", "index": i, "state": "running", "record": r, "t": now}
                          for i, r in enumerate(records)})
    journal.close()


def _stop_adopted(p: Paths, server: str) -> None:
    """A run handed over at quit and cancelled: its shots not done are stopped, each in its own session on the
    server (WanGP's abort and clear-queue, which also lets go of that session's status stream), also when the
    runner was stopped before it resumed them: nobody else would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave this half done
    from .backend.wan2gp import Wan2GPClient

    records = json.loads(p.adopted.read_text(encoding="utf-8"))["records"]
    if p.journal.exists():  # those it made stay made; stopping the others again (after its Ctrl-C) is harmless
        from .backend.batch import Journal

        _header, states = Journal.read(p.journal)
        records = [r for i, r in enumerate(records) if (states.get(i) or {}).get("state") != "done"]
    if not records:
        return
    client = Wan2GPClient(server or records[0]["server"], output_dir=str(p.journal.parent / "stopped"))
    try:
        for record in records:
            try:
                client.stop_job(record["job"])
            except Exception as exc:  # noqa: BLE001 - the others are still stopped; the log says which failed
                print(f"could not stop {record['job'].get('client_id')} on the server: {exc}", file=sys.stderr)
    finally:
        client.close()


@dataclass(frozen=True)
class ShotState:
    """One shot as the journal has it: ``state`` is pending, running, done, failed or cancelled."""

    index: int
    state: str
    result: dict[str, Any] | None = None  # storyboard.result_record(...) of a done shot
    error: str = ""


def read(p: Paths) -> list[ShotState] | None:
    """Every shot's state in the journal (None while there is no journal yet). Imports the backend: call it on
    a worker thread in Blender. Raises ``ValueError`` for a journal that can't be read."""
    if not p.journal.exists():
        return None
    from . import storyboard
    from .backend.batch import Journal
    from .backend.wan2gp._schemas import GenerationResult, GenerationSettings

    header, states = Journal.read(p.journal)
    shots = []
    for index, data in enumerate(header.get("shots") or []):
        line = states.get(index) or {}
        state, error = str(line.get("state") or "pending"), str(line.get("error") or "")
        result = None
        if state == "done":
            try:
                settings = GenerationSettings.model_construct(**data)
                made = GenerationResult.model_validate({**line["result"], "settings": settings})
                result = storyboard.result_record(made)
            except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                state, error = "failed", (f"the background runner made the shot, but its journal {p.journal} "
                                          f"does not say where ({type(exc).__name__}: {exc}); look in the "
                                          "output folder")
        shots.append(ShotState(index, state, result, error))
    return shots


def exit_code(p: Paths) -> int | None:
    """The last runner's exit code (None while it runs, or if it never ended by itself)."""
    try:
        return int(p.exit.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def failure(p: Paths) -> str:
    """Why the runner stopped before it made a journal: its JSON error (``--json``), else its output's end."""
    try:
        text = p.log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"the background runner left no output ({p.log})"
    at = text.rfind('{\n  "error"')
    if at >= 0:
        try:
            error = json.JSONDecoder().raw_decode(text[at:])[0].get("error") or {}
        except ValueError:
            error = {}
        if error.get("message"):
            return str(error["message"]) + (f"; {error['hint']}" if error.get("hint") else "")
    return text.strip()[-600:] or f"the background runner stopped without a word ({p.log})"


def needs_restart(p: Paths, shots: list[ShotState] | None, *, now: float | None = None) -> str | None:
    """Whether the runner must be started again, and how: ``"resume"`` (a journal with unfinished shots and no
    runner: it died, or the machine restarted), ``"fresh"`` (no journal, and the runner started long enough
    ago to have made one), or None. Never for a run the user cancelled, or one that ended by itself, and at
    most once per :data:`START_GRACE` seconds."""
    if p.cancelled.exists() or exit_code(p) is not None:
        return None
    pid, started = _pid(p)
    now = time.time() if now is None else now
    if now - started < START_GRACE:
        return None
    if shots is not None:
        if all(s.state in ("done", "failed", "cancelled") for s in shots) or runner_holds(p):
            return None
        return "resume"
    if not p.shots.exists() or _pid_alive(pid):
        return None
    return "fresh"


def main(argv: list[str] | None = None) -> int:
    """The runner's entry: ``movie-director`` with Ctrl-C's handler back (a process started by a program that
    ignores SIGINT inherits that, and :func:`stop` relies on SIGINT cancelling the shots on the server).

    ``--after-pid N`` (first, before the CLI's arguments are read): wait for process N to end. A run with an
    ``adopted.json`` (:func:`hand_over`) makes its journal from it and resumes it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = sys.argv[1:] if argv is None else argv
    after = 0
    if AFTER in argv:  # handed over as Blender quits: its exit first (a few hundred ms), then the work
        at = argv.index(AFTER)
        after, argv = int(argv[at + 1]), argv[:at] + argv[at + 2:]
    journal = argv[argv.index("--journal") + 1] if "--journal" in argv else None
    files = paths_of(journal) if journal is not None else None
    code = 130  # the CLI's EXIT_CANCELLED
    try:
        deadline = time.monotonic() + AFTER_WAIT
        while after and _pid_alive(after) and time.monotonic() < deadline:
            time.sleep(0.05)
        if files is None or not files.cancelled.exists():  # cancelled before it started: nothing is sent
            from .cli import main as cli_main

            if files is not None and files.adopted.exists():  # handed over at quit: re-attach, never send again
                if not files.journal.exists():
                    _adopt(files)
                argv = argv if "--resume" in argv else [*argv, "--resume"]
            code = cli_main(argv)
    except KeyboardInterrupt:  # stopped while starting up, before the CLI could catch it
        code = 130
    if code == 130 and files is not None and files.adopted.exists():
        _stop_adopted(files, argv[argv.index("--servers") + 1] if "--servers" in argv else "")
    if files is not None:
        files.exit.write_text(f"{code}\n", encoding="utf-8")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
