"""Benchmark the WanGP emulator (measured, not asserted).

    python benchmarks/emulator.py [--runs 5]

Prints and saves ``benchmarks/results/emulator.json``:

* ``start_seconds``: ``EmulatorServer(..., real_size=True).start()`` (12.60's whole UI) in-process, after
  ``import wan2gp_emulator`` (which imports
  gradio; median over the runs);
* ``chain_seconds``: a 17-frame 832x480 4-step ``t2v_1.3B`` generation through the whole chain with
  ``step_seconds=0``, over HTTP with plain ``gradio_client``: validate_wizard_prompt -> save_inputs ->
  process_prompt_and_add_tasks -> activate_status -> process_tasks (with refresh_status_async running) ->
  finalize_generation, on an already connected client whose model is selected (median);
* ``chain_with_model_switch_seconds``: the same plus goto_model_type_with_filter, change_model_from_target and
  fill_inputs before it (median).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _name, _value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_OFFLINE", "1"),
                      ("GRADIO_ANALYTICS_ENABLED", "False")):
    os.environ.setdefault(_name, _value)

RESULTS = Path(__file__).resolve().parent / "results" / "emulator.json"
MODEL = "t2v_1.3B"


def _chain(client, config: dict, view: dict, prompt: str) -> dict:
    deps = {d["id"]: d for d in config["dependencies"]}
    by_name = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}
    comps = {c["id"]: c for c in config["components"]}
    save = deps[by_name["process_prompt_and_add_tasks"]["trigger_after"]]
    validate = deps[save["trigger_after"]]
    fill_dep = by_name["fill_inputs"]
    return {"save": save, "validate": validate, "fill": fill_dep, "comps": comps, "view": view}


def run_generation(client, chain: dict, prompt: str, *, switch_model: bool) -> float:
    from gradio_client import Client  # noqa: F401  (imported for the side effect of being loaded)

    comps, save, validate = chain["comps"], chain["save"], chain["validate"]
    t0 = time.perf_counter()
    if switch_model:
        client.predict(MODEL, api_name="/goto_model_type_with_filter")
        client.predict(MODEL, api_name="/change_model_from_target")
    fill = client.predict(api_name=f"/{chain['fill']['api_name']}")
    outputs = [o for o in chain["fill"]["outputs"] if not comps[o].get("skip_api")]
    values = dict(zip(outputs, fill, strict=True))
    inputs = [i for i in save["inputs"] if not comps[i].get("skip_api")]
    args = {}
    for param, cid in zip(chain["view"][f"/{save['api_name']}"]["parameters"], inputs, strict=True):
        value = values.get(cid, param["parameter_default"])
        if isinstance(value, dict) and value.get("__type__") == "update":
            value = value.get("value", param["parameter_default"])
        args[param["parameter_name"]] = value
    args.update(target="state", prompt=prompt, video_length=17, num_inference_steps=4, seed=7,
                resolution="832x480")
    if not switch_model:
        t0 = time.perf_counter()
    client.predict("off", "", prompt, "", *[""] * 10, api_name=f"/{validate['api_name']}")
    client.predict(**args, api_name=f"/{save['api_name']}")
    client.predict(0, MODEL, api_name="/process_prompt_and_add_tasks")
    client.predict(api_name="/activate_status")
    status = client.submit(api_name="/refresh_status_async")
    client.submit(api_name="/process_tasks").result(timeout=60)
    gallery = client.predict(api_name="/finalize_generation")[1]
    elapsed = time.perf_counter() - t0
    status.result(timeout=30)
    assert gallery["value"], "no video in the gallery"
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    from gradio_client import Client

    from wan2gp_emulator import EmulatorServer

    starts, chains, switches = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            server = EmulatorServer("v12", output_dir=Path(tmp) / f"run{run}", step_seconds=0, real_size=True)
            t0 = time.perf_counter()
            server.start()
            starts.append(time.perf_counter() - t0)
            try:
                client = Client(server.url, verbose=False)
                chain = _chain(client, client.config, client.view_api(return_format="dict",
                                                                      print_info=False)["named_endpoints"], "")
                switches.append(run_generation(client, chain, f"benchmark run {run} (switch)",
                                               switch_model=True))
                chains.append(run_generation(client, chain, f"benchmark run {run}", switch_model=False))
                client.close()
            finally:
                server.stop()
    result = {
        "start_seconds": round(statistics.median(starts), 3),
        "start_seconds_all": [round(x, 3) for x in starts],
        "chain_seconds": round(statistics.median(chains), 3),
        "chain_seconds_all": [round(x, 3) for x in chains],
        "chain_with_model_switch_seconds": round(statistics.median(switches), 3),
        "chain_with_model_switch_seconds_all": [round(x, 3) for x in switches],
        "generation": {"model": MODEL, "frames": 17, "resolution": "832x480", "steps": 4, "step_seconds": 0},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": args.runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
