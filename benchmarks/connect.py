"""Connect and first shot, beside plain gradio_client, on the v12 emulator at the real size (issue 18).

    python benchmarks/connect.py [--repeat 5]

The emulator serves WanGP 12.60's whole UI (2.6 MB of /config, 4.5 MB of API description, as the real server),
in its own process. Every figure is a median of ``--repeat``, interleaved with its baseline in one run:
- cold connect: ``Wan2GPClient.connect()`` with no cache, beside ``gradio_client.Client(url)`` (target <= 0.6x)
- warm connect from memory: a new client sharing an ``ApiCache`` that knows the server (target <= 0.1x)
- warm connect from disk: ``connect()`` in a new process whose cache folder knows the server (target <= 0.15x);
  and after a restart of the same build (a new app id): /config only
  (also: cold until the API description, read in the background, has arrived)
- first shot to the server's queue: from ``submit()`` to WanGP's answer to the add-task step, beside the
  hand-made chain on an open gradio_client ``Client`` (switch, form, validate, save, add; target <= 0.8x). Ours:
  a new connected client with no cache; the same with the server's start-up model (a new WanGP session already
  has it: no switch); a new process with the disk cache (as every CLI command); the later shots of a client
- ``movie-director status`` wall time (a new process each time), cold and warm, beside ``curl`` of /config

Saves benchmarks/results/connect.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402
from client import SHOT, start_emulator_process  # noqa: E402

from blender_movie_director.backend.wan2gp import Wan2GPClient  # noqa: E402
from blender_movie_director.backend.wan2gp._cache import ApiCache  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGETS = {"cold_ratio": 0.6, "warm_memory_ratio": 0.1, "warm_disk_ratio": 0.15, "first_shot_ratio": 0.8}

# A new process: import, then time only connect() (and, with "shot", the first shot to the server's queue).
_CHILD = """
import json, sys, time
from blender_movie_director.backend.wan2gp import Wan2GPClient
from blender_movie_director.backend.wan2gp._cache import ApiCache
url, cache_dir, out, shot = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "shot"
client = Wan2GPClient(url, output_dir=out)
client.api_cache = ApiCache(cache_dir)
started = time.perf_counter()
client.connect()
figures = {"connect_s": time.perf_counter() - started, "stats": client.api_cache.stats}
from blender_movie_director.backend.wan2gp._webui.fingerprint import startup_model
figures["startup_model"] = json.dumps(startup_model(client._require_api().config))
if shot:
    sys.path.insert(0, sys.argv[5])
    from connect import to_queue
    figures["first_shot_s"] = to_queue(client)
client.close()
print(json.dumps(figures))
"""


def to_queue(client: Wan2GPClient, model: str = "t2v_1.3B") -> float:
    """Seconds from ``submit()`` until WanGP answered the add-task step (the shot is in its queue); the shot
    then runs to its end outside the timed part."""
    started = time.perf_counter()
    job = client.submit(**SHOT, model=model)
    while not job.state.task_queued and not job.done():  # set the moment process_prompt_and_add_tasks answers
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    job.result(timeout=120)
    return elapsed


def hand_chain_to_queue(plain, model: str = "t2v_1.3B") -> float:
    """The reference chain by hand on an open gradio_client Client, up to the add-task step's answer."""
    started = time.perf_counter()
    config = plain.config
    by_name = {d.get("api_name"): d for d in config["dependencies"]}
    deps = {d["id"]: d for d in config["dependencies"]}
    add = by_name["process_prompt_and_add_tasks"]
    save = deps[add["trigger_after"]]
    validate = deps[save["trigger_after"]]
    plain.predict(model, api_name="/goto_model_type_with_filter")
    plain.predict(model, api_name="/change_model_from_target")
    form = plain.predict(api_name="/fill_inputs")
    info = plain.view_api(return_format="dict", print_info=False)["named_endpoints"]
    comps = {c["id"]: c for c in config["components"]}
    outputs = [c for c in by_name["fill_inputs"]["outputs"] if not comps[c].get("skip_api")]
    inputs = [c for c in save["inputs"] if not comps[c].get("skip_api")]
    values = {}
    for param, cid in zip(info["/" + save["api_name"]]["parameters"], inputs, strict=False):
        value = form[outputs.index(cid)] if cid in outputs else param.get("parameter_default")
        if isinstance(value, dict) and value.get("__type__") == "update":
            value = value.get("value")
        if param["component"] in ("Gallery",):
            value = []
        elif param["component"] in ("Video", "Audio", "Image", "File", "Wangpimageeditor"):
            value = None
        values[param["parameter_name"]] = value
    values.update(target="state", prompt=SHOT["prompt"], video_length=SHOT["frames"],
                  num_inference_steps=SHOT["steps"], resolution=SHOT["resolution"], seed=SHOT["seed"])
    n_validate = len(info["/" + validate["api_name"]]["parameters"])
    plain.predict("off", "", SHOT["prompt"], "", *[""] * (n_validate - 4), api_name="/" + validate["api_name"])
    plain.predict(**values, api_name="/" + save["api_name"])
    plain.predict(current_gallery_tab=0, model_choice=model, api_name="/process_prompt_and_add_tasks")
    elapsed = time.perf_counter() - started
    plain.predict(api_name="/clear_queue_action")  # not run: the next measurement starts from an empty queue
    return elapsed


def child(url: str, cache_dir: Path, out: Path, shot: bool = False) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, url, str(cache_dir), str(out), "shot" if shot else "-",
                           str(Path(__file__).resolve().parent)], capture_output=True, text=True, check=True,
                          timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def wall(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, timeout=120, env=env)
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from gradio_client import Client

    tmp = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    proc, url = start_emulator_process("v12", tmp / "server")
    try:
        sizes = {"config_bytes": len(httpx.get(url + "config", timeout=60).content),
                 "api_description_bytes": len(httpx.get(url + "gradio_api/info", timeout=60).content)}
        plain_s, cold_s, described_s, memory_s, disk_s, restart_s, curl_s = [], [], [], [], [], [], []
        memory_cache = ApiCache()
        primer = Wan2GPClient(url, output_dir=tmp / "out")
        primer.api_cache = memory_cache
        primer.connect()
        primer.get_model_info(SHOT.get("model", "t2v_1.3B"))  # the form too, as after a first shot
        primer.close()
        disk = tmp / "disk-cache"
        child(url, disk, tmp / "out", shot=True)  # a first program: the cache folder now knows the server
        for _ in range(args.repeat):
            started = time.perf_counter()
            Client(url, verbose=False, download_files=False).close()
            plain_s.append(time.perf_counter() - started)
            client = Wan2GPClient(url, output_dir=tmp / "out")
            started = time.perf_counter()
            client.connect()
            cold_s.append(time.perf_counter() - started)
            client._require_api().endpoints  # noqa: B018 - wait for the API description read in the background
            described_s.append(time.perf_counter() - started)
            client.close()
            client = Wan2GPClient(url, output_dir=tmp / "out")
            client.api_cache = memory_cache
            started = time.perf_counter()
            client.connect()
            memory_s.append(time.perf_counter() - started)
            client.close()
            disk_s.append(child(url, disk, tmp / "out")["connect_s"])
            restarted = tmp / f"restarted-{len(restart_s)}"  # the same build, another process: a new app id
            subprocess.run(["cp", "-r", str(disk), str(restarted)], check=True)
            index = json.loads((restarted / "api" / "index.json").read_text())
            for entry in index.values():
                entry["app_id"] = "an-earlier-process"
            (restarted / "api" / "index.json").write_text(json.dumps(index))
            restart_s.append(child(url, restarted, tmp / "out")["connect_s"])
            curl_s.append(wall(["curl", "-s", "-o", "/dev/null", url + "config"]))

        # first shots: ours cold (a new client, nothing known) and warm (a new process, disk cache), beside the
        # hand-made chain on an open Client (which had its whole connect before)
        plain = Client(url, verbose=False, download_files=False)
        hand_chain_to_queue(plain)  # warm the server's first model load, as for ours below
        hand_s, first_cold_s, first_startup_s, first_warm_s, later_s = [], [], [], [], []
        startup = json.loads(child(url, disk, tmp / "out").get("startup_model") or '"t2v"')
        for _ in range(args.repeat):
            hand_s.append(hand_chain_to_queue(plain))
            client = Wan2GPClient(url, output_dir=tmp / "out")
            client.connect()
            client._require_api().endpoints  # noqa: B018 - connected as the hand-made chain's Client is
            first_cold_s.append(to_queue(client))
            later_s.append(to_queue(client))
            client.close()
            client = Wan2GPClient(url, output_dir=tmp / "out")
            client.connect()
            client._require_api().endpoints  # noqa: B018
            first_startup_s.append(to_queue(client, startup))
            client.close()
            first_warm_s.append(child(url, disk, tmp / "out", shot=True)["first_shot_s"])
        plain.close()

        # movie-director status in a new process: cold (an empty cache folder) and warm (a folder where an earlier
        # command connected to this server process)
        cli = [str(Path(sys.executable).with_name("movie-director")), "status", "--json", "--server", url]
        status_cold, status_warm = [], []
        for i in range(args.repeat):
            status_cold.append(wall(cli, {**os.environ, "WAN2GP_CACHE_DIR": str(tmp / f"status-{i}")}))
            status_warm.append(wall(cli, {**os.environ, "WAN2GP_CACHE_DIR": str(disk.parent / disk.name)}))
    finally:
        proc.terminate()
        proc.wait(10)

    plain_m = median(plain_s)
    figures = {
        "python": platform.python_version(), "cpus": os.cpu_count(), "when": time.strftime("%F %T"),
        "repeat": args.repeat, "flavour": "v12", **sizes,
        "gradio_client_s": plain_m,
        "cold_s": median(cold_s), "cold_ratio": round(median(cold_s) / plain_m, 3),
        "cold_with_api_description_s": median(described_s),
        "cold_with_api_description_ratio": round(median(described_s) / plain_m, 3),
        "warm_memory_s": median(memory_s), "warm_memory_ratio": round(median(memory_s) / plain_m, 3),
        "warm_disk_s": median(disk_s), "warm_disk_ratio": round(median(disk_s) / plain_m, 3),
        "restarted_same_build_s": median(restart_s),
        "restarted_same_build_ratio": round(median(restart_s) / plain_m, 3),
        "hand_chain_to_queue_s": median(hand_s),
        "first_shot_cold_s": median(first_cold_s),
        "first_shot_ratio": round(median(first_cold_s) / median(hand_s), 3),
        "first_shot_startup_model_s": median(first_startup_s), "startup_model": startup,
        "first_shot_startup_model_ratio": round(median(first_startup_s) / median(hand_s), 3),
        "first_shot_warm_process_s": median(first_warm_s),
        "first_shot_warm_process_ratio": round(median(first_warm_s) / median(hand_s), 3),
        "later_shot_s": median(later_s), "later_shot_ratio": round(median(later_s) / median(hand_s), 3),
        "curl_config_s": median(curl_s),
        "status_cold_s": median(status_cold), "status_warm_s": median(status_warm),
        "targets": TARGETS,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "connect.json").write_text(json.dumps(figures, indent=1) + "\n")
    for key, value in figures.items():
        if key != "targets":
            print(f"{key:32} {value}")
    print(f"saved {RESULTS / 'connect.json'}")


if __name__ == "__main__":
    main()
