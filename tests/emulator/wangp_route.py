"""Route A of the reference (§4), written with plain gradio_client, for the emulator's tests.

Names are resolved from ``/config`` (never hard-coded ``_N`` numbers): the ``save_inputs_N`` is the
``trigger_after`` of ``process_prompt_and_add_tasks``, the ``validate_wizard_prompt_N`` the ``trigger_after`` of
that; the ``fill_inputs_N`` is the step after the model change (``change_model_from_target`` / ``change_model``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from gradio_client import Client


def base_name(api_name: str) -> str:
    return re.sub(r"_\d+$", "", api_name)


class Route:
    def __init__(self, client: Client, flavour: str) -> None:
        self.client = client
        self.flavour = flavour
        self.config = client.config
        self.view = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        self.deps = {d["id"]: d for d in self.config["dependencies"]}
        self.by_name = {d["api_name"]: d for d in self.config["dependencies"] if d.get("api_name")}
        self.comps = {c["id"]: c for c in self.config["components"]}
        add = self.by_name["process_prompt_and_add_tasks"]
        self.save = self.deps[add["trigger_after"]]
        self.validate = self.deps[self.save["trigger_after"]]
        change = self.by_name["change_model" if flavour == "v6" else "change_model_from_target"]
        self.fill = next(d for d in self.config["dependencies"]
                         if d.get("trigger_after") == change["id"] and base_name(d["api_name"]) == "fill_inputs")
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
        if self.flavour == "v6":
            self.client.predict(model_type, api_name="/change_model")
        else:
            self.client.predict(model_type, api_name="/goto_model_type_with_filter")
            self.client.predict(model_type, api_name="/change_model_from_target")

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
        if self.flavour == "v6":
            return self.client.predict(model_type, api_name="/process_prompt_and_add_tasks")
        return self.client.predict(0, model_type, api_name="/process_prompt_and_add_tasks")

    def run(self, timeout: float = 30) -> tuple[Any, list[str]]:
        """activate_status, then refresh_status_async beside process_tasks; returns (result, statuses)."""
        self.client.predict(api_name="/activate_status")
        status = self.client.submit(api_name="/refresh_status_async")
        result = self.client.submit(api_name="/process_tasks").result(timeout=timeout)
        status.result(timeout=timeout)
        return result, [str(s) for s in status.outputs()]

    def gallery(self) -> list[str]:
        answer = self.client.predict(api_name="/refresh_gallery")
        update = answer[0] if self.flavour == "v6" else answer[1]
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
