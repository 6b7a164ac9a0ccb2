"""The message pump: worker threads post messages, one persistent timer applies them to Blender.

Worker threads (ours and the WanGP client's) never touch bpy. They post typed messages here; progress
snapshots are coalesced per job (only the latest matters). :func:`tick`, registered once with
``bpy.app.timers`` (persistent across file loads), applies them within a time budget, tags the sequencer for
redraw, and places finished shots on the timeline (at most one per tick: adding a movie strip opens the file).

``bpy.app.timers`` never fire in background mode (``blender -b``, the bpy module): scripts and tests call
:func:`tick` themselves, in a loop.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered before ours: _hook_exit)
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bpy

from .. import storyboard
from . import vse

log = logging.getLogger(__name__)

# Blender redraws at 60 Hz (16 ms a frame): the timer's share of a frame stays well under 2 ms at the 99th
# percentile with 10 jobs in flight (benchmarks/blender.py). Messages left over wait for the next tick.
TICK_BUDGET = 0.001
ACTIVE_INTERVAL = 0.1  # while jobs run: progress bars move 10 times a second
IDLE_INTERVAL = 0.5  # nothing in flight: a cheap check twice a second
WATCH_INTERVAL = 1.0  # a background runner's journal is read once a second (a few KB) while its shots run
WORKERS = 4  # connect, submit, status, catalog and discovery calls; jobs run on the client's own threads


# --- messages ------------------------------------------------------------------------------------------------

@dataclass
class JobSubmitted:
    key: str
    job_id: str
    record: dict[str, Any] | None


@dataclass
class JobProgressed:
    key: str
    status: str
    fraction: float
    step: int | None
    total: int | None
    phase: str
    queue_position: int | None
    eta: float | None
    message: str
    record: dict[str, Any] | None = None


@dataclass
class JobFinished:
    key: str
    status: str  # completed / failed / cancelled / lost
    error: str = ""
    result: dict[str, Any] | None = None
    record: dict[str, Any] | None = None


@dataclass
class JournalRead:
    """A background runner's journal was read: these of its jobs have ended (they are no longer watched)."""

    journal: str
    ended: list[str]


@dataclass
class ServerChecked:
    url: str
    status: dict[str, Any]
    models: list[dict[str, Any]] | None = None


@dataclass
class ModelRules:
    url: str
    model: str
    info: dict[str, Any] | None
    error: str = ""


@dataclass
class ServersFound:
    services: list[dict[str, Any]]
    error: str = ""


class Workers:
    """A few daemon threads for the add-on's own calls (connect, submit, status, catalog, discovery).

    Daemon threads, unlike a ``ThreadPoolExecutor``'s: Python joins an executor's threads before it exits, so a
    call waiting on a slow server would hold Blender's exit for its whole timeout. These calls hold nothing that
    must finish (a shot's job has its record, and runs on the client's threads, detached on quit).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.tasks: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker thread; its exceptions are logged, never lost silently."""
        with self.lock:
            if self.closed:
                return
            self.tasks.put((fn, args))
            if len(self.threads) < self.size:  # started on demand; they wait for work when idle
                thread = threading.Thread(target=self._work, name=f"movie-director-{len(self.threads)}", daemon=True)
                self.threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            fn, args = task
            try:
                fn(*args)
            except Exception:
                log.exception("Movie Director worker %s failed", getattr(fn, "__name__", fn))

    def shutdown(self) -> None:
        """No new calls; idle threads end, busy ones end after their call (nothing waits for them)."""
        with self.lock:
            self.closed = True
            for _thread in self.threads:
                self.tasks.put(None)


@dataclass(frozen=True)
class Connection:
    """What a worker needs to reach a server: plain values read from the preferences on the main thread."""

    url: str
    output_dir: str
    connect: float = 10.0
    call: float = 120.0
    job: float = 6 * 3600.0
    auth: tuple[str, str] | None = None

    @property
    def client_key(self) -> tuple[Any, ...]:
        """What one client serves: the server and the timeouts (each job says its own output folder)."""
        return (self.url, self.connect, self.call, self.job, self.auth)


@dataclass
class Watched:
    """A background runner's journal that jobs of the open file wait on (``handoff``)."""

    conn: Connection  # to start the runner again if it died
    keys: dict[int, str] = field(default_factory=dict)  # index in the journal -> job key
    seen: dict[str, str] = field(default_factory=dict)  # job key -> the state last told (worker side)
    reading: bool = False


@dataclass
class State:
    """Everything the add-on keeps at run time (not saved): one per registration."""

    messages: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: dict[str, JobProgressed] = field(default_factory=dict)
    jobs: dict[str, Any] = field(default_factory=dict)  # key -> Wan2GPJob
    pending: set[str] = field(default_factory=set)  # keys handed to a worker, no Wan2GPJob yet
    cancel_requested: set[str] = field(default_factory=set)
    orphans: dict[str, JobFinished] = field(default_factory=dict)  # finished while their file was closed
    finished: dict[str, JobFinished] = field(default_factory=dict)  # every end, to apply again after an undo
    to_place: deque[str] = field(default_factory=deque)
    clients: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # Connection.client_key -> its client
    conns: dict[str, Connection] = field(default_factory=dict)  # job key -> the connection it runs on
    pool: Workers | None = None
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> last ServerStatus as a dict
    catalogs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rules: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rules_asked: set[tuple[str, str]] = field(default_factory=set)
    found: list[dict[str, Any]] | None = None
    found_error: str = ""
    finding: bool = False
    checking: set[str] = field(default_factory=set)
    needs_reconcile: bool = True
    where: dict[str, str] = field(default_factory=dict)  # job key -> scene name (a lookup cache)
    watched: dict[str, Watched] = field(default_factory=dict)  # journal path -> what waits on it
    watch_next: float = 0.0
    keep_running: set[str] = field(default_factory=set)  # single shots handed to a runner if Blender quits
    renders: dict[str, Any] = field(default_factory=dict)  # job key -> its start image's render process
    handed: bool = False  # the quit's hand-over is done (on_quit may run twice)
    closed: bool = False

    # --- posting (any thread) ---

    def post(self, message: Any) -> None:
        if not self.closed:
            self.messages.put(message)

    def post_progress(self, message: JobProgressed) -> None:
        with self.lock:
            previous = self.progress.get(message.key)
            if message.record is None and previous is not None:
                message.record = previous.record  # coalescing must not drop a fresh record
            self.progress[message.key] = message

    def run(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker thread; its exceptions are logged, never lost silently."""
        if self.closed:
            return
        if self.pool is None:
            self.pool = Workers(WORKERS)
        self.pool.submit(fn, *args)

    def busy(self) -> bool:
        return bool(self.jobs or self.pending or self.to_place or self.progress or not self.messages.empty()
                    or self.checking or self.finding or self.watched)


_state: State | None = None

# Jobs still running when the add-on was disabled, kept at module level: a State lives for one registration,
# this survives a disable/enable in the same Blender session, where reconcile adopts them again (resuming them
# with a second tracker would make two followers of one server session). See stop().
_parked: dict[str, tuple[Any, Connection]] = {}


def adopt(st: State, key: str) -> bool:
    """Follow again a job parked by :func:`stop` in this Blender session. Returns False if there is none."""
    parked = _parked.pop(key, None)
    if parked is None:
        return False
    job, conn = parked
    track(st, key, conn, job)
    return True


def state() -> State:
    """The running add-on's state (raises if the add-on is not registered)."""
    if _state is None:
        raise RuntimeError("Movie Director is not enabled")
    return _state


def running() -> bool:
    return _state is not None


# --- clients (worker threads) -----------------------------------------------------------------------------

def client_for(st: State, conn: Connection) -> Any:
    """The WanGP client for a connection (one per server and timeouts, whatever the output folders of its jobs);
    imported on first use."""
    with st.lock:
        client = st.clients.get(conn.client_key)
    if client is not None:
        return client
    from ..backend.wan2gp import Timeouts, Wan2GPClient

    timeouts = Timeouts(connect=conn.connect, call=conn.call, job=conn.job)
    client = Wan2GPClient(conn.url, output_dir=conn.output_dir, timeouts=timeouts, auth=conn.auth)
    with st.lock:
        return st.clients.setdefault(conn.client_key, client)


def record_of(job: Any) -> dict[str, Any] | None:
    """The job's reconcile record, if the client can make one."""
    to_record = getattr(job, "to_record", None)
    if to_record is None:
        return None
    try:
        return to_record()
    except Exception:  # the record is a help for later, never a reason to fail the job
        log.exception("could not record job %s", getattr(job, "id", "?"))
        return None


def _finished_message(key: str, job: Any) -> JobFinished:
    from ..backend.wan2gp import JobCancelledError, JobLostError

    error = job.exception()
    record = record_of(job)
    if error is None:
        return JobFinished(key, "completed", result=storyboard.result_record(job.result(timeout=0)), record=record)
    if isinstance(error, JobCancelledError):
        return JobFinished(key, "cancelled", error=str(error), record=record)
    text = storyboard.describe_error(error)
    return JobFinished(key, "lost" if isinstance(error, JobLostError) else "failed", error=text, record=record)


def track(st: State, key: str, conn: Connection, job: Any) -> None:
    """Follow a client job: its progress and its end become messages (called on a worker thread)."""
    if st.closed:  # the add-on was disabled while this job was being submitted: park it like the others
        _parked[key] = (job, conn)
        return
    with st.lock:
        st.jobs[key] = job
        st.conns[key] = conn
        st.pending.discard(key)
        cancel = key in st.cancel_requested
    st.post(JobSubmitted(key, job.id, record_of(job)))
    last_status: list[Any] = [None]

    def on_progress(job: Any, p: Any) -> None:
        status = p.status.value
        record = None
        if status != last_status[0]:  # a new phase: the record (server session, status) may have changed
            last_status[0] = status
            record = record_of(job)
        st.post_progress(JobProgressed(key, status, p.fraction, p.step, p.total, p.phase, p.queue_position,
                                       p.eta_seconds, p.message, record))

    job.add_progress_callback(on_progress)
    job.add_done_callback(lambda job: st.post(_finished_message(key, job)))
    if cancel:
        job.cancel()


def submit_worker(st: State, key: str, conn: Connection, request: dict[str, Any]) -> None:
    try:
        client = client_for(st, conn)
        settings = storyboard.settings_from_request(request)
        if settings.client_id is None:  # names the task on the server: a reconcile finds it in the register
            settings = settings.model_copy(update={"client_id": storyboard.client_id(key)})
        job = client.submit(settings, output_dir=conn.output_dir)
    except Exception as exc:  # every failure reaches the job in the panel, with its message
        with st.lock:
            st.pending.discard(key)
        st.post(JobFinished(key, "failed", error=storyboard.describe_error(exc)))
        return
    track(st, key, conn, job)


def render_then_submit(st: State, key: str, conn: Connection, request: dict[str, Any], cmd: list[str]) -> None:
    """From Frame when the picture needs the render engine: another Blender process renders the start image
    (``stills``), its progress shows on the job, then the shot is sent. A thread of its own (a render can take
    minutes; the workers stay free for the other calls)."""
    from .. import stills

    out = str(request["image_start"])

    def progress(p: stills.Progress) -> None:
        # Blender's samples, when it prints them, are in the text: not as steps, which read as denoising steps.
        st.post_progress(JobProgressed(key, "submitting", p.fraction, None, None, p.text, None, None, ""))

    def stop() -> bool:
        with st.lock:
            return st.closed or key in st.cancel_requested

    def started(process: Any) -> None:
        st.renders[key] = process

    def run() -> None:
        try:
            stills.render(cmd, out, on_progress=progress, stop=stop, started=started)
        except stills.RenderCancelled:
            with st.lock:
                st.pending.discard(key)
                st.cancel_requested.discard(key)
            st.post(JobFinished(key, "cancelled", error="cancelled while its start image was being rendered"))
            return
        except Exception as exc:  # noqa: BLE001 - the job says why, with what to do
            with st.lock:
                st.pending.discard(key)
            st.post(JobFinished(key, "failed", error=f"could not render the start image ({exc}); check that the "
                                                     "scene renders (F12), or select an image strip to start from"))
            return
        finally:
            st.renders.pop(key, None)
            try:  # the copy of the file it rendered from
                os.remove(cmd[cmd.index("--") + 1])
            except (OSError, ValueError):
                pass
        submit_worker(st, key, conn, request)

    threading.Thread(target=run, name=f"movie-director-render-{key}", daemon=True).start()


def resume_worker(st: State, key: str, conn: Connection, record: dict[str, Any]) -> None:
    """Re-attach to a job saved with the .blend: tracking resumes, or it ends as lost / fetched."""
    try:
        job = client_for(st, conn).resume_job(record, output_dir=conn.output_dir)
    except Exception as exc:  # the job can't be followed again (the record or the server): it is lost to us
        with st.lock:
            st.pending.discard(key)
        text = storyboard.describe_error(exc)
        st.post(JobFinished(key, "lost", error=text if text.startswith("lost:") else f"lost: {text}"))
        return
    track(st, key, conn, job)


def watch(st: State, journal: str, index: int, key: str, conn: Connection) -> None:
    """Wait for a job made by a background runner: its journal is read until the job ends (main thread)."""
    entry = st.watched.setdefault(journal, Watched(conn))
    entry.keys[index] = key
    st.watch_next = 0.0  # read it at the next tick


_ENDED = {"done": "completed", "failed": "failed", "cancelled": "cancelled"}
_WAITING = {"pending": ("queued", "Waiting in the background runner", 0.0),
            "running": ("running", "Generating in the background runner", 0.1)}


def watch_worker(st: State, journal: str, entry: Watched, keys: dict[int, str]) -> None:
    """Read a background runner's journal: finished shots become :class:`JobFinished` (placed as any other),
    the others progress; a runner that died with shots unfinished is started again (``handoff.needs_restart``)."""
    from .. import handoff

    p = handoff.paths_of(journal)
    ended: list[str] = []
    try:
        try:
            shots = handoff.read(p)
        except (OSError, ValueError) as exc:
            for key in keys.values():
                st.post(JobFinished(key, "failed", error=f"the background runner's journal {journal} can't be "
                                                         f"read ({exc}); the shots it made are in the output folder"))
            ended = list(keys.values())
            return
        if shots is None:  # the runner has not written its journal yet (or never will)
            if handoff.exit_code(p) is not None or (p.cancelled.exists() and not handoff.running(p)):
                why = "cancelled" if p.cancelled.exists() else f"the background runner stopped: {handoff.failure(p)}"
                for key in keys.values():
                    st.post(JobFinished(key, "cancelled" if p.cancelled.exists() else "failed", error=why))
                ended = list(keys.values())
            elif handoff.needs_restart(p, None) == "fresh":
                handoff.start(p, entry.conn.url, entry.conn.output_dir, auth=entry.conn.auth)
            return
        stopped = p.cancelled.exists() and not (handoff.runner_holds(p) or handoff.running(p))
        for shot in shots:
            key = keys.get(shot.index)
            if key is None:
                continue
            if shot.state in _ENDED:
                status = _ENDED[shot.state]
                st.post(JobFinished(key, status, error="" if status == "completed" else
                                    shot.error or f"{status} in the background runner", result=shot.result))
                ended.append(key)
            elif stopped:  # cancelled, and its runner is gone without saying so
                st.post(JobFinished(key, "cancelled", error="cancelled"))
                ended.append(key)
            elif entry.seen.get(key) != shot.state:
                entry.seen[key] = shot.state
                status, phase, fraction = _WAITING.get(shot.state, _WAITING["pending"])
                st.post_progress(JobProgressed(key, status, fraction, None, None, phase, None, None, ""))
        if handoff.needs_restart(p, shots) == "resume":
            log.warning("the background runner of %s is gone with shots unfinished: starting it again", journal)
            handoff.start(p, entry.conn.url, entry.conn.output_dir, resume=True, auth=entry.conn.auth)
    except Exception as exc:  # noqa: BLE001 - e.g. the runner could not be started again: say it on the jobs
        log.exception("reading the journal %s", journal)
        for key in keys.values():
            if key not in ended:
                st.post(JobFinished(key, "failed", error=f"the background runner of {journal}: "
                                                         f"{storyboard.describe_error(exc)}"))
        ended = list(keys.values())
    finally:
        st.post(JournalRead(journal, ended))


def check_worker(st: State, conn: Connection) -> None:
    """Server status (never raises) and, when reachable, its model catalog."""
    try:
        client = client_for(st, conn)
        status = client.get_server_status()
        models = None
        if status.reachable:
            models = [{"model_type": m.model_type, "name": m.name, "family": m.family,
                       "categories": list(m.categories)} for m in client.list_models()]
        st.post(ServerChecked(conn.url, status.model_dump(mode="json"), models))
    except Exception as exc:
        st.post(ServerChecked(conn.url, {"url": conn.url, "reachable": False,
                                         "error": storyboard.describe_error(exc)}))


def rules_worker(st: State, conn: Connection, model: str) -> None:
    try:
        info = client_for(st, conn).get_model_info(model)
        st.post(ModelRules(conn.url, model, info.model_dump(mode="json")))
    except Exception as exc:
        st.post(ModelRules(conn.url, model, None, storyboard.describe_error(exc)))


def find_worker(st: State, urls: list[str]) -> None:
    try:
        from ..backend import discovery
    except ImportError as exc:
        st.post(ServersFound([], f"server discovery is not available in this build ({exc})"))
        return
    try:
        services = discovery.discover(urls, include_env=False)
        st.post(ServersFound([s.to_dict() for s in services if s.is_web_ui]))
    except Exception as exc:
        st.post(ServersFound([], storyboard.describe_error(exc)))


# --- main thread ---------------------------------------------------------------------------------------

def job_items(scene: Any) -> Any:
    return scene.movie_director.jobs


def find_item(st: State, key: str) -> tuple[Any, Any]:
    """``(scene, job item)`` for a job key in the open file, or ``(None, None)``."""
    name = st.where.get(key)
    scenes = bpy.data.scenes
    candidates = ([scenes[name]] if name is not None and name in scenes else []) + list(scenes)
    for scene in candidates:
        for item in job_items(scene):
            if item.key == key:
                st.where[key] = scene.name
                return scene, item
    return None, None


def _apply_progress(st: State, msg: JobProgressed) -> bool:
    scene, item = find_item(st, msg.key)
    if item is None or item.status in storyboard.FINISHED:
        return False
    if msg.status in storyboard.BACKEND_STATES and item.status != "cancelling":
        item.status = msg.status  # terminal states come with JobFinished, which also carries the result
    item.fraction = min(max(msg.fraction, 0.0), 1.0)
    item.step = msg.step or 0
    item.total = msg.total or 0
    item.phase = msg.phase or ""
    item.queue_position = -1 if msg.queue_position is None else msg.queue_position
    item.eta = -1.0 if msg.eta is None else msg.eta
    if msg.message:
        item.message = msg.message
    if msg.record is not None:
        item.record = storyboard.dumps(msg.record)
    return True


def _apply(st: State, msg: Any) -> bool:
    if isinstance(msg, JobSubmitted):
        scene, item = find_item(st, msg.key)
        if item is None:
            return False
        item.job_id = msg.job_id
        if msg.record is not None:
            item.record = storyboard.dumps(msg.record)
        if item.status in ("submitting", "reconnecting"):
            item.status = "queued"
        return True
    if isinstance(msg, JobFinished):
        st.finished[msg.key] = msg
        with st.lock:
            st.jobs.pop(msg.key, None)
            st.pending.discard(msg.key)
            st.cancel_requested.discard(msg.key)
        scene, item = find_item(st, msg.key)
        if item is None:  # its file is not open: kept, and applied if that file comes back
            st.orphans[msg.key] = msg
            return False
        if msg.record is not None:
            item.record = storyboard.dumps(msg.record)
        if msg.status == "completed" and msg.result:
            item.result = storyboard.dumps(msg.result)
            item.video_path = msg.result["video_path"]
            item.fraction = 1.0
            item.phase = "Placing on the timeline"
            item.status = "downloading"  # "completed" once the strip exists
            st.to_place.append(msg.key)
        else:
            item.status = msg.status
            item.error = msg.error if msg.status in ("failed", "lost") else ""
            item.message = msg.error if msg.status == "cancelled" else item.message
            item.phase = ""
            item.eta = -1.0
        return True
    if isinstance(msg, JournalRead):
        entry = st.watched.get(msg.journal)
        if entry is not None:
            entry.reading = False
            for index, key in list(entry.keys.items()):
                if key in msg.ended:
                    del entry.keys[index]
            if not entry.keys:
                del st.watched[msg.journal]
        return False
    if isinstance(msg, ServerChecked):
        st.checking.discard(msg.url)
        st.servers[msg.url] = msg.status
        if msg.models is not None:
            st.catalogs[msg.url] = msg.models
        if msg.status.get("reachable"):
            from .operators import request_model_rules

            request_model_rules(bpy.context)
        return True
    if isinstance(msg, ModelRules):
        if msg.info is not None:
            st.rules[(msg.url, msg.model)] = msg.info
        else:
            st.rules_asked.discard((msg.url, msg.model))
            st.rules[(msg.url, msg.model)] = {"error": msg.error}
        return True
    if isinstance(msg, ServersFound):
        st.finding = False
        st.found, st.found_error = msg.services, msg.error
        return True
    return False


def place(st: State, key: str) -> bool:
    """Put a finished shot on the timeline where its job said, and store its settings on the strip."""
    scene, item = find_item(st, key)
    if item is None or item.placed:
        return False
    from .. import __version__

    result = storyboard.loads(item.result) or {}
    path = item.video_path
    if not path or not os.path.isfile(path):
        item.status = "failed"
        item.error = (f"the finished shot's file is missing: {path or '(none)'}; it was saved in the output "
                      "folder and has since been moved or deleted")
        return True
    try:
        placement = vse.place_movie(scene, path, _strip_name(item), item.channel, item.frame_start,
                                    clip_fps=result.get("fps"), fps_policy=item.fps_policy, meta=item.meta,
                                    fill=item.fill_length)
    except Exception as exc:  # e.g. no free channel: the file is safe in the output folder
        item.status = "failed"
        item.error = f"could not place the shot on the timeline ({exc}); its file is {path}"
        log.exception("placing job %s", key)
        return True
    strip = vse.find_strip(scene, placement.strip_name)
    vse.set_shot_metadata(strip, storyboard.strip_metadata(result, kind=item.kind, addon_version=__version__,
                                                        created=time.time()))
    item.strip_name = placement.strip_name
    item.placed = True
    item.status = "completed"
    item.phase = ""
    notices = []
    if placement.moved:
        notices.append(f"channel {item.channel} was taken at frame {item.frame_start}: placed on channel "
                       f"{placement.channel}")
    if placement.notice:
        notices.append(placement.notice)
    item.message = "; ".join(notices)
    item.channel = placement.channel
    item.meta = placement.meta
    return True


def _strip_name(item: Any) -> str:
    words = "_".join(item.prompt.split()[:4]) or "shot"
    return f"{words[:40]}"


def tag_redraw() -> None:
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


def tick() -> float | None:
    """The timer function: apply posted messages within the budget; returns the next interval."""
    st = _state
    if st is None:
        return None  # unregistered: the timer ends
    started = time.perf_counter()
    changed = False
    try:
        if st.needs_reconcile:
            st.needs_reconcile = False
            from .persistence import reconcile

            changed |= reconcile(st)
        if st.watched and time.monotonic() >= st.watch_next:
            st.watch_next = time.monotonic() + WATCH_INTERVAL
            for journal, entry in st.watched.items():
                if not entry.reading:
                    entry.reading = True
                    st.run(watch_worker, st, journal, entry, dict(entry.keys))
        if st.progress:
            with st.lock:
                progress, st.progress = st.progress, {}
            for msg in progress.values():
                changed |= _apply_progress(st, msg)
        while time.perf_counter() - started < TICK_BUDGET:
            try:
                msg = st.messages.get_nowait()
            except queue.Empty:
                break
            changed |= _apply(st, msg)
        if st.to_place:
            changed |= place(st, st.to_place.popleft())
        if changed:
            tag_redraw()
    except Exception:  # a timer that raises is unregistered by Blender: never let it
        log.exception("Movie Director timer")
    return ACTIVE_INTERVAL if st.busy() else IDLE_INTERVAL


def pump(seconds: float = 0.0, *, until: Callable[[], bool] | None = None, interval: float = 0.02) -> bool:
    """Call :func:`tick` in a loop (background mode, scripts, tests) until ``until()`` or ``seconds`` pass.

    Returns ``until()``'s last value (True when no condition is given).
    """
    deadline = time.monotonic() + seconds
    while True:
        tick()
        if until is not None and until():
            return True
        if time.monotonic() >= deadline:
            return until() if until is not None else True
        time.sleep(interval)


# --- life cycle ----------------------------------------------------------------------------------------

def start() -> None:
    global _state
    if _state is None:
        _state = State()
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=ACTIVE_INTERVAL, persistent=True)
    _hook_exit()


def _let_go(st: State, *, quitting: bool = False) -> None:
    """Stop following every job here, without cancelling it; never touches bpy (it also runs as Python exits).

    A client job with ``detach()`` is let go: it goes on on the server and its record (in the .blend) follows
    it again later. Without it, the job's thread goes on in this process and the next enable adopts it.
    ``quitting``: Blender is closing; the shots the artist wants kept running (``keep_running``) go to a
    background runner (:func:`_hand_over`); a start image still rendering is stopped.
    """
    st.closed = True
    handed = []
    if quitting and not st.handed:
        st.handed = True
        handed = [(key, job, st.conns[key]) for key, job in list(st.jobs.items())
                  if key in st.keep_running and key in st.conns and not job.done()]
        records = {key: record_of(job) for key, job, _conn in handed}  # before the let-go: the live status
        # Said in Blender's log: a shot the artist wanted kept running that stays here (it is collected, from
        # its record in the .blend, when the file is opened again).
        for key in sorted((st.keep_running & (set(st.jobs) | st.pending)) - {k for k, r in records.items() if r}):
            job = st.jobs.get(key)
            status = job.status().value if job is not None else ""
            if status == "completed":
                continue  # it ended as the artist quit: its result is collected on the next load
            why = ("it was still being sent" if job is None else "it has no connection" if key not in st.conns
                   else f"it has ended ({status})" if job.done() else "it has no record")
            log.warning("shot %s is not handed to a background runner: %s", key, why)
        for process in list(st.renders.values()):
            process.kill()
    for key, job in list(st.jobs.items()):
        if job.done():
            continue
        detach = getattr(job, "detach", None)  # stop following it here, leave it running on the server
        if detach is None:  # this client can't let go of a job: it goes on here, and is adopted again
            _parked[key] = (job, st.conns[key])
            continue
        try:
            detach()
        except Exception:
            log.exception("detaching job %s", getattr(job, "id", "?"))
    if handed:
        _hand_over([(key, conn, records[key]) for key, _job, conn in handed if records.get(key)])
    if st.pool is not None:
        st.pool.shutdown()


def _hand_over(jobs: list[tuple[str, Connection, dict[str, Any]]]) -> None:
    """Blender is quitting with single shots unfinished: a background runner per server and output folder
    finishes them with Blender closed (``handoff.hand_over``); the next load places them from its journal."""
    from .. import handoff

    groups: dict[tuple[str, str, Any], list[tuple[str, dict[str, Any]]]] = {}
    for key, conn, record in jobs:
        groups.setdefault((conn.url, conn.output_dir, conn.auth), []).append((key, record))
    for (url, output_dir, auth), shots in groups.items():
        try:
            handoff.hand_over(output_dir, url, shots, auth=auth)
        except Exception:  # noqa: BLE001 - they are recorded in the .blend: collected on the next load then
            log.exception("handing %d shot(s) to a background runner", len(shots))


def stop() -> None:
    """Stop the timer and let go of the jobs: they go on on the server and are picked up again (reconcile).

    Running jobs are not cancelled (their records are in the .blend). The clients of idle servers are closed.
    """
    global _state
    st, _state = _state, None
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if st is None:
        return
    _let_go(st)
    busy = {st.conns[key].client_key for key, job in st.jobs.items() if not job.done() and key in st.conns}
    for client_key, client in st.clients.items():
        if client_key not in busy:
            try:
                client.close()
            except Exception:
                log.exception("closing the WanGP client")


def on_quit(*_args: Any) -> None:
    """Blender is quitting: let go of the running jobs at once, so that nothing holds its exit.

    Called by ``bpy.app.handlers.exit_pre`` (Blender 5.x) and, everywhere, by Python's exit before it joins
    worker threads (see :func:`_hook_exit`). The jobs go on on the server; each one's record, saved in the
    .blend, has it collected when the file is opened again, and the shots the artist wants kept running are
    handed to a background runner that finishes them meanwhile (:func:`_let_go`). Never touches bpy: Blender
    may be half gone.
    """
    st = _state
    if st is not None:
        _let_go(st, quitting=True)


_exit_hooked = False


def _hook_exit() -> None:
    """Have :func:`on_quit` run when Python exits, before it joins the threads of thread pools.

    Python joins every ``ThreadPoolExecutor`` thread first thing as it exits (the WanGP client runs jobs on
    one, and so does gradio_client), before ``atexit`` functions, Blender's ``exit_pre`` handlers of the bpy
    module and the add-ons' ``unregister``: a job waiting on the server would hold the exit until it ends.
    ``threading._register_atexit`` is the hook that runs before those joins (the one ``concurrent.futures``
    itself uses; they run last registered first, and concurrent.futures.thread is imported at the top of this
    module, so ours runs first). It exists in Python 3.9 to 3.13; without it, ``atexit`` is the fallback.
    """
    global _exit_hooked
    if _exit_hooked:
        return
    _exit_hooked = True
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(on_quit)
        else:
            atexit.register(on_quit)
    except RuntimeError:  # the interpreter is already shutting down
        pass
