"""Find WanGP's endpoints from the server's own ``/config`` and API description: roles, not numbers.

WanGP sets no ``api_name``; Gradio names each endpoint after its Python function and numbers repeats
(``save_inputs_15``) in UI build order, which moves between versions, plugins and options. So the client
knows *roles* (which step of the generation chain does what) and resolves them on the dependency graph:
``process_prompt_and_add_tasks`` is found by name, the ``save_inputs_N`` it follows (``trigger_after``) is the
form writer, the ``validate_wizard_prompt_N`` before that the validator, and so on (see the reference, §4).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import UnsupportedServerError, Wan2GPValidationError, did_you_mean
from .fingerprint import gradio_version, is_wangp, wangp_version

_SUFFIX = re.compile(r"_\d+$")


def base_name(api_name: str) -> str:
    """``"/save_inputs_15"`` -> ``"save_inputs"``."""
    return _SUFFIX.sub("", api_name.lstrip("/"))


@dataclass(frozen=True)
class Parameter:
    name: str
    component: str
    python_type: str
    has_default: bool
    default: Any

    def check(self, value: Any, endpoint: str) -> None:
        """Raise :class:`Wan2GPValidationError` when ``value`` can't be this parameter's type."""
        if value is None:
            return  # gradio passes None through; components treat it as empty
        kind = self.python_type
        where = f"{endpoint}: parameter {self.name!r}"
        if kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Wan2GPValidationError(f"{where} takes a number, not {type(value).__name__}", field=self.name)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise Wan2GPValidationError(f"{where} takes true/false, not {type(value).__name__}", field=self.name)
        elif kind == "str" or kind.startswith("Literal["):
            # Dropdown choices are checked by the server per session (they change with the model).
            if not isinstance(value, str | int | float):
                raise Wan2GPValidationError(f"{where} takes text, not {type(value).__name__}", field=self.name)
        elif kind.startswith("list"):
            if not isinstance(value, list | tuple):
                raise Wan2GPValidationError(f"{where} takes a list, not {type(value).__name__}", field=self.name)
        elif kind == "filepath" or kind.startswith("dict(path") or "filepath" in kind:
            if isinstance(value, str | Path) and not str(value).startswith(("http://", "https://")):
                if not Path(value).is_file():
                    raise Wan2GPValidationError(f"{where}: file not found: {value}", field=self.name)


def parameter_table(info: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """What a client needs of an API description (``/gradio_api/info``): per named endpoint, its parameters as
    ``[name, component, python type, has default, default]``. About 2 % of the description's size."""
    table: dict[str, list[list[Any]]] = {}
    for api_name, spec in (info.get("named_endpoints") or {}).items():
        if not isinstance(spec, dict):
            continue
        table[api_name] = [
            [p.get("parameter_name") or p.get("label", f"param_{i}"), p.get("component", ""),
             (p.get("python_type") or {}).get("type", ""), bool(p.get("parameter_has_default")),
             p.get("parameter_default")]
            for i, p in enumerate(spec.get("parameters", [])) if isinstance(p, dict)
        ]
    return table


@dataclass(frozen=True)
class Endpoint:
    """One named endpoint of the connected server: its place in ``/config`` and, once the API description is
    read, its parameters."""

    api_name: str  # "/save_inputs_15"
    dep_id: int
    parameters: tuple[Parameter, ...]
    returns: tuple[str, ...]  # the component type of each API-visible output
    queue: bool = True

    @property
    def base(self) -> str:
        return base_name(self.api_name)

    def param(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def bind(self, params: dict[str, Any]) -> list[Any]:
        """Order keyword values as the endpoint takes them, with defaults; check names and types."""
        names = [p.name for p in self.parameters]
        unknown = [k for k in params if k not in names]
        if unknown:
            raise Wan2GPValidationError(
                f"{self.api_name} has no parameter {unknown[0]!r}{did_you_mean(unknown[0], names)}; "
                f"it takes: {', '.join(names) or 'nothing'}",
                field=unknown[0],
            )
        args = []
        for p in self.parameters:
            if p.name in params:
                p.check(params[p.name], self.api_name)
                args.append(params[p.name])
            elif p.has_default:
                args.append(p.default)
            else:
                raise Wan2GPValidationError(f"{self.api_name}: parameter {p.name!r} is required", field=p.name)
        return args


@dataclass(frozen=True)
class ModelSwitch:
    """How the server's web UI selects a model, found on its ``/config`` graph by role (never by version).

    The model dropdown the add-task step reads holds only one group of models at a time (6.x: every model;
    8.x: one family; 9.x and later: one base type's variants), and gradio refuses a value outside the
    session's current choices. So a switch first loads the model's group into the dropdown, then selects it:

    * ``group``: an endpoint that takes any model type (a hidden textbox) and writes the group's choices into
      the model dropdown (``goto_model_type`` on 9.x–11.x, ``goto_model_type_with_filter`` on 12.x);
    * else ``family``: an endpoint that takes a family from the family dropdown and writes that family's models
      into the model dropdown (``change_model_family`` on 8.x); the model's family is found by asking it;
    * ``select``: the endpoint that makes the model the session's model (``change_model`` on 6.x–11.x: the
      dropdown's value; ``change_model_from_target`` on 12.x: the textbox the group step read).
    """

    select: str
    group: str | None = None
    family: str | None = None
    family_index: int = -1  # position of the model dropdown among the family step's API outputs
    group_index: int = -1  # position of the model dropdown among the group step's API outputs

    @property
    def endpoints(self) -> list[str]:
        return [e for e in (self.group, self.family, self.select) if e]


@dataclass
class Chain:
    """The endpoints of each role in WanGP's generation flow, resolved on the connected server."""

    model_switch: list[str]  # the endpoints of `switch`, in call order (shown by `movie-director endpoints`)
    switch: ModelSwitch
    fill: str
    validate: str | None
    save_inputs: str
    add_tasks: str
    activate: str
    process: str
    status: str | None
    gallery: str
    gallery_index: int
    finalize: str | None
    abort: str
    abort_by_client_id: str | None
    clear_queue: str
    save_queue: str | None
    export_settings: str | None
    load_settings: str | None
    pause: str | None
    resume: str | None
    # save_inputs parameter name -> index of fill's API-visible outputs holding that field's form value
    form_index: dict[str, int] = field(default_factory=dict)
    # control role ("video_guide", "video_mask", "image_refs") -> index of fill's API-visible outputs holding the
    # dropdown whose choices are the model's modes for that input (the letters of ``video_prompt_type``)
    control_index: dict[str, int] = field(default_factory=dict)


class ServerApi:
    """Everything learnt from one read of ``/config`` and the API description.

    The generation chain, the model switch and the model list are resolved from ``/config`` alone, at once. The
    API description (``info``: 4.5 MB on WanGP 12.60, and the slowest answer of a Gradio server) adds only the
    Python names of each endpoint's parameters. Give it, or ``describe``: a function that fetches it, called
    once, the first time a name is needed (:attr:`endpoints`, :meth:`save_inputs_component`, the chain's
    ``form_index``). A client starts that download in the background when it connects.
    """

    def __init__(self, config: dict[str, Any], info: dict[str, Any] | None = None, url: str = "", *,
                 describe: Callable[[], dict[str, Any]] | None = None) -> None:
        self.url = url
        self.config = config
        if not is_wangp(config):
            title = config.get("title") or "untitled"
            raise UnsupportedServerError(
                f"{url or 'the server'} is a Gradio app ({title!r}) but not a WanGP web UI",
                missing=["WanGP header"], server=url,
                hint="point the client at WanGP's web UI (python wgp.py), usually http://127.0.0.1:7860",
            )
        self.wangp_version = wangp_version(config)
        self.gradio_version = gradio_version(config)
        self._components = {c["id"]: c for c in config.get("components", [])}
        self._deps = {d.get("id", i): d for i, d in enumerate(config.get("dependencies", []))}
        # The named endpoints as /config shows them: ids and API-visible inputs, no parameter names yet.
        self._shape: dict[str, Endpoint] = {
            "/" + d["api_name"]: Endpoint("/" + d["api_name"], dep_id, (), (), bool(d.get("queue", True)))
            for dep_id, d in self._deps.items()
            if isinstance(d.get("api_name"), str) and d.get("show_api", True) is not False
        }
        self.fingerprint: str | None = None  # set by an ApiCache: names this server build
        self._describe = describe
        self._described: dict[str, Endpoint] | None = None
        self._describe_lock = threading.Lock()
        self.chain = self._resolve_chain()
        if info is not None:
            self.describe(info)

    @property
    def endpoint_count(self) -> int:
        """How many named endpoints the server has (from ``/config``; no download)."""
        return len(self._shape)

    @property
    def described(self) -> bool:
        return self._described is not None

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """Every named endpoint with its parameters; fetches the API description the first time."""
        if self._described is None:
            with self._describe_lock:
                if self._described is None:
                    if self._describe is None:
                        raise UnsupportedServerError(f"{self.url or 'the server'}: no API description",
                                                     missing=["API description"], server=self.url)
                    self._apply(self._describe())
        assert self._described is not None
        return self._described

    def describe(self, info: dict[str, Any]) -> None:
        """Add the API description's parameter names (a dict as ``/gradio_api/info`` gives it)."""
        with self._describe_lock:
            self._apply(info)

    def parameter_table(self) -> dict[str, list[list[Any]]]:
        """The parameters of every endpoint, compact (what a cache keeps instead of the whole description)."""
        return {name: [[p.name, p.component, p.python_type, p.has_default, p.default] for p in e.parameters]
                for name, e in self.endpoints.items()}

    def _apply(self, info: dict[str, Any]) -> None:
        table = info.get("parameter_table")
        if not isinstance(table, dict):
            table = parameter_table(info)
        described: dict[str, Endpoint] = {}
        for api_name, shaped in self._shape.items():
            rows = table.get(api_name)
            if rows is None:
                continue
            params = tuple(Parameter(str(n), str(c), str(t), bool(h), d) for n, c, t, h, d in rows)
            returns = tuple(self.component(c).get("type", "") for c in self._api_outputs(shaped))
            described[api_name] = Endpoint(api_name, shaped.dep_id, params, returns, shaped.queue)
        # Map each save_inputs parameter to the fill_inputs output that holds its value (same component).
        save = described.get(self.chain.save_inputs)
        if save is None:
            raise UnsupportedServerError(
                f"WanGP {self.wangp_version or '(unknown version)'} at {self.url or 'the server'}: its API "
                f"description lacks {self.chain.save_inputs}", missing=[self.chain.save_inputs], server=self.url,
                hint="this WanGP version is not supported yet; please report it with its version")
        fill_outputs = {cid: i for i, cid in enumerate(self._api_outputs(self._shape[self.chain.fill]))}
        form_index = {}
        for param, cid in zip(save.parameters, self._api_inputs(save), strict=False):
            if cid in fill_outputs:
                form_index[param.name] = fill_outputs[cid]
        self.chain.form_index = form_index
        self.chain.control_index = self._control_dropdowns(described, fill_outputs)
        self._described = described

    def _control_dropdowns(self, described: dict[str, Endpoint], fill_outputs: dict[int, int]) -> dict[str, int]:
        """Where fill_inputs states the model's control modes: the dropdown each ``refresh_video_prompt_type_*``
        handler reads (its parameter ``video_prompt_type_<role>``), when fill_inputs also writes it.

        WanGP registers the main dropdown's handler before the alternative ones (12.60's "Video to Video"
        dropdown calls the same function), and the Edit tab's copy comes later: the first one wins.
        """
        found: dict[str, int] = {}
        for role, base in (("video_guide", "refresh_video_prompt_type_video_guide"),
                           ("video_mask", "refresh_video_prompt_type_video_mask"),
                           ("image_refs", "refresh_video_prompt_type_image_refs")):
            for endpoint in sorted((e for e in described.values() if e.base == base), key=lambda e: e.dep_id):
                pairs = zip(endpoint.parameters, self._api_inputs(self._shape[endpoint.api_name]), strict=False)
                cid = next((c for p, c in pairs if p.name == f"video_prompt_type_{role}"), None)
                if cid is not None and cid in fill_outputs:
                    found[role] = fill_outputs[cid]
                    break
        return found

    # --- graph helpers --------------------------------------------------------------------------------

    def _named(self, base: str) -> list[Endpoint]:
        return sorted((e for e in self._shape.values() if e.base == base), key=lambda e: e.dep_id)

    def _after(self, endpoint: Endpoint | None) -> Endpoint | None:
        """The endpoint this one runs after (``trigger_after``), if it is a named one."""
        if endpoint is None:
            return None
        prev = self._deps[endpoint.dep_id].get("trigger_after")
        return next((e for e in self._shape.values() if e.dep_id == prev), None)

    def _descendants(self, dep_id: int) -> set[int]:
        children: dict[int, list[int]] = {}
        for i, d in self._deps.items():
            if d.get("trigger_after") is not None:
                children.setdefault(d["trigger_after"], []).append(i)
        seen: set[int] = set()
        stack = [dep_id]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    def _api_outputs(self, endpoint: Endpoint) -> list[int]:
        return [c for c in self._deps[endpoint.dep_id].get("outputs", []) if not self._skip(c)]

    def _api_inputs(self, endpoint: Endpoint) -> list[int]:
        return [c for c in self._deps[endpoint.dep_id].get("inputs", []) if not self._skip(c)]

    def _skip(self, component_id: int) -> bool:
        comp = self._components.get(component_id, {})
        return bool(comp.get("skip_api", comp.get("type") == "state"))

    def component(self, component_id: int) -> dict[str, Any]:
        return self._components.get(component_id, {})

    # --- chain ------------------------------------------------------------------------------------------

    def _resolve_chain(self) -> Chain:
        missing: list[str] = []

        # Adding a task: process_prompt_and_add_tasks right after a save_inputs that follows a validator.
        adds = [a for a in self._named("process_prompt_and_add_tasks")
                if (s := self._after(a)) is not None and s.base == "save_inputs"]
        add = adds[0] if adds else None
        save = self._after(add)
        validate = self._after(save)
        if validate is not None and validate.base != "validate_wizard_prompt":
            validate = None
        if add is None or save is None:
            missing.append("process_prompt_and_add_tasks after save_inputs")

        # Model switch: see ModelSwitch; the model dropdown is the one the add-task step reads.
        dropdown = self._model_dropdown(add) if add else None
        self.models = self._find_models(dropdown)
        switch = self._resolve_switch(dropdown) if dropdown is not None else None
        if switch is None:
            missing.append("model switch (an endpoint that selects the add-task step's model)")

        # Form fill: the fill_inputs that follows the model switch.
        select = self._shape.get(switch.select) if switch else None
        fill = next((f for f in self._named("fill_inputs") if select and self._after(f) == select), None)
        if fill is None and save is not None:
            wanted = set(self._api_inputs(save))
            fill = next((f for f in self._named("fill_inputs")
                         if not self._api_inputs(f) and len(wanted - set(self._api_outputs(f))) <= 1), None)
        if fill is None:
            missing.append("fill_inputs")

        # Processing: the steps that follow an add-task chain (Generate button).
        chain_deps: set[int] = set()
        for a in adds:
            chain_deps |= self._descendants(a.dep_id)

        def in_chain(base: str) -> Endpoint | None:
            named = self._named(base)
            return next((e for e in named if e.dep_id in chain_deps), named[0] if named else None)

        activate = in_chain("activate_status")
        process = in_chain("process_tasks")
        finalize = in_chain("finalize_generation")
        if activate is None:
            missing.append("activate_status")
        if process is None:
            missing.append("process_tasks")
        galleries = self._named("refresh_gallery") or ([finalize] if finalize else [])
        gallery = galleries[0] if galleries else None
        gallery_index = self._gallery_index(gallery) if gallery else -1
        if gallery is None or gallery_index < 0:
            missing.append("refresh_gallery (with a Gallery output)")

        aborts = self._named("abort_generation")
        # The Abort button's step takes nothing; 11.x and later have a second one that takes a client id.
        abort = next((e for e in aborts if not self._api_inputs(e)), None)
        abort_cid = next((e for e in aborts if len(self._api_inputs(e)) == 1 and
                          self.component(self._api_inputs(e)[0]).get("type") in ("textbox", "state")), None)
        if abort is None:
            missing.append("abort_generation")
        queue_display = set(self._api_outputs(add)) if add else set()
        clears = self._named("clear_queue_action")
        clear = next((c for c in clears if queue_display & set(self._api_outputs(c))), clears[0] if clears else None)
        if clear is None:
            missing.append("clear_queue_action")

        if missing:
            raise UnsupportedServerError(
                f"WanGP {self.wangp_version or '(unknown version)'} at {self.url or 'the server'}: "
                f"cannot resolve its generation chain; missing: {', '.join(missing)}",
                missing=missing, server=self.url,
                hint="this WanGP version is not supported yet; please report it with its version",
            )
        assert add and save and fill and activate and process and abort and clear and gallery and switch

        def first(base: str) -> str | None:
            named = self._named(base)
            return named[0].api_name if named else None

        chain = Chain(
            model_switch=switch.endpoints,
            switch=switch,
            fill=fill.api_name,
            validate=validate.api_name if validate else None,
            save_inputs=save.api_name,
            add_tasks=add.api_name,
            activate=activate.api_name,
            process=process.api_name,
            status=first("refresh_status_async"),
            gallery=gallery.api_name,
            gallery_index=gallery_index,
            finalize=finalize.api_name if finalize else None,
            abort=abort.api_name,
            abort_by_client_id=abort_cid.api_name if abort_cid else None,
            clear_queue=clear.api_name,
            save_queue=first("save_queue_action"),
            export_settings=first("export_settings"),
            load_settings=first("load_settings_from_file"),
            pause=first("pause_generation"),
            resume=first("resume_generation"),
        )
        return chain

    def _gallery_index(self, endpoint: Endpoint) -> int:
        for i, cid in enumerate(self._api_outputs(endpoint)):
            if self.component(cid).get("type") == "gallery":
                return i
        return -1

    def save_inputs_component(self, name: str) -> dict[str, Any]:
        """The /config component behind a save_inputs parameter (for its initial props)."""
        save = self.endpoints[self.chain.save_inputs]
        for param, cid in zip(save.parameters, self._api_inputs(save), strict=False):
            if param.name == name:
                return self.component(cid)
        return {}

    def _model_dropdown(self, add: Endpoint) -> int | None:
        """The model dropdown the add-task step reads (its ``model_choice``): its one dropdown input."""
        dropdowns = [c for c in self._api_inputs(add) if self.component(c).get("type") == "dropdown"]
        return dropdowns[0] if len(dropdowns) == 1 else None

    def _resolve_switch(self, dropdown: int) -> ModelSwitch | None:
        """The model switch of this server, by role (see :class:`ModelSwitch`)."""
        by_dep = sorted(self._shape.values(), key=lambda e: e.dep_id)
        adders = {"process_prompt_and_add_tasks"}

        def one_input(e: Endpoint, kind: str) -> int | None:
            inputs = self._api_inputs(e)
            if len(inputs) == 1 and self.component(inputs[0]).get("type") == kind:
                return inputs[0]
            return None

        # The group step: one textbox in, the model dropdown among its outputs. Of several (9.x registers the
        # same function twice), the one whose outputs refresh the form (a fill_inputs listens to one of them).
        form_triggers = {t[0] for d in self._deps.values() if _SUFFIX.sub("", d.get("api_name") or "") ==
                         "fill_inputs" for t in d.get("targets", []) if t and t[0] is not None}
        groups = [e for e in by_dep if one_input(e, "textbox") is not None and dropdown in self._api_outputs(e)]
        groups.sort(key=lambda e: not (form_triggers & set(self._api_outputs(e))))
        group = groups[0] if groups else None
        # The select step: the model dropdown in (6.x-11.x), or the group's textbox right after it (12.x).
        select = None
        if group is not None:
            select = next((e for e in by_dep if self._after(e) == group and
                           self._api_inputs(e) == self._api_inputs(group)), None)
        if select is None:
            select = next((e for e in by_dep if self._api_inputs(e) == [dropdown] and e.base not in adders and
                           dropdown not in self._api_outputs(e)), None)
        if select is None:
            return None
        if group is not None:
            return ModelSwitch(select=select.api_name, group=group.api_name,
                               group_index=self._api_outputs(group).index(dropdown))
        # The family step (8.x): one dropdown in (not the model's), the model dropdown among its outputs.
        family = next((e for e in by_dep if (c := one_input(e, "dropdown")) is not None and c != dropdown and
                       dropdown in self._api_outputs(e) and self._choice_values(c)), None)
        if family is not None and self._choice_values(self._api_inputs(family)[0]) and \
                not set(self.models) <= set(self._choice_values(dropdown)):
            return ModelSwitch(select=select.api_name, family=family.api_name,
                               family_index=self._api_outputs(family).index(dropdown))
        return ModelSwitch(select=select.api_name)  # 6.x: the dropdown holds every model

    def _choice_values(self, component_id: int) -> list[str]:
        """The values of a dropdown's choices (or of a hierarchy selector's items) as ``/config`` gives them."""
        return [value for value, _label in _choices_of(self.component(component_id))]

    def families(self) -> list[str]:
        """The family dropdown's values, when the model switch goes through it (8.x)."""
        switch = self.chain.switch
        if switch.family is None:
            return []
        return self._choice_values(self._api_inputs(self._shape[switch.family])[0])

    def model_dropdown_choices(self) -> list[str]:
        """Model types offered at start-up by the model dropdown the add-task step checks (one group)."""
        cid = self._model_dropdown(self._shape[self.chain.add_tasks])
        return self._choice_values(cid) if cid is not None else []

    def _find_models(self, dropdown: int | None) -> dict[str, str]:
        """Every model type the server has, with its label, from ``/config`` alone (:attr:`models`).

        The model dropdown shows one group, but WanGP's configuration tab has a "Selectable Generative Models"
        list of every model (a dropdown up to 11.x, a hierarchy selector on 12.x). It is found by role: the
        largest list of choices that holds every model of the model dropdown. Empty when the server has no such
        list (only the dropdown's own group is known then).
        """
        if dropdown is None:
            return {}
        shown = dict(_choices_of(self.component(dropdown)))
        best: dict[str, str] = {}
        for cid, comp in self._components.items():
            if cid == dropdown or comp.get("type") not in ("dropdown", "hierarchyselector"):
                continue
            values = dict(_choices_of(comp))
            if shown and set(shown) <= set(values) and len(values) > len(best):
                best = values
        return {**best, **{k: v for k, v in shown.items() if k not in best}} if best else {}


def _choices_of(component: dict[str, Any]) -> list[tuple[str, str]]:
    """(value, label) pairs of a dropdown's choices, or of a hierarchy selector's items (12.x)."""
    props = component.get("props", {}) if component else {}
    if component and component.get("type") == "hierarchyselector":
        tree = props.get("hierarchy")
        if isinstance(tree, str):
            import ast

            try:
                tree = ast.literal_eval(tree)
            except (ValueError, SyntaxError):
                return []
        found: list[tuple[str, str]] = []

        def walk(node: Any, path: str) -> None:
            if not isinstance(node, dict):
                return
            for item in node.get("items") or []:
                if isinstance(item, dict) and item.get("value") is not None:
                    label = f"{path} {item.get('name', '')}".strip() if path else str(item.get("name", ""))
                    found.append((str(item["value"]), label))
            for folder in node.get("folders") or []:
                if isinstance(folder, dict):
                    walk(folder, str(folder.get("path") or folder.get("name") or ""))

        walk(tree, "")
        return found
    pairs = []
    for choice in props.get("choices") or []:
        if isinstance(choice, list | tuple) and len(choice) == 2:
            pairs.append((str(choice[1]), str(choice[0])))
        elif isinstance(choice, str | int | float):
            pairs.append((str(choice), str(choice)))
    return pairs
