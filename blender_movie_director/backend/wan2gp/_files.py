"""Output files: safe names, streamed downloads to a temporary name, checked, then renamed.

No name that comes from the server is used as a path: the file name is ours (prompt words, model, seed,
job id), only the extension is taken from the server's name, and only from a short allow-list. What the server
says about a file is checked before anything is fetched: it must be offered by the server itself (same scheme,
host and port: a gallery can't send the client to another machine), and a path with ``..`` is refused.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._errors import JobFailedError, Wan2GPConnectionError, Wan2GPTimeoutError
from ._mp4 import NotAVideo, VideoInfo, probe

OUTPUT_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".png", ".jpg", ".jpeg", ".webp", ".wav", ".mp3", ".flac"}
CHUNK = 1024 * 1024


def safe_name(text: str, max_length: int = 48) -> str:
    """Words of ``text`` as a portable file-name part: ASCII letters, digits, ``-`` and ``_`` only."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_")
    words = words[:max_length].rstrip("_")
    return words or "shot"[: max(1, max_length)]


def output_name(prompt: str, model: str, seed: int, job_id: str, suffix: str) -> str:
    suffix = suffix.lower() if suffix.lower() in OUTPUT_SUFFIXES else ".mp4"
    return f"{safe_name(prompt)}_{safe_name(model, 32)}_s{seed}_{safe_name(job_id, 16)}{suffix}"


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3`` ... if taken: a finished shot is never overwritten."""
    path = folder / name
    stem, suffix = path.stem, path.suffix
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


@dataclass(frozen=True)
class RemoteFile:
    """A file the server offers: its URL and the name it gives (used for the extension only)."""

    url: str
    name: str
    size: int | None = None


class UnsafeOutputError(JobFailedError):
    """The server described an output the client will not fetch (another host, a path with ``..``)."""


_MAX_GALLERY_ITEMS = 1000  # a WanGP gallery keeps its last few dozen outputs (CLEAR_FILE_LIST)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _has_dot_dot(path: str) -> bool:
    decoded = urllib.parse.unquote(urllib.parse.unquote(path))
    return any(part == ".." for part in re.split(r"[/\\]", decoded))


def checked_url(url: str, base_url: str) -> str:
    """``url`` if it is on the server at ``base_url`` and has no ``..`` segment; else :class:`UnsafeOutputError`."""
    if any(ord(c) < 32 for c in url):
        raise UnsafeOutputError(f"the server offered an output with control characters in its URL: {url[:120]!r}")
    absolute = urllib.parse.urljoin(base_url, url)
    if _origin(absolute) != _origin(base_url):
        raise UnsafeOutputError(
            f"the server offered an output on another host ({urllib.parse.urlsplit(absolute).netloc}); "
            "refused: the client only downloads from the server it is connected to",
            hint="if WanGP sits behind a proxy, connect through the proxy's own address")
    if _has_dot_dot(urllib.parse.urlsplit(absolute).path) or _has_dot_dot(urllib.parse.urlsplit(absolute).query):
        raise UnsafeOutputError(f"the server offered an output whose path goes up with '..': {url[:160]!r}; refused")
    return absolute


def gallery_files(gallery: Any, base_url: str) -> list[RemoteFile]:
    """The files of a Gallery value (``[{"video"|"image": FileData|path, "caption"}]``), in order.

    Raises :class:`UnsafeOutputError` for an entry on another host or with ``..`` in its path.
    """
    if isinstance(gallery, dict) and "value" in gallery:  # an update dict
        gallery = gallery["value"]
    if not isinstance(gallery, list | tuple):
        return []
    files: list[RemoteFile] = []
    for item in list(gallery)[-_MAX_GALLERY_ITEMS:]:
        media = item.get("video") or item.get("image") if isinstance(item, dict) else item
        if isinstance(media, dict):
            path = str(media.get("path") or "")
            url = str(media.get("url") or (f"{base_url}file={path}" if path else ""))
            name = media.get("orig_name") or path
            size = media.get("size")
        elif isinstance(media, str):
            path = media
            url, name, size = f"{base_url}file={media}", media, None
        else:
            continue
        if path and _has_dot_dot(path):
            raise UnsafeOutputError(f"the server offered an output whose path goes up with '..': {path[:160]!r}; "
                                    "refused")
        if url:
            files.append(RemoteFile(url=checked_url(url, base_url), name=str(name),
                                    size=size if isinstance(size, int) and not isinstance(size, bool) else None))
    return files


def download(
    remote: RemoteFile,
    dest: Path,
    *,
    client: httpx.Client,
    max_bytes: int,
    timeout: float,
    read_timeout: float | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Stream ``remote`` into ``dest``'s folder under a temporary name, ``check`` it, and rename it to ``dest``.

    Bounded: at most ``max_bytes`` (and no more than the size the server announced), within ``timeout``
    seconds overall, and ``read_timeout`` seconds without a byte. The temporary file is removed on any failure
    (including a failed ``check``), so no half-written or rejected output is ever left behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
    deadline = time.monotonic() + timeout
    limit = max_bytes if remote.size is None else min(max_bytes, remote.size)
    per_read = httpx.Timeout(read_timeout or timeout)
    try:
        with client.stream("GET", remote.url, timeout=per_read, follow_redirects=False) as response:
            response.raise_for_status()
            try:
                announced = int(response.headers.get("content-length") or -1)
            except ValueError:
                announced = -1
            if announced > max_bytes:
                raise JobFailedError(
                    f"the server offers a {announced} byte file, over the {max_bytes} byte limit",
                    hint="raise max_download_bytes if this is expected",
                )
            written = 0
            with tmp.open("wb") as f:
                for chunk in response.iter_bytes():  # as the bytes arrive: the deadline is checked often
                    written += len(chunk)
                    if written > limit:
                        if limit < max_bytes:
                            raise JobFailedError(f"the server sent more than the {remote.size} bytes it announced "
                                                 f"for {remote.name!r}; stopped")
                        raise JobFailedError(f"the download exceeded the {max_bytes} byte limit; stopped",
                                             hint="raise max_download_bytes if this is expected")
                    if time.monotonic() > deadline:
                        raise Wan2GPTimeoutError(f"downloading {remote.name} took longer than {timeout:.0f} s")
                    f.write(chunk)
            if announced >= 0 and written != announced:
                raise JobFailedError(f"the download is incomplete ({written} of {announced} bytes)")
        if check is not None:
            check(tmp)
        os.replace(tmp, dest)
        return dest
    except httpx.TimeoutException as exc:
        raise Wan2GPTimeoutError(f"downloading {remote.name} timed out") from exc
    except httpx.HTTPStatusError as exc:
        raise JobFailedError(f"the server could not give the output ({exc.response.status_code})") from exc
    except httpx.TransportError as exc:
        raise Wan2GPConnectionError(f"the connection dropped while downloading {remote.name}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def sweep_partial_files(folder: Path, older_than: float = 3600.0) -> int:
    """Remove ``.*.part`` files a killed process left in ``folder``; returns how many were removed."""
    import time

    removed = 0
    if not folder.is_dir():
        return 0
    for part in folder.glob(".*.part"):
        try:
            if time.time() - part.stat().st_mtime > older_than:
                part.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def check_video(path: Path, *, frames: int | None, fps: float | None, size: tuple[int, int] | None) -> VideoInfo:
    """Raise :class:`JobFailedError` unless ``path`` is a complete video with what was asked."""
    try:
        info = probe(path)
    except NotAVideo as exc:
        raise JobFailedError(f"the output is not a usable video: {exc}") from exc
    problems = []
    if frames is not None and info.frames != frames:
        problems.append(f"{info.frames} frames instead of {frames}")
    if fps is not None and abs(info.fps - fps) > 0.01:
        problems.append(f"{info.fps:g} fps instead of {fps:g}")
    if size is not None and (info.width, info.height) != size:
        problems.append(f"{info.width}x{info.height} instead of {size[0]}x{size[1]}")
    if problems:
        raise JobFailedError("the output does not match the request: " + ", ".join(problems))
    return info


def must_be_video(path: Path) -> None:
    """Reject a download that is not a complete MP4/MOV video (it is removed, never kept under a final name)."""
    try:
        probe(path)
    except NotAVideo as exc:
        raise JobFailedError(f"the server's output is not a usable video: {exc}; nothing was kept",
                             hint="check WanGP's console; the output may be damaged") from exc
    except OSError as exc:
        raise JobFailedError(f"the downloaded output could not be read: {exc}") from exc
