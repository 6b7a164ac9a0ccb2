"""Route A of the reference (§4), written with plain gradio_client, for the emulator's tests.

Names are resolved from ``/config`` (never hard-coded ``_N`` numbers): the ``save_inputs_N`` is the
``trigger_after`` of ``process_prompt_and_add_tasks``, the ``validate_wizard_prompt_N`` the ``trigger_after`` of
that; the ``fill_inputs_N`` is the step after the model change (``change_model_from_target`` / ``change_model``).
The model switch is found from the endpoints the server has: ``goto_model_type_with_filter`` then
``change_model_from_target`` (12.x), ``goto_model_type`` then ``change_model`` (9.x-11.x), ``change_model_family``
(each family until its list holds the model) then ``change_model`` (8.x), ``change_model`` alone (6.x).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from captures import web_ui
from gradio_client import Client

# Every captured release: emulator flavour -> WanGP version.
FLAVOURS = {"v6": "6.31", "v8": "8.11", "v9": "9.81", "v11": "11.66", "v12": "12.60"}


def capture(flavour: str, kind: str) -> dict:
    """A web-UI capture of the flavour's real release (``tests/captures``): config, view_api, ..."""
    return web_ui(FLAVOURS[flavour], kind)


def base_name(api_name: str) -> str:
    return re.sub(r"_\d+$", "", api_name)


def generated(log: list[tuple[float, str, dict]], api_name: str) -> list[tuple[float, list]]:
    """The successive outputs of a generator in a :meth:`Route.stream` log, as (time, output data). The SSE
    protocol sends the first in full and the next ones as diffs of it (``replace`` / ``append`` operations)."""
    out: list[tuple[float, list]] = []
    data: list = []
    for t, name, message in log:
        if name != api_name or message.get("msg") != "process_generating":
            continue
        update = message["output"]["data"]
        if out:  # [index, [[op, path, value], ...]] per changed output
            for index, edit in enumerate(update):
                for op, path, value in edit:
                    assert not path, f"nested diff path {path}"
                    data[index] = data[index] + value if op == "append" else value
        else:
            data = list(update)
        out.append((t, list(data)))
    return out


class Route:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.config = client.config
        self.view = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        self.deps = {d["id"]: d for d in self.config["dependencies"]}
        self.by_name = {d["api_name"]: d for d in self.config["dependencies"] if d.get("api_name")}
        self.comps = {c["id"]: c for c in self.config["components"]}
        add = self.by_name["process_prompt_and_add_tasks"]
        self.save = self.deps[add["trigger_after"]]
        self.validate = self.deps[self.save["trigger_after"]]
        change = self.by_name.get("change_model_from_target") or self.by_name["change_model"]
        self.fill = next(d for d in self.config["dependencies"]
                         if d.get("trigger_after") == change["id"] and base_name(d["api_name"]) == "fill_inputs")
        self.add_params = [p["parameter_name"] for p in self.view["/process_prompt_and_add_tasks"]["parameters"]]
        self._form: dict[int, Any] | None = None  # fill_inputs' answer for the selected model
        self.abort_by_client = next(
            (name.lstrip("/") for name, e in self.view.items()
             if base_name(name.lstrip("/")) == "abort_generation"
             and [p["parameter_name"] for p in e["parameters"]] == ["client_id"]), None)

    def api_outputs(self, dep: dict) -> list[int]:
        return [o for o in dep["outputs"] if not self.comps[o].get("skip_api")]

    # ------------------------------------------------------------------ steps
    def select_model(self, model_type: str) -> None:
        self._form = None
        if "/goto_model_type_with_filter" in self.view:
            self.client.predict(model_type, api_name="/goto_model_type_with_filter")
            self.client.predict(model_type, api_name="/change_model_from_target")
            return
        if "/goto_model_type" in self.view:
            self.client.predict(model_type, api_name="/goto_model_type")
        elif "/change_model_family" in self.view:
            family = next(c for c in self.config["components"] if c["props"].get("elem_id") == "family_list")
            for _, value in family["props"]["choices"]:
                update = self.client.predict(value, api_name="/change_model_family")
                if model_type in [choice[1] for choice in update["choices"]]:
                    break
        self.client.predict(model_type, api_name="/change_model")

    def fill_values(self) -> dict[int, Any]:
        values = self.client.predict(api_name=f"/{self.fill['api_name']}")
        return dict(zip(self.api_outputs(self.fill), values, strict=True))

    def save_args(self, form: dict[int, Any], **overrides: Any) -> dict[str, Any]:
        inputs = [i for i in self.save["inputs"] if not self.comps[i].get("skip_api")]
        args: dict[str, Any] = {}
        for param, cid in zip(self.view[f"/{self.save['api_name']}"]["parameters"], inputs, strict=True):
            value = form.get(cid, param["parameter_default"])
            if isinstance(value, dict) and value.get("__type__") == "update":
                value = value.get("value", param["parameter_default"])
            args[param["parameter_name"]] = value
        args["target"] = "state"
        args.update(overrides)
        return args

    def add(self, model_type: str, *, validate: bool = True, **overrides: Any) -> Any:
        """(fill_inputs once per model) validate -> save_inputs -> process_prompt_and_add_tasks; returns the
        last answer."""
        if self._form is None:
            self._form = self.fill_values()
        args = self.save_args(self._form, **overrides)
        if validate:
            self.client.predict("off", "", args.get("prompt", ""), "", *[""] * 10,
                                api_name=f"/{self.validate['api_name']}")
        self.client.predict(**args, api_name=f"/{self.save['api_name']}")
        return self.client.predict(*self.add_args(model_type), api_name="/process_prompt_and_add_tasks")

    def add_args(self, model_type: str) -> list[Any]:
        """process_prompt_and_add_tasks' arguments: (current_gallery_tab,) model_choice."""
        return [0, model_type] if len(self.add_params) == 2 else [model_type]

    def run(self, timeout: float = 30) -> tuple[Any, list[str]]:
        """activate_status, then refresh_status_async beside process_tasks; returns (result, statuses)."""
        self.client.predict(api_name="/activate_status")
        status = self.client.submit(api_name="/refresh_status_async")
        result = self.client.submit(api_name="/process_tasks").result(timeout=timeout)
        status.result(timeout=timeout)
        return result, [str(s) for s in status.outputs()]

    def gallery(self) -> list[str]:
        refresh = self.by_name["refresh_gallery"]
        index = next(i for i, cid in enumerate(self.api_outputs(refresh)) if self.comps[cid]["type"] == "gallery")
        update = self.client.predict(api_name="/refresh_gallery")[index]
        return [item.get("video") or item.get("image") for item in update.get("value") or []]

    def call_logged(self, api_name: str, *args: Any, timeout: float = 30) -> tuple[dict, list[tuple[str, str]]]:
        """Call an endpoint over raw HTTP in this client's session and keep every SSE ``log`` message (gr.Info,
        gr.Warning): gradio_client only exposes the latest status, which the completion message replaces.

        Returns the ``process_completed`` message (``success``, ``output``) and the (log, level) pairs. The
        session's SSE stream has one reader: no gradio_client job of this session may run meanwhile."""
        dep = self.by_name[api_name]
        values = iter(args)
        data = [None if self.comps[i].get("skip_api") else next(values) for i in dep["inputs"]]
        base = self.client.src.rstrip("/") + "/gradio_api"
        session = self.client.session_hash
        logs: list[tuple[str, str]] = []
        with httpx.Client(timeout=timeout) as http:
            event_id = http.post(f"{base}/queue/join", json={
                "data": data, "fn_index": dep["id"], "session_hash": session, "event_data": None,
                "trigger_id": None}).json()["event_id"]
            with http.stream("GET", f"{base}/queue/data", params={"session_hash": session}) as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    if message.get("event_id") != event_id:
                        continue
                    if message.get("msg") == "log":
                        logs.append((message.get("log"), message.get("level")))
                    if message.get("msg") == "process_completed":
                        return message, logs
        raise RuntimeError("stream ended before completion")

    def stream(self, *api_names: str, timeout: float = 30,
               log: list[tuple[float, str, dict]] | None = None) -> list[tuple[float, str, dict]]:
        """Join several events of this session over raw HTTP and keep every SSE message of the session, in order,
        as (time.monotonic(), api name, message), until all completed or ``timeout`` passed (then a last
        ``(t, "", {"msg": "timeout"})``). Heartbeats and estimations are kept too (gradio_client hides them).
        ``log``: a list to fill as the messages come (another thread may watch it); it is also returned."""
        base = self.client.src.rstrip("/") + "/gradio_api"
        session = self.client.session_hash
        names: dict[str, str] = {}
        log = [] if log is None else log
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=timeout) as http:
            for api_name in api_names:
                dep = self.by_name[api_name]
                event_id = http.post(f"{base}/queue/join", json={
                    "data": [None] * len(dep["inputs"]), "fn_index": dep["id"], "session_hash": session,
                    "event_data": None, "trigger_id": None}).json()["event_id"]
                names[event_id] = api_name
            pending = set(names)
            try:
                with http.stream("GET", f"{base}/queue/data", params={"session_hash": session}) as stream:
                    for line in stream.iter_lines():
                        if line.startswith("data:"):
                            message = json.loads(line[5:])
                            log.append((time.monotonic(), names.get(message.get("event_id"), ""), message))
                            if message.get("msg") == "process_completed":
                                pending.discard(message.get("event_id"))
                        if not pending or time.monotonic() > deadline:
                            break
            except httpx.ReadTimeout:
                pass
        if pending:
            log.append((time.monotonic(), "", {"msg": "timeout"}))
        return log
