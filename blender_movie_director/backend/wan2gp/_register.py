"""A local register of this user's shots, shared by every process on the machine (a small SQLite file).

Each job is written down when its task is sent to WanGP and updated as it goes, with its record
(:meth:`Wan2GPJob.to_record`) and the process that follows it. That is what lets a later program deal with what
an earlier one left behind when it died: WanGP keeps each shot in its own Gradio session, and no route of the
server lists sessions, so only the program that made a session knows it.

Why it matters for the server's health: when a program dies mid-shot, Gradio stops the session's running events
(``process_tasks`` and the status stream ``refresh_status_async``) at their next yield. ``process_tasks`` never
reaches the line that clears the session's status flag, so that session's status loop keeps polling for ever, and
since Gradio runs one call of a function at a time for the whole server, every later shot's status stream waits
behind it: no step progress for anyone until WanGP restarts. The client heals such a session from this register
once its task has left WanGP's queue (see ``WebUiTransport.heal_leftovers`` in ``_webui/transport.py``).

SQLite in WAL mode with a busy timeout makes several processes safe to write at once; each call opens its own
connection, so threads need no lock. Entries older than :data:`KEEP_SECONDS` are pruned.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "jobs.sqlite3"
KEEP_SECONDS = 30 * 24 * 3600.0  # a month: long enough to come back after a holiday, short enough to stay small
BUSY_TIMEOUT_MS = 5000  # another process writing: wait this long for the lock (writes take milliseconds)
# States of a shot whose task may still be in WanGP's session and whose program may have died with it. A
# "detached" shot is not one: its program let go of it on purpose and collects it later (Blender, from the .blend).
UNFINISHED = ("sent", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    server TEXT NOT NULL,
    app_id TEXT,
    session_hash TEXT,
    state TEXT NOT NULL,
    pid INTEGER NOT NULL,
    record TEXT NOT NULL,
    progress REAL,
    output TEXT,
    message TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
)
"""


# Every column and its type, from the CREATE TABLE above: columns added since are added to older files.
_COLUMNS = {line.split()[0]: line.split()[1].rstrip(",") for line in _SCHEMA.strip().splitlines()[1:-1]}


def pid_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (ours included)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:  # Windows: no signal 0 for other processes; assume alive rather than steal its session
        return True
    return True


class JobRegister:
    """The register in ``directory``; every method is safe from several threads and processes."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory).expanduser() / FILE_NAME
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db.row_factory = sqlite3.Row
        if not self._ready:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            for column, kind in _COLUMNS.items():  # a register written by an earlier version
                if column not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            db.execute("DELETE FROM jobs WHERE updated < ?", (time.time() - KEEP_SECONDS,))
            self._ready = True
        return db

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """One statement; a register that can't be written is logged, never fatal to a shot."""
        try:
            db = self._connect()
            try:
                return list(db.execute(sql, args))
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("job register %s: %s", self.path, exc)
            return []

    def write(self, record: dict[str, Any], *, state: str, progress: float | None = None,
              output: str | None = None, message: str | None = None) -> None:
        """Insert or update one job from its record (``Wan2GPJob.to_record()``)."""
        now = time.time()
        self._run(
            "INSERT INTO jobs (job_id, server, app_id, session_hash, state, pid, record, progress, output, message,"
            " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO UPDATE SET"
            " server=excluded.server, app_id=excluded.app_id, session_hash=excluded.session_hash,"
            " state=excluded.state, pid=excluded.pid, record=excluded.record, progress=excluded.progress,"
            " output=COALESCE(excluded.output, output), message=excluded.message, updated=excluded.updated",
            (record["job_id"], record.get("server") or "", record.get("app_id"), record.get("session_hash"), state,
             os.getpid(), json.dumps(record), progress, output, message, now, now),
        )

    def set_state(self, job_id: str, state: str, *, message: str | None = None) -> None:
        self._run("UPDATE jobs SET state = ?, message = ?, updated = ? WHERE job_id = ?",
                  (state, message, time.time(), job_id))

    def entries(self, *, server: str | None = None) -> list[dict[str, Any]]:
        """Every job (of one server, if given), newest first, with its record parsed."""
        rows = self._run("SELECT * FROM jobs" + (" WHERE server = ?" if server else "") + " ORDER BY created DESC",
                         (server,) if server else ())
        out = []
        for row in rows:
            entry = dict(row)
            try:
                entry["record"] = json.loads(entry["record"])
            except ValueError:
                continue
            out.append(entry)
        return out

    def find(self, job_id: str) -> dict[str, Any]:
        """The one job whose id is or starts with ``job_id``; KeyError (with what to do) otherwise."""
        matches = [e for e in self.entries() if e["job_id"].startswith(job_id)] if job_id else []
        exact = [e for e in matches if e["job_id"] == job_id]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        raise KeyError(f"no job {job_id!r} in the register" if not matches else
                       f"{len(matches)} jobs start with {job_id!r}: give more of the id")

    def leftovers(self, server: str, app_id: str | None) -> list[dict[str, Any]]:
        """Unfinished jobs on this server process whose program is gone: their sessions may hold the server."""
        return [e for e in self.entries(server=server)
                if e["state"] in UNFINISHED and e["session_hash"] and e["app_id"] == app_id
                and not pid_alive(int(e["pid"]))]


def user_register() -> JobRegister:
    """This user's register, where the clients keep it (``WAN2GP_STATE_DIR``, else the platform's state folder).
    A wrong ``WAN2GP_`` variable raises here as it would in the client: another folder would be another register."""
    from ._config import ClientSettings

    return JobRegister(ClientSettings().state_dir)


def queued_by_client_id(register: JobRegister | None = None) -> dict[str, dict[str, Any]]:
    """Unfinished jobs whose task reached a server's queue, by the client id they were given (the newest of each):
    how a batch journal or a .blend that missed a shot's record (its program died first) finds it again."""
    found: dict[str, dict[str, Any]] = {}
    for entry in (register or user_register()).entries():  # newest first
        record = entry["record"]
        if entry["state"] in UNFINISHED and record.get("task_queued") and record.get("client_id"):
            found.setdefault(str(record["client_id"]), entry)
    return found
