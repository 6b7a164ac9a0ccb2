"""Output files: safe names, streamed downloads to a temporary name, checked, then renamed.

No name that comes from the server is used as a path: the file name is ours (prompt words, model, seed,
job id), only the extension is taken from the server's name, and only from a short allow-list.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._mp4 import NotAVideo, VideoInfo, probe
from .errors import JobFailedError, Wan2GPConnectionError, Wan2GPTimeoutError

OUTPUT_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".png", ".jpg", ".jpeg", ".webp", ".wav", ".mp3", ".flac"}
CHUNK = 1024 * 1024


def safe_name(text: str, max_length: int = 48) -> str:
    """Words of ``text`` as a portable file-name part: ASCII letters, digits, ``-`` and ``_`` only."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_")
    words = words[:max_length].rstrip("_")
    return words or "shot"


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


def gallery_files(gallery: Any, base_url: str) -> list[RemoteFile]:
    """The files of a Gallery value (``[{"video"|"image": FileData|path, "caption"}]``), in order."""
    if isinstance(gallery, dict) and "value" in gallery:  # an update dict
        gallery = gallery["value"]
    files: list[RemoteFile] = []
    for item in gallery or []:
        media = item.get("video") or item.get("image") if isinstance(item, dict) else item
        if isinstance(media, dict):
            path = media.get("path") or ""
            url = media.get("url") or (f"{base_url}file={path}" if path else "")
            name = media.get("orig_name") or path
            size = media.get("size")
        elif isinstance(media, str):
            url, name, size = f"{base_url}file={media}", media, None
        else:
            continue
        if url:
            files.append(RemoteFile(url=url, name=str(name), size=size if isinstance(size, int) else None))
    return files


def download(
    remote: RemoteFile,
    dest: Path,
    *,
    client: httpx.Client,
    max_bytes: int,
    timeout: float,
) -> Path:
    """Stream ``remote`` into ``dest``'s folder under a temporary name and rename it to ``dest``.

    The temporary file is removed on any failure, so no half-written output is ever left behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        with client.stream("GET", remote.url, timeout=timeout, follow_redirects=False) as response:
            response.raise_for_status()
            announced = int(response.headers.get("content-length") or -1)
            if announced > max_bytes:
                raise JobFailedError(
                    f"the server offers a {announced} byte file, over the {max_bytes} byte limit",
                    hint="raise max_download_bytes if this is expected",
                )
            written = 0
            with tmp.open("wb") as f:
                for chunk in response.iter_bytes(CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise JobFailedError(f"the download exceeded the {max_bytes} byte limit; stopped")
                    f.write(chunk)
            if announced >= 0 and written != announced:
                raise JobFailedError(f"the download is incomplete ({written} of {announced} bytes)")
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
