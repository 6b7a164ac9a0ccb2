"""What real WanGP servers answered, kept in the repository so that a clone runs the whole suite.

See ``README.md`` beside this file for what each capture is. Files are stored gzipped; :func:`load` reads one.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# WanGP release -> the prefix of its web-UI captures (config, view_api, gradio_api_info, endpoints_summary).
RELEASES = {"6.31": "2025-06", "8.11": "v8.11", "9.81": "v9.81", "11.66": "v11.66", "12.60": "head-2026-08"}


def path(name: str) -> Path:
    """The stored file of capture ``name`` (``"v9.81_config.json"``), gzipped or not."""
    for candidate in (HERE / f"{name}.gz", HERE / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no capture {name!r} in {HERE}")


@cache
def load(name: str) -> Any:
    """The parsed JSON of capture ``name``; callers must not change it (it is cached)."""
    file = path(name)
    raw = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    return json.loads(raw)


def web_ui(release: str, kind: str) -> Any:
    """``web_ui("9.81", "config")``: one of a release's web-UI captures."""
    return load(f"{RELEASES[release]}_{kind}.json")
