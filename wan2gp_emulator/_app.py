"""Build the Gradio Blocks of an emulated WanGP from the captured component and dependency data.

Components are created from the real ``/config`` props (type, label, value, choices, min/max/step, ...), so that
gradio derives the same API description. Handlers are generated per dependency: their ``__name__`` is WanGP's
function name (gradio names endpoints ``fn.__name__`` plus ``_1``, ``_2``... by registration order) and their
``__signature__`` lists WanGP's parameter names, hidden ``gr.State`` inputs included at their real positions.

The registration order is the emulator's own (``_chains.CHAINS``): the generation chain gets other ``_N`` numbers
than on the real servers, and decoy chains (``save_inputs`` with target ``"settings"``, save-preset and tab chains,
another ``fill_inputs``) sit before it, as in the real UI, so a client must resolve names from ``/config``.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import gradio as gr

from . import _catalog, _spec
from ._chains import CHAINS
from ._components import HierarchySelector, WanGPImageEditor
from ._wangp import Call, WanGP

COMPONENT_TYPES: dict[str, Any] = {
    "textbox": gr.Textbox, "dropdown": gr.Dropdown, "slider": gr.Slider, "number": gr.Number,
    "checkbox": gr.Checkbox, "markdown": gr.Markdown, "html": gr.HTML, "button": gr.Button,
    "gallery": gr.Gallery, "video": gr.Video, "image": gr.Image, "audio": gr.Audio, "file": gr.File,
    "radio": gr.Radio, "uploadbutton": gr.UploadButton, "downloadbutton": gr.DownloadButton,
    "dataframe": gr.Dataframe, "checkboxgroup": gr.CheckboxGroup, "wangpimageeditor": WanGPImageEditor,
    "hierarchyselector": HierarchySelector, "imageeditor": gr.ImageEditor,
}
# Types of the real UI's other components that the emulator stands in for with a gradio one (see _add_inert_rest).
STAND_INS = {"fileexplorer": "file", "rangeslider": "slider"}
LAYOUT_TYPES: dict[str, Any] = {
    "row": gr.Row, "column": gr.Column, "tabitem": gr.Tab, "tabs": gr.Tabs, "group": gr.Group,
    "accordion": gr.Accordion,
}

# Browser-side steps of the real UI (their source was stripped from the capture): trigger the download of a
# {"url", "filename"} answer (12.60) or of a base64 payload and its file name (up to 11.66).
JS_DOWNLOAD_URL = """(value) => { try { const o = JSON.parse(value); if (o && o.url) {
 const a = document.createElement('a'); a.href = o.url; a.download = o.filename || '';
 document.body.appendChild(a); a.click(); a.remove(); } } catch (e) {} return value; }"""
JS_DOWNLOAD_B64 = """(data, name) => { if (data) { const a = document.createElement('a');
 a.href = 'data:application/octet-stream;base64,' + data; a.download = name || 'queue.zip';
 document.body.appendChild(a); a.click(); a.remove(); } return %s; }"""
CSS = ".wangp-emulator-note {opacity: 0.7; font-size: 0.85em}"


def _filtered(cls: Any, props: dict) -> dict:
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in props.items() if k in params}
    kwargs.pop("render", None)
    kwargs.pop("mirror_webcam", None)  # deprecated in gradio 5.29 (a 5.23 prop of the 6.31 capture)
    return kwargs


def _make_component(kind: str, props: dict, initial_state: Any = None) -> Any:
    if kind == "state":
        return gr.State(value=initial_state)
    cls = COMPONENT_TYPES[kind]
    kwargs = _filtered(cls, props)
    if kind == "dropdown" and kwargs.get("choices") is not None:
        values = [c[1] if isinstance(c, (list, tuple)) else c for c in kwargs["choices"]]
        value = kwargs.get("value")
        if not kwargs.get("allow_custom_value") and not kwargs.get("multiselect") and value not in values:
            kwargs["value"] = None  # the real startup values were valid for the real choices
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):
        minimal = {k: v for k, v in kwargs.items() if k in ("label", "visible", "value", "elem_id")}
        return cls(**minimal)


def _signature(dep: _spec.Dependency, *, progress: bool, event: bool) -> inspect.Signature:
    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          default=None if default_none else inspect.Parameter.empty)
        for name, default_none in zip(dep.params, dep.param_default_none, strict=True)
    ]
    if progress:
        params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=gr.Progress()))
    if event:
        params.append(inspect.Parameter("evt", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        annotation=gr.EventData, default=None))
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=gr.Request, default=None))
    return inspect.Signature(params)


def make_handler(engine: WanGP, dep: _spec.Dependency) -> Any:
    """A function gradio registers as WanGP's ``dep.fn``: same name, same parameter names."""
    assert dep.fn is not None
    impl = getattr(engine, f"h_{dep.fn}", None)
    name = dep.fn
    progress = dep.fn == "refresh_status_async"
    event = dep.fn == "load_queue_action"
    signature = _signature(dep, progress=progress, event=event)
    state_name = f"state_{engine.main_state_id}"

    def prepare(args: tuple, kwargs: dict) -> tuple[dict, Call]:
        bound = signature.bind(*args, **kwargs)
        values = dict(bound.arguments)
        request = values.pop("request", None)
        call = Call(state=values.get(state_name) if state_name in values else None, request=request,
                    progress=values.pop("progress", None), event=values.pop("evt", None))
        if call.state is not None:
            engine.attach(call.state, request)
        return values, call

    if impl is None:
        def handler(*args: Any, **kwargs: Any) -> Any:
            return engine.noop(dep)
    elif dep.generator:
        def handler(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            values, call = prepare(args, kwargs)
            result = impl(dep, values, call)
            if inspect.isgenerator(result):
                yield from result
            elif result is not None:
                yield result
    else:
        def handler(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            values, call = prepare(args, kwargs)
            return impl(dep, values, call)

    handler.__name__ = handler.__qualname__ = name
    handler.__signature__ = signature  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request, **({"evt": gr.EventData} if event else {})}
    handler.__doc__ = None
    return handler


def build_app(engine: WanGP, *, real_size: bool = False) -> tuple[gr.Blocks, dict[int, Any]]:
    spec = engine.spec
    flavour = engine.flavour
    theme = gr.themes.Soft() if spec.theme == "soft" else None
    with gr.Blocks(title=spec.title, theme=theme, fill_width=spec.fill_width, analytics_enabled=False,
                   css=CSS) as demo:
        comps: dict[Any, Any] = {}
        header = spec.components[spec.header_id]
        comps[spec.header_id] = gr.Markdown(**_filtered(gr.Markdown, header["props"]))
        gr.Markdown("Emulated WanGP: a test server that writes synthetic videos; no model weights are used.",
                    elem_classes=["wangp-emulator-note"])
        states = {engine.main_state_id: engine.initial_state(),
                  **{cid: copy.deepcopy(value) for cid, (_, value) in spec.hidden_states.items()}}
        startup = _startup_dropdowns(engine)
        layout_ids = []
        for cid in sorted(spec.components):
            if cid == spec.header_id:
                continue
            comp = spec.components[cid]
            if comp["type"] in LAYOUT_TYPES:
                layout_ids.append(cid)
                continue
            if comp["type"] == "state":
                comps[cid] = gr.State(value=states.get(cid))
                continue
            comps[cid] = _make_component(comp["type"], {**comp["props"], **startup.get(cid, {})})
        with gr.Column(visible=False):  # layout blocks the real handlers update (their children are elsewhere)
            for cid in layout_ids:
                comp = spec.components[cid]
                cls = LAYOUT_TYPES[comp["type"]]
                with cls(**_filtered(cls, comp["props"])) as block:
                    pass
                comps[cid] = block
            comps["abort_edit"] = gr.Button("Abort", visible=False)
        for chain in CHAINS[flavour]:
            _register_chain(engine, demo, comps, chain)
        rest = _spec.load_rest(flavour) if real_size else None
        if rest is not None:
            _add_inert_rest(demo, comps, rest)
    return demo, comps


def _padding(chars: int, line: str) -> str:
    return (line * (chars // len(line) + 1))[:chars]


def _add_inert_rest(demo: gr.Blocks, comps: dict[Any, Any], rest: dict) -> None:
    """The real UI's other components and events, hidden and inert, so that ``/config`` and the API description
    have the real release's size and shape: as many components of each type, with their props, and as many
    events with their inputs, outputs and parameter names. The events' functions are named ``inert_<WanGP's
    name>`` (so no client mistakes one for a step it uses); calling one changes nothing."""
    trigger = gr.Button("inert", visible=False)
    with gr.Column(visible=False):
        with gr.Tabs(visible=False) as tab_holder:
            pass
        for key, comp in sorted(rest["components"].items(), key=lambda item: int(item[0])):
            kind, props = comp["type"], dict(comp["props"])
            if kind == "form":
                continue  # gradio wraps form fields in its own Form blocks
            kind = STAND_INS.get(kind, kind)
            if kind in ("video", "image", "audio", "file", "gallery", "wangpimageeditor", "imageeditor"):
                props.pop("value", None)  # a served file of the real server: not here
            if "pad" in comp:
                props["value"] = _padding(comp["pad"], "<p>WanGP help text, stood in by the emulator.</p>\n")
            if kind == "state":
                comps[int(key)] = gr.State()
            elif kind == "tabitem":  # inside one Tabs: alone, gradio would wrap each in a Tabs of its own
                with tab_holder, gr.Tab(**_filtered(gr.Tab, props)) as block:
                    pass
                comps[int(key)] = block
            elif kind in LAYOUT_TYPES:
                cls = LAYOUT_TYPES[kind]
                with cls(**_filtered(cls, props)) as block:
                    pass
                comps[int(key)] = block
            else:
                comps[int(key)] = _make_component(kind, props)
    for dep in rest["dependencies"]:
        inputs = [comps[c] for c in dep["inputs"] if c in comps]
        outputs = [comps[c] for c in dep["outputs"] if c in comps]
        fn = None
        if dep["fn"] is not None and len(inputs) == len(dep["inputs"]):
            fn = _inert_handler(dep, len(outputs))
        trigger.click(fn=fn, inputs=inputs if fn else None, outputs=outputs if fn else None, queue=dep["queue"])
    demo.css = (demo.css or "") + "\n" + _padding(rest["css_chars"], "/* WanGP's style sheet, stood in. */\n")
    demo.js = _padding(rest["js_chars"], "// WanGP's browser code, stood in by the emulator.\n")


def _inert_handler(dep: dict, n_outputs: int) -> Any:
    params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=None if none else inspect.Parameter.empty)
              for name, none in zip(dep["params"], dep["param_default_none"], strict=True)]

    def handler(*args: Any, **kwargs: Any) -> Any:
        skips = tuple(gr.skip() for _ in range(n_outputs))
        return skips[0] if n_outputs == 1 else skips or None

    handler.__name__ = handler.__qualname__ = f"inert_{dep['fn']}"
    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    handler.__doc__ = None
    return handler


def _startup_dropdowns(engine: WanGP) -> dict[int, dict]:
    """Props of the model dropdowns when the server starts with another model than the captured one (the last
    model recorded in wgp_config.json): the lists of that model's family and group, as WanGP builds them."""
    spec = engine.spec
    if engine.startup_model == spec.startup_model:
        return {}
    if spec.dropdown_levels == 1:
        return {spec.roles["model_choice"]: {"value": engine.startup_model}}
    updates = _catalog.model_dropdowns(engine.flavour, engine.startup_model)
    return {spec.roles[role]: {k: [list(c) for c in v] if k == "choices" else v for k, v in kwargs.items()}
            for role, kwargs in updates.items()}


def _listener_kwargs(dep: _spec.Dependency, comps: dict[Any, Any]) -> dict:
    kwargs: dict[str, Any] = {
        "inputs": [comps[c] for c in dep.inputs],
        "outputs": [comps[c] for c in dep.outputs],
        "queue": dep.queue,
        "show_progress": dep.show_progress,
        "trigger_mode": dep.trigger_mode,
    }
    if dep.show_progress_on:
        kwargs["show_progress_on"] = [comps[c] for c in dep.show_progress_on]
    if dep.fn is not None:
        # Gradio's concurrency group defaults to the function's identity: WanGP registers one function for
        # several events (process_tasks and process_tasks_1, ...), and they share one slot, server-wide. The
        # emulator makes a handler per event, so it names the group after WanGP's function instead.
        kwargs["concurrency_id"] = f"wangp-{dep.fn}"
    return kwargs


def _fn_and_js(engine: WanGP, dep: _spec.Dependency) -> tuple[Any, str | None]:
    if dep.fn is not None:
        return make_handler(engine, dep), None
    if not dep.inputs:
        return None, "() => []"
    if engine.spec.save_queue_form == "download":
        return None, JS_DOWNLOAD_URL
    return None, JS_DOWNLOAD_B64 % ("data" if dep.outputs else "[]")


def _register_chain(engine: WanGP, demo: gr.Blocks, comps: dict[Any, Any], chain: list[Any]) -> None:
    spec = engine.spec
    previous = None
    for entry in chain:
        extra = None
        if isinstance(entry, dict):
            extra, entry = entry["extra"], entry["dep"]
        dep = spec.dep(entry)
        fn, js = _fn_and_js(engine, dep)
        kwargs = _listener_kwargs(dep, comps)
        if previous is None:
            triggers = []
            if extra is not None:
                triggers.append(comps[extra].click)
            else:
                for target, event in dep.targets:
                    block = demo if target in (0, None) else comps[target]
                    triggers.append(getattr(block, event))
            previous = gr.on(triggers=triggers, fn=fn, js=js, **kwargs)
        else:
            previous = previous.then(fn=fn, js=js, **kwargs)
