"""WanGP's MCP contracts, told apart from ``tools/list`` alone, and the server's answers read tolerantly.

Three contracts are known (``docs/wangp-mcp.md``; captures in ``tests/captures/``):

- ``v1-12``: API v1 as WanGP 12.x serves it (``wangp_get_job``, no ``wangp_models``);
- ``v1-13``: API v1 as WanGP 13+ serves it with ``--mcp-api-version 1`` (adds ``wangp_models``/``wangp_model``);
- ``v2``: API v2, the default from 13.01 on (``wangp_session``; ``wangp_generate`` takes only action/arguments).

The contract is never probed with a trial call: v1 tools ignore unknown keys, so a v2-shaped call to a v1 tool
"works" and answers something else. Extra tools (plugins, forks) are tolerated; only required names count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .._errors import UnsupportedServerError


class Contract(StrEnum):
    """Which of WanGP's MCP tool contracts a server speaks."""

    V1_12 = "v1-12"
    V1_13 = "v1-13"
    V2 = "v2"

    @property
    def is_v2(self) -> bool:
        return self is Contract.V2


# Tools each contract needs for what this client does (generate, poll, cancel, models, transfer tickets).
REQUIRED_TOOLS: dict[Contract, frozenset[str]] = {
    Contract.V1_12: frozenset({"wangp_generate", "wangp_get_job", "wangp_cancel_job", "wangp_get_model_schema",
                               "wangp_get_default_settings", "wangp_list_models", "wangp_list_gallery"}),
    Contract.V1_13: frozenset({"wangp_generate", "wangp_get_job", "wangp_cancel_job", "wangp_models",
                               "wangp_model", "wangp_list_gallery"}),
    Contract.V2: frozenset({"wangp_generate", "wangp_session", "wangp_models", "wangp_model"}),
}
TRANSFER_TOOLS_V1 = frozenset({"wangp_create_gallery_upload", "wangp_create_gallery_download"})


@dataclass(frozen=True)
class ToolInfo:
    """One tool of ``tools/list``: its name and the property names of its input schema."""

    name: str
    properties: frozenset[str] = frozenset()

    @classmethod
    def from_sdk(cls, tool: Any) -> ToolInfo:
        schema = getattr(tool, "inputSchema", None) or {}
        if not isinstance(schema, Mapping):
            schema = {}
        return cls(str(getattr(tool, "name", "")), frozenset((schema.get("properties") or {}).keys()))

    @classmethod
    def from_dict(cls, tool: Mapping[str, Any]) -> ToolInfo:
        schema = tool.get("inputSchema") or {}
        return cls(str(tool.get("name", "")), frozenset((schema.get("properties") or {}).keys()))


def detect_contract(tools: Iterable[ToolInfo], *, server: str | None = None) -> Contract:
    """The contract of a server from its tools; :class:`UnsupportedServerError` when it is none we know."""
    by_name = {t.name: t for t in tools}
    generate = by_name.get("wangp_generate")
    if "wangp_session" in by_name and generate is not None and "source" not in generate.properties:
        contract = Contract.V2
    elif "wangp_get_job" in by_name and ("wangp_models" in by_name or "wangp_model" in by_name):
        contract = Contract.V1_13
    elif "wangp_get_job" in by_name:
        contract = Contract.V1_12
    else:
        names = ", ".join(sorted(by_name)[:8]) or "none"
        raise UnsupportedServerError(
            f"the MCP server at {server or 'this URL'} is not a WanGP server this client knows (its tools: {names})",
            server=server, hint="start WanGP with --mcp --mcp-transport streamable-http")
    missing = sorted(REQUIRED_TOOLS[contract] - set(by_name))
    if missing:
        raise UnsupportedServerError(
            f"the WanGP MCP server ({contract.value}) lacks tools this client needs: {', '.join(missing)}",
            missing=missing, server=server, hint="update WanGP, or report this server's version")
    return contract


# --- tool results ---------------------------------------------------------------------------------------------


def result_data(result: Any) -> Any:
    """The answer of a successful tool call: ``structuredContent`` when given, else the JSON of its text blocks.

    v1 tools typed as lists answer ``{"result": [...]}`` (and one text block per item).
    """
    structured = getattr(result, "structuredContent", None)
    if structured is not None:
        if isinstance(structured, Mapping) and set(structured) == {"result"}:
            return structured["result"]
        return structured
    texts: list[str] = [t for c in getattr(result, "content", None) or [] if isinstance(t := getattr(c, "text", None),
                                                                                       str)]
    if not texts:
        return None
    parsed = []
    for text in texts:
        try:
            parsed.append(json.loads(text))
        except ValueError:
            parsed.append(text)
    return parsed[0] if len(parsed) == 1 else parsed


def error_text(result: Any) -> str:
    """The text of a refused call (``isError``), without the SDK's ``Error executing tool <name>:`` prefix."""
    texts = [getattr(c, "text", "") for c in getattr(result, "content", None) or []]
    text = " ".join(t for t in texts if t).strip() or "the server refused the call without a message"
    return re.sub(r"^Error executing tool [\w.-]+:\s*", "", text)


# --- model records: capabilities and media roles given as lists or as boolean maps ------------------------------


def names_of(value: Any) -> frozenset[str]:
    """Capability or role names, from a list of names (v2, 13+'s ``wangp_models``) or a ``{name: bool}`` map."""
    if isinstance(value, Mapping):
        return frozenset(str(k) for k, v in value.items() if v)
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(str(v) for v in value)
    return frozenset()


def media_roles(value: Any) -> dict[str, frozenset[str]]:
    """``media_inputs`` as ``{kind: {roles}}``, from ``{"image": ["start"]}`` or ``{"image": {"start": true}}``."""
    if not isinstance(value, Mapping):
        return {}
    return {str(kind): names_of(roles) for kind, roles in value.items() if names_of(roles)}


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


@dataclass(frozen=True)
class ModelRecord:
    """A model of the server's catalog."""

    model_type: str
    name: str = ""
    family: str = ""
    main_output: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    media_inputs: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, record: Mapping[str, Any]) -> ModelRecord:
        return cls(
            model_type=str(record.get("model_type", "")),
            name=str(record.get("name") or ""),
            family=str(record.get("family") or ""),
            main_output=tuple(_as_list(record.get("main_output"))),
            inputs=tuple(_as_list(record.get("inputs"))),
            capabilities=names_of(record.get("capabilities")),
            media_inputs=media_roles(record.get("media_inputs")),
        )


@dataclass(frozen=True)
class ModelSchema:
    """One model's limits, declarations and defaults, as the server gives them.

    ``resolutions`` is empty when the server does not list them (then only the form ``WxH`` is checked).
    """

    record: ModelRecord
    fps: int | None
    frames_minimum: int | None
    frames_step: int | None
    frames_maximum: int | None
    defaults: Mapping[str, Any]
    resolutions: tuple[str, ...] = ()
    # The modes of each control input the schema declares, as (label, value) pairs by our role name
    # ("video_guide", "video_mask", "image_refs"); "none" choices (an empty value) left out. Empty when the
    # schema declares none.
    control_choices: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, schema: Mapping[str, Any], defaults: Mapping[str, Any]) -> ModelSchema:
        meta = schema.get("metadata") if isinstance(schema.get("metadata"), Mapping) else schema
        assert isinstance(meta, Mapping)

        def number(key: str) -> int | None:
            value = meta.get(key)
            return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        resolutions = meta.get("resolutions") or schema.get("resolutions") or ()
        return cls(
            record=ModelRecord.parse(meta),
            fps=number("fps"),
            frames_minimum=number("frames_minimum"),
            frames_step=number("frames_steps") or number("frames_step"),
            frames_maximum=number("frames_maximum"),
            defaults=dict(defaults),
            resolutions=tuple(_resolution_text(r) for r in resolutions if _resolution_text(r)),
            control_choices={role: pairs for key, role in CONTROL_DECLARATIONS
                             if (pairs := _declared_choices(meta.get(key)))},
        )


# WanGP's model definition keys that declare the modes of the control inputs, and our name of each input.
CONTROL_DECLARATIONS = (("guide_preprocessing", "video_guide"), ("mask_preprocessing", "video_mask"),
                        ("image_ref_choices", "image_refs"))


def _declared_choices(declaration: Any) -> tuple[tuple[str, str], ...]:
    """(label, value) pairs of a declaration ``{"choices": [[label, value], ...]}`` or ``{"selection": [value,
    ...]}`` (the forms WanGP's model definitions use); a value without a label is its own label."""
    if not isinstance(declaration, Mapping):
        return ()
    pairs: list[tuple[str, str]] = []
    for choice in list(declaration.get("choices") or ()) + list(declaration.get("selection") or ()):
        if isinstance(choice, list | tuple) and len(choice) > 1:
            label, value = str(choice[0]), str(choice[1] or "")
        else:
            label = value = str(choice or "")
        if value and value not in (v for _, v in pairs):
            pairs.append((label, value))
    return tuple(pairs)


def _resolution_text(value: Any) -> str:
    """A resolution choice as ``"832x480"``: from a string, or a ``[label, "832x480"]`` pair."""
    if isinstance(value, list | tuple) and value:
        value = value[-1]
    return str(value).strip() if isinstance(value, str | int) else ""
