"""WanGP's behaviour behind the emulated endpoints: session state, queue, generation worker, status and files.

One :class:`WanGP` object serves one emulated server. Each handler ``h_<function name>`` receives the dependency
it is bound to, the input values by parameter name and a :class:`Call` (the session's ``state`` dict, the
``gr.Request``, the ``gr.Progress``), and returns what WanGP's function of that name returns: one value per output
component, in the dependency's output order, ``gr.update()`` where WanGP returns an update for a widget.

Outputs are addressed by *role* (``gallery``, ``queue_view``, ``model_choice``... see ``data/extract.py``): a
handler answers with a {role: value} dict, and :meth:`WanGP.reply` puts each value at the place the release's
dependency has that component, so one handler serves every release. What the captures cannot show differs through
``spec.behaviour`` (``_spec.Behaviour``).

The code follows WanGP's own functions (``wgp.py`` of 6.31 to 12.60); comments name the real behaviour copied,
including its quirks (an idle abort on a fresh session raising ``KeyError('prompt_no')``, settings files without a
``mode`` key failing with ``KeyError('mode')``, an abort request left over after ``process_tasks`` skipping the next
run's first task until ``finalize_generation`` ran).
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import os
import queue as queue_module
import random
import re
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from . import _catalog, _media, _settings, _spec

# Exact texts of the real server (reference §4, wgp.py).
HF_MISSING_ERROR = (
    "An error happened while trying to locate the file on the Hub and we cannot find the requested files in the "
    "local cache. Please check your connection and try again or make sure your Internet connection is on."
)
WEBFORM_ERROR = ("Webform can not be used as the App has been restarted since the form was displayed. "
                 "Please refresh the page")
ERROR_QUEUE_INFO = "Error Queue autosaved successfully to error_queue.zip"
ABORT_REQUEST_MSG = "Processing Request to abort Current Generation"
PAUSE_MSG = "Generation on Pause, click Resume to Restart Generation"
QUEUE_EMPTY_HTML = "<div style='text-align: center; color: grey; padding: 20px;'>Queue is empty.</div>"
FAIL_MARKER, SLOW_MARKER = "[[fail]]", "[[slow]]"
FAIL_MESSAGE = "Generation failed: the prompt contains the [[fail]] marker (WanGP emulator fault switch)"
CLEAR_FILE_LIST = 5  # wgp_config.json "clear_file_list": the gallery keeps the last 5 files when a run starts
DOWNLOAD_TTL = 600.0  # /wangp_api/download tokens expire after 10 minutes and serve once

STATE_FILE = "wgp_config.json"  # where change_model records last_model_type (WanGP's server config file)


class GenerationError(Exception):
    """A failure inside a generation: reported by process_tasks as gr.Error, and the queue is cleared."""


@dataclass
class Call:
    """What a handler gets besides its inputs."""

    state: dict
    request: Any = None
    progress: Any = None
    event: Any = None


@dataclass
class Download:
    filename: str
    mime_type: str
    data: bytes
    created: float = field(default_factory=time.monotonic)


def format_time(seconds: float) -> str:
    """wgp.py format_time."""
    hours, minutes, secs = int(seconds // 3600), int((seconds % 3600) // 60), int(seconds % 60)
    if hours > 0:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if seconds >= 60:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def merge_status_context(status: str = "", context: str = "", *, keeps_time: bool = True) -> str:
    """wgp.py merge_status_context (8.11 and later keep a ``phase | time`` context intact)."""
    if not status:
        return context
    if not context:
        return status
    if keeps_time and "|" in context:
        head, tail = context.split("|", 1)
        return f"{status} - {head.strip()} | {tail.strip()}"
    return f"{status} - {context}"


def generation_status(prompt_no: int, prompts_max: int, repeat_no: int, repeat_max: int,
                      window_no: int = 1, total_windows: int = 1) -> str:
    """wgp.py get_generation_status."""
    if prompts_max == 1:
        status = "" if repeat_max <= 1 else f"Sample {repeat_no}/{repeat_max}"
    elif repeat_max <= 1:
        status = f"Prompt {prompt_no}/{prompts_max}"
    else:
        status = f"Prompt {prompt_no}/{prompts_max}, Sample {repeat_no}/{repeat_max}"
    if total_windows > 1:
        status += (", " if status else "") + f"Sliding Window {window_no}/{total_windows}"
    return status


def fit_to_image(width: int, height: int, image_width: int, image_height: int, block: int = 16) -> tuple[int, int]:
    """The size WanGP gives a shot with a start image: the image's aspect, within the chosen resolution's pixel
    budget, each side a multiple of 16 (wgp.py's ``calculate_new_dimensions`` with its default ``fit_canvas`` 0).
    A 1920x1080 start image at 832x480 gives 848x480, as a real 12.60 did."""
    scale = (width * height / (image_width * image_height)) ** 0.5
    return round(image_width * scale / block) * block, round(image_height * scale / block) * block


def sanitize_file_name(text: str) -> str:
    text = re.sub(r'[<>:"/\\|?*\x00-\x1f]', "", text)
    return text.replace("\n", " ").strip()[:100]


class WanGP:
    """The emulated WanGP server logic for one flavour."""

    def __init__(self, flavour: str, *, output_dir: Path, step_seconds: float, missing_weights: bool,
                 crash_after_steps: int | None, load_seconds: float = 0.0, state_dir: Path | None = None) -> None:
        self.flavour = flavour
        self.spec = _spec.load(flavour)
        self.behaviour = self.spec.behaviour
        self.version = self.spec.version
        self.output_dir = output_dir
        self.step_seconds = max(0.0, float(step_seconds))
        self.load_seconds = max(0.0, float(load_seconds))
        self.missing_weights = missing_weights
        self.crash_after_steps = crash_after_steps
        self.main_state_id = self.spec.main_state
        self.state_file = (state_dir if state_dir is not None else output_dir) / STATE_FILE
        self.server_config = self._read_server_config()
        # wgp.py: transformer_type = server_config.get("last_model_type"); a model unknown to the release (or a
        # 6.31 server, which never records it) starts with the release's default.
        last = self.server_config.get("last_model_type")
        self.startup_model = last if _catalog.model(flavour, str(last)) is not None else self.spec.startup_model
        self.lock = threading.RLock()  # wgp.py's global `lock` around queue edits
        self._control_cids: dict[int, str] | None = None
        self._events: list[dict] = []
        self._events_lock = threading.Lock()
        self._sessions: dict[str, dict] = {}
        self._task_id = 0
        self._steps_done = 0
        self.loaded_model: str | None = None
        self.settings_overrides: dict[str, dict] = {}  # save_inputs(target="settings") per model
        self._downloads: dict[str, Download] = {}
        self.stopping = threading.Event()
        self.gpu_lock = threading.Lock()  # one generation at a time across sessions, as WanGP's GPU lock

    # ------------------------------------------------------------------ state, sessions, events
    def initial_state(self) -> dict:
        return {"model_type": self.startup_model, "all_settings": {}, "gen": {"queue": []}, "validate_success": 0,
                "last_model_per_family": dict(self.server_config.get("last_model_per_family", {})),
                "last_model_per_type": dict(self.server_config.get("last_model_per_type", {}))}

    def _read_server_config(self) -> dict:
        if not self.behaviour.persists_last_model:
            return {}
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_server_config(self) -> None:
        """wgp.py change_model: the whole server config is rewritten at each model switch."""
        with self.lock:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.server_config, indent=4), encoding="utf-8")

    def attach(self, state: dict, request: Any) -> dict:
        session = getattr(request, "session_hash", None) or state.get("_session") or "local"
        state.setdefault("_session", session)
        with self._events_lock:
            self._sessions.setdefault(session, state)
        return state

    @staticmethod
    def gen(state: dict) -> dict:
        return state.setdefault("gen", {"queue": []})

    def emit(self, state: dict, event: str, task: dict | None = None, *, step: int | None = None,
             total: int | None = None, detail: str = "") -> None:
        params = (task or {}).get("params", {})
        record = {"t": time.monotonic(), "session": state.get("_session", ""), "event": event,
                  "task_id": (task or {}).get("id"), "client_id": params.get("client_id", "") or "",
                  "step": step, "total": total, "detail": detail}
        with self._events_lock:
            self._events.append(record)

    def events(self) -> list[dict]:
        with self._events_lock:
            return [dict(e) for e in self._events]

    def sessions(self) -> dict[str, dict]:
        with self._events_lock:
            states = dict(self._sessions)
        out = {}
        for session, state in states.items():
            with self.lock:
                gen = self.gen(state)
                out[session] = {
                    "model_type": state.get("model_type"),
                    "queue": [{"id": t["id"], "client_id": t["params"].get("client_id", "") or "",
                               "prompt": t["prompt"], "model_type": t["params"].get("model_type")}
                              for t in gen.get("queue", [])],
                    "generating": bool(gen.get("_running")),
                    "status_display": bool(gen.get("status_display")),  # refresh_status_async keeps looping
                    "gallery": [str(Path(p).resolve()) for p in gen.get("file_list", [])],
                    "audio_gallery": [str(Path(p).resolve()) for p in gen.get("audio_file_list", [])],
                }
        return out

    # ------------------------------------------------------------------ downloads (/wangp_api/download/<token>)
    def register_download(self, filename: str, mime_type: str, data: bytes) -> str:
        now = time.monotonic()
        with self._events_lock:
            for token in [t for t, d in self._downloads.items() if now - d.created > DOWNLOAD_TTL]:
                del self._downloads[token]
            token = uuid.uuid4().hex
            self._downloads[token] = Download(filename, mime_type, data)
        return json.dumps({"url": f"/wangp_api/download/{token}", "filename": filename})

    def pop_download(self, token: str) -> Download | None:
        with self._events_lock:
            job = self._downloads.pop(token, None)
        if job is None or time.monotonic() - job.created > DOWNLOAD_TTL:
            return None
        return job

    # ------------------------------------------------------------------ helpers
    def out(self, dep: _spec.Dependency, *values: Any) -> Any:
        """Shape a return value like gradio expects: bare value for one output, None for none."""
        n = len(dep.outputs)
        if len(values) < n:
            values = values + tuple(gr.update() for _ in range(n - len(values)))
        if n == 0:
            return None
        if n == 1:
            return values[0]
        return tuple(values[:n])

    def noop(self, dep: _spec.Dependency) -> Any:
        return self.out(dep)

    def reply(self, dep: _spec.Dependency, values: dict[str, Any], state: dict | None = None) -> Any:
        """One value per output, taken from ``values`` by the output's role; the session state where the
        dependency outputs it, ``gr.update()`` (no change) elsewhere."""
        answer = []
        for cid in dep.outputs:
            role = self.spec.role_of.get(cid)
            if role in values:
                answer.append(values[role])
            elif cid == self.main_state_id and state is not None:
                answer.append(state)
            else:
                answer.append(gr.update())
        return self.out(dep, *answer)

    def outputs_role(self, dep: _spec.Dependency, role: str) -> bool:
        return self.spec.roles.get(role) in dep.outputs

    def component(self, role: str) -> dict | None:
        cid = self.spec.roles.get(role)
        return self.spec.components.get(cid) if cid is not None else None

    def model_info(self, model_type: str) -> _catalog.ModelInfo:
        info = _catalog.model(self.flavour, model_type)
        if info is None:
            raise KeyError(model_type)  # WanGP crashes on unknown model types: a generic AppError
        return info

    def default_settings(self, model_type: str) -> dict:
        override = self.settings_overrides.get(model_type)
        return copy.deepcopy(override) if override else _settings.factory_settings(self.flavour, model_type)

    def current_settings(self, state: dict) -> dict:
        """wgp.py get_current_model_settings: creates the model's settings from its defaults when missing."""
        model_type = state["model_type"]
        settings = state["all_settings"].get(model_type)
        if settings is None:
            settings = self.default_settings(model_type)
            settings.setdefault("mode", "")  # the form's hidden "mode" field ("" = a normal generation)
            state["all_settings"][model_type] = settings
        return settings

    def latest_status(self, state: dict, context: str = "") -> str:
        gen = self.gen(state)
        status = generation_status(gen["prompt_no"], gen.get("prompts_max", 0), gen.get("repeat_no", 0),
                                   gen.get("total_generation", 1) + gen.get("extra_orders", 0),
                                   gen.get("window_no", 1), gen.get("total_windows", 1))
        return merge_status_context(status, context, keeps_time=self.behaviour.progress_desc != "phase")

    def queue_html(self, queue: list[dict]) -> str:
        """wgp.py generate_queue_html (12.6x): 'Queue is empty.' while fewer than 2 tasks (item 0 is current)."""
        if len(queue) <= 1:
            return QUEUE_EMPTY_HTML
        rows = []
        for i, item in enumerate(queue):
            if i == 0:
                continue
            full_prompt = html.escape(item["prompt"])
            short = (html.escape(item["prompt"][:97]) + "...") if len(item["prompt"]) > 100 else full_prompt
            thumb = (item.get("start_image_data_base64") or [None])[0]
            start = f'<div class="hover-image"><img src="{thumb}" alt="Start Image" /></div>' if thumb else ""
            hue = (item["id"] * 137.508 + 22241) % 360
            rows.append(
                f'<tr draggable="true" class="draggable-row pastel-row" data-index="{i - 1}" '
                f'style="--item-hue: {hue:.0f};" title="Drag to reorder">'
                f'<td class="center-align">{item.get("repeats", 1)}</td>'
                f'<td><div class="prompt-cell" title="{full_prompt}">{short}</div></td>'
                f'<td class="center-align">{item.get("length")}</td><td class="center-align">{item.get("steps")}</td>'
                f'<td class="center-align">{start}</td><td class="center-align"></td>'
                f'<td class="center-align"></td><td class="center-align"></td></tr>')
        header = ("<table><thead><tr><th style=\"width:5%;\" class=\"center-align\">Qty</th>"
                  "<th style=\"width:auto;\" class=\"text-left\">Prompt</th>"
                  "<th style=\"width:7%;\" class=\"center-align\">Length</th>"
                  "<th style=\"width:7%;\" class=\"center-align\">Steps</th>"
                  "<th style=\"width:10%;\" class=\"center-align\">Start/Ref</th>"
                  "<th style=\"width:10%;\" class=\"center-align\">End</th>"
                  "<th style=\"width:4%;\" class=\"center-align\" title=\"Edit\"></th>"
                  "<th style=\"width:4%;\" class=\"center-align\" title=\"Remove\"></th></tr></thead><tbody>")
        table = header + "".join(rows) + "</tbody></table>"
        return f'<div id="queue-scroll-container" style="max-height: 650px; overflow-y: auto;">{table}</div>'

    def queue_update(self, queue: list[dict]) -> Any:
        """wgp.py update_queue_data: an Html update (9.81 and later) or a Dataframe update (6.31, 8.11)."""
        if self.component("queue_view")["type"] == "html":
            return gr.update(value=self.queue_html(queue))
        data = []
        for i, item in enumerate(queue):
            if i == 0:
                continue
            short = (item["prompt"][:97] + "...") if len(item["prompt"]) > 100 else item["prompt"]
            cell = f'<span title="{item["prompt"].replace(chr(34), "&quot;")}">{short}</span>'
            data.append([item.get("repeats", "1"), cell, item.get("length"), item.get("steps"), "", "",
                         "\u2191", "\u2193", "\u2716"])
        if not data:
            return gr.update(visible=False)
        return gr.update(value=data, visible=True)

    # ------------------------------------------------------------------ model selection
    @staticmethod
    def _target_model(value: Any) -> str:
        """The model type in a hidden model-target value (``"t2v_1.3B|<time>"`` when the UI writes it)."""
        return str(value or "").split("|", 1)[0].strip()

    def _dropdown_updates(self, model_type: str) -> dict[str, Any]:
        return {role: gr.update(**kwargs) for role, kwargs in _catalog.model_dropdowns(self.flavour,
                                                                                        model_type).items()}

    def h_goto_model_type_with_filter(self, dep, args, call):
        """12.60; an unknown model type is accepted here (WanGP adds it to the lists), change_model_from_target
        then fails."""
        model_type = self._target_model(args["model_type"])
        if not model_type:
            return self.out(dep)
        return self.reply(dep, self._dropdown_updates(model_type))

    h_goto_model_type = h_goto_model_type_with_filter  # 9.x-11.x: the same without the output-filter trigger

    def h_refresh_model_dropdowns(self, dep, args, call):
        return self.reply(dep, self._dropdown_updates(call.state["model_type"]))

    def h_change_model_family(self, dep, args, call):
        family = args["current_model_family"]
        updates = _catalog.family_change(self.flavour, family, call.state.setdefault("last_model_per_family", {}))
        return self.reply(dep, {role: gr.update(**kwargs) for role, kwargs in updates.items()})

    def h_change_model_base_types(self, dep, args, call):
        updates = _catalog.base_type_change(self.flavour, args["current_model_family"],
                                            args["model_base_type_choice"],
                                            call.state.setdefault("last_model_per_type", {}))
        return self.reply(dep, {role: gr.update(**kwargs) for role, kwargs in updates.items()})

    def _header(self, model_type: str) -> dict[str, str]:
        """change_model's answer: a description Html and a header Markdown, or both in the header (up to 9.81)."""
        info = self.model_info(model_type)
        description = html.escape(f"{info.name}: emulated by the WanGP emulator ({info.output} output, "
                                  f"{info.fps} fps)")
        header = ("<DIV style='align:right;width:100%'><FONT SIZE=2>Attention mode <B>sdpa</B>, "
                  "Data Type <B>BF16</B></DIV>")
        if self.component("model_description") is not None:
            return {"model_description": f"<div style='height:40px'>{description}</div>", "header": header}
        return {"header": f"<DIV style='height:40px'>{description}</DIV>{header}"}

    def _select_model(self, call: Call, model_type: str) -> None:
        """wgp.py change_model: remember the model per family and per base type, record it in wgp_config.json
        (8.11 and later), then make it the session's model."""
        state = call.state
        info = _catalog.model(self.flavour, model_type)
        if info is None:
            if self.spec.model_switch[0] == "goto_model_type_with_filter":
                # 12.60: transfer_current_resolution_to_model reads the unknown model's definition (None) and
                # raises AttributeError before wgp_config.json is written: a generic error.
                raise AttributeError("'NoneType' object has no attribute 'get'")
            if self.behaviour.persists_last_model:
                # 9.x-11.x: the config is written and the state switched before generate_header reads the missing
                # definition and raises AttributeError (a generic error).
                self.server_config["last_model_type"] = model_type
                self._write_server_config()
            state["model_type"] = model_type
            raise AttributeError("'NoneType' object has no attribute 'get'")
        state.setdefault("last_model_per_family", {})[info.family] = model_type
        if self.spec.dropdown_levels == 3:
            state.setdefault("last_model_per_type", {})[info.base_model_type] = model_type
        if self.behaviour.persists_last_model:
            self.server_config["last_model_per_family"] = dict(state["last_model_per_family"])
            if self.spec.dropdown_levels == 3:
                self.server_config["last_model_per_type"] = dict(state["last_model_per_type"])
            self.server_config["last_model_type"] = model_type
            self._write_server_config()
        state["model_type"] = model_type

    def h_change_model_from_target(self, dep, args, call):
        model_type = self._target_model(args["model_type"])
        self._select_model(call, model_type)
        return self.reply(dep, self._header(model_type))

    def h_change_model(self, dep, args, call):
        model_choice = args["model_choice"]
        if model_choice is None:
            return self.out(dep)
        self._select_model(call, model_choice)
        return self.reply(dep, self._header(model_choice))

    # ------------------------------------------------------------------ form
    def h_fill_inputs(self, dep, args, call):
        settings = self.current_settings(call.state)
        info = self.model_info(call.state["model_type"])
        names = self.spec.input_names(self.spec.form_dep)
        template = self.spec.raw.get("fill_inputs_t2v_1.3B")
        api = iter(range(10_000))
        values = []
        for cid in dep.outputs:
            comp = self.spec.components[cid]
            if comp["skip_api"]:
                values.append(gr.update())
                continue
            index = next(api)
            base = dict(template[index]) if template and index < len(template) else {"__type__": "update"}
            if not isinstance(base, dict):
                base = {"__type__": "update", "value": base}
            name = names.get(cid)
            role = self._control_dropdowns().get(cid)
            if role is not None:  # the model's control modes (WanGP rebuilds these dropdowns per model)
                choices = _catalog.control_choices(self.flavour, info)[role]
                current = str(settings.get("video_prompt_type") or "")
                letters = {c for _, v in choices for c in v}
                value = "".join(c for c in current if c in letters)
                base = {"__type__": "update", "choices": [list(c) for c in choices],
                        "value": value if any(v == value for _, v in choices) else "",
                        "visible": len(choices) > 1}
            elif name is not None and name not in ("target", "lset_name"):
                base["value"] = copy.deepcopy(_settings.form_value(name, settings))
                if name == "resolution":
                    base["choices"] = [list(c) for c in _catalog.resolution_choices(self.flavour, base["value"])]
                elif name == "video_length":
                    base.update(self._frames_slider(info, base["value"], comp))
                elif name == "image_prompt_type" and comp["type"] == "radio":  # 6.31, 8.11: a Radio
                    base["choices"] = ([["Start Video with Image", "S"], ["Start and End Video with Images",
                                                                          "SE"]]
                                       if info.needs_start_image else [["", ""]])
            elif not template:
                base = {"__type__": "update"}
            values.append(base)
        return self.out(dep, *values)

    def _control_dropdowns(self) -> dict[int, str]:
        """{real component id: role} of the dropdowns the refresh_video_prompt_type_* handlers read (the first
        registered of each, as in WanGP: the generation tab's)."""
        if self._control_cids is None:
            found: dict[int, str] = {}
            for dep_id in sorted(self.spec.dependencies):
                dep = self.spec.dep(dep_id)
                for role in ("video_guide", "video_mask", "image_refs"):
                    if dep.fn == f"refresh_video_prompt_type_{role}" and role not in found.values():
                        for cid, name in self.spec.input_names(dep_id).items():
                            if name == f"video_prompt_type_{role}":
                                found[cid] = role
            self._control_cids = found
        return self._control_cids

    def _refresh_video_prompt_type(self, dep, args, role: str):
        """wgp.py refresh_video_prompt_type_*: the dropdown's letters replace its role's letters in
        video_prompt_type (del_in_sequence, then add_to_sequence); the visibility updates are left unchanged."""
        current = str(args.get("video_prompt_type") or "")
        chosen = str(args.get(f"video_prompt_type_{role}") or "")
        table = {"video_guide": _catalog._GUIDE_V12 + _catalog._GUIDE_V6, "video_mask": _catalog._MASK,
                 "image_refs": _catalog._REFS}[role]
        letters = {c for _, v in table for c in v}
        kept = "".join(c for c in current if c not in letters)
        return self.out(dep, kept + "".join(c for c in chosen if c not in kept))

    def h_refresh_video_prompt_type_video_guide(self, dep, args, call):
        return self._refresh_video_prompt_type(dep, args, "video_guide")

    def h_refresh_video_prompt_type_video_mask(self, dep, args, call):
        return self._refresh_video_prompt_type(dep, args, "video_mask")

    def h_refresh_video_prompt_type_image_refs(self, dep, args, call):
        return self._refresh_video_prompt_type(dep, args, "image_refs")

    def _frames_slider(self, info: _catalog.ModelInfo, value: Any, comp: dict) -> dict:
        if info.output != "video":
            return {"minimum": 1, "maximum": 1, "step": 1, "visible": False}
        if "frames = 1s" not in str(comp["props"].get("label")):  # 6.31 and 8.11 show no duration
            label = f"Number of frames ({info.fps} = 1s)"
        else:
            seconds = (float(value) / info.fps) if isinstance(value, (int, float)) else 0.0
            label = f"Number of frames ({info.fps} frames = 1s), current duration: {seconds:.1f}s"
        return {"minimum": info.frames_minimum, "maximum": info.frames_maximum, "step": info.frames_steps,
                "label": label, "visible": True, "interactive": True}

    def h_validate_wizard_prompt(self, dep, args, call):
        state = call.state
        state["validate_success"] = 0
        prompt = args.get("prompt")
        if args.get("wizard_prompt_activated") != "on":
            state["validate_success"] = 1
            return self.out(dep, prompt)
        names = [n for n in str(args.get("wizard_variables_names") or "").split("\n") if n]
        text = str(args.get("wizard_prompt") or "")
        for i, name in enumerate(names):
            value = args.get(f"param_{5 + i}")
            if not value:
                gr.Info(f"You need to provide a value for '{name}'")
                return self.out(dep, gr.update())
            text = text.replace("{" + name + "}", str(value))
        state["validate_success"] = 1
        return self.out(dep, text if names or text else prompt)

    def h_save_inputs(self, dep, args, call):
        state = call.state
        if state.pop("ignore_save_form", False):  # set by load_settings_from_file for another model
            return self.out(dep)
        values = dict(args)
        target = values.get("target")
        settings = _settings.settings_from_form(values)
        for cid, (field_name, default) in self.spec.hidden_states.items():
            if f"state_{cid}" in values and field_name != "plugin_data":  # plugin data is no task setting
                settings[field_name] = values[f"state_{cid}"] or copy.deepcopy(default)
        model_type = state["model_type"]
        if target == "settings":
            self.settings_overrides[model_type] = settings
            gr.Info("New Default Settings saved")
        elif target == "state":
            state["all_settings"][model_type] = settings
        elif target == "edit_state":
            state["edit_state"] = settings
        return self.out(dep)

    # ------------------------------------------------------------------ queue
    def _split_prompts(self, prompt: str, mode: Any) -> list[str]:
        lines = [ln for ln in prompt.replace("\r", "").split("\n") if not ln.lstrip().startswith(("#", "!"))]
        if isinstance(mode, int):  # up to 9.81: 0 = a video per line, 1 = one prompt (sliding windows)
            prompts = [ln.strip() for ln in lines if ln.strip()]
            return prompts if mode == 0 else (["\n".join(prompts)] if prompts else [])
        mode = str(mode or "PG")
        if mode == "G":
            return [ln.strip() for ln in lines if ln.strip()]
        if mode == "PG":
            text = "\n".join(lines)
            return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        text = "\n".join(lines).strip()
        return [text] if text else []

    def _validate(self, info: _catalog.ModelInfo, inputs: dict) -> str | None:
        """The checks of wgp.py validate_settings the emulator reproduces; the message is shown as gr.Info."""
        if inputs.get("cfg_star_switch", 0) != 0 and inputs.get("apg_switch", 0) != 0:
            return ("Adaptive Progressive Guidance and Classifier Free Guidance Star can not be set at the same "
                    "time")
        image_prompt_type = str(inputs.get("image_prompt_type") or "")
        video_prompt_type = str(inputs.get("video_prompt_type") or "")
        audio_prompt_type = str(inputs.get("audio_prompt_type") or "")
        frames = inputs.get("video_length")
        if info.output == "video" and int(inputs.get("image_mode") or 0) == 0:
            if not isinstance(frames, (int, float)) or not info.valid_frames(int(frames)) or frames != int(frames):
                return (f"The number of frames ({frames}) is not supported by {info.name}: it must be between "
                        f"{info.frames_minimum} and {info.frames_maximum} and of the form "
                        f"{info.frames_steps}n+1 (for example {info.nearest_frames(int(frames or 0))})")
        resolution = str(inputs.get("resolution") or "")
        if not re.fullmatch(r"\d+x\d+", resolution):
            return f"Invalid resolution '{resolution}'"
        has_image_input = "image" in info.inputs
        if "V" in image_prompt_type and not inputs.get("video_source"):
            return "You must provide a Source Video file to continue"
        if "S" in image_prompt_type and not has_image_input:
            return "This model doesn't accept a Start Image"
        if ("S" in image_prompt_type or info.needs_start_image) and not inputs.get("image_start"):
            return "You must provide a Start Image"
        if "E" in image_prompt_type:
            if not has_image_input:
                return "This model doesn't accept an End Image"
            if not inputs.get("image_end"):
                return "You must provide an End Image"
        if "I" in video_prompt_type and not inputs.get("image_refs"):
            return "You must provide at least one Reference Image"
        if "V" in video_prompt_type and not inputs.get("video_guide"):
            return "You must provide a Control Video"
        if "A" in audio_prompt_type and not inputs.get("audio_guide"):
            return "You must provide an Audio Source"
        return None

    def _task_params(self, info: _catalog.ModelInfo, inputs: dict, prompt: str, start: Any, end: Any) -> dict:
        params = {k: v for k, v in inputs.items() if k not in ("state", "lset_name")}
        image_prompt_type = str(params.get("image_prompt_type") or "")
        video_prompt_type = str(params.get("video_prompt_type") or "")
        params["prompt"] = prompt
        params["model_type"] = info.model_type
        params["image_start"] = start if ("S" in image_prompt_type or info.needs_start_image) else None
        params["image_end"] = end if "E" in image_prompt_type else None
        if "I" not in video_prompt_type:
            params["image_refs"] = None
        else:
            params["image_refs"] = [img for img in (_media.open_image(x) for x in params.get("image_refs") or [])
                                    if img is not None] or None
        if "V" not in image_prompt_type:
            params["video_source"] = None
            params["keep_frames_video_source"] = ""
        if "V" not in video_prompt_type:
            for key in ("video_guide", "video_guide2", "image_guide", "video_mask", "image_mask"):
                params[key] = None
            params["keep_frames_video_guide"] = ""
        if "A" not in str(params.get("audio_prompt_type") or ""):
            params["audio_guide"] = None
        if "B" not in str(params.get("audio_prompt_type") or ""):
            params["audio_guide2"] = None
        if "F" not in video_prompt_type and "frames_positions" in params:
            params["frames_positions"] = None
        if str(params.get("video_guide_outpainting") or "").startswith("#"):
            params["video_guide_outpainting"] = ""
        if "G" not in video_prompt_type and "denoising_strength" in params:
            params["denoising_strength"] = 1.0
            params["masking_strength"] = 1.0
        params.setdefault("custom_settings", None)
        params.setdefault("activated_loras", [])
        return params

    def _add_task(self, state: dict, params: dict) -> dict:
        with self.lock:
            self._task_id += 1
            task_id = self._task_id
        start = params.get("image_start")
        thumb = None
        if start is not None:
            img = start.copy()
            img.thumbnail((96, 96))
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=70)
            thumb = ["data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")]
        task = {"id": task_id, "params": params, "repeats": params.get("repeat_generation", 1),
                "length": params.get("video_length", 0), "steps": params.get("num_inference_steps", 0),
                "prompt": params.get("prompt", ""), "start_image_data_base64": thumb}
        with self.lock:
            self.gen(state)["queue"].append(task)
        self.emit(state, "queued", task, detail=f"{params.get('model_type', '')}: {task['prompt']}")
        return task

    def h_process_prompt_and_add_tasks(self, dep, args, call):
        state = call.state
        gen = self.gen(state)
        model_choice = args["model_choice"]
        table = self.component("queue_view")["type"] == "dataframe"  # 6.31, 8.11

        def ret():
            return None if table else self.reply(dep, {})

        if "current_gallery_tab" in args:
            gen["last_was_audio"] = args["current_gallery_tab"] == 1
        if self.behaviour.requires_validate and state.get("validate_success", 0) != 1:
            return None  # 6.31, 8.11: nothing is queued without validate_wizard_prompt
        state["validate_success"] = 0
        model_type = state["model_type"]
        stored = state["all_settings"].get(model_type)
        if model_choice != model_type or stored is None:
            raise gr.Error(WEBFORM_ERROR)
        inputs = dict(stored)
        inputs.pop("lset_name", None)
        info = self.model_info(model_type)
        if "mode" in self.spec.dep(self.spec.form_dep).params:
            mode = inputs["mode"]  # settings loaded from a file without "mode" fail here (KeyError)
            if str(mode).startswith("edit_"):
                gr.Info("You must select a Video or Image file")
                return ret()
        prompts = self._split_prompts(str(inputs.get("prompt") or ""), inputs.get("multi_prompts_gen_type"))
        if not prompts:
            gr.Info("Prompt cannot be empty.")
            return self.queue_update(gen["queue"]) if table else ret()
        error = self._validate(info, inputs)
        if error:
            gr.Info(error)
            return ret()
        starts = [img for img in (_media.open_image(x) for x in inputs.get("image_start") or []) if img is not None]
        ends = [img for img in (_media.open_image(x) for x in inputs.get("image_end") or []) if img is not None]
        video_source = inputs.get("video_source")
        if isinstance(video_source, dict):
            inputs["video_source"] = video_source.get("video") or video_source.get("path")
        pairs: list[tuple[str, Any, Any]] = []
        if starts:
            for i in range(len(prompts) * len(starts)):
                pairs.append((prompts[i % len(prompts)], starts[i // len(prompts)],
                              ends[min(i // len(prompts), len(ends) - 1)] if ends else None))
        else:
            pairs = [(p, None, ends[0] if ends else None) for p in prompts]
        for prompt, start, end in pairs:
            self._add_task(state, self._task_params(info, inputs, prompt, start, end))
        gen["prompts_max"] = len(pairs) + gen.get("prompts_max", 0)
        state["validate_success"] = 1
        return self.reply(dep, {"queue_view": self.queue_update(gen["queue"]),
                                "queue_accordion": gr.update(open=True) if gen["prompts_max"] > 1 else gr.update()})

    def h_update_status(self, dep, args, call):
        gen = self.gen(call.state)
        gen["progress_status"] = self.latest_status(call.state)  # KeyError('prompt_no') on a fresh session
        return self.out(dep)

    def h_abort_generation(self, dep, args, call):
        state = call.state
        gen = self.gen(state)
        if len(dep.inputs) == 1:  # up to 9.81: abort_generation(state) only requests an abort of the running task
            gen["resume"] = True
            if "in_progress" in gen:
                gen["abort"] = True
                gen["status"] = ABORT_REQUEST_MSG
                gr.Info(ABORT_REQUEST_MSG)
                return self.reply(dep, {"abort_btn": gr.update(interactive=False)})
            return self.reply(dep, {"abort_btn": gr.update(interactive=True)})
        client_id = args.get("client_id")
        if client_id is None:
            client_id = args.get(f"state_{dep.inputs[1]}") or ""
        queue = gen.get("queue", [])
        with self.lock:
            if queue:
                if client_id:
                    for i, task in enumerate(queue):
                        if task["params"].get("client_id", "") != client_id:
                            continue
                        if i == 0 and "in_progress" in gen:
                            break  # the running task: fall through to the abort request below
                        del queue[i]
                        self.emit(state, "removed", task, detail=f"abort_generation(client_id): {task['prompt']}")
                        if "prompt_no" in gen:
                            gen["prompt_no"] += 1
                        return self.reply(dep, {"queue_view": gr.update(value=self.queue_html(queue))})
                elif "in_progress" not in gen:
                    task = queue.pop(0)
                    self.emit(state, "removed", task, detail=f"abort_generation while idle: {task['prompt']}")
                    gen["prompt_no"] += 1  # KeyError('prompt_no') on a session that never ran: as WanGP
                    return self.reply(dep, {"queue_view": gr.update(value=self.queue_html(queue))})
        gen["resume"] = True
        if "in_progress" in gen:
            gen["abort"] = True
            gen["status"] = ABORT_REQUEST_MSG
            gr.Info(ABORT_REQUEST_MSG)
            return self.reply(dep, {"abort_btn": gr.update(interactive=False)})
        return self.reply(dep, {"abort_btn": gr.update(interactive=True)})

    def h_clear_queue_action(self, dep, args, call):
        state = call.state
        gen = self.gen(state)
        gen["resume"] = True
        queue = gen.get("queue", [])
        aborted_current = cleared_pending = False
        with self.lock:
            if gen.get("in_progress"):
                gen["abort"] = True
                gen["extra_orders"] = 0
                aborted_current = True
            if queue:
                for task in queue[1:] if aborted_current and gen.get("_running") else queue:
                    self.emit(state, "cleared", task, detail=f"clear_queue_action: {task['prompt']}")
                queue.clear()
                cleared_pending = True
            if aborted_current or cleared_pending:
                gen["prompts_max"] = 0
        if aborted_current and cleared_pending:
            gr.Info("Queue cleared and current generation aborted.")
        elif aborted_current:
            gr.Info("Current generation aborted.")
        elif cleared_pending:
            gr.Info("Queue cleared.")
        else:
            gr.Info("Queue is already empty or only contains the active task (which wasn't aborted now).")
        return self.reply(dep, {"queue_view": self.queue_update([])})

    def _queue_zip(self, tasks: list[dict]) -> bytes:
        """wgp.py _save_queue_to_zip: queue.json ([{"id", "params"}]) plus the media it references."""
        buf = io.BytesIO()
        manifest = []
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for task in tasks:
                params = _settings.queue_params(self.flavour, task["params"])
                for key in _settings.MEDIA_KEYS:
                    value = params.get(key)
                    if value is None:
                        continue
                    items = value if isinstance(value, list) else [value]
                    names = []
                    for index, item in enumerate(items):
                        if hasattr(item, "save"):
                            name = f"task{task['id']}_{key}_{index}.png"
                            img_buf = io.BytesIO()
                            item.save(img_buf, format="PNG")
                            zf.writestr(name, img_buf.getvalue())
                            names.append(name)
                        elif isinstance(item, str) and Path(item).is_file():
                            name = f"task{task['id']}_{key}_{index}{Path(item).suffix}"
                            zf.write(item, arcname=name)
                            names.append(name)
                    params[key] = (names if isinstance(value, list) else names[0]) if names else None
                manifest.append({"id": task["id"], "params": params})
            zf.writestr("queue.json", json.dumps(manifest, indent=4, default=str))
        return buf.getvalue()

    def h_save_queue_action(self, dep, args, call):
        """wgp.py save_queue_action: nothing below the release's minimum (2 tasks up to 8.11, a running task
        counts), else the zip inline as base64 (up to 11.66) or a single-use download link (12.60)."""
        queue = list(self.gen(call.state).get("queue", []))
        if len(queue) < self.spec.save_queue_min_tasks:
            gr.Info("Queue is empty. Nothing to save.")
            return self.out(dep, "")
        data = self._queue_zip(queue)
        if self.spec.save_queue_form == "base64":
            return self.out(dep, base64.b64encode(data).decode("utf-8"))
        return self.out(dep, self.register_download("queue.zip", "application/zip", data))

    def h_load_queue_action(self, dep, args, call):
        state = call.state
        gen = self.gen(state)
        original = gen.setdefault("queue", [])
        event = call.event
        if event is None or getattr(event, "target", None) is None:
            return self.out(dep, None)  # the "autoload" branch: the uploaded file is ignored
        path = args.get("filepath")
        path = getattr(path, "name", path)
        if not path or not Path(str(path)).is_file():
            return self.out(dep, self.queue_update(original))
        try:
            manifest = self._read_manifest(Path(str(path)))
        except (ValueError, zipfile.BadZipFile, json.JSONDecodeError, KeyError) as exc:
            gr.Warning(f"Failed to load queue: {str(exc)[:200]}")
            return self.out(dep, self.queue_update(original))
        added = 0
        for entry in manifest:
            params = dict(entry.get("params") or {})
            model_type = params.get("model_type") or params.get("base_model_type")
            info = _catalog.model(self.flavour, model_type or "")
            if info is None:
                continue
            merged = self.default_settings(model_type)
            merged.update({k: v for k, v in params.items() if v is not None or k not in merged})
            merged.setdefault("mode", "")
            merged["image_start"] = _media.open_image(params.get("image_start"))
            self._add_task(state, self._task_params(info, merged, str(merged.get("prompt") or ""),
                                                    merged["image_start"], None))
            added += 1
        gen["prompts_max"] = len(gen["queue"])
        gr.Info(f"Loaded {added} task(s)")
        return self.out(dep, self.queue_update(gen["queue"]))

    def _read_manifest(self, path: Path) -> list[dict]:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if "queue.json" not in zf.namelist():
                    raise ValueError("queue.json not found in zip file")
                folder = self.output_dir / "_loaded_queue_cache"
                folder.mkdir(parents=True, exist_ok=True)
                manifest = json.loads(zf.read("queue.json"))
                for entry in manifest:
                    for key, value in list((entry.get("params") or {}).items()):
                        if key in _settings.MEDIA_KEYS and isinstance(value, str) and value in zf.namelist():
                            target = folder / Path(value).name
                            target.write_bytes(zf.read(value))
                            entry["params"][key] = str(target)
                return manifest
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = [{"id": 0, "params": data}]
        entries = []
        for item in data:
            params = item.get("params", item) if isinstance(item, dict) else None
            if isinstance(params, dict):
                params = {k: (None if k in _settings.MEDIA_KEYS else v) for k, v in params.items()}
                entries.append({"id": item.get("id", 0), "params": params})
        return entries

    def h_init_process_queue_if_any(self, dep, args, call):
        if self.gen(call.state).get("queue"):
            call.state["validate_success"] = 1
            return self.out(dep, gr.update(visible=False), gr.update(visible=True), gr.update(visible=True))
        call.state["validate_success"] = 0
        return self.out(dep, gr.update(visible=True), gr.update(visible=False), gr.update(visible=False))

    # ------------------------------------------------------------------ generation
    def h_prepare_generate_media(self, dep, args, call):
        if call.state.get("validate_success", 0) != 1:
            return self.out(dep, gr.update(visible=True), gr.update(visible=False), gr.update(visible=False),
                            gr.update(visible=False))
        return self.out(dep, gr.update(visible=False), gr.update(visible=True), gr.update(visible=True),
                        gr.update(visible=False))

    h_prepare_generate_video = h_prepare_generate_media  # 6.3 name (3 outputs)

    def h_activate_status(self, dep, args, call):
        if call.state.get("validate_success", 0) != 1:
            return self.out(dep, None)
        self.gen(call.state)["status_display"] = True
        return self.out(dep, time.time())

    def status_poll_seconds(self) -> float:
        """refresh_status_async's polling interval: WanGP's 0.5 s, shorter when steps are emulated faster."""
        return 0.5 if self.step_seconds >= 0.5 else max(0.02, self.step_seconds)

    def h_refresh_status_async(self, dep, args, call):
        gen = self.gen(call.state)
        progress = call.progress
        while True:
            progress_args = gen.get("progress_args")
            if progress_args is not None and progress is not None:
                progress(*progress_args)
                gen["progress_args"] = None
            status = gen.get("status", "")
            if status:
                yield status
                if gen.get("status") == status:  # a newer status set meanwhile is kept for the next poll
                    gen["status"] = ""
            if not gen.get("status_display", False) or self.stopping.is_set():
                return
            time.sleep(self.status_poll_seconds())

    def h_process_tasks(self, dep, args, call):
        state = call.state
        gen = self.gen(state)
        queue = gen.setdefault("queue", [])
        if not queue:
            gen["status_display"] = False
            return
        with self.lock:
            for key in ("file_list", "audio_file_list"):
                files = gen.get(key, [])
                gen[key] = files[max(len(files) - CLEAR_FILE_LIST, 0):]
            gen["selected"] = max(len(gen["file_list"]) - 1, 0)
        start_time = time.monotonic()
        gen["in_progress"] = True
        gen["preview"] = None
        gen["status"] = self.behaviour.generating_status
        gen["header_text"] = ""
        yield self._tick(dep)

        commands: queue_module.Queue = queue_module.Queue()
        worker = threading.Thread(target=self._queue_worker, args=(state, commands.put), daemon=True,
                                  name=f"wangp-emulator-worker-{state.get('_session', '')[:8]}")
        gen["_running"] = True
        worker.start()
        aborted = False
        while True:
            cmd, data = commands.get()
            if cmd == "worker_exit":
                break
            if cmd == "info":
                gr.Info(data)
            elif cmd == "error":
                self._fail_queue(state, queue, str(data))
                gen["prompts_max"] = 0
                gen["prompt"] = ""
                gen["status_display"] = False
                gen["_running"] = False
                raise gr.Error(str(data), print_exception=False, duration=0)
            elif cmd == "status":
                gen["status"] = data
            elif cmd == "aborted":
                aborted = bool(data)
            elif cmd == "output":
                gen["preview"] = None
                gen["refresh_tab"] = True
                yield self._tick(dep)
            elif cmd == "preview":
                # WanGP yields at every denoising step (its preview): a session whose client went away is
                # dropped here by gradio, and the rest of this function does not run.
                yield self.reply(dep, {"preview_trigger": str(time.time())})
            elif cmd == "progress":
                gen["last_progress_args"] = gen["progress_args"] = data
            elif cmd == "refresh_models":
                yield self.reply(dep, {"models_refresh_trigger": str(data)})
        gen["_running"] = False
        gen["prompts_max"] = 0
        gen["prompt"] = ""
        elapsed = time.monotonic() - start_time
        spent = f"{elapsed:.1f}s" if self.behaviour.seconds_total_time else format_time(elapsed)
        if gen.get("abort", False) or (self.behaviour.abort_status_from_last_task and aborted):
            gen["status"] = f"Video generation was aborted. Total Generation Time: {spent}"
        else:
            gen["status"] = f"Total Generation Time: {spent}"
        gen["status_display"] = False

    def _tick(self, dep):
        now = str(time.time())
        return self.reply(dep, {"preview_trigger": now, "output_trigger": now})

    def _fail_queue(self, state: dict, queue: list[dict], message: str) -> None:
        """process_tasks' error branch: the queue is autosaved to error_queue.zip, then cleared."""
        with self.lock:
            tasks = list(queue)
            queue.clear()
        for index, task in enumerate(tasks):
            self.emit(state, "failed" if index == 0 else "cleared", task, detail=message)
        try:
            (self.output_dir / "error_queue.zip").write_bytes(self._queue_zip(tasks))
        except OSError:
            pass
        gr.Info(ERROR_QUEUE_INFO)

    def _queue_worker(self, state: dict, send: Callable[[tuple], None]) -> None:
        """wgp.py process_tasks' queue_worker_func: runs the session queue one task at a time."""
        gen = self.gen(state)
        queue = gen["queue"]
        gen["prompt_no"] = 0

        def cmd(name: str, data: Any = None) -> None:
            send((name, data))

        while not self.gpu_lock.acquire(timeout=0.1):  # another session is generating: wait for the GPU
            if self.stopping.is_set():
                self.emit(state, "worker_ended", None)  # the server stops: this session's run ends unrun
                cmd("worker_exit")
                return
        last: dict | None = None
        try:
            while queue and not self.stopping.is_set():
                gen["prompt_no"] += 1
                with self.lock:
                    task = queue[0] if queue else None
                if task is None:
                    break
                last = task
                if self.behaviour.status_per_task:
                    cmd("status", "Generating...")
                try:
                    success = self._generate(state, task, cmd)
                except GenerationError as exc:
                    cmd("error", str(exc))
                    return
                aborted = gen.get("abort", False)
                cmd("aborted", aborted)
                if aborted:
                    gen["abort"] = False
                    cmd("status", "Video Generation Aborted")
                    cmd("output")
                if not success:
                    break
                with self.lock:
                    queue[:] = [item for item in queue if item["id"] != task["id"]]
        except Exception as exc:  # noqa: BLE001 - WanGP reports a crashed worker the same way
            cmd("error", f"Queue worker crashed: {exc}")
        finally:
            self.gpu_lock.release()
            # for tests: nothing more runs in this session until a new run (with the last task it ran)
            self.emit(state, "worker_ended", last)
            cmd("worker_exit")

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _make_callback(self, state: dict, cmd: Callable, status: str, steps: int) -> Callable[[int], None]:
        """wgp.py build_callback: progress (step, total) with a 'phase | elapsed / estimated' description."""
        gen = self.gen(state)
        gen["num_inference_steps"] = steps
        started = time.monotonic()
        timing: dict[str, float | None] = {"denoise": None, "estimate": None}

        def callback(step_idx: int) -> None:
            now = time.monotonic()
            completed = step_idx >= 0
            if step_idx < 0:
                timing["denoise"], timing["estimate"] = now, None
            step = step_idx + 1
            if gen.get("abort", False):
                phase = "Aborting"
            elif step == steps:
                phase = "VAE Decoding"
            else:
                phase = "Denoising"
            gen["progress_phase"] = (phase, step)
            style = self.behaviour.progress_desc
            if style == "phase":
                message = merge_status_context(status, phase, keeps_time=False)
            else:
                elapsed = now - started
                text = format_time(elapsed)
                denoise = timing["denoise"]
                if style == "estimate" and completed and step > 0 and steps > 0 and denoise is not None:
                    spent = now - denoise
                    timing["estimate"] = denoise - started + max(spent, spent * steps / step)
                if timing["estimate"] is not None:
                    text += f" / {format_time(max(elapsed, timing['estimate']))}"
                message = merge_status_context(status, f"{phase} | {text}")
            cmd("progress", [(step, steps), message, steps])

        return callback

    def _generate(self, state: dict, task: dict, cmd: Callable) -> bool:
        """wgp.py generate_media, emulated: load, denoise step by step, write the file."""
        gen = self.gen(state)
        params = task["params"]
        if gen.get("abort", False):  # an abort request still pending skips the task, as in WanGP
            self.emit(state, "aborted", task, detail="pending abort request")
            return True
        model_type = params["model_type"]
        info = self.model_info(model_type)
        prompt = str(params.get("prompt") or "")
        steps = max(1, int(params.get("num_inference_steps") or 1))
        self.emit(state, "started", task, step=0, total=steps, detail=f"{model_type}: {prompt}")
        if self.loaded_model != model_type:
            cmd("status", f"Loading model {info.name}...")
            if self.missing_weights:
                self._sleep(max(0.1, 4 * self.step_seconds))
                raise GenerationError(HF_MISSING_ERROR)
            # Loading lasts long enough for refresh_status_async to show it (WanGP takes seconds here), plus the
            # silent load_seconds: no status and no progress, as while WanGP downloads weights.
            self._sleep(2 * max(self.step_seconds, self.status_poll_seconds()) if self.step_seconds else 0)
            self._sleep(self.load_seconds)
            self.loaded_model = model_type
            cmd("status", "Model loaded")
            if "models_refresh_trigger" in self.spec.roles:
                cmd("refresh_models", str(time.time()))
        step_time = self.step_seconds * (10 if SLOW_MARKER in prompt else 1)
        repeat = max(1, int(params.get("repeat_generation") or 1))
        seed = int(params.get("seed") if params.get("seed") is not None else -1)
        repeat_no = 0
        while True:
            total = repeat + gen.get("extra_orders", 0)
            gen["total_generation"] = total
            if repeat_no >= total:
                break
            repeat_no += 1
            gen["repeat_no"] = repeat_no
            gen["window_no"], gen["total_windows"] = 1, 1
            actual_seed = seed if seed >= 0 else random.randint(0, 999_999_999)
            status = self.latest_status(state)
            gen["progress_status"] = status
            phase = "Generating Audio" if info.output == "audio" else "Encoding Prompt"
            cmd("progress", [0, merge_status_context(status, phase,
                                                     keeps_time=self.behaviour.progress_desc != "phase")])
            callback = self._make_callback(state, cmd, status, steps)
            callback(-1)
            for index in range(steps):
                self._sleep(step_time)
                while gen.get("_paused") and not self.stopping.is_set() and not gen.get("abort"):
                    time.sleep(0.02)
                if gen.get("abort", False) or self.stopping.is_set():
                    if not self.stopping.is_set():
                        callback(index)  # the model's last callback reports the "Aborting" phase
                    self.emit(state, "aborted", task, step=index, total=steps,
                              detail="server stopped" if self.stopping.is_set() else "abort_generation")
                    cmd("output")
                    return True
                with self.lock:
                    self._steps_done += 1
                    steps_done = self._steps_done
                self.emit(state, "step", task, step=index + 1, total=steps)
                if self.crash_after_steps is not None and steps_done >= self.crash_after_steps:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(70)  # a real crash: no cleanup, no response
                if FAIL_MARKER in prompt:
                    raise GenerationError(FAIL_MESSAGE)
                callback(index)
                if info.output != "audio":
                    cmd("preview")  # the step's latent preview
            # The last callback announced "VAE Decoding": decoding takes a while, as on WanGP, so that phase is
            # seen (gradio sends progress every 0.1 s and drops what is pending when the status stream ends).
            self._sleep(2 * max(step_time, self.status_poll_seconds()) if step_time else 0)
            path = self._write_output(info, params, prompt, actual_seed)
            with self.lock:
                key = "audio_file_list" if info.output == "audio" else "file_list"
                gen.setdefault(key, []).append(str(path))
                gen["last_was_audio"] = info.output == "audio"
            self.emit(state, "completed", task, step=steps, total=steps, detail=str(path))
            cmd("output")
            seed = -1  # wgp.py: later samples of the same task get a new random seed
        return True

    def _write_output(self, info: _catalog.ModelInfo, params: dict, prompt: str, seed: int) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in str(params.get("resolution") or "832x480").split("x"))
        stamp = datetime.now().strftime("%Y-%m-%d-%Hh%Mm%Ss")
        extension = {"video": "mp4", "image": "jpg", "audio": "wav"}[info.output]
        base = f"{stamp}_seed{seed}_{sanitize_file_name(prompt[:100]) or 'prompt'}"
        path = self.output_dir / f"{base}.{extension}"
        counter = 1
        while path.exists():
            path = self.output_dir / f"{base}({counter}).{extension}"
            counter += 1
        settings_key = {k: params.get(k) for k in ("resolution", "video_length", "num_inference_steps",
                                                     "guidance_scale", "flow_shift", "negative_prompt")}
        content = _media.content_seed(info.model_type, prompt, seed, sorted(settings_key.items()))
        caption = [prompt, f"seed {seed}  |  {info.name}  |  {width}x{height}"]
        if info.output == "video":
            frames = int(params.get("video_length") or info.default_frames)
            start = _media.open_image(params.get("image_start"))
            if start is not None:  # WanGP follows the start image's aspect (see fit_to_image)
                width, height = fit_to_image(width, height, start.width, start.height)
                caption[1] = f"seed {seed}  |  {info.name}  |  {width}x{height}"
            if start is None and params.get("video_source"):
                start = _media.last_video_frame(params["video_source"])
            end = params.get("image_end")
            end = _media.open_image(end[-1] if isinstance(end, list) and end else end)
            video_prompt_type = str(params.get("video_prompt_type") or "")
            control = mask = None
            if "V" in video_prompt_type and params.get("video_guide"):
                control = _media.read_video_grey(params["video_guide"], width, height, frames)
                if "A" in video_prompt_type and params.get("video_mask"):
                    mask = _media.read_video_grey(params["video_mask"], width, height, frames)
                    if "N" in video_prompt_type:  # "Non Masked Area"
                        mask = [255 - m for m in mask]
            refs = [img for img in params.get("image_refs") or [] if img is not None]
            _media.write_video(path, width=width, height=height, frames=frames, fps=info.fps, seed=content,
                               caption=caption, start_image=start, end_image=end, control=control, mask=mask,
                               refs=refs)
        elif info.output == "image":
            _media.write_image(path, width=width, height=height, seed=content, caption=caption,
                               start_image=_media.open_image(params.get("image_start")))
        else:
            seconds = float(params.get("duration_seconds") or 0) or 2.0
            _media.write_audio(path, seconds=seconds, seed=content)
        return path

    # ------------------------------------------------------------------ gallery
    def _audio_state(self, gen: dict, choice: int) -> dict[str, Any]:
        """wgp.py pack_audio_gallery_state: the audio files as JSON, the selected one, a refresh stamp."""
        return {"audio_paths": json.dumps(gen.get("audio_file_list", [])), "audio_selected": choice,
                "audio_refresh": str(time.time())}

    def h_refresh_gallery(self, dep, args, call):
        gen = self.gen(call.state)
        file_list = list(gen.get("file_list", []))
        queue = gen.get("queue", [])
        choice = max(len(file_list) - 1, 0)
        audio_choice = max(len(gen.get("audio_file_list", [])) - 1, -1)
        busy = "in_progress" in gen and bool(queue)
        values = {
            "gallery": gr.update(selected_index=choice, value=file_list), "gallery_choice": choice,
            **self._audio_state(gen, audio_choice),
            "current_task_html": gr.update(value=self._current_task_html(queue[0]), visible=True) if busy
            else gr.update(value="", visible=False),
            "generate_btn": gr.update(visible=not busy), "add_btn": gr.update(visible=busy),
            "current_gen_column": gr.update(visible=busy), "gen_info_row": gr.update(visible=busy),
            "queue_view": self.queue_update(queue),
            "abort_btn": gr.update(interactive=not gen.get("abort", False)),
            "early_stop_btn": gr.update(visible=False), "extend_btn": gr.update(visible=False),
        }
        if gen.pop("refresh_tab", False) and self.outputs_role(dep, "gallery_tabs"):
            last_audio = gen.get("last_was_audio", False)
            values.update(gallery_tabs=gr.update(selected="audio" if last_audio else "video_images"),
                          gallery_tab_no=1 if last_audio else 0)
        return self.reply(dep, values)

    def _current_task_html(self, task: dict) -> str:
        prompt = html.escape(task["prompt"]).replace("\n", "<BR>")
        return (f"<TABLE WIDTH=100% ID=PINFO><TR style='height:140px'><TD width=100%>{prompt}</TD>"
                f"</TR></TABLE>")

    def _finalize_values(self, state: dict) -> dict[str, Any]:
        gen = self.gen(state)
        gen.pop("in_progress", None)
        file_list = list(gen.get("file_list", []))
        choice = len(file_list) - 1
        audio_choice = len(gen.get("audio_file_list", [])) - 1
        gen["extra_orders"] = 0
        last_audio = gen.get("last_was_audio", False)
        if last_audio:
            gallery = gr.update()
        elif self.behaviour.finalize_sends_files:
            gallery = gr.update(value=file_list, selected_index=choice)
        else:
            gallery = gr.update(selected_index=choice)  # up to 9.81: the index only
        return {"gallery_tabs": gr.update(selected="audio" if last_audio else "video_images"),
                "gallery_tab_no": 1 if last_audio else 0, "gallery": gallery, **self._audio_state(gen, audio_choice),
                "abort_btn": gr.update(interactive=True), "early_stop_btn": gr.update(interactive=True, visible=False),
                "generate_btn": gr.update(visible=True), "add_btn": gr.update(visible=False),
                "current_gen_column": gr.update(visible=False),
                "current_task_html": gr.update(visible=False, value="")}

    def h_finalize_generation(self, dep, args, call):
        return self.reply(dep, self._finalize_values(call.state))

    def h_finalize_generation_with_state(self, dep, args, call):
        values = self._finalize_values(call.state)
        queue = self.gen(call.state).get("queue", [])
        values["queue_accordion"] = gr.update(open=False) if len(queue) <= 1 else gr.update()
        return self.reply(dep, values, call.state)

    # ------------------------------------------------------------------ controls
    def h_pause_generation(self, dep, args, call):
        gen = self.gen(call.state)
        gen["resume"] = False
        yield self.reply(dep, {"pause_btn": gr.update(interactive=False)})
        gen["_paused"] = True
        gen["progress_args"] = [0, PAUSE_MSG]
        gr.Info(PAUSE_MSG)
        yield self.reply(dep, {"pause_btn": gr.update(visible=False, interactive=True),
                               "resume_btn": gr.update(visible=True)})
        while not gen.get("resume", False) and not self.stopping.is_set():
            time.sleep(0.05)
        gen["_paused"] = False
        gen["resume"] = False
        yield self.reply(dep, {"pause_btn": gr.update(visible=True, interactive=True),
                               "resume_btn": gr.update(visible=False)})

    def h_resume_generation(self, dep, args, call):
        self.gen(call.state)["resume"] = True
        return self.out(dep)

    def h_early_stop_generation(self, dep, args, call):
        gen = self.gen(call.state)
        if "in_progress" in gen:
            gr.Info("Early Stop is not supported for this model.")
        return self.reply(dep, {"early_stop_btn": gr.update(interactive=True)})

    def h_one_more_sample(self, dep, args, call):
        gen = self.gen(call.state)
        gen["extra_orders"] = gen.get("extra_orders", 0) + 1
        if gen.get("in_progress"):
            total = gen.get("total_generation", 0) + gen["extra_orders"]
            gr.Info(f"An extra sample generation is planned for a total of {total} samples for this prompt")
        return self.reply(dep, {}, call.state)

    def h_one_more_window(self, dep, args, call):
        return self.reply(dep, {}, call.state)

    # ------------------------------------------------------------------ settings files
    def h_export_settings(self, dep, args, call):
        state = call.state
        model_type = state["model_type"]
        settings = self.current_settings(state)
        exported = _settings.export_settings(self.flavour, settings, model_type, self.version)
        stamp = datetime.now().strftime("%Y-%m-%d-%Hh%Mm%Ss")
        if not self.outputs_role(dep, "settings_download"):  # up to 11.66: the file inline, as base64 and name
            text = json.dumps(exported, indent=4)
            return self.out(dep, base64.b64encode(text.encode("utf-8")).decode("utf-8"),
                            sanitize_file_name(f"{model_type}_{stamp}.json"))
        if args.get("include_media"):
            task = {"id": 1, "params": dict(settings, model_type=model_type)}
            return self.out(dep, self.register_download(sanitize_file_name(f"{model_type}_{stamp}.zip"),
                                                        "application/zip", self._queue_zip([task])))
        data = json.dumps(exported, indent=4).encode("utf-8")
        return self.out(dep, self.register_download(sanitize_file_name(f"{model_type}_{stamp}.json"),
                                                    "application/json", data))

    def h_load_settings_from_file(self, dep, args, call):
        """wgp.py load_settings_from_file: the file is merged into factory defaults (which have no "mode")."""
        state = call.state
        path = args.get("file_path")
        path = getattr(path, "name", path)
        if path is None:
            return self.reply(dep, {"settings_file": None})
        configs = self._settings_from_file(Path(str(path)), state)
        if configs is None:
            gr.Info("File not supported")
            return self.reply(dep, {"settings_file": None})
        model_type = configs.pop("model_type")
        prompt = str(configs.get("prompt", ""))
        gr.Info(f"Settings Loaded from Settings file with prompt '{prompt[:100]}'")
        current = state["model_type"]
        state["all_settings"][model_type] = configs
        if model_type == current:
            return self.reply(dep, {"refresh_form_trigger": str(time.time()), "settings_file": None})
        state["ignore_save_form"] = True
        # The UI then switches the model: through the hidden model target (12.60), the dropdowns' change events
        # (8.11-11.66) or the model dropdown's value (6.31).
        if self.outputs_role(dep, "model_choice_target"):
            values = {"model_choice_target": f"{model_type}|{time.time()}"}
        elif self.spec.dropdown_levels > 1:
            values = self._dropdown_updates(model_type)
        else:
            values = {"model_choice": model_type}
        return self.reply(dep, {**values, "settings_file": None})

    def _settings_from_file(self, path: Path, state: dict) -> dict | None:
        if not path.is_file():
            return None
        try:
            if zipfile.is_zipfile(path):
                manifest = self._read_manifest(path)
                configs = dict(manifest[0]["params"]) if manifest else None
            elif path.suffix.lower() == ".json":
                configs = json.loads(path.read_text(encoding="utf-8"))
            else:
                return None
        except (ValueError, json.JSONDecodeError, zipfile.BadZipFile, KeyError, IndexError):
            return None
        if not isinstance(configs, dict):
            return None
        model_type = configs.get("model_type") or configs.get("base_model_type")
        if _catalog.model(self.flavour, model_type or "") is None:
            model_type = state["model_type"]
        merged = _settings.factory_settings(self.flavour, model_type)  # factory defaults: no "mode" key
        merged.update(configs)
        for key in ("type", "base_model_type", "settings_version", "model_filename"):
            merged.pop(key, None)
        merged["model_type"] = model_type
        return merged

    # ------------------------------------------------------------------ UI-only steps (decoys included)
    def h_init_generate(self, dep, args, call):
        return self.out(dep, str(time.time()), "")

    def h_lambda(self, dep, args, call):
        if any(target == self.spec.roles.get("add_btn") for target, _ in dep.targets):
            # "Add New Prompt To Queue" writes a fresh id into the hidden trigger of the add-to-queue chain
            return self.out(dep, str(time.time()), "")
        if len(dep.outputs) == 1 and self.spec.components[dep.outputs[0]]["type"] == "textbox":
            return self.out(dep, "")
        if len(dep.outputs) == 1 and self.spec.components[dep.outputs[0]]["type"] == "accordion":
            queue = self.gen(call.state).get("queue", []) if call.state else []
            return self.out(dep, gr.update(open=False) if len(queue) <= 1 else gr.update())
        return self.noop(dep)

    def h_preload_model_when_switching(self, dep, args, call) -> Iterator[Any]:
        yield from ()  # no preload policy: the real generator ends without yielding

    def h_save_lset(self, dep, args, call):
        gr.Info("Please enter a name for the preset / settings file")
        return self.noop(dep)

    def h_apply_lset(self, dep, args, call):
        gr.Info("Please choose a preset in the list or create one")
        return self.noop(dep)

    def h_use_video_settings(self, dep, args, call):
        gr.Info("Please Select a File")
        return self.noop(dep)
