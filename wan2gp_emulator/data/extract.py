"""Extract the emulator's data files from the captured real WanGP answers.

    python wan2gp_emulator/data/extract.py [CAPTURES_DIR]   # default: tests/captures of this repository

The captures are the gzipped files of ``tests/captures/`` (their README says what each is). Writes, beside
this script:

* ``wangp_<flavour>.json`` (``v6``, ``v8``, ``v9``, ``v11``, ``v12``): for every dependency (event listener) the
  emulator registers (``_chains.CHAINS``), its function name, inputs/outputs (real component ids), trigger,
  ``.then`` predecessor, queue/progress flags and the Python parameter names gradio derived from WanGP's function
  signature (``view_api``); every component those dependencies touch, with its type and constructor props; the
  header, title and theme; the release's facts (main ``gr.State``, the generation form's ``save_inputs``, the
  components' roles, the model-switch endpoints, the start-up model and dropdowns, ``save_queue_action``'s answer
  form, the task keys of ``queue.json``) and, for v12, the captured ``fill_inputs`` answer and settings formats.
* ``catalog.json``: per flavour, the models the release knows (name, family, base type, parent group, outputs,
  inputs), its family dropdown, and the dropdown labels seen in its captures.

The emulator reads only these files at run time. The JSON is written compact and sorted, so that re-running the
script on the same captures gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from wan2gp_emulator._chains import dependency_ids  # noqa: E402

# flavour -> (WanGP version, prefix of the release's web-UI captures)
RELEASES = {
    "v6": ("6.31", "2025-06"), "v8": ("8.11", "v8.11"), "v9": ("9.81", "v9.81"), "v11": ("11.66", "v11.66"),
    "v12": ("12.60", "head-2026-08"),
}
# Hidden gr.State inputs of save_inputs besides the session state, with their initial values. gradio derives no
# API names for them, so the names come from save_inputs' signature in WanGP's source at the captured commit;
# the abort button's client-id State starts empty.
HIDDEN_STATES = {
    "v12": {447: ("self_refiner_plan", []), 42: ("plugin_data", {}), 821: ("client_id", "")},
    "v11": {385: ("self_refiner_plan", []), 20: ("plugin_data", {}), 696: ("client_id", "")},
    "v9": {15: ("plugin_data", {})},
}
# The configuration tab's "Selectable Generative Models" list: every model the release knows, with its name (a
# hierarchy selector on 12.60). Kept in /config, where clients read the server's model list; 6.31's model dropdown
# already lists every model, and names the catalog's entries.
MODEL_LISTS = {"v6": 7, "v8": 530, "v9": 1145, "v11": 1498}
CONFIG_MODEL_LISTS = {"v6": 383, "v8": 530, "v9": 1145, "v11": 1498, "v12": 1947}
V12_MODEL_HIERARCHY = CONFIG_MODEL_LISTS["v12"]
# 12.60 moved the music models out of the TTS family (11.66 keeps them in models/TTS/ with the speech models).
FAMILY_FALLBACK = {"music": "tts"}

# Props that only describe the browser widget's internals, or that gradio recomputes; not constructor args.
# Releases whose whole UI is also extracted (``wangp_<flavour>_rest.json.gz``): the components and dependencies the
# emulator does not answer for, built inert and hidden so that /config and the API description have the real
# size and shape (benchmarks of connecting mean what they would on the real server).
REAL_SIZE = {"v12"}
STRIPPED = re.compile(r"^<stripped (?:html|markdown) content \((\d+) chars\)>$")
STRIPPED_SOURCE = re.compile(r"\((\d+) chars\)")

DROP_PROPS = {"name", "_selectable", "server_fns", "delete_callback", "time_to_live", "component_class_id"}
# Large html/markdown values replaced by placeholders in the capture: keep them short.
MAX_TEXT_VALUE = 4000
# Components found by their elem_id, on every release that has them.
ELEM_ROLES = {
    "family_list": "model_family", "model_base_types_list": "model_base_type", "model_list": "model_choice",
    "wangp_model_choice_target": "model_choice_target", "wangp_model_output_filter_refresh": "model_filter_refresh",
    "audio_gallery_state_paths": "audio_paths", "audio_gallery_state_selected": "audio_selected",
    "audio_gallery_refresh_trigger": "audio_refresh", "queue_html_container": "queue_view", "queue_df": "queue_view",
}
# Buttons found by their text (first match of the prefix).
BUTTON_ROLES = [("Generate", "generate_btn"), ("Add New Prompt To Queue", "add_btn"), ("Abort", "abort_btn"),
                ("Early Stop", "early_stop_btn"), ("Extend this Sample", "extend_btn"), ("Pause", "pause_btn"),
                ("Resume", "resume_btn"), ("One More Sample", "one_more_btn")]


def load(captures: Path, name: str) -> Any:
    for path in (captures / f"{name}.gz", captures / name):
        if path.is_file():
            raw = path.read_bytes()
            return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)
    raise FileNotFoundError(f"no capture {name} in {captures}")


def _fn_name(api_name: str | None) -> str:
    return re.sub(r"_\d+$", "", api_name or "")


def _props(component: dict) -> dict:
    props = {k: v for k, v in component["props"].items() if k not in DROP_PROPS}
    value = props.get("value")
    if component["type"] in ("html", "markdown") and isinstance(value, str) and len(value) > MAX_TEXT_VALUE:
        props["value"] = value[:MAX_TEXT_VALUE]
    return props


def _param_names(dep: dict, comps: dict, endpoint: dict | None) -> tuple[list[str], list[bool]]:
    """Names of the handler's positional parameters, one per input, as gradio derived them."""
    visible = iter(endpoint["parameters"] if endpoint else [])
    names: list[str] = []
    default_none: list[bool] = []
    for cid in dep["inputs"]:
        comp = comps[cid]
        if comp.get("skip_api"):  # a gr.State: hidden from the API, named after its component
            names.append(f"state_{cid}")
            default_none.append(False)
            continue
        param = next(visible, None)
        if param is None:  # a JS-only step: no Python function, no API names
            names.append(f"arg_{len(names)}")
            default_none.append(False)
            continue
        names.append(param["parameter_name"])
        default_none.append(
            bool(param["parameter_has_default"]) and param["parameter_default"] is None
            and comp["props"].get("value") is None
        )
    return names, default_none


def _roles(config: dict, deps: dict[int, dict], dep_ids: list[int]) -> dict[str, int]:
    """What the emulator's handlers call each component they answer for: {role: real component id}.

    Found by elem_id or button text where the release has one, otherwise by the component's place in the
    dependency that writes it (e.g. process_tasks' outputs are the preview, gallery and model-refresh triggers)."""
    comps = {c["id"]: c for c in config["components"]}
    by_fn: dict[str, dict] = {}
    for dep_id in dep_ids:
        fn = _fn_name(deps[dep_id]["api_name"])
        by_fn.setdefault(fn, deps[dep_id])
    used = sorted({c for d in dep_ids for c in deps[d]["inputs"] + deps[d]["outputs"]})
    roles: dict[str, int] = {}

    def put(role: str, cid: int | None) -> None:
        if cid is not None:
            roles.setdefault(role, cid)

    for cid in used:
        props = comps[cid]["props"]
        put(ELEM_ROLES.get(props.get("elem_id") or "", ""), cid)
        if comps[cid]["type"] == "button":
            text = str(props.get("value") or "")
            put(next((role for prefix, role in BUTTON_ROLES if text.startswith(prefix)), ""), cid)
    roles.pop("", None)
    roles["main_state"] = by_fn["process_tasks"]["inputs"][0]
    outputs = by_fn["process_tasks"]["outputs"]
    for role, cid in zip(["preview_trigger", "output_trigger", "models_refresh_trigger"], outputs, strict=False):
        put(role, cid)
    put("status_trigger", by_fn["activate_status"]["outputs"][0])
    put("status", by_fn["refresh_status_async"]["outputs"][0])
    put("preview", by_fn["refresh_preview"]["outputs"][0])
    add = by_fn["process_prompt_and_add_tasks"]
    put("gallery_tab_no", next((c for c in add["inputs"] if comps[c]["type"] == "number"), None))
    for cid in by_fn["refresh_gallery"]["outputs"] + by_fn["finalize_generation"]["outputs"]:
        kind = comps[cid]["type"]
        if kind == "gallery":
            put("gallery", cid)
        elif kind == "tabs":
            put("gallery_tabs", cid)
        elif kind == "number" and cid != roles.get("gallery_tab_no") and cid != roles.get("audio_selected"):
            put("gallery_choice", cid)
        elif kind == "html" and cid != roles.get("queue_view"):
            put("current_task_html", cid)
        elif kind == "column":
            put("current_gen_column", cid)
        elif kind == "row":
            put("gen_info_row", cid)
    put("queue_accordion", next((c for c in add["outputs"] if comps[c]["type"] == "accordion"),
                                next((c for c in used if comps[c]["type"] == "accordion"), None)))
    change = by_fn.get("change_model_from_target") or by_fn["change_model"]
    for cid in change["outputs"]:
        put("model_description" if comps[cid]["type"] == "html" else "header", cid)
    switch = by_fn.get("goto_model_type_with_filter") or by_fn.get("goto_model_type")
    if switch is not None:
        put("model_choice_target", switch["inputs"][-1])
    refresh = next(deps[d] for d in dep_ids if _fn_name(deps[d]["api_name"]) == "fill_inputs"
                   and deps[d]["trigger_after"] is None)
    put("refresh_form_trigger", refresh["targets"][0][0])
    export = by_fn["export_settings"]["outputs"]
    if len(export) == 2:
        put("settings_data", export[0])
        put("settings_filename", export[1])
    else:
        put("settings_download", export[0])
    put("queue_download", by_fn["save_queue_action"]["outputs"][0])
    load_settings = by_fn["load_settings_from_file"]
    put("settings_file", load_settings["inputs"][-1])
    abort_inputs = [c for c in by_fn["abort_generation"]["inputs"] if c != roles["main_state"]]
    put("abort_client_state", abort_inputs[0] if abort_inputs else None)
    return roles


def _queue_answer(record: dict) -> dict:
    """save_queue_action's form ("base64" zip or "download" link) and the fewest tasks it saves, as captured."""
    answers = {**record["save_queue_action"]["answers"], **record["save_queue_action_running"]["answers"]}
    forms = {a.get("kind") for a in answers.values()} - {None}
    counts = [int(k.split()[0]) for k, a in answers.items() if a.get("kind") and k[0].isdigit()]
    empty = [int(k.split()[0]) for k, a in answers.items() if a.get("value") == "" and k[0].isdigit()]
    assert len(forms) == 1 and (not empty or max(empty) < min(counts)), answers
    return {"form": "download" if "download" in forms.pop() else "base64", "min_tasks": min(counts)}


def _queue_keys(record: dict) -> list[str]:
    for key in ("save_queue_action", "save_queue_action_running"):
        for answer in record[key]["answers"].values():
            keys = answer.get("zip", {}).get("queue_json", {}).get("param_keys_task0")
            if keys:
                return list(keys)
    raise ValueError("no queue.json keys in the capture")


def _switch_calls(endpoints: dict) -> list[str]:
    """The endpoints a client calls, in order, to switch the session's model (the probe's working sequence)."""
    for first, second in (("goto_model_type_with_filter", "change_model_from_target"),
                          ("goto_model_type", "change_model"), ("change_model_family", "change_model")):
        if first in endpoints:
            return [first, second]
    return ["change_model"]


def extract_flavour(captures: Path, flavour: str, switch: dict) -> dict:
    version, prefix = RELEASES[flavour]
    config = load(captures, f"{prefix}_config.json")
    view = load(captures, f"{prefix}_view_api.json")["named_endpoints"]
    comps = {c["id"]: c for c in config["components"]}
    deps = {d["id"]: d for d in config["dependencies"]}
    dep_ids = dependency_ids(flavour)

    out_deps = {}
    used: set[int] = set()
    for dep_id in dep_ids:
        dep = deps[dep_id]
        endpoint = view.get(f"/{dep['api_name']}") if dep["backend_fn"] else None
        names, default_none = _param_names(dep, comps, endpoint)
        targets = [[t[0], t[1]] for t in dep["targets"]]
        out_deps[str(dep_id)] = {
            "api_name": dep["api_name"],
            "fn": _fn_name(dep["api_name"]) if dep["backend_fn"] else None,
            "js": bool(dep["js"]),
            "inputs": dep["inputs"],
            "outputs": dep["outputs"],
            "targets": targets,
            "trigger_after": dep["trigger_after"],
            "queue": dep["queue"],
            "show_progress": dep["show_progress"],
            "show_progress_on": dep.get("show_progress_on"),
            "generator": dep["types"]["generator"],
            "trigger_mode": dep["trigger_mode"],
            "params": names,
            "param_default_none": default_none,
            "n_returns": len(endpoint["returns"]) if endpoint else 0,
        }
        used.update(dep["inputs"], dep["outputs"])
        used.update(t[0] for t in dep["targets"] if t[0] is not None)

    header = next(c for c in config["components"] if c["type"] == "markdown" and "GP</SUP>" in
                  str(c["props"].get("value", "")))
    used.update((header["id"], CONFIG_MODEL_LISTS[flavour]))
    out_comps = {
        str(cid): {"type": comps[cid]["type"], "skip_api": bool(comps[cid].get("skip_api")),
                   "props": _props(comps[cid])}
        for cid in sorted(used) if cid in comps
    }
    record = switch[version]
    roles = _roles(config, deps, dep_ids)
    adds = [d for d in dep_ids if _fn_name(deps[d]["api_name"]) == "process_prompt_and_add_tasks"]
    form_dep = deps[min(adds)]["trigger_after"]  # the generation chain's save_inputs: the form's fields
    startup = record["startup_dropdowns"]
    levels = 3 if "model_base_type_choice" in startup else 2 if "model_family" in startup else 1
    updates = [x["update"] for probe in record["api_switch_probe"] for call in probe["calls"]
               for x in (call.get("result") if isinstance(call.get("result"), list) else [call.get("result")])
               if isinstance(x, dict) and "update" in x]
    return {
        "version": version,
        "title": config["title"],
        "theme": config["theme"],
        "fill_width": config["fill_width"],
        "captured_gradio": config["version"],
        "header_id": header["id"],
        "components": out_comps,
        "dependencies": out_deps,
        "roles": roles,
        "form_dep": form_dep,
        "hidden_states": {str(cid): {"name": name, "value": value}
                          for cid, (name, value) in HIDDEN_STATES.get(flavour, {}).items()},
        "model_switch": _switch_calls(record["switch_endpoints"]),
        "dropdown_levels": levels,
        "dropdown_interactive": any("interactive" in u for u in updates),
        "startup_model": startup["model_choice"]["value"],
        "save_queue": _queue_answer(record),
        "queue_params_keys": _queue_keys(record),
    }


def extract_rest(captures: Path, flavour: str, spec: dict) -> dict:
    """The rest of a release's UI: what ``extract_flavour`` left out, for inert stand-ins of the real size.

    Component values the capture replaced by a placeholder keep their real length (``"pad"``); so do the UI's own
    CSS and JS (``css_chars``, ``js_chars``), read from the capture's note."""
    _version, prefix = RELEASES[flavour]
    config = load(captures, f"{prefix}_config.json")
    view = load(captures, f"{prefix}_view_api.json")["named_endpoints"]
    comps = {c["id"]: c for c in config["components"]}
    taken = {int(k) for k in spec["components"]} | {int(k) for k in spec["hidden_states"]}
    components = {}
    for cid, comp in sorted(comps.items()):
        if cid in taken:
            continue
        props = _props(comp)
        match = STRIPPED.match(str(comp["props"].get("value") or ""))
        if match:
            props["value"] = ""
        components[str(cid)] = {"type": comp["type"], "props": props,
                                **({"pad": int(match.group(1))} if match else {})}
    dependencies = []
    for dep in config["dependencies"]:
        if str(dep["id"]) in spec["dependencies"]:
            continue
        endpoint = view.get(f"/{dep['api_name']}") if dep["backend_fn"] else None
        names, default_none = _param_names(dep, comps, endpoint)
        dependencies.append({"fn": _fn_name(dep["api_name"]) if dep["backend_fn"] else None,
                             "inputs": dep["inputs"], "outputs": dep["outputs"], "params": names,
                             "param_default_none": default_none, "queue": dep["queue"]})
    sources = {key: int(STRIPPED_SOURCE.search(str(config.get(key))).group(1))  # type: ignore[union-attr]
               for key in ("css", "js")}
    return {"components": components, "dependencies": dependencies,
            "css_chars": sources["css"], "js_chars": sources["js"]}


def _catalog(captures: Path, switch: dict) -> dict:
    """Per flavour: the family dropdown, the models, and the labels the captured dropdowns show."""
    v12_models = load(captures, "head_model_catalog.json")
    by_type = {m["model_type"]: m for m in v12_models}
    config12 = load(captures, f"{RELEASES['v12'][1]}_config.json")
    hierarchy = next(c for c in config12["components"] if c["id"] == V12_MODEL_HIERARCHY)["props"]["hierarchy"]
    parent: dict[str, str] = {}
    group_label: dict[str, str] = {}
    variant_label: dict[str, str] = {}
    for family in hierarchy["folders"]:
        for group in family["folders"]:
            head = group["items"][0]["value"]  # a group lists its parent model first
            group_label[head] = group["name"]
            for item in group["items"]:
                parent[item["value"]] = head
                variant_label[item["value"]] = item["name"].removesuffix(" *")
    out: dict[str, Any] = {}
    for flavour, (version, prefix) in RELEASES.items():
        startup = switch[version]["startup_dropdowns"]
        families = [list(c) for c in startup["model_family"]["choices"]] if "model_family" in startup else []
        family_values = {value for _, value in families}
        if flavour == "v12":
            listed = [(m["name"], m["model_type"]) for m in v12_models]
        else:
            config = load(captures, f"{prefix}_config.json")
            listed = [tuple(c) for c in next(c for c in config["components"]
                                             if c["id"] == MODEL_LISTS[flavour])["props"]["choices"]]
        # Three-level dropdowns label groups and variants (12.60's names, the release's own for its start-up
        # group); the others show the model names.
        labels: dict[str, dict[str, str]] = {"group": {}, "variant": {}}
        if "model_base_type_choice" in startup:
            labels = {"group": dict(group_label), "variant": dict(variant_label)}
            for role, key in (("model_base_type_choice", "group"), ("model_choice", "variant")):
                for label, value in startup[role]["choices"]:
                    labels[key][value] = re.sub(r"^\u2b1b ", "", label)
        models = []
        for name, model_type in listed:
            entry = {"model_type": model_type, "name": name}
            known = by_type.get(model_type)
            if flavour != "v6" and known is not None:
                family = known["family"]
                entry.update(family=family if family in family_values or not family_values
                             else FAMILY_FALLBACK[family],
                             base_model_type=known["base_model_type"],
                             parent=parent.get(model_type, known["base_model_type"]),
                             main_output=known["main_output"], inputs=known["inputs"])
            if flavour == "v12" and model_type not in parent:
                entry["hidden"] = True  # defined, but left out of 12.60's model dropdowns
            models.append(entry)
        labels = {key: {m: text for m, text in table.items() if any(e["model_type"] == m for e in models)}
                  for key, table in labels.items()}
        prefix_mark = startup["model_choice"]["choices"][0][0].startswith("\u2b1b ")
        out[flavour] = {"families": families, "models": models, "labels": labels, "status_prefix": prefix_mark}
    return out


def main(captures: Path) -> None:
    switch = load(captures, "versions_model_switch.json")
    data: dict[str, Any] = {}
    for flavour in RELEASES:
        data[flavour] = extract_flavour(captures, flavour, switch)
    v12 = data["v12"]
    v12["fill_inputs_t2v_1.3B"] = load(captures, "head_fill_inputs_t2v_1.3B.json")
    queue = load(captures, "head_queue_json_two_tasks_t2v_1.3B.json")
    v12["queue_params_keys"] = list(queue[0]["params"].keys())  # the real order (the probe's list is sorted)
    v12["queue_params_t2v_1.3B"] = queue[0]["params"]
    v12["default_settings_t2v_1.3B"] = load(captures, "head_default_settings_t2v_1.3B_full.json")
    v12["export_settings_t2v_1.3B"] = load(captures, "head_export_settings_t2v_1.3B.json")
    catalog = _catalog(captures, switch)

    files = [(f"wangp_{flavour}.json", spec) for flavour, spec in data.items()] + [("catalog.json", catalog)]
    for name, content in files:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        (HERE / name).write_text(text + "\n", encoding="utf-8")
        print(f"{name}: {len(text)} bytes")
    for flavour in sorted(REAL_SIZE):
        rest = extract_rest(captures, flavour, data[flavour])
        text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        packed = gzip.compress(text.encode("utf-8") + b"\n", mtime=0)  # mtime 0: the same bytes every run
        (HERE / f"wangp_{flavour}_rest.json.gz").write_bytes(packed)
        print(f"wangp_{flavour}_rest.json.gz: {len(packed)} bytes ({len(rest['components'])} components, "
              f"{len(rest['dependencies'])} dependencies)")
    for flavour, spec in data.items():
        print(f"{flavour}: {len(spec['components'])} components, {len(spec['dependencies'])} dependencies, "
              f"{len(catalog[flavour]['models'])} models")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "captures")
