"""Wan2GPClient: the facade over one WanGP web UI (v6.31 and v12.x alike).

Example::

    from blender_movie_director.backend.wan2gp import Wan2GPClient, GenerationSettings

    with Wan2GPClient("http://127.0.0.1:7860", output_dir="shots") as client:
        job = client.submit(GenerationSettings(prompt="a red fox running through snow", frames=33, steps=8))
        job.add_progress_callback(lambda job, p: print(f"{p.status.value} {p.fraction:.0%} {p.phase}"))
        print(job.result().video_path)
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import threading
import time
import weakref
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .config import ClientSettings, Retries, Timeouts, first_warning, security_warnings
from .endpoints import ServerApi
from .enums import HIGH_QUALITY_MODEL, QUICK_MODEL, ModelCategory, catalog, categories_of
from .errors import (
    JobFailedError,
    ServerRestartedError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
    did_you_mean,
    is_generic_app_error,
    redact,
    translate,
)
from .files import RemoteFile, download, gallery_files, sweep_partial_files
from .fingerprint import startup_model, version_tuple
from .form import ModelForm
from .jobs import Wan2GPJob
from .register import JobRegister
from .schemas import GenerationResult, GenerationSettings, ModelInfo, QueueItem, ServerStatus
from .session import GradioSession

if TYPE_CHECKING:
    from .cache import ApiCache

log = logging.getLogger(__name__)
# Our own generator: seeds and retry jitter never touch the global `random` state of the host program.
_rng = random.Random()

KEEP_FINISHED_JOBS = 50  # finished jobs still listed by jobs(); older ones are forgotten (no growth per job)
# WanGP's queue.zip of one session's tasks is a few KB (a task's settings); 16 MB is no such queue.
MAX_QUEUE_ZIP_BYTES = 16 * 1024 * 1024
# Looking at a session a dead program left behind: a healthy server answers these small calls in milliseconds,
# and a look that gets no answer in time is made again by the next job.
HEAL_CALL_TIMEOUT = 1.0
# From 9.x on WanGP saves a one-task queue, so its empty answer means an empty queue (6.x/8.x: fewer than 2 tasks).
SAVES_ONE_TASK_QUEUES = (9,)


class Wan2GPClient:
    """A client of one WanGP web UI. Thread-safe; jobs run on its own worker threads.

    Parameters:
        server_address: the WanGP web UI URL (default ``WAN2GP_URL``, then ``http://127.0.0.1:7860``).
        timeouts: bounded waits (:class:`Timeouts`); every wait has one.
        retries: retries of idempotent steps (connect, downloads); a generation is never resubmitted.
        output_dir: where finished shots are saved (default ``WAN2GP_OUTPUT_DIR``, then ``~/MovieDirector/shots``).
        auth: ``(user, password)`` when WanGP runs with gradio auth.
        max_jobs: how many jobs run their chain at once; more wait on our side.

    Nothing happens on construction; :meth:`connect` (or the first call that needs the server) connects.
    """

    def __init__(
        self,
        server_address: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        retries: Retries | None = None,
        output_dir: str | Path | None = None,
        auth: tuple[str, str] | None = None,
        max_jobs: int | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        given: dict[str, Any] = {
            "url": server_address, "timeouts": timeouts, "retries": retries, "output_dir": output_dir,
            "max_jobs": max_jobs,
        }
        if auth is not None:
            given["username"], given["password"] = auth
        if settings is None:
            from pydantic import ValidationError

            try:
                settings = ClientSettings(**{k: v for k, v in given.items() if v is not None})
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first.get("loc", ())) or None
                message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
                raise Wan2GPValidationError(redact(f"{field}: {message}" if field else message),
                                            field=field) from None
        self.settings = settings
        self.server_address = redact(settings.url.rstrip("/"))
        # Shown by the CLI and Blender, and logged once on connect: a non-loopback http:// server, auth in clear.
        self.security_warnings: list[str] = security_warnings(
            settings.url, has_auth=bool(settings.username and settings.password))
        self._secrets = [settings.password.get_secret_value()] if settings.password else []
        self._app_id: str | None = None  # the server process (Gradio app id) seen on connect
        self._lock = threading.RLock()  # guards the connection and the admin session
        self._root: GradioSession | None = None
        self._api: ServerApi | None = None
        self._forms: dict[str, ModelForm] = {}
        self._families: dict[str, str] = {}  # model -> family, learnt from the server (8.x's model switch)
        self._jobs: dict[str, Wan2GPJob] = {}
        self._stoppers: set[threading.Thread] = set()  # jobs still being stopped on the server, see disconnect
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self.poll_interval = 0.5  # seconds between gallery polls while re-attached to an interrupted run
        # An ApiCache (cache.py), set before connect(): a reconnect then skips what the server already told.
        self.api_cache: ApiCache | None = None
        # This user's shots across processes (register.py): what a dead program left behind is healed from it.
        self.register: JobRegister | None = JobRegister(settings.state_dir) if settings.register_jobs else None
        self._heal_sessions: dict[str, GradioSession] = {}  # sessions of leftovers being watched, see there
        self._start_order: list[str] = []  # ids of submitted jobs not started yet, in submit order
        self._turn = threading.Condition(self._lock)

    # --- connection -----------------------------------------------------------------------------------

    def connect(self) -> bool:
        """Connect: read the server's ``/config`` and API description once and resolve WanGP's chain.

        Returns True when connected. Raises :class:`Wan2GPConnectionError` (unreachable, after retries),
        :class:`UnsupportedServerError` (not WanGP, or its chain can't be resolved).
        """
        with self._lock:
            if self._api is not None:
                return True
            for warning in self.security_warnings:
                if first_warning(self.server_address, warning):
                    log.warning("WanGP at %s: %s", self.server_address, warning)
            root = self._open_with_retries()
            try:
                if self.api_cache is not None:
                    api = self.api_cache.server_api(root, self.server_address)
                else:
                    api = ServerApi(root.config, None, self.server_address,
                                    describe=lambda: {"parameter_table": root.api_parameters()})
            except Wan2GPError:
                root.close()
                raise
            if not api.described:  # read it now in the background: the first shot needs its names
                threading.Thread(target=_describe_quietly, args=(api,), name="wan2gp-describe", daemon=True).start()
            self._root, self._api = root, api
            _hook_exit(self)
            self._app_id = str(root.config.get("app_id")) if root.config.get("app_id") is not None else None
            self._pool = ThreadPoolExecutor(self.settings.max_jobs, thread_name_prefix="wan2gp-job")
            auth = None
            if self.settings.username and self.settings.password:
                auth = (self.settings.username, self.settings.password.get_secret_value())
            self._http = httpx.Client(
                headers=root.headers, cookies=root.cookies, auth=auth, verify=root.ssl_verify,
                timeout=httpx.Timeout(self.settings.timeouts.download, connect=self.settings.timeouts.connect),
            )
            sweep_partial_files(Path(self.settings.output_dir))
            log.info("connected to WanGP %s at %s (%d endpoints)", api.wangp_version, self.server_address,
                     api.endpoint_count)
            return True

    def _let_go(self) -> None:
        """The program is exiting without having closed this client: detach its unfinished jobs (they go on on
        the server; the register keeps them for ``movie-director collect``) and end its streams, so that nothing
        of ours holds the exit."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if not j.done()]
            root = self._root
            watched = list(self._heal_sessions.values())  # each has an event stream of its own
        for job in jobs:
            job.detach()
        for session in [root, *watched]:
            if session is not None:
                session.close_streams()

    def _open_with_retries(self) -> GradioSession:
        retries, timeouts = self.settings.retries, self.settings.timeouts
        auth = None
        if self.settings.username and self.settings.password:
            auth = (self.settings.username, self.settings.password.get_secret_value())
        delay = retries.backoff
        for attempt in range(1, retries.attempts + 1):
            try:
                return GradioSession.open(
                    self.settings.url, auth=auth, connect_timeout=timeouts.connect, call_timeout=timeouts.call,
                    describe_timeout=timeouts.describe, max_workers=16 + 8 * self.settings.max_jobs,
                    config_source=self.api_cache.config_for if self.api_cache is not None else None,
                )
            except Exception as exc:  # noqa: BLE001 - translated below
                error = translate(exc, server=self.server_address, what="connecting")
                error.message = redact(error.message, self._secrets)
                error.args = (error.message,)
                refused_login = type(exc).__name__ == "AuthenticationError" or "user name or password" in error.message
                # A server that accepted the connection and then said nothing is frozen: asking it again only
                # makes the user wait longer for the same answer.
                frozen = isinstance(error, Wan2GPTimeoutError)
                if frozen and error.message == "connecting timed out":
                    error = Wan2GPTimeoutError(
                        f"{self.server_address} accepted the connection but did not answer",
                        server=self.server_address,
                        hint="WanGP may be frozen or still starting: check its console, then try again")
                if not isinstance(error, Wan2GPConnectionError) or refused_login or frozen or \
                        attempt == retries.attempts:
                    raise error from None
                sleep = min(delay, retries.max_backoff) * (0.5 + _rng.random())
                log.info("connect attempt %d to %s failed (%s); retrying in %.1f s", attempt,
                         self.server_address, error, sleep)
                time.sleep(sleep)
                delay *= 2
        raise AssertionError("unreachable")

    def disconnect(self, *, cancel_jobs: bool = True) -> None:
        """Close the connection. Unfinished jobs are cancelled on the server first (nothing is orphaned).

        A job that could not be stopped when it was cancelled (the server was frozen or unreachable) is still
        being stopped in the background: that is waited for too, up to ``timeouts.reconnect``, so that closing
        the client doesn't leave it running on the GPU.
        """
        with self._lock:
            jobs = [j for j in self._jobs.values() if not j.done()]
        if cancel_jobs:
            for job in jobs:
                job.cancel()
        timeouts = self.settings.timeouts
        deadline = time.monotonic() + timeouts.call
        for job in jobs:
            job._done.wait(max(0.0, deadline - time.monotonic()))
        deadline = time.monotonic() + timeouts.reconnect
        with self._lock:
            stoppers = list(self._stoppers)
        for thread in stoppers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in stoppers):
            log.warning("closing the client while %d job(s) could not be stopped on %s; they may still run there",
                        sum(thread.is_alive() for thread in stoppers), self.server_address)
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            for session in list(self._heal_sessions.values()):
                session.close()
            self._heal_sessions.clear()
            if self._root is not None:
                self._root.close()
            if self._http is not None:
                self._http.close()
            self._root = self._api = self._pool = self._http = None
            self._forms.clear()
            self._families.clear()

    close = disconnect

    def __enter__(self) -> Wan2GPClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    @property
    def connected(self) -> bool:
        return self._api is not None

    def identity(self) -> tuple[str, str | None, str | None] | None:
        """(app id, WanGP version, Gradio version) of the server process this client connected to, or None
        when not connected. What a health check needs to know about a server it already asked for its app id."""
        api = self._api
        if api is None or self._app_id is None:
            return None
        return self._app_id, api.wangp_version, api.gradio_version

    def _require_api(self) -> ServerApi:
        if self._api is None:
            self.connect()
        assert self._api is not None
        return self._api

    def _fork_session(self, session_hash: str | None = None) -> GradioSession:
        self._require_api()
        assert self._root is not None
        return self._root.fork(session_hash)

    # --- generic endpoint access -----------------------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Every named endpoint of the server with its parameters (names, types, defaults) and returns."""
        api = self._require_api()
        return {
            name: {
                "parameters": [
                    {"name": p.name, "type": p.python_type, "component": p.component,
                     "required": not p.has_default, "default": p.default}
                    for p in e.parameters
                ],
                "returns": len(e.returns),
            }
            for name, e in sorted(api.endpoints.items())
        }

    def call(self, endpoint: str, **params: Any) -> Any:
        """Call any named endpoint, checked against the server's own API description before sending.

        Runs on the client's own session (not a job's). Example: ``client.call("/refresh_gallery")``.
        """
        api = self._require_api()
        name = endpoint if endpoint.startswith("/") else "/" + endpoint
        if name not in api.endpoints:
            raise Wan2GPValidationError(
                f"the server has no endpoint {name}{did_you_mean(name, api.endpoints)}", field="endpoint")
        args = api.endpoints[name].bind(params)
        with self._lock:
            assert self._root is not None
            return self._root.call(name, args, timeout=self.settings.timeouts.call).value

    # --- models -----------------------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        """Refuse a model the server does not have, before anything is sent (its list is in ``/config``)."""
        api = self._require_api()
        known = api.models or (api.model_dropdown_choices() if not api.chain.switch.group else {})
        if known and model not in known:
            raise self._unknown_model(model, known)

    def _unknown_model(self, model: str, known: Any) -> Wan2GPValidationError:
        version = self._api.wangp_version if self._api else None
        return Wan2GPValidationError(
            f"WanGP {version or ''} has no model {model!r}{did_you_mean(model, known)}".replace("  ", " "),
            field="model", hint="`movie-director models` (or client.list_models()) lists the server's models")

    def _switch_calls(self, model: str, *, new_session: bool = False) -> list[tuple[str, list[Any]]]:
        """The calls that make ``model`` a session's model on this server (see ``ModelSwitch``).

        A ``new_session`` starts as WanGP built its page: with the start-up model, its group in the model
        dropdown. Its model needs no switch, and a model of the same group only the select step."""
        api = self._require_api()
        switch = api.chain.switch
        if new_session and model == startup_model(api.config):
            return []
        calls: list[tuple[str, list[Any]]] = []
        if new_session and model in api.model_dropdown_choices():
            pass  # the dropdown already offers it
        elif switch.group:
            calls.append((switch.group, [model]))
        elif switch.family:
            calls.append((switch.family, [self._family_of(model)]))
        calls.append((switch.select, [model]))
        return calls

    def _family_of(self, model: str) -> str:
        """The family whose models the family dropdown shows with ``model`` (8.x), asked of the server once."""
        with self._lock:
            if model in self._families:
                return self._families[model]
            api = self._require_api()
            assert self._root is not None
            switch = api.chain.switch
            assert switch.family is not None
            guess = catalog().get(model, {}).get("family")
            families = sorted(api.families(), key=lambda f: f != guess)
            for family in families:
                answer = self._root.call(switch.family, [family], timeout=self.settings.timeouts.call,
                                         what="finding the model's family", attempts=self.settings.retries.attempts)
                for name in _choices(answer.value, switch.family_index):
                    self._families.setdefault(name, family)
                if model in self._families:
                    return self._families[model]
            raise Wan2GPValidationError(
                f"WanGP {api.wangp_version} lists model {model!r} but none of its families offers it",
                field="model", hint="`movie-director models` lists the models the server offers")

    def _model_form(self, model: str) -> ModelForm:
        """The server's form for ``model`` (switching the client's own session to it); cached."""
        known = self._known_form(model)
        if known is not None:
            return known
        with self._lock:
            if model in self._forms:
                return self._forms[model]
            api = self._require_api()
            assert self._root is not None
            self._check_model(model)
            call = self.settings.timeouts.call
            again = self.settings.retries.attempts  # model switch and form read are idempotent
            switch = api.chain.switch
            for endpoint, args in self._switch_calls(model):
                try:
                    answer = self._root.call(endpoint, args, timeout=call, what="switching model", attempts=again)
                except Wan2GPServerError as exc:
                    # 12.60 takes an unknown model type in its first step and crashes in the second
                    if not api.models and is_generic_app_error(exc.message):
                        raise self._unknown_model(model, catalog()) from exc
                    raise
                if endpoint == switch.group and not api.models and model not in _choices(answer.value,
                                                                                         switch.group_index):
                    raise self._unknown_model(model, catalog())  # the server's list was not in /config
            outputs = self._root.call(api.chain.fill, [], timeout=call, what="reading the model's form",
                                      attempts=again).value
            return self._keep_form(model, outputs)

    def _known_form(self, model: str) -> ModelForm | None:
        """The model's form if this client, or its API cache (same server build), has seen it; else None."""
        with self._lock:
            if model in self._forms:
                return self._forms[model]
            api = self._require_api()
            cache = self.api_cache
        outputs = cache.form_outputs(api.fingerprint, model) if cache is not None and api.fingerprint else None
        if outputs is None:
            return None
        form = ModelForm.from_fill(api, model, outputs)
        with self._lock:
            return self._forms.setdefault(model, form)

    def _keep_form(self, model: str, outputs: Any) -> ModelForm:
        """The form a session's ``fill_inputs`` answered for ``model``: kept, replacing an older one."""
        api = self._require_api()
        values = list(outputs) if isinstance(outputs, tuple | list) else [outputs]
        form = ModelForm.from_fill(api, model, values)
        with self._lock:
            self._forms[model] = form
        if self.api_cache is not None and api.fingerprint:
            self.api_cache.keep_form_outputs(api.fingerprint, model, values)
        return form

    def get_model_info(self, model: str) -> ModelInfo:
        """A model's rules from the server's form: fps, frame rule, resolutions, defaults."""
        return self._model_form(str(model)).info()

    def list_models(self, *, family: str | None = None, category: ModelCategory | str | None = None) -> list[ModelInfo]:
        """Every model of the connected server, with catalog metadata; filter by family or category.

        The list is the server's own (its configuration tab's list of every model, read from ``/config``), so it
        holds every model the server can run whatever group its model dropdown shows. The catalog adds names,
        families and inputs for the models it knows.
        """
        api = self._require_api()
        entries = catalog()
        wanted = ModelCategory(category) if category else None
        result = []
        # A server without the list in its /config: what its dropdown shows, and the catalog of its major version.
        models = api.models or {**{m: "" for m in api.model_dropdown_choices()},
                                **{m: "" for m, e in entries.items() if str(api.wangp_version).split(".")[0]
                                   in e.get("versions", [])}}
        for name, label in models.items():
            entry = entries.get(name, {})
            cats = categories_of(name, entry)
            if family and entry.get("family") != family:
                continue
            if wanted and wanted not in cats:
                continue
            result.append(ModelInfo(
                model_type=name, name=entry.get("name") or label or name, family=entry.get("family", ""),
                categories=sorted(c.value for c in cats), inputs=entry.get("inputs", []),
                outputs=entry.get("outputs", []), on_server=True if api.models else None,
            ))
        return result

    # --- jobs -------------------------------------------------------------------------------------------

    def submit(self, settings: GenerationSettings | dict[str, Any] | None = None, /, **kwargs: Any) -> Wan2GPJob:
        """Start a generation and return its job at once; the chain runs on a worker thread.

        ``settings`` may be a :class:`GenerationSettings`, a dict of them, or keyword arguments.
        Raises :class:`Wan2GPValidationError` at once for settings that can't be right.
        """
        settings = _as_settings(settings, kwargs)
        self._check_model(str(settings.model))
        form = self._known_form(str(settings.model))
        if form is not None:  # the model's rules are known: check them before returning
            from .form import check_settings

            api = self._require_api()
            check_settings(settings, form,
                           [p.name for p in api.endpoints[api.chain.save_inputs].parameters], api.wangp_version)
        job = Wan2GPJob(self, settings)
        self._track(job)
        return job

    def _track(self, job: Wan2GPJob) -> None:
        """Run the job on the pool; keep it listed while unfinished, and the last finished ones."""
        with self._lock:
            self._jobs[job.id] = job
            if not job._resume:
                self._start_order.append(job.id)
            finished = [j for j in self._jobs.values() if j.done()]
            for old in finished[: max(0, len(finished) - KEEP_FINISHED_JOBS)]:
                del self._jobs[old.id]
            pool = self._pool
        assert pool is not None
        pool.submit(job.run)

    def _wait_turn(self, job: Wan2GPJob) -> None:
        """Shots of one client start on the server in the order they were submitted: wait until every earlier
        one has started (or ended). Each job's chain runs on its own thread, so without this a later, quicker
        chain can overtake an earlier one in WanGP's queue. Wakes for a cancel or a detach, and never waits
        longer than ``timeouts.call``: an order is not worth a shot held back behind one that is stuck."""
        deadline = time.monotonic() + self.settings.timeouts.call
        with self._turn:
            while job.id in self._start_order and self._start_order[0] != job.id and not job._cancel.is_set():
                if time.monotonic() > deadline:
                    log.info("job %s starts before %s, which has not started after %.0f s", job.id,
                             self._start_order[0], self.settings.timeouts.call)
                    self._start_order.remove(job.id)
                    return
                self._turn.wait(0.1)

    def _turn_taken(self, job: Wan2GPJob) -> None:
        with self._turn:
            if job.id in self._start_order:
                self._start_order.remove(job.id)
                self._turn.notify_all()

    def generate(self, settings: GenerationSettings | dict[str, Any] | None = None, /, *,
                 timeout: float | None = None, **kwargs: Any) -> GenerationResult:
        """Generate and wait: ``submit(...).result()``. On timeout the job is cancelled on the server."""
        job = self.submit(settings, **kwargs)
        try:
            return job.result(timeout=timeout if timeout is not None else self.settings.timeouts.job + 60)
        except Wan2GPError:
            if not job.done():
                job.cancel()
            raise
        except BaseException:  # Ctrl-C while waiting: don't leave the GPU working for nobody
            job.cancel()
            raise

    def generate_quick(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """A fast preview: Wan 2.1 1.3B, 2 s (33 frames), 10 steps, unless overridden."""
        kwargs.setdefault("model", QUICK_MODEL)
        if "video_length" not in kwargs and "frames" not in kwargs and "seconds" not in kwargs:
            kwargs["frames"] = 33
        kwargs.setdefault("steps", 10)
        return self.generate(prompt=prompt, **kwargs)

    def generate_high_quality(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """The 14B Wan 2.1 model with its own default steps, frames and resolution, unless overridden."""
        kwargs.setdefault("model", HIGH_QUALITY_MODEL)
        return self.generate(prompt=prompt, **kwargs)

    def resume_job(self, record: dict[str, Any]) -> Wan2GPJob:
        """Track again a job saved with :meth:`Wan2GPJob.to_record` (after a restart of this program).

        The job re-attaches to its own session on the server: a finished output is fetched; a task still in
        the session's queue is run and followed; a job the server no longer has fails with "lost: ...".
        A job that never reached the server's queue is submitted again only if it was never sent.
        """
        settings = GenerationSettings(**record["settings"])
        job = Wan2GPJob(self, settings)
        job.id = str(record.get("job_id") or job.id)
        job.client_id = str(record.get("client_id") or job.client_id)
        job.submitted_at = float(record.get("submitted_at") or job.submitted_at)
        session_hash, sent = record.get("session_hash"), record.get("sent_settings")
        if session_hash and sent and record.get("task_queued"):
            job._resume = True
            job._session_hash = session_hash
            job._sent = GenerationSettings(**sent)
            job._task_queued = True
            job._processing_started = bool(record.get("processing_started"))
            job._app_id = str(record["app_id"]) if record.get("app_id") else None
        elif record.get("status") not in (None, "queued"):
            job._finish(error=JobFailedError(
                f"lost: job {job.id} was interrupted before WanGP queued it", job_id=job.id,
                server=self.server_address, hint="submit the shot again"))
            return job
        self._require_api()
        if job._resume:  # this program follows it now: no other program's heal may take its session
            self._note(job, "running" if job._processing_started else "sent")
        self._track(job)
        return job

    # --- the register and what dead programs left behind --------------------------------------------------

    def _note(self, job: Wan2GPJob, state: str, *, output: str | None = None, message: str | None = None) -> None:
        """Write a job's state into the register (shared with this user's other programs)."""
        if self.register is not None:
            self.register.write(job.to_record(), state=state, progress=job.progress.fraction, output=output,
                                message=message)

    def stop_job(self, record: dict[str, Any]) -> bool:
        """Stop a job from its record (``to_record()``, or the register's), whichever program started it: WanGP's
        abort and clear-queue in the job's own session. False when the server no longer has that session's
        process (it restarted); the job is then gone anyway."""
        self._require_api()
        session_hash = record.get("session_hash")
        if not session_hash:
            return False
        if record.get("app_id") and str(record["app_id"]) != self._server_instance():
            return False
        chain = self._require_api().chain
        session = self._fork_session(session_hash)
        try:
            again, call = self.settings.retries.attempts, self.settings.timeouts.call
            try:
                session.call(chain.abort, [], timeout=call, what="aborting the generation", attempts=again)
            except Wan2GPServerError as exc:  # nothing running in that session: its queue is cleared below
                log.debug("stop %s: abort: %s", record.get("job_id"), exc)
            session.call(chain.clear_queue, [], timeout=call, what="clearing the job's queue", attempts=again)
            self._release_session(session, job_id=str(record.get("job_id") or ""))
        finally:
            session.close()
        if self.register is not None and record.get("job_id"):
            self.register.set_state(str(record["job_id"]), "cancelled", message="stopped on the server")
        return True

    def _heal_leftovers(self) -> int:
        """Release the sessions that dead programs left holding the server's status stream; how many.

        Called by each job before it starts its run: the release is a ``process_tasks`` call in the dead session,
        and WanGP runs one ``process_tasks`` at a time for the whole server, so it must come before the job's own.
        A session whose task has left WanGP's queue (its output is in its gallery, or its queue reads empty) is
        released with :meth:`_release_session`; one whose task still runs is looked at again by the next job.
        Its output stays on the server: the entry is marked ``orphaned``, and ``movie-director collect`` (or
        ``resume_job(entry["record"])``) still fetches it.
        """
        if self.register is None or self._api is None or self._root is None:
            return 0
        healed = 0
        with self._lock:
            mine = {job_id for job_id, job in self._jobs.items() if not job.done()}
        for entry in self.register.leftovers(self.server_address, self._app_id):
            if entry["job_id"] in mine:
                continue  # resumed by this program: its own session is being followed
            session_hash = entry["session_hash"]
            # One session object per leftover, kept between looks: each new one would open a new event stream on
            # that session, and Gradio's clean-up when the previous one closes would swallow its answers.
            session = self._heal_sessions.get(session_hash)
            if session is None:
                try:
                    session = self._heal_sessions[session_hash] = self._fork_session(session_hash)
                except Wan2GPError:
                    return healed
            try:
                tasks = self._session_queue(session, timeout=HEAL_CALL_TIMEOUT)
                if tasks:
                    continue  # still queued or generating: its turn to be released comes later
                finished = tasks is None and bool(self._gallery_files(session, timeout=HEAL_CALL_TIMEOUT))
                if tasks == [] or finished:
                    self._release_session(session, finished=True, job_id=entry["job_id"],
                                          timeout=HEAL_CALL_TIMEOUT)
                    self.register.set_state(entry["job_id"], "orphaned",
                                            message="its program stopped; the server finished it")
                    healed += 1
                    log.info("released the session of job %s, left behind by a program that stopped",
                             entry["job_id"])
                    self._heal_sessions.pop(session_hash, None)
                    session.close()
            except Wan2GPError as exc:
                log.debug("job %s: releasing its session: %s", entry["job_id"], exc)
        return healed

    def _gallery_files(self, session: GradioSession, *, timeout: float | None = None) -> list[RemoteFile]:
        chain = self._require_api().chain
        timeouts = self.settings.timeouts
        gallery = session.call(chain.gallery, [], timeout=timeout or min(timeouts.call, 2 * timeouts.connect),
                               what="reading the gallery", attempts=self.settings.retries.attempts,
                               retry_timeouts=True).value
        value = gallery[chain.gallery_index] if isinstance(gallery, tuple) else gallery
        return gallery_files(value, session.src_prefixed)

    def _release_session(self, session: GradioSession, *, finished: bool = False, job_id: str = "",
                         timeout: float | None = None) -> None:
        """Let WanGP reset a session's status flag after its ``process_tasks`` was lost (its program or its
        connection went away mid-run): the session's ``refresh_status_async`` keeps polling until then and, with
        Gradio's one call at a time per function, holds up the status stream of every later job.

        Running ``process_tasks`` on the session's now empty queue returns at once and resets the flag. Done only
        when the queue is known to be empty: it reads empty, or (``finished``) the session's gallery holds its one
        task's output. On 6.x/8.x a one-task queue can't be read, and a task still in it would run twice.
        """
        if self._api is None:
            return  # closed meanwhile: never reconnect from here
        if not finished and self._session_queue(session, timeout=timeout) != []:
            return
        try:
            session.call(self._api.chain.process, [], timeout=timeout or self.settings.timeouts.call,
                         what="resetting the status", attempts=self.settings.retries.attempts)
        except Wan2GPError as exc:
            log.debug("job %s: resetting the session's status: %s", job_id, exc)

    def _session_queue(self, session: GradioSession, *, timeout: float | None = None) -> list[dict[str, Any]] | None:
        """The tasks in a session's WanGP queue (their params), or None where the server can't tell.

        ``save_queue_action`` answers in one of three forms (the captures of each release):

        * a one-use download link to ``queue.zip``, ``{"url": "/wangp_api/download/<token>", ...}`` (12.x);
        * the zip itself, base64-encoded, in the answer (6.x to 11.x);
        * ``""`` with the toast "Queue is empty. Nothing to save.": an empty queue on 9.x and later, which save
          one-task queues; 6.x and 8.x save nothing below two tasks, so there it means "0 or 1 task".
        """
        api = self._require_api()
        chain = api.chain
        if not chain.save_queue:
            return None
        try:
            answer = session.call(chain.save_queue, [], timeout=timeout or self.settings.timeouts.call,
                                  what="reading the queue")
        except Wan2GPError:
            return None
        value = answer.value
        if not isinstance(value, str):
            return None
        if not value:
            return [] if version_tuple(api.wangp_version) >= SAVES_ONE_TASK_QUEUES else None
        try:
            link = json.loads(value) if value.lstrip().startswith("{") else None
        except ValueError:
            link = None
        if isinstance(link, dict):
            if not str(link.get("url", "")).startswith("/"):
                return None
            body = self._fetch_queue_zip(link["url"])
        else:
            try:
                body = base64.b64decode(value, validate=True) if len(value) <= 2 * MAX_QUEUE_ZIP_BYTES else None
            except ValueError:
                body = None
        return _queue_tasks(body) if body is not None else None

    def _fetch_queue_zip(self, route: str) -> bytes | None:
        assert self._http is not None
        try:
            body = bytearray()
            with self._http.stream("GET", self.settings.url.rstrip("/") + route,
                                   timeout=self.settings.timeouts.call, follow_redirects=False) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_QUEUE_ZIP_BYTES:
                        return None  # not a queue of one session's tasks
            return bytes(body)
        except httpx.HTTPError:
            return None

    def jobs(self) -> list[Wan2GPJob]:
        with self._lock:
            return list(self._jobs.values())

    def get_queue_status(self) -> list[QueueItem]:
        """This client's unfinished jobs, in order, with what the server says of each (position, progress)."""
        items = []
        waiting = 0
        for job in sorted(self.jobs(), key=lambda j: j.submitted_at):
            if job.done():
                continue
            p = job.progress
            position = p.queue_position
            if p.status.value == "queued" and position is None and not job._task_queued:
                position = waiting
                waiting += 1
            items.append(QueueItem(job_id=job.id, client_id=job.client_id, prompt=job.settings.prompt,
                                   model=job.settings.model, status=p.status, position=position,
                                   progress=p.fraction))
        return items

    def abort_generation(self) -> int:
        """Stop this client's running generations on the server. Returns how many were stopped."""
        running = [j for j in self.jobs() if j.status().value in ("running", "uploading", "downloading")]
        for job in running:
            job.cancel()
        return len(running)

    def clear_queue(self) -> int:
        """Cancel all of this client's unfinished jobs, queued and running. Returns how many."""
        pending = [j for j in self.jobs() if not j.done()]
        for job in pending:
            job.cancel()
        return len(pending)

    # --- status -------------------------------------------------------------------------------------------

    def get_server_status(self) -> ServerStatus:
        """Reachability, latency, versions, this client's queue and the admin session's model. Never raises."""
        status = ServerStatus(url=self.server_address, reachable=False)
        started = time.perf_counter()
        try:
            response = httpx.get(self.settings.url.rstrip("/") + "/gradio_api/app_id",
                                 timeout=self.settings.timeouts.connect)
            status.latency_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            self._require_api()
        except Exception as exc:  # noqa: BLE001 - status reports, it does not raise
            status.error = str(translate(exc, server=self.server_address, what="the status check"))
            return status
        api = self._api
        assert api is not None
        jobs = [j for j in self.jobs() if not j.done()]
        status.reachable = True
        status.wangp_version = api.wangp_version
        status.gradio_version = api.gradio_version
        status.endpoint_count = api.endpoint_count
        status.queue_length = len(jobs)
        # Our own running job makes it busy; otherwise it can't be known (another session may be generating).
        status.busy = True if any(j.status().value == "running" for j in jobs) else None
        running = [j for j in jobs if j.status().value == "running"]
        # the model of our shot on the GPU, else of the shot we sent last (its session is being set to it), else
        # of the last form read
        status.current_model = (running[0].settings.model if running else jobs[-1].settings.model if jobs
                                else next(iter(reversed(self._forms)), None))
        return status

    # --- files --------------------------------------------------------------------------------------------

    def _server_instance(self) -> str:
        """The server process's Gradio app id (a new one after every restart): a request of a few bytes.

        Raises :class:`ServerRestartedError` when nothing listens any more (connection refused),
        :class:`Wan2GPTimeoutError` / :class:`Wan2GPConnectionError` when the server can't be reached.
        """
        api = self._require_api()
        assert self._http is not None
        prefix = str(api.config.get("api_prefix") or "/gradio_api").strip("/")
        url = f"{self.settings.url.rstrip('/')}/{prefix + '/' if prefix else ''}app_id"
        timeout = self.settings.timeouts.connect
        try:
            response = self._http.get(url, timeout=httpx.Timeout(timeout), follow_redirects=False)
            response.raise_for_status()
            return str(response.json()["app_id"])
        except httpx.ConnectError as exc:
            if _refused(exc):
                raise ServerRestartedError(
                    f"the WanGP server at {self.server_address} stopped (nothing listens there any more)",
                    server=self.server_address) from None
            raise translate(exc, server=self.server_address, what="reaching the server") from None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise translate(exc, server=self.server_address, what="reaching the server") from None

    def _download(self, remote: RemoteFile, dest: Path, check: Any = None) -> Path:
        """Download with bounded retries (a download is idempotent)."""
        retries = self.settings.retries
        assert self._http is not None
        delay = retries.backoff
        for attempt in range(1, retries.attempts + 1):
            try:
                return download(remote, dest, client=self._http, max_bytes=self.settings.max_download_bytes,
                                timeout=self.settings.timeouts.download, read_timeout=self.settings.timeouts.call,
                                check=check)
            except Wan2GPConnectionError:
                if attempt == retries.attempts:
                    raise
                time.sleep(min(delay, retries.max_backoff) * (0.5 + _rng.random()))
                delay *= 2
        raise AssertionError("unreachable")


_connected: weakref.WeakSet[Wan2GPClient] = weakref.WeakSet()  # clients a program may exit without closing
_exit_hooked = False


def _describe_quietly(api: ServerApi) -> None:
    """Read the API description ahead of need; a failure is raised again where a name is needed."""
    try:
        api.endpoints  # noqa: B018 - the property downloads it
    except Exception as exc:  # noqa: BLE001
        log.debug("reading the API description of %s ahead of need: %s", api.url, exc)


def _hook_exit(client: Wan2GPClient) -> None:
    """At exit, let go of every client still open (see ``Wan2GPClient._let_go``).

    Python joins the worker threads of every thread pool when it exits, before ``atexit`` functions run; a job
    still following the server, or an event stream waiting for its next byte, would hold the exit for minutes.
    ``threading._register_atexit`` runs before those joins (concurrent.futures uses it for them; it calls the
    last registered first, and ours is registered after concurrent.futures is imported). Plain ``atexit`` where
    that private hook is missing.
    """
    global _exit_hooked
    _connected.add(client)
    if _exit_hooked:
        return
    _exit_hooked = True

    def let_go_all() -> None:
        for open_client in list(_connected):
            try:
                open_client._let_go()
            except Exception:  # noqa: BLE001 - exiting: nothing may stop the others
                log.debug("letting go of %s at exit", open_client.server_address, exc_info=True)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(let_go_all)
        else:
            import atexit

            atexit.register(let_go_all)
    except RuntimeError:  # already shutting down
        pass


def _queue_tasks(body: bytes) -> list[dict[str, Any]] | None:
    """The tasks' params in a ``queue.zip`` (its ``queue.json``), or None if it is not one."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            if archive.getinfo("queue.json").file_size > MAX_QUEUE_ZIP_BYTES:
                return None  # a zip bomb is not a queue
            tasks = json.loads(archive.read("queue.json"))
    except (zipfile.BadZipFile, KeyError, ValueError):
        return None
    if not isinstance(tasks, list):
        return None
    return [t.get("params", {}) for t in tasks if isinstance(t, dict)]


def _choices(outputs: Any, index: int) -> list[str]:
    """Values of a Dropdown update's choices among an endpoint's outputs."""
    if not isinstance(outputs, tuple):
        outputs = (outputs,)  # gradio_client returns one output as itself
    if index < 0 or index >= len(outputs):
        return []
    update = outputs[index]
    choices = update.get("choices") if isinstance(update, dict) else None
    return [str(c[1]) if isinstance(c, list | tuple) else str(c) for c in choices or []]


def _as_settings(settings: GenerationSettings | dict[str, Any] | None, kwargs: dict[str, Any]) -> GenerationSettings:
    from pydantic import ValidationError

    if isinstance(settings, GenerationSettings):
        return settings.model_copy(update=kwargs) if kwargs else settings
    data = dict(settings or {})
    data.update(kwargs)
    try:
        return GenerationSettings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""  # the setting as the caller named it
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        where = f"{field}: " if field and not message.startswith(field) else ""
        if first.get("type") == "extra_forbidden":
            names = list(GenerationSettings.model_fields) + _ALIASES
            message = f"unknown setting{did_you_mean(field, names)}; put WanGP-only settings in extra={{...}}"
        raise Wan2GPValidationError(f"{where}{message}", field=field or None) from None


def _refused(exc: BaseException) -> bool:
    """True when a connect failed because nothing listens (the server process is gone)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_ALIASES = ["frames", "steps", "guidance", "negative", "loras", "model_type"]

_shared: dict[str, Wan2GPClient] = {}
_shared_lock = threading.Lock()


def get_wan2gp_client(server_address: str | None = None) -> Wan2GPClient:
    """A shared client per server address (thread-safe); connects on first use."""
    key = server_address or ClientSettings().url
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = Wan2GPClient(server_address)
        return client


def generate_quick_video(prompt: str, **kwargs: Any) -> str:
    """Generate a quick preview shot with the shared client; returns the saved video's path."""
    server = kwargs.pop("server_address", None)
    return str(get_wan2gp_client(server).generate_quick(prompt, **kwargs).video_path)


def generate_high_quality_video(prompt: str, **kwargs: Any) -> str:
    """Generate a high-quality shot with the shared client; returns the saved video's path."""
    server = kwargs.pop("server_address", None)
    return str(get_wan2gp_client(server).generate_high_quality(prompt, **kwargs).video_path)

