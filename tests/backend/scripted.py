"""An in-memory WanGP transport for fast tests of the job handle, the book of jobs and the client.

It sits behind the client's own seam (``backend/wan2gp/_transport.py``), where the web UI's transport sits, so the
handle, the book and the client run unchanged; nothing of the network or of Gradio is imitated. Each submitted
shot plays a script of steps:

* ``("queued", position)``: waiting in the server's queue;
* ``("step", i, n)``: denoising step ``i`` of ``n`` (the server's worker runs it);
* ``("slow", seconds)``: the server says nothing for a while (a stop ends the wait at once);
* ``("fail", message)``: the generation fails with the server's message;
* ``("restart",)``: the server restarts: its jobs are gone.
* ``("gate", event)``: waits until the ``threading.Event`` is set (a stop, or the server stopping, ends it).

What the server did is in :attr:`ScriptedTransport.events`, as ``(what, remote job id)``. :meth:`health` is the
server's health check, for a :class:`~blender_movie_director.backend.pool.ServerPool` of scripted servers
(:func:`scripted_pool`).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

from blender_movie_director.backend.health import HealthReport
from blender_movie_director.backend.pool import ServerPool
from blender_movie_director.backend.wan2gp import (
    GenerationResult,
    GenerationSettings,
    JobFailedError,
    JobLostError,
    JobPhase,
    JobStatus,
    ModelInfo,
    ServerRestartedError,
    ServerStatus,
    Timeouts,
    Wan2GPClient,
    Wan2GPConnectionError,
    Wan2GPValidationError,
)

DEFAULT_SCRIPT = (("queued", 0), ("step", 1, 3), ("step", 2, 3), ("step", 3, 3))


class ScriptedTransport:
    name = "scripted"

    def __init__(self, *, models: tuple[str, ...] = ("t2v_1.3B", "i2v")) -> None:
        self.models = models
        self.scripts: list[tuple[Any, ...]] = []  # one per submitted shot, in order; DEFAULT_SCRIPT when none is left
        self.events: list[tuple[str, str]] = []
        self.remote: dict[str, dict[str, Any]] = {}  # the server's jobs: {"steps": [...], "done": bool}
        self.instance = 1
        self.opened = 0
        self.up = True  # False: stopped; it refuses connections and its health check says down
        self.busy_for_others = False  # another program's shot generates here (its health check says busy)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._connected = False

    # --- what the client asks of a transport ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def open(self) -> None:
        self._refuse_if_down()
        self.opened += 1
        self._connected = True

    def close(self) -> None:
        self._connected = False

    def let_go(self) -> None:
        pass

    def wait_for_stoppers(self, seconds: float) -> None:
        pass

    def identity(self) -> tuple[str, str | None, str | None] | None:
        return (f"app-{self.instance}", "scripted", None) if self._connected else None

    def check_settings(self, settings: GenerationSettings) -> None:
        if str(settings.model) not in self.models:
            raise Wan2GPValidationError(f"the scripted server has no model {settings.model!r}", field="model")

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(model_type=model, name=model)

    def list_models(self, *, family: str | None = None, category: Any = None) -> list[ModelInfo]:
        return [self.model_info(m) for m in self.models]

    def new_run(self, job: Any) -> ScriptedRun:
        return ScriptedRun(self, job)

    def stop_job(self, record: Any) -> bool:
        remote = self.remote.get(record.remote_job_id or "")
        if remote is None or record.app_id != f"app-{self.instance}":
            return False
        remote["done"] = True
        self.events.append(("aborted", record.remote_job_id))
        return True

    def ping(self) -> None:
        pass

    def fill_status(self, status: ServerStatus) -> None:
        status.wangp_version = "scripted"

    def last_form_model(self) -> str | None:
        return None

    # --- the scripted server ---------------------------------------------------------------------------

    def restart(self) -> None:
        with self._lock:
            self.instance += 1
            self.remote.clear()
            self.events.append(("restarted", ""))

    def stop_server(self) -> None:
        """The server process ends: connections are refused, and a run's connection drops at its next step."""
        with self._lock:
            self.up = False
            self.events.append(("stopped", ""))

    def health(self, url: str, **_options: Any) -> HealthReport:
        """Its health check, as :func:`~blender_movie_director.backend.health.check_health` reports it."""
        if not self.up:
            return HealthReport(url, False, time.time(), kind="closed", error="connection refused")
        return HealthReport(url, True, time.time(), latency_ms=0.1, kind="wangp", wangp_version="scripted",
                            busy=True if self.busy_for_others else None, app_id=f"app-{self.instance}")

    def _refuse_if_down(self) -> None:
        if not self.up:
            raise Wan2GPConnectionError("the scripted server is down (connection refused)")

    def take_script(self) -> tuple[Any, ...]:
        with self._lock:
            return tuple(self.scripts.pop(0)) if self.scripts else DEFAULT_SCRIPT


class ScriptedRun:
    """One shot on the scripted server, told to its job through the handle's side for runners."""

    def __init__(self, server: ScriptedTransport, job: Any) -> None:
        self.server, self.job = server, job
        self.let_go_called = False

    def run(self, started: float) -> GenerationResult:
        job, state, server = self.job, self.job.state, self.server
        server._refuse_if_down()
        if state.resume:
            if state.app_id != f"app-{server.instance}" or state.remote_job_id not in server.remote:
                raise JobLostError(f"lost: the scripted server no longer has job {job.id}",
                                   reason="the server restarted", job_id=job.id)
            remote_id = state.remote_job_id
        else:
            job.enter(JobPhase.PREPARING)
            job.report(status=JobStatus.UPLOADING, phase="Preparing")
            job.check_stop()
            job.book.wait_turn(job)
            remote_id = f"r{next(server._ids)}"
            server.remote[remote_id] = {"steps": list(server.take_script()), "done": False}
            state.remote_job_id, state.app_id, state.task_queued = remote_id, f"app-{server.instance}", True
            state.sent = job.settings
            server.events.append(("sent", remote_id))
            job.enter(JobPhase.SENT)
            job.book.note(job, "sent")
            job.book.turn_taken(job)
        remote = server.remote[remote_id]
        while remote["steps"]:
            if job.stopping:
                self._stop_on_server(remote_id)
            job.check_stop()
            self._drop_if_stopped()
            step = remote["steps"].pop(0)
            if step[0] == "queued":
                job.enter(JobPhase.QUEUED)
                job.report(status=JobStatus.QUEUED, queue_position=step[1])
            elif step[0] == "step":
                if not state.processing_started:
                    state.processing_started = True
                    job.enter(JobPhase.RUNNING)
                job.report(status=JobStatus.RUNNING, step=step[1], total=step[2], fraction=step[1] / step[2],
                           queue_position=None)
            elif step[0] == "slow":
                remote["steps"].insert(0, ("slept",))
                job.wait_stop(step[1])
                if not job.stopping:
                    remote["steps"].pop(0)
            elif step[0] == "slept":
                pass
            elif step[0] == "fail":
                remote["done"] = True
                raise JobFailedError(f"WanGP failed to generate the shot: {step[1]}", job_id=job.id)
            elif step[0] == "restart":
                server.restart()
                raise ServerRestartedError("the scripted server restarted", job_id=job.id)
            elif step[0] == "gate":
                while not step[1].wait(0.01) and not job.stopping:
                    self._drop_if_stopped()
        if job.stopping:
            self._stop_on_server(remote_id)
            job.check_stop()
        self._drop_if_stopped()
        remote["done"] = True
        job.enter(JobPhase.DOWNLOADING)
        job.report(status=JobStatus.DOWNLOADING, phase="Downloading")
        job.output_dir.mkdir(parents=True, exist_ok=True)  # the job's folder, as the real transports use
        path = job.output_dir / f"{job.id}.mp4"
        path.write_bytes(b"scripted " + remote_id.encode())
        server.events.append(("collected", remote_id))
        return GenerationResult(job_id=job.id, video_path=path, files=[path], settings=job.settings,
                                model=str(job.settings.model), server=job.server)

    def _drop_if_stopped(self) -> None:
        if not self.server.up:  # the server stopped: the run's connection drops
            raise Wan2GPConnectionError(f"the connection to the scripted server dropped during job {self.job.id}")

    def _stop_on_server(self, remote_id: str) -> None:
        if self.job.stop_reason is not None and self.job.stop_reason.value != "detach":
            self.server.remote[remote_id]["done"] = True
            self.server.events.append(("aborted", remote_id))

    def let_go(self) -> None:
        self.let_go_called = True

    def release(self) -> None:
        pass


# --- a pool of scripted servers --------------------------------------------------------------------------------

FAST = Timeouts(connect=5, call=30, job=60, stall=30, download=30, resume_wait=5)


def scripted_pool(servers: dict[str, ScriptedTransport], tmp_path: Path, **options: Any) -> ServerPool:
    """A :class:`ServerPool` over these scripted servers (by URL): their clients speak to them through the seam,
    and its health checks ask them. Checks every 20 ms, a down server's running jobs are given up after 0.2 s."""
    options.setdefault("health_period", 0.02)
    options.setdefault("lost_after", 0.2)
    options.setdefault("result_cache", False)

    def client(url: str) -> Wan2GPClient:
        return Wan2GPClient(url, output_dir=tmp_path / "out", transport=servers[url.rstrip("/")], timeouts=FAST,
                            max_jobs=4)

    def health(url: str, **_options: Any) -> HealthReport:
        return servers[url.rstrip("/")].health(url)

    return ServerPool(list(servers), output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", api_cache=False,
                      client_factory=client, health_check=health, **options)
