"""Caches: what a server told us (its API description), its model list, and finished shots.

:class:`ApiCache`
    A server's ``/config``, the parameter names of its API description and the generation chain resolved from
    them, per server and per *fingerprint* of its ``/config`` (on disk, and in memory). Reconnecting to the same
    server process (same Gradio app id) downloads only the app id (a few bytes) instead of ``/config`` and the
    API description (~7 MB on a real WanGP 12); reconnecting to a restarted server of the same WanGP (same
    fingerprint) downloads ``/config`` only. Anything else is a cold connect, and is then remembered.
:class:`ModelListCache`
    A server's model list, kept for a short time (30 s by default).
:class:`ResultCache`
    Finished shots, keyed by (server WanGP version, model, every setting, seed, hashes of the input files). An
    identical request with a *fixed* seed returns the saved video instead of generating it again. A ``-1``
    (random) seed never hits and is never stored.

Example::

    from blender_movie_director.backend.wan2gp import Wan2GPClient
    from blender_movie_director.backend.wan2gp._cache import ApiCache, ResultCache, cached_generate

    client = Wan2GPClient("http://127.0.0.1:7860", output_dir="shots")
    client.api_cache = ApiCache("~/.cache/blender-movie-director")  # before connect()
    results = ResultCache("~/.cache/blender-movie-director")
    result = cached_generate(client, {"prompt": "a red fox in snow", "seed": 42}, results)
    print(result.video_path, result.model_extra.get("cached"))
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ._files import output_name, unique_path
from ._schemas import MEDIA_FIELDS, GenerationResult, GenerationSettings, ModelInfo
from ._webui.endpoints import ServerApi
from ._webui.fingerprint import startup_model
from ._webui.session import GradioSession

if TYPE_CHECKING:
    from ._client import Wan2GPClient

__all__ = [
    "ApiCache",
    "ModelListCache",
    "ResultCache",
    "cached_generate",
    "config_fingerprint",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

# Keys of Gradio's /config that differ between two runs of the same app: its random id, the URL it was reached
# by, the logged-in user. Everything else (components, dependencies, versions, header) identifies the API.
VOLATILE_CONFIG_KEYS = frozenset({"app_id", "root", "username"})
# gradio 5 puts Python reprs in /config (gr.State's delete_callback: "<function ... at 0x7f8f23ab8d60>", seen in
# the captured real WanGP 12 config too): their addresses change with every process.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
# API descriptions kept in memory (each is the parsed ~7 MB of a real WanGP 12) and on disk.
MEMORY_ENTRIES = 8
DISK_ENTRIES = 16
# The app-id check that decides a warm reconnect: loopback answers in ~2 ms; a remote server gets 2 s.
APP_ID_TIMEOUT = 2.0
# Model lists change only when the server's models or plugins change: 30 s keeps repeated look-ups (a pool
# choosing servers, a UI refreshing) free without hiding a change for long.
MODEL_LIST_TTL = 30.0
# Finished shots are hard links to the saved videos where the file system allows (no extra space while the
# originals exist); 20 GiB bounds what copies may take. Least recently used entries go first.
RESULT_CACHE_MAX_BYTES = 20 * 1024**3
RESULT_KEY_VERSION = 1  # bump when the key's content changes: old entries then simply miss


def default_cache_dir() -> Path:
    """Where the pool and the CLI keep their caches unless told: ``WAN2GP_CACHE_DIR``, else
    ``~/.cache/blender-movie-director``."""
    named = os.environ.get("WAN2GP_CACHE_DIR")
    return Path(named).expanduser() if named else Path.home() / ".cache" / "blender-movie-director"


def config_fingerprint(config: dict[str, Any]) -> str:
    """SHA-256 of a Gradio ``/config`` without what changes between runs of the same app (its id, its URL)."""
    stable = {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}
    text = _ADDRESS.sub(" at 0x>", json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str))
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, flush to disk, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the API description -------------------------------------------------------------------------------------


@dataclass
class _ApiEntry:
    fingerprint: str
    config: dict[str, Any] | None
    params: dict[str, Any] | None  # ServerApi.parameter_table(): what the API description adds to /config
    api: ServerApi | None = None


class ApiCache:
    """Server API descriptions, per server URL and per ``/config`` fingerprint, in memory and on disk.

    Parameters:
        directory: where to keep them across processes (``<directory>/api``); ``None``: in memory only.
        app_id_timeout: bound of the app-id check made on each reconnect.

    Hand it to a client before it connects (``Wan2GPClient(url, api_cache=cache)``, or ``client.api_cache =
    cache``; an MCP client leaves it unused); :class:`ServerPool` does this for its clients. ``stats`` counts
    connects by kind: ``"warm"`` (nothing downloaded but the app id),
    ``"config"`` (only ``/config``), ``"cold"`` (``/config``, and the API description when a name is first
    needed). What is kept of the API description is its parameter table (about 2 % of its size). Thread-safe.
    """

    def __init__(self, directory: str | Path | None = None, *, app_id_timeout: float = APP_ID_TIMEOUT) -> None:
        self.directory = Path(directory).expanduser() / "api" if directory is not None else None
        self.app_id_timeout = app_id_timeout
        self.stats = {"warm": 0, "config": 0, "cold": 0}
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, _ApiEntry] = OrderedDict()
        self._index: dict[str, dict[str, Any]] | None = None
        self._opened: dict[int, tuple[str, str]] = {}  # id(session) -> (fingerprint, kind), until server_api()
        self._forms: dict[tuple[str, str], list[Any]] = {}  # (fingerprint, model) -> fill_inputs' answer

    # --- used by Wan2GPClient.connect() ----------------------------------------------------------------

    def config_for(self, session: GradioSession) -> dict[str, Any]:
        """``/config`` of the server ``session`` connects to: kept when the server process is the same one (its
        app id, a few bytes), else downloaded. For :meth:`GradioSession.open`'s ``config_source``."""
        url = _key(session.src)
        with self._lock:
            known = dict(self._load_index().get(url) or {})
        if known:
            app_id = self._app_id(session, str(known.get("api_prefix") or ""))
            if app_id is not None and app_id == known.get("app_id"):
                entry = self._entry(str(known["fingerprint"]), with_config=True)
                if entry is not None and entry.config is not None:
                    with self._lock:
                        self._opened[id(session)] = (entry.fingerprint, "warm")
                    return entry.config
        config = session._get_config()
        fingerprint = config_fingerprint(config)
        entry = self._entry(fingerprint, with_config=False)
        with self._lock:
            self._opened[id(session)] = (fingerprint, "config" if entry is not None and entry.params else "cold")
        return config

    def server_api(self, root: GradioSession, url: str) -> ServerApi:
        """The resolved API of a session opened with :meth:`config_for`; remembered when new.

        Raises what :class:`ServerApi` raises (not WanGP, chain not resolvable); nothing is stored then.
        """
        with self._lock:
            fingerprint, kind = self._opened.pop(id(root), (config_fingerprint(root.config), "cold"))
            self.stats[kind] += 1
            entry = self._entries.get(fingerprint)
        if entry is not None and entry.api is not None:
            api = entry.api
            if api.url != url:
                api = copy.copy(api)  # the same API on another server: only the URL in messages differs
                api.url = url
        elif entry is not None and entry.params is not None:
            api = ServerApi(root.config, {"parameter_table": entry.params}, url)
        else:
            api = ServerApi(root.config, None, url, describe=lambda: self._describe(root, fingerprint))
        api.fingerprint = fingerprint
        with self._lock:
            entry = self._entries.get(fingerprint) or _ApiEntry(fingerprint, root.config, None)
            entry.config = entry.config or root.config
            if api.described:
                entry.api = entry.api or api
                entry.params = entry.params or api.parameter_table()
            self._put(entry)
            if kind != "warm":
                index = self._load_index()
                index[_key(root.src)] = {"app_id": str(root.config.get("app_id")), "fingerprint": fingerprint,
                                         "api_prefix": root.config.get("api_prefix", ""), "seen": time.time(),
                                         "wangp_version": api.wangp_version, "gradio_version": api.gradio_version,
                                         "startup_model": startup_model(root.config)}
                self._save_index()
        if kind != "warm":
            self._store_config(fingerprint, root.config)
        return api

    def form_outputs(self, fingerprint: str, model: str) -> list[Any] | None:
        """The ``fill_inputs`` answer last seen for ``model`` on this server build (memory, then disk)."""
        with self._lock:
            kept = self._forms.get((fingerprint, model))
        if kept is None and self.directory is not None:
            data = _read_json(self._form_path(fingerprint, model))
            kept = data.get("outputs") if data is not None and data.get("model") == model else None
            if isinstance(kept, list):
                with self._lock:
                    self._forms[(fingerprint, model)] = kept
        return list(kept) if isinstance(kept, list) else None

    def keep_form_outputs(self, fingerprint: str, model: str, outputs: list[Any]) -> None:
        """Remember a model's ``fill_inputs`` answer (written to disk only when it changed)."""
        with self._lock:
            if self._forms.get((fingerprint, model)) == outputs:
                return
            self._forms[(fingerprint, model)] = list(outputs)
        if self.directory is not None:
            try:
                _atomic_write(self._form_path(fingerprint, model),
                              json.dumps({"model": model, "outputs": outputs}, default=str).encode())
            except OSError as exc:
                log.warning("could not save the form of %s: %s", model, exc)

    def _form_path(self, fingerprint: str, model: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{fingerprint}.form.{hashlib.sha256(model.encode()).hexdigest()[:16]}.json"

    # --- public -------------------------------------------------------------------------------------------

    def seen(self, url: str, app_id: str) -> dict[str, Any] | None:
        """What was learnt of the server process ``app_id`` at ``url`` when a client connected to it (its WanGP
        and Gradio versions, its start-up model), or None. Reads no network: for a health check that has the
        app id already."""
        with self._lock:
            entry = dict(self._load_index().get(_key(url)) or {})
        return entry if entry.get("app_id") == app_id and entry.get("wangp_version") else None

    def known(self, url: str) -> bool:
        """Whether a server at ``url`` was seen (its description is kept)."""
        with self._lock:
            return _key(url) in self._load_index()

    def forget(self, url: str | None = None) -> None:
        """Forget one server (or all of them); kept descriptions of other servers stay."""
        with self._lock:
            index = self._load_index()
            if url is None:
                index.clear()
                self._entries.clear()
            else:
                index.pop(_key(url), None)
            self._save_index()

    # --- inside -------------------------------------------------------------------------------------------

    def _describe(self, root: GradioSession, fingerprint: str) -> dict[str, Any]:
        """Download the API description (the first time a parameter name is needed) and keep its table."""
        table = root.api_parameters()
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None:
                entry.params = table
        if self.directory is not None:
            try:
                _atomic_write(self.directory / f"{fingerprint}.params.json", json.dumps(table).encode())
            except OSError as exc:
                log.warning("could not save the API description of %s: %s", root.src, exc)
            self._prune_disk()
        return {"parameter_table": table}

    def _store_config(self, fingerprint: str, config: dict[str, Any]) -> None:
        if self.directory is None:
            return
        path = self.directory / f"{fingerprint}.config.json"
        if not path.exists():
            try:
                _atomic_write(path, json.dumps(config).encode())
            except OSError as exc:
                log.warning("could not save the /config of a server: %s", exc)

    def _app_id(self, session: GradioSession, api_prefix: str) -> str | None:
        url = urllib.parse.urljoin(session.src, api_prefix.strip("/") + "/app_id" if api_prefix.strip("/")
                                   else "app_id")
        try:
            response = httpx.get(url, headers=session.headers, cookies=session.cookies, verify=session.ssl_verify,
                                 timeout=self.app_id_timeout, follow_redirects=False)
            if response.status_code != 200:
                return None
            return str(response.json().get("app_id"))
        except (httpx.HTTPError, ValueError, AttributeError):
            return None  # the cold path reports the real problem

    def _entry(self, fingerprint: str, *, with_config: bool) -> _ApiEntry | None:
        """What is kept of a build, from memory, else from disk (its /config only if ``with_config``)."""
        with self._lock:
            entry = self._entries.get(fingerprint)
        params = entry.params if entry is not None else None
        config = entry.config if entry is not None else None
        if self.directory is not None:
            if params is None:
                params = _read_json(self.directory / f"{fingerprint}.params.json")
            if config is None and with_config:
                config = _read_json(self.directory / f"{fingerprint}.config.json")
        if params is None and config is None:
            return entry
        with self._lock:
            entry = self._entries.get(fingerprint) or _ApiEntry(fingerprint, None, None)
            entry.params, entry.config = entry.params or params, entry.config or config
            self._put(entry)
        return entry

    def _put(self, entry: _ApiEntry) -> None:
        self._entries[entry.fingerprint] = entry
        self._entries.move_to_end(entry.fingerprint)
        while len(self._entries) > MEMORY_ENTRIES:
            self._entries.popitem(last=False)

    def _load_index(self) -> dict[str, dict[str, Any]]:
        if self._index is None:
            self._index = {}
            if self.directory is not None:
                try:
                    data = json.loads((self.directory / "index.json").read_bytes())
                    self._index = data if isinstance(data, dict) else {}
                except (OSError, ValueError):
                    pass
        return self._index

    def _save_index(self) -> None:
        if self.directory is None or self._index is None:
            return
        try:
            _atomic_write(self.directory / "index.json", json.dumps(self._index, indent=1).encode())
        except OSError as exc:
            log.warning("could not save the API cache index: %s", exc)

    def _prune_disk(self) -> None:
        assert self.directory is not None
        kept = sorted(self.directory.glob("*.params.json"), key=lambda p: p.stat().st_mtime)
        for path in kept[: max(0, len(kept) - DISK_ENTRIES)]:
            fingerprint = path.name.removesuffix(".params.json")
            path.unlink(missing_ok=True)
            (self.directory / f"{fingerprint}.config.json").unlink(missing_ok=True)
            for form in self.directory.glob(f"{fingerprint}.form.*.json"):
                form.unlink(missing_ok=True)
        for old in self.directory.glob("*.info.json"):  # the whole descriptions an earlier version kept
            old.unlink(missing_ok=True)


def _key(url: str) -> str:
    return url.rstrip("/") + "/"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- model lists ---------------------------------------------------------------------------------------------


class ModelListCache:
    """A server's model list (:meth:`Wan2GPClient.list_models`), kept for ``ttl`` seconds. Thread-safe.

    Example::

        models = ModelListCache(ttl=30)
        names = [m.model_type for m in models.get(client)]
    """

    def __init__(self, ttl: float = MODEL_LIST_TTL, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._lists: dict[tuple[str, str | None, str | None], tuple[float, list[ModelInfo]]] = {}

    def get(self, client: Wan2GPClient, *, family: str | None = None, category: str | None = None) -> list[ModelInfo]:
        key = (_key(client.server_address), family, str(category) if category else None)
        now = self._clock()
        with self._lock:
            kept = self._lists.get(key)
            if kept is not None and now - kept[0] < self.ttl:
                return list(kept[1])
        models = client.list_models(family=family, category=category)
        with self._lock:
            self._lists[key] = (now, models)
        return list(models)

    def invalidate(self, url: str | None = None) -> None:
        """Forget the lists of one server (or all)."""
        with self._lock:
            if url is None:
                self._lists.clear()
            else:
                for key in [k for k in self._lists if k[0] == _key(url)]:
                    del self._lists[key]


# --- finished shots ---------------------------------------------------------------------------------------------


class ResultCache:
    """Finished shots on disk, keyed by what made them; a hit returns the saved video in ~1 ms.

    Parameters:
        directory: the cache folder (entries go under ``<directory>/results``).
        max_bytes: bound of the cache's size; least recently used entries are removed beyond it.

    The key is a SHA-256 over: the WanGP version of the server that made the shot, the model, every setting
    (``client_id`` excepted: it names a job, it does not change the video), the seed, and the SHA-256 of each
    input file's *content* (a changed image misses even under the same name). Settings with ``seed=-1`` have
    no key: they never hit and are never stored.

    Entries hold hard links to the saved files (copies across file systems); a hit links (or copies) them
    into ``output_dir`` under a new name, so the cache's own files are never handed out to be edited.
    """

    def __init__(self, directory: str | Path, *, max_bytes: int = RESULT_CACHE_MAX_BYTES) -> None:
        self.directory = Path(directory).expanduser() / "results"
        self.max_bytes = max_bytes
        self.stats = {"hits": 0, "misses": 0, "stores": 0}
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, int], str] = {}

    def key(self, settings: GenerationSettings, wangp_version: str | None) -> str | None:
        """The cache key of a request on a server of ``wangp_version``; None when it can't be cached."""
        if settings.seed == -1 or not wangp_version:
            return None
        data = settings.model_dump(mode="json", exclude={"client_id"})
        for name in MEDIA_FIELDS:
            value = getattr(settings, name)
            if isinstance(value, Path):
                data[name] = {"sha256": self._digest(value)}
            elif isinstance(value, list):
                data[name] = [{"sha256": self._digest(Path(v))} for v in value]
        data["extra"] = self._with_file_digests(settings.extra)
        material = {"key_version": RESULT_KEY_VERSION, "wangp_version": wangp_version, "model": settings.model,
                    "settings": data}
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def lookup(self, settings: GenerationSettings, wangp_version: str | None, *, output_dir: str | Path | None = None,
               job_id: str | None = None) -> GenerationResult | None:
        """The saved shot for this request, or None.

        With ``output_dir`` the files are linked (or copied) there under new names; else the result points at
        the cache's own files. The result carries ``cached=True`` and ``cached_from`` (the job that made it).
        """
        started = time.perf_counter()
        key = self.key(settings, wangp_version)
        if key is None:
            return None
        entry = self._entry_dir(key)
        try:
            meta = json.loads((entry / "result.json").read_bytes())
            names = [str(n) for n in meta["_files"]]
            sizes = [int(s) for s in meta["_sizes"]]
            video_name = str(meta["_video"])
        except (OSError, ValueError, KeyError, TypeError):
            with self._lock:
                self.stats["misses"] += 1
            return None
        sources = [entry / n for n in names]
        if not all(p.is_file() and p.stat().st_size == s for p, s in zip(sources, sizes, strict=True)):
            with self._lock:
                self.stats["misses"] += 1
            return None
        files = sources
        new_id = job_id or uuid.uuid4().hex[:12]
        if output_dir is not None:
            folder = Path(output_dir).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            files = [_link_into(folder, p, output_name(settings.prompt, settings.model, settings.seed, new_id,
                                                       p.suffix)) for p in sources]
        video = files[names.index(video_name)]
        try:
            os.utime(entry / "result.json")  # least recently used goes first when pruning
        except OSError:
            pass
        for private in ("_files", "_sizes", "_video", "_key"):
            meta.pop(private, None)
        meta.update(job_id=new_id, video_path=video, files=files, settings=settings, cached=True,
                    cached_from=meta.get("job_id"), elapsed_seconds=time.perf_counter() - started)
        with self._lock:
            self.stats["hits"] += 1
        return GenerationResult.model_validate(meta)

    def store(self, result: GenerationResult, request: GenerationSettings | None = None) -> str | None:
        """Keep a finished shot under the settings asked (``request``; else the result's); returns its key, or None
        when it can't be cached (random seed, no version). A later identical request finds it: the result's own
        settings hold what WanGP made of the request (its defaults, the size it chose), not the request."""
        key = self.key(request or result.settings, result.wangp_version)
        if key is None or getattr(result, "cached", False):
            return None
        final = self._entry_dir(key)
        if (final / "result.json").exists():
            return key
        files = [Path(p) for p in (result.files or [result.video_path])]
        if result.video_path not in files:
            files.append(Path(result.video_path))
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir(parents=True)
            names: list[str] = []
            for i, path in enumerate(files):
                name = f"{i:02d}{path.suffix.lower()}"
                _link_or_copy(path, tmp / name)
                names.append(name)
            meta = result.model_dump(mode="json", exclude={"settings"})
            meta.update(_files=names, _sizes=[(tmp / n).stat().st_size for n in names],
                        _video=names[files.index(Path(result.video_path))], _key=key)
            (tmp / "result.json").write_text(json.dumps(meta, indent=1))
            final.parent.mkdir(parents=True, exist_ok=True)
            if (final / "result.json").exists():
                return key
            if final.exists():  # a torn entry (no result.json): replace it
                shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        except OSError as exc:
            log.warning("could not cache the result of job %s: %s", result.job_id, exc)
            return None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            self.stats["stores"] += 1
        self.prune()
        return key

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self._entry_dir(key) / "result.json").is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*/result.json")) if self.directory.exists() else 0

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def prune(self) -> int:
        """Remove least recently used entries beyond ``max_bytes``. Returns how many were removed."""
        if not self.directory.exists():
            return 0
        entries = []
        for meta in self.directory.glob("*/*/result.json"):
            try:
                size = sum(p.stat().st_size for p in meta.parent.iterdir())
                entries.append((meta.stat().st_mtime, size, meta.parent))
            except OSError:
                continue
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, folder in sorted(entries):
            if total <= self.max_bytes:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed += 1
        return removed

    # --- inside -------------------------------------------------------------------------------------------

    def _entry_dir(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def _digest(self, path: Path) -> str:
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._digests.get(memo)
        if known is not None:
            return known
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._digests[memo] = value
        return value

    def _with_file_digests(self, value: Any) -> Any:
        """WanGP-only settings may name files too (e.g. a guide image): hash those that exist."""
        if isinstance(value, dict):
            return {k: self._with_file_digests(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._with_file_digests(v) for v in value]
        if isinstance(value, str) and 0 < len(value) < 4096 and "\n" not in value and ("/" in value or "\\" in value
                                                                                        or "." in value):
            path = Path(value).expanduser()
            try:
                if path.is_file():
                    return {"file_sha256": self._digest(path)}
            except OSError:
                pass
        return value


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _link_into(folder: Path, source: Path, name: str) -> Path:
    """Link (or copy) ``source`` into ``folder`` under a free name; never overwrites."""
    for _ in range(100):
        dest = unique_path(folder, name)
        try:
            os.link(source, dest)
            return dest
        except FileExistsError:
            continue  # taken meanwhile by another thread: try the next name
        except OSError:
            with dest.open("xb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out)
            return dest
    raise OSError(f"no free file name for {name} in {folder}")


def cached_generate(client: Wan2GPClient, settings: GenerationSettings | dict[str, Any], cache: ResultCache, *,
                    use_cache: bool = True, timeout: float | None = None) -> GenerationResult:
    """``client.generate(settings)`` through ``cache``: a fixed-seed request made before returns the saved shot.

    Parameters:
        use_cache: False skips the look-up (the new result is still stored).
    Raises what :meth:`Wan2GPClient.generate` raises.
    """
    from ._client import _as_settings

    request = _as_settings(settings if isinstance(settings, GenerationSettings) else dict(settings), {})
    client.connect()
    version = client.get_server_status().wangp_version
    if use_cache:
        hit = cache.lookup(request, version, output_dir=client.settings.output_dir)
        if hit is not None:
            return hit
    result = client.generate(request, timeout=timeout)
    cache.store(result, request)
    return result
