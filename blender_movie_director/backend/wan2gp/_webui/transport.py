"""The web-UI transport's connection to one WanGP server: its root session, its API, forms and files.

Everything a job needs of the server over WanGP's Gradio web UI, and nothing of the jobs themselves: those are
the client's (``Wan2GPClient``, its :class:`~..book.JobBook`), and each one's run is a :class:`~.runner.WebUiRun`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..._urls import tls_context
from .._config import ClientSettings, Retries
from .._enums import ModelCategory, catalog, categories_of
from .._errors import (
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
from .._files import RemoteFile, download, gallery_files
from .._form import ModelForm, check_settings
from .._schemas import GenerationSettings, ModelInfo, ServerStatus
from .endpoints import ServerApi
from .fingerprint import startup_model, version_tuple
from .session import GradioSession

if TYPE_CHECKING:
    from .._book import JobBook
    from .._cache import ApiCache
    from .._jobs import JobRecord, Wan2GPJob
    from .runner import WebUiRun

log = logging.getLogger(__name__)

# WanGP's queue.zip of one session's tasks is a few KB (a task's settings); 16 MB is no such queue.
MAX_QUEUE_ZIP_BYTES = 16 * 1024 * 1024
# Looking at a session a dead program left behind: a healthy server answers these small calls in milliseconds,
# and a look that gets no answer in time is made again by the next job.
HEAL_CALL_TIMEOUT = 1.0
# From 9.x on WanGP saves a one-task queue, so its empty answer means an empty queue (6.x/8.x: fewer than 2 tasks).
SAVES_ONE_TASK_QUEUES = (9,)


class WebUiTransport:
    """One WanGP web UI, as the client's jobs use it. Thread-safe. ``open()`` connects, ``close()`` ends."""

    name = "webui"

    def __init__(self, settings: ClientSettings, server_address: str, book: JobBook, secrets: list[str]) -> None:
        self.settings = settings
        self.server_address = server_address
        self.book = book
        self.secrets = secrets
        self.app_id: str | None = None  # the server process (Gradio app id) seen on connect
        self._lock = threading.RLock()  # guards the connection and the root session
        self.root: GradioSession | None = None
        self.api: ServerApi | None = None
        self.http: httpx.Client | None = None
        self.forms: dict[str, ModelForm] = {}
        self._families: dict[str, str] = {}  # model -> family, learnt from the server (8.x's model switch)
        self._heal_sessions: dict[str, GradioSession] = {}  # sessions of leftovers being watched, see there
        self.stoppers: set[threading.Thread] = set()  # jobs still being stopped on the server, see close()
        self.api_cache: ApiCache | None = None
        self.poll_interval = 0.5  # seconds between gallery polls while re-attached to an interrupted run

    @property
    def connected(self) -> bool:
        return self.api is not None

    def open(self) -> None:
        """Read the server's ``/config`` (the API description follows in the background) and resolve the chain."""
        with self._lock:
            if self.api is not None:
                return
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
            self.root, self.api = root, api
            self.app_id = str(root.config.get("app_id")) if root.config.get("app_id") is not None else None
            auth = None
            if self.settings.username and self.settings.password:
                auth = (self.settings.username, self.settings.password.get_secret_value())
            self.http = httpx.Client(
                headers=root.headers, cookies=root.cookies, auth=auth, verify=root.ssl_verify,
                timeout=httpx.Timeout(self.settings.timeouts.download, connect=self.settings.timeouts.connect),
            )
            log.info("connected to WanGP %s at %s (%d endpoints)", api.wangp_version, self.server_address,
                     api.endpoint_count)

    def wait_for_stoppers(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the jobs still being stopped in the background (see ``WebUiRun``)."""
        deadline = time.monotonic() + seconds
        with self._lock:
            stoppers = list(self.stoppers)
        for thread in stoppers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in stoppers):
            log.warning("closing the client while %d job(s) could not be stopped on %s; they may still run there",
                        sum(thread.is_alive() for thread in stoppers), self.server_address)

    def close(self) -> None:
        with self._lock:
            for session in list(self._heal_sessions.values()):
                session.close()
            self._heal_sessions.clear()
            if self.root is not None:
                self.root.close()
            if self.http is not None:
                self.http.close()
            self.root = self.api = self.http = None
            self.forms.clear()
            self._families.clear()

    def let_go(self) -> None:
        """The program is exiting: end every event stream of ours, so that none holds the exit."""
        with self._lock:
            sessions = [self.root, *self._heal_sessions.values()]
        for session in sessions:
            if session is not None:
                session.close_streams()

    def identity(self) -> tuple[str, str | None, str | None] | None:
        api = self.api
        if api is None or self.app_id is None:
            return None
        return self.app_id, api.wangp_version, api.gradio_version

    @property
    def wangp_version(self) -> str | None:
        return self.api.wangp_version if self.api is not None else None

    def _open_with_retries(self) -> GradioSession:
        retries, timeouts = self.settings.retries, self.settings.timeouts
        auth = None
        if self.settings.username and self.settings.password:
            auth = (self.settings.username, self.settings.password.get_secret_value())
        for attempt in range(1, retries.attempts + 1):
            try:
                return GradioSession.open(
                    self.settings.url, auth=auth, connect_timeout=timeouts.connect, call_timeout=timeouts.call,
                    describe_timeout=timeouts.describe, max_workers=16 + 8 * self.settings.max_jobs,
                    config_source=self.api_cache.config_for if self.api_cache is not None else None,
                )
            except Exception as exc:  # noqa: BLE001 - translated below
                error = translate(exc, server=self.server_address, what="connecting")
                error.message = redact(error.message, self.secrets)
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
                sleep = retries.pause(attempt)
                log.info("connect attempt %d to %s failed (%s); retrying in %.1f s", attempt,
                         self.server_address, error, sleep)
                time.sleep(sleep)
        raise AssertionError("unreachable")

    def require_api(self) -> ServerApi:
        api = self.api
        if api is None:  # never reconnects by itself: the client connects, and a closed client stays closed
            raise Wan2GPConnectionError(f"the client of {self.server_address} is closed",
                                        server=self.server_address, hint="connect() it again")
        return api

    def check_settings(self, settings: GenerationSettings) -> None:
        """Refuse at submit time what the server's rules already known say can't be right."""
        model = str(settings.model)
        self.check_model(model)
        form = self.known_form(model)
        if form is not None:
            api = self.require_api()
            check_settings(settings, form,
                           [p.name for p in api.endpoints[api.chain.save_inputs].parameters], api.wangp_version)

    def model_info(self, model: str) -> ModelInfo:
        return self.model_form(model).info()

    def new_run(self, job: Wan2GPJob) -> WebUiRun:
        from .runner import WebUiRun

        return WebUiRun(job, self, self.book)

    def ping(self) -> None:
        """One small request (the app id), for a status's latency; raises when the server does not answer."""
        prefix = str(self.api.config.get("api_prefix") or "/gradio_api").strip("/") if self.api else "gradio_api"
        response = httpx.get(f"{self.settings.url.rstrip('/')}/{prefix + '/' if prefix else ''}app_id",
                             timeout=self.settings.timeouts.connect, verify=tls_context())
        response.raise_for_status()

    def fill_status(self, status: ServerStatus) -> None:
        api = self.require_api()
        status.wangp_version = api.wangp_version
        status.gradio_version = api.gradio_version
        status.endpoint_count = api.endpoint_count
        status.transport = self.name

    def last_form_model(self) -> str | None:
        """The model whose form was read last (the root session's, or a shot's)."""
        return next(iter(reversed(self.forms)), None)

    def stopper_started(self, thread: threading.Thread) -> None:
        with self._lock:
            self.stoppers.add(thread)

    def stopper_ended(self, thread: threading.Thread) -> None:
        with self._lock:
            self.stoppers.discard(thread)

    def fork(self, session_hash: str | None = None) -> GradioSession:
        self.require_api()
        assert self.root is not None
        return self.root.fork(session_hash)

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Every named endpoint of the server with its parameters (names, types, defaults) and returns."""
        api = self.require_api()
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
        api = self.require_api()
        name = endpoint if endpoint.startswith("/") else "/" + endpoint
        if name not in api.endpoints:
            raise Wan2GPValidationError(
                f"the server has no endpoint {name}{did_you_mean(name, api.endpoints)}", field="endpoint")
        args = api.endpoints[name].bind(params)
        with self._lock:
            assert self.root is not None
            return self.root.call(name, args, timeout=self.settings.timeouts.call).value

    def check_model(self, model: str) -> None:
        """Refuse a model the server does not have, before anything is sent (its list is in ``/config``)."""
        api = self.require_api()
        known = api.models or (api.model_dropdown_choices() if not api.chain.switch.group else {})
        if known and model not in known:
            raise self.unknown_model(model, known)

    def unknown_model(self, model: str, known: Any) -> Wan2GPValidationError:
        version = self.api.wangp_version if self.api else None
        return Wan2GPValidationError(
            f"WanGP {version or ''} has no model {model!r}{did_you_mean(model, known)}".replace("  ", " "),
            field="model", hint="`movie-director models` (or client.list_models()) lists the server's models")

    def switch_calls(self, model: str, *, new_session: bool = False) -> list[tuple[str, list[Any]]]:
        """The calls that make ``model`` a session's model on this server (see ``ModelSwitch``).

        A ``new_session`` starts as WanGP built its page: with the start-up model, its group in the model
        dropdown. Its model needs no switch, and a model of the same group only the select step."""
        api = self.require_api()
        switch = api.chain.switch
        if new_session and model == startup_model(api.config):
            return []
        calls: list[tuple[str, list[Any]]] = []
        if new_session and model in api.model_dropdown_choices():
            pass  # the dropdown already offers it
        elif switch.group:
            calls.append((switch.group, [model]))
        elif switch.family:
            calls.append((switch.family, [self.family_of(model)]))
        calls.append((switch.select, [model]))
        return calls

    def family_of(self, model: str) -> str:
        """The family whose models the family dropdown shows with ``model`` (8.x), asked of the server once."""
        with self._lock:
            if model in self._families:
                return self._families[model]
            api = self.require_api()
            assert self.root is not None
            switch = api.chain.switch
            assert switch.family is not None
            guess = catalog().get(model, {}).get("family")
            families = sorted(api.families(), key=lambda f: f != guess)
            for family in families:
                answer = self.root.call(switch.family, [family], timeout=self.settings.timeouts.call,
                                         what="finding the model's family", retries=self.settings.retries)
                for name in _choices(answer.value, switch.family_index):
                    self._families.setdefault(name, family)
                if model in self._families:
                    return self._families[model]
            raise Wan2GPValidationError(
                f"WanGP {api.wangp_version} lists model {model!r} but none of its families offers it",
                field="model", hint="`movie-director models` lists the models the server offers")

    def model_form(self, model: str) -> ModelForm:
        """The server's form for ``model`` (switching the client's own session to it); cached."""
        known = self.known_form(model)
        if known is not None:
            return known
        with self._lock:
            if model in self.forms:
                return self.forms[model]
            api = self.require_api()
            assert self.root is not None
            self.check_model(model)
            call = self.settings.timeouts.call
            again = self.settings.retries  # model switch and form read are idempotent
            switch = api.chain.switch
            for endpoint, args in self.switch_calls(model):
                try:
                    answer = self.root.call(endpoint, args, timeout=call, what="switching model", retries=again)
                except Wan2GPServerError as exc:
                    # 12.60 takes an unknown model type in its first step and crashes in the second
                    if not api.models and is_generic_app_error(exc.message):
                        raise self.unknown_model(model, catalog()) from exc
                    raise
                if endpoint == switch.group and not api.models and model not in _choices(answer.value,
                                                                                         switch.group_index):
                    raise self.unknown_model(model, catalog())  # the server's list was not in /config
            outputs = self.root.call(api.chain.fill, [], timeout=call, what="reading the model's form",
                                      retries=again).value
            return self.keep_form(model, outputs)

    def known_form(self, model: str) -> ModelForm | None:
        """The model's form if this client, or its API cache (same server build), has seen it; else None."""
        with self._lock:
            if model in self.forms:
                return self.forms[model]
            api = self.require_api()
            cache = self.api_cache
        outputs = cache.form_outputs(api.fingerprint, model) if cache is not None and api.fingerprint else None
        if outputs is None:
            return None
        form = ModelForm.from_fill(api, model, outputs)
        with self._lock:
            return self.forms.setdefault(model, form)

    def keep_form(self, model: str, outputs: Any) -> ModelForm:
        """The form a session's ``fill_inputs`` answered for ``model``: kept, replacing an older one."""
        api = self.require_api()
        values = list(outputs) if isinstance(outputs, tuple | list) else [outputs]
        form = ModelForm.from_fill(api, model, values)
        with self._lock:
            self.forms[model] = form
        if self.api_cache is not None and api.fingerprint:
            self.api_cache.keep_form_outputs(api.fingerprint, model, values)
        return form

    def list_models(self, *, family: str | None = None, category: ModelCategory | str | None = None) -> list[ModelInfo]:
        """Every model of the connected server, with catalog metadata; filter by family or category.

        The list is the server's own (its configuration tab's list of every model, read from ``/config``), so it
        holds every model the server can run whatever group its model dropdown shows. The catalog adds names,
        families and inputs for the models it knows.
        """
        api = self.require_api()
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

    def stop_job(self, record: JobRecord) -> bool:
        """Stop a job from its record, whichever program started it: WanGP's abort and clear-queue in the job's
        own session. False when the server no longer has that session's process (it restarted)."""
        self.require_api()
        if not record.session_hash:
            return False
        if record.app_id and record.app_id != self.server_instance(self.settings.retries):
            return False
        chain = self.require_api().chain
        session = self.fork(record.session_hash)
        try:
            again, call = self.settings.retries, self.settings.timeouts.call
            try:
                session.call(chain.abort, [], timeout=call, what="aborting the generation", retries=again)
            except Wan2GPServerError as exc:  # nothing running in that session: its queue is cleared below
                log.debug("stop %s: abort: %s", record.job_id, exc)
            session.call(chain.clear_queue, [], timeout=call, what="clearing the job's queue", retries=again)
            self.release_session(session, job_id=record.job_id)
        finally:
            session.close()
        if self.book.register is not None:
            self.book.register.set_state(record.job_id, "cancelled", message="stopped on the server")
        return True

    def heal_leftovers(self) -> int:
        """Release the sessions that dead programs left holding the server's status stream; how many.

        Called by each job before it starts its run: the release is a ``process_tasks`` call in the dead session,
        and WanGP runs one ``process_tasks`` at a time for the whole server, so it must come before the job's own.
        A session whose task has left WanGP's queue (its output is in its gallery, or its queue reads empty) is
        released with :meth:`release_session`; one whose task still runs is looked at again by the next job.
        Its output stays on the server: the entry is marked ``orphaned``, and ``movie-director collect`` (or
        ``resume_job(entry["record"])``) still fetches it.
        """
        if self.book.register is None or self.api is None or self.root is None:
            return 0
        healed = 0
        mine = self.book.unfinished_ids()
        for entry in self.book.register.leftovers(self.server_address, self.app_id):
            if entry["job_id"] in mine:
                continue  # resumed by this program: its own session is being followed
            session_hash = entry["session_hash"]
            # One session object per leftover, kept between looks: each new one would open a new event stream on
            # that session, and Gradio's clean-up when the previous one closes would swallow its answers.
            session = self._heal_sessions.get(session_hash)
            if session is None:
                try:
                    session = self._heal_sessions[session_hash] = self.fork(session_hash)
                except Wan2GPError:
                    return healed
            try:
                tasks = self.session_queue(session, timeout=HEAL_CALL_TIMEOUT)
                if tasks:
                    continue  # still queued or generating: its turn to be released comes later
                finished = tasks is None and bool(self.gallery_files(session, timeout=HEAL_CALL_TIMEOUT))
                if tasks == [] or finished:
                    self.release_session(session, finished=True, job_id=entry["job_id"],
                                          timeout=HEAL_CALL_TIMEOUT)
                    self.book.register.set_state(entry["job_id"], "orphaned",
                                            message="its program stopped; the server finished it")
                    healed += 1
                    log.info("released the session of job %s, left behind by a program that stopped",
                             entry["job_id"])
                    self._heal_sessions.pop(session_hash, None)
                    session.close()
            except Wan2GPError as exc:
                log.debug("job %s: releasing its session: %s", entry["job_id"], exc)
        return healed

    def gallery_files(self, session: GradioSession, *, timeout: float | None = None) -> list[RemoteFile]:
        chain = self.require_api().chain
        timeouts = self.settings.timeouts
        gallery = session.call(chain.gallery, [], timeout=timeout or min(timeouts.call, 2 * timeouts.connect),
                               what="reading the gallery", retries=self.settings.retries,
                               retry_timeouts=True).value
        value = gallery[chain.gallery_index] if isinstance(gallery, tuple) else gallery
        return gallery_files(value, session.src_prefixed)

    def release_session(self, session: GradioSession, *, finished: bool = False, job_id: str = "",
                         timeout: float | None = None) -> None:
        """Let WanGP reset a session's status flag after its ``process_tasks`` was lost (its program or its
        connection went away mid-run): the session's ``refresh_status_async`` keeps polling until then and, with
        Gradio's one call at a time per function, holds up the status stream of every later job.

        Running ``process_tasks`` on the session's now empty queue returns at once and resets the flag. Done only
        when the queue is known to be empty: it reads empty, or (``finished``) the session's gallery holds its one
        task's output. On 6.x/8.x a one-task queue can't be read, and a task still in it would run twice.
        """
        if self.api is None:
            return  # closed meanwhile: never reconnect from here
        if not finished and self.session_queue(session, timeout=timeout) != []:
            return
        try:
            session.call(self.api.chain.process, [], timeout=timeout or self.settings.timeouts.call,
                         what="resetting the status", retries=self.settings.retries)
        except Wan2GPError as exc:
            log.debug("job %s: resetting the session's status: %s", job_id, exc)

    def session_queue(self, session: GradioSession, *, timeout: float | None = None) -> list[dict[str, Any]] | None:
        """The tasks in a session's WanGP queue (their params), or None where the server can't tell.

        ``save_queue_action`` answers in one of three forms (the captures of each release):

        * a one-use download link to ``queue.zip``, ``{"url": "/wangp_api/download/<token>", ...}`` (12.x);
        * the zip itself, base64-encoded, in the answer (6.x to 11.x);
        * ``""`` with the toast "Queue is empty. Nothing to save.": an empty queue on 9.x and later, which save
          one-task queues; 6.x and 8.x save nothing below two tasks, so there it means "0 or 1 task".
        """
        api = self.require_api()
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
        assert self.http is not None
        try:
            body = bytearray()
            with self.http.stream("GET", self.settings.url.rstrip("/") + route,
                                   timeout=self.settings.timeouts.call, follow_redirects=False) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_QUEUE_ZIP_BYTES:
                        return None  # not a queue of one session's tasks
            return bytes(body)
        except httpx.HTTPError:
            return None

    def server_instance(self, retries: Retries | None = None) -> str:
        """The server process's Gradio app id (a new one after every restart): a request of a few bytes.

        Raises :class:`ServerRestartedError` when nothing listens any more (connection refused),
        :class:`Wan2GPTimeoutError` / :class:`Wan2GPConnectionError` when the server can't be reached: at once,
        or after ``retries.attempts`` tries in all when ``retries`` is given (for a job's first read, where a
        busy server's slow answer is no sign of a frozen one; a heartbeat probe gives none).
        """
        attempts = retries.attempts if retries is not None else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._app_id()
            except ServerRestartedError:
                raise
            except Wan2GPConnectionError:
                if attempt >= attempts or retries is None:
                    raise
                time.sleep(retries.pause(attempt))
        raise AssertionError("unreachable")

    def _app_id(self) -> str:
        api = self.require_api()
        assert self.http is not None
        prefix = str(api.config.get("api_prefix") or "/gradio_api").strip("/")
        url = f"{self.settings.url.rstrip('/')}/{prefix + '/' if prefix else ''}app_id"
        timeout = self.settings.timeouts.connect
        try:
            response = self.http.get(url, timeout=httpx.Timeout(timeout), follow_redirects=False)
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

    def download(self, remote: RemoteFile, dest: Path, check: Any = None) -> Path:
        """Download with bounded retries (a download is idempotent)."""
        retries = self.settings.retries
        assert self.http is not None
        for attempt in range(1, retries.attempts + 1):
            try:
                return download(remote, dest, client=self.http, max_bytes=self.settings.max_download_bytes,
                                timeout=self.settings.timeouts.download, read_timeout=self.settings.timeouts.call,
                                check=check)
            except Wan2GPConnectionError:
                if attempt == retries.attempts:
                    raise
                time.sleep(retries.pause(attempt))
        raise AssertionError("unreachable")


def _describe_quietly(api: ServerApi) -> None:
    """Read the API description ahead of need; a failure is raised again where a name is needed."""
    try:
        api.endpoints  # noqa: B018 - the property downloads it
    except Exception as exc:  # noqa: BLE001
        log.debug("reading the API description of %s ahead of need: %s", api.url, exc)


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


def _refused(exc: BaseException) -> bool:
    """True when a connect failed because nothing listens (the server process is gone)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False
