"""Extract the emulator's data files from the captured real WanGP answers.

    python wan2gp_emulator/data/extract.py ../shared/wan2gp-real

Writes, beside this script:

* ``wangp_v12.json`` and ``wangp_v6.json``: for every dependency (event listener) the emulator reproduces,
  its function name, inputs/outputs (real component ids), trigger, ``.then`` predecessor, queue/progress flags and
  the Python parameter names gradio derived from WanGP's function signature (``view_api``); every component those
  dependencies touch, with its type and constructor props; the header, title and theme; the captured
  ``fill_inputs`` answer (v12) and the queue/settings formats.
* ``catalog.json``: the 217 model definitions of WanGP 12.60 and the 31 models of WanGP 6.31's dropdown.

The emulator reads only these files at run time, so it works without ``../shared`` present. The JSON is written
compact and sorted, so that re-running the script on the same capture gives the same bytes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Dependencies (real /config ids) the emulator reproduces. Everything a client needs for the generation, queue,
# gallery, settings and model-switch flows, plus the decoy chains the real UI has (settings/lset/tab chains).
V12_DEPS = [
    90, 93, 94, 111, 112, 113, 114, 115, 116, 117, 118, 119, 184, 185, 186, 189, 190, 194, 195, 196, 197, 198,
    203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 312, 313, 314, 319, 321, 322, 323, 324, 325, 326, 327,
    328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 351, 352, 353, 354, 355,
    629, 630, 632, 633,
]
V6_DEPS = [
    15, 16, 25, 26, 27, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50,
    51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 76, 77, 78, 79, 80, 81, 82, 83, 84,
]

# Props that only describe the browser widget's internals, or that gradio recomputes; not constructor args.
DROP_PROPS = {"name", "_selectable", "server_fns", "delete_callback", "time_to_live", "component_class_id"}
# Large html/markdown values replaced by placeholders in the capture: keep them short.
MAX_TEXT_VALUE = 4000


def _fn_name(api_name: str | None) -> str:
    name = re.sub(r"_\d+$", "", api_name or "")
    return name


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


def extract_flavour(real: Path, config_file: str, view_file: str, dep_ids: list[int]) -> dict:
    config = json.loads((real / config_file).read_text())
    view = json.loads((real / view_file).read_text())["named_endpoints"]
    comps = {c["id"]: c for c in config["components"]}
    deps = {d["id"]: d for d in config["dependencies"]}

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
    used.add(header["id"])
    out_comps = {
        str(cid): {"type": comps[cid]["type"], "skip_api": bool(comps[cid].get("skip_api")),
                   "props": _props(comps[cid])}
        for cid in sorted(used) if cid in comps
    }
    return {
        "title": config["title"],
        "theme": config["theme"],
        "fill_width": config["fill_width"],
        "captured_gradio": config["version"],
        "header_id": header["id"],
        "components": out_comps,
        "dependencies": out_deps,
    }


def main(real: Path) -> None:
    v12 = extract_flavour(real, "head-2026-08_config.json", "head-2026-08_view_api.json", V12_DEPS)
    v12["version"] = "12.60"
    v12["fill_inputs_t2v_1.3B"] = json.loads((real / "head_fill_inputs_t2v_1.3B.json").read_text())
    queue = json.loads((real / "head_queue_json_two_tasks_t2v_1.3B.json").read_text())
    v12["queue_params_keys"] = list(queue[0]["params"].keys())
    v12["queue_params_t2v_1.3B"] = queue[0]["params"]
    v12["default_settings_t2v_1.3B"] = json.loads((real / "head_default_settings_t2v_1.3B_full.json").read_text())
    v12["export_settings_t2v_1.3B"] = json.loads((real / "head_export_settings_t2v_1.3B.json").read_text())

    v6 = extract_flavour(real, "2025-06_config.json", "2025-06_view_api.json", V6_DEPS)
    v6["version"] = "6.31"

    catalog = {
        "v12": json.loads((real / "head_model_catalog.json").read_text()),
        "v6": [{"model_type": value, "name": label} for label, value in
               next(c for c in json.loads((real / "2025-06_config.json").read_text())["components"]
                    if c["id"] == 7)["props"]["choices"]],
        "v12_families": next(c for c in json.loads((real / "head-2026-08_config.json").read_text())["components"]
                             if c["id"] == 16)["props"]["choices"],
    }

    for name, data in (("wangp_v12.json", v12), ("wangp_v6.json", v6), ("catalog.json", catalog)):
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        (HERE / name).write_text(text + "\n", encoding="utf-8")
        print(f"{name}: {len(text)} bytes")
    print(f"v12: {len(v12['components'])} components, {len(v12['dependencies'])} dependencies; "
          f"v6: {len(v6['components'])} components, {len(v6['dependencies'])} dependencies; "
          f"catalog: {len(catalog['v12'])} + {len(catalog['v6'])} models")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/wan2gp-real"))
