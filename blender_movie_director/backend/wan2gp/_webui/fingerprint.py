"""Recognise a WanGP web UI from its Gradio ``/config``.

WanGP sets no API names and no version endpoint; what identifies it is the page itself: the Blocks title is
``"WanGP"`` and the header markdown reads ``Wan<SUP ...>GP</SUP> v12.60 by DeepBeepMeep`` (v6.31 the same
without the style attribute). Both were seen in the captured real ``/config`` of 12.60 and 6.31.
"""

from __future__ import annotations

import re
from typing import Any

# "Wan<SUP style=...>GP</SUP> v12.60" (12.x) and "Wan<SUP>GP</SUP> v6.31" (6.x); also tolerate plain "WanGP v7.0".
_HEADER_VERSION = re.compile(r"Wan\s*(?:<SUP[^>]*>\s*)?GP\s*(?:</SUP>)?\s*v(\d+(?:\.\d+)*)", re.IGNORECASE)


def wangp_version(config: dict[str, Any]) -> str | None:
    """The WanGP version a Gradio ``/config`` announces (``"12.60"``), or ``None`` if it is not WanGP."""
    for component in config.get("components") or ():
        if not isinstance(component, dict) or component.get("type") not in ("markdown", "html"):
            continue
        value = (component.get("props") or {}).get("value")
        if isinstance(value, str):
            match = _HEADER_VERSION.search(value)
            if match:
                return match.group(1)
    return None


def is_wangp(config: dict[str, Any]) -> bool:
    """True when the config is WanGP's web UI (title and header), whatever its version."""
    title = str(config.get("title") or "").strip().lower()
    return title in ("wangp", "wan2gp") or wangp_version(config) is not None


def startup_model(config: dict[str, Any]) -> str | None:
    """The model a new web-UI session starts with: the value of the model dropdown that WanGP's add-task step
    reads (the one dropdown among its inputs, on every captured release from 6.31 to 12.60). WanGP builds its page
    once, at start, with the model it last used, so this is the server's model as of its start; a session may
    have switched since, and the server does not say."""
    components = {c.get("id"): c for c in config.get("components") or () if isinstance(c, dict)}
    for dep in config.get("dependencies") or ():
        if not isinstance(dep, dict) or dep.get("api_name") != "process_prompt_and_add_tasks":
            continue
        dropdowns = [components[i] for i in dep.get("inputs", ()) if components.get(i, {}).get("type") == "dropdown"]
        if len(dropdowns) == 1:
            value = (dropdowns[0].get("props") or {}).get("value")
            return str(value) if isinstance(value, str) and value else None
    return None


def gradio_version(config: dict[str, Any]) -> str | None:
    """The Gradio version of the server (``config["version"]``), e.g. ``"5.29.0"``."""
    version = config.get("version")
    return str(version) if version else None


def version_tuple(version: str | None) -> tuple[int, ...]:
    """``"12.60"`` -> ``(12, 60)``; anything unparsable -> ``()``."""
    if not version:
        return ()
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)
