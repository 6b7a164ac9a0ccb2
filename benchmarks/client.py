"""Client benchmark: our Wan2GPClient side by side with plain gradio_client doing the reference chain by hand.

    python benchmarks/client.py [--jobs 5]

Prints a table and saves benchmarks/results/client.json. Figures (targets from issue 3):
- connect: cold Wan2GPClient.connect() (reads /config and the API description once)
- second session: a new WanGP session on an already-connected server (target <= 50 ms, no download)
- overhead per job: median wall time of one 17-frame 832x480 4-step shot through our client vs the
  hand-written chain (target <= 1.15x), emulator with --step-seconds 0
- progress latency: server step -> our progress callback, median (target <= 100 ms)
- download throughput: our checked download vs a raw HTTP GET of the same 64 MiB file (target >= 0.8x)
- client memory: RSS of this process after the jobs, emulator in another process (target <= 80 MB)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402
import psutil  # noqa: E402

from blender_movie_director.backend.wan2gp import Wan2GPClient  # noqa: E402
from blender_movie_director.backend.wan2gp.files import RemoteFile, download  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "client.json"
SHOT = {"prompt": "a red fox running through snow", "frames": 17, "steps": 4, "resolution": "832x480",
        "seed": 1}


def start_emulator_process(flavour: str, out: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan2gp_emulator", "--flavour", flavour, "--port", "0", "--step-seconds", "0",
         "--output-dir", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return proc, line.split("=", 1)[1].strip()
    raise RuntimeError("emulator did not start")


def hand_written_chain(url: str, out: Path) -> float:
    """Reference §4 route A with plain gradio_client; returns the wall time of one shot."""
    from gradio_client import Client

    started = time.perf_counter()
    client = Client(url, verbose=False, download_files=str(out))
    config = client.config
    deps = {d["id"]: d for d in config["dependencies"]}
    by_name = {d.get("api_name"): d for d in config["dependencies"]}
    add = by_name["process_prompt_and_add_tasks"]
    save = deps[add["trigger_after"]]
    validate = deps[save["trigger_after"]]
    model = "t2v_1.3B"
    switch = ["goto_model_type_with_filter", "change_model_from_target"] if "change_model_from_target" in by_name \
        else ["change_model"]
    for name in switch:
        client.predict(model, api_name="/" + name)
    fill_name = next(d["api_name"] for d in config["dependencies"]
                     if d.get("api_name", "").startswith("fill_inputs") and d.get("trigger_after") == by_name[switch[-1]]["id"])
    form = client.predict(api_name="/" + fill_name)
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    comps = {c["id"]: c for c in config["components"]}
    api_out = [c for c in deps[by_name[fill_name]["id"]]["outputs"] if not comps[c].get("skip_api")]
    api_in = [c for c in save["inputs"] if not comps[c].get("skip_api")]
    values = {}
    for param, cid in zip(info["/" + save["api_name"]]["parameters"], api_in, strict=False):
        name = param["parameter_name"]
        if cid in api_out:
            v = form[api_out.index(cid)]
            values[name] = v.get("value") if isinstance(v, dict) and v.get("__type__") == "update" else v
        else:
            values[name] = param.get("parameter_default")
        if param["component"] in ("Gallery",):
            values[name] = []
        elif param["component"] in ("Video", "Audio", "Image", "File", "Wangpimageeditor"):
            values[name] = None
    values.update(target="state", prompt=SHOT["prompt"], video_length=17, num_inference_steps=4,
                  resolution="832x480", seed=1)
    n_validate = len(info["/" + validate["api_name"]]["parameters"])
    client.predict("off", "", SHOT["prompt"], "", *[""] * (n_validate - 4), api_name="/" + validate["api_name"])
    client.predict(**values, api_name="/" + save["api_name"])
    add_params = [p["parameter_name"] for p in info["/process_prompt_and_add_tasks"]["parameters"]]
    kwargs = {"model_choice": model}
    if "current_gallery_tab" in add_params:
        kwargs["current_gallery_tab"] = 0
    client.predict(**kwargs, api_name="/process_prompt_and_add_tasks")
    client.predict(api_name="/activate_status")
    status = client.submit(api_name="/refresh_status_async")
    client.predict(api_name="/process_tasks")
    status.cancel()
    gallery = client.predict(api_name="/refresh_gallery")
    files = gallery[1] if "change_model_from_target" in by_name else gallery[0]
    assert files, "no output"
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--flavour", default="v12")
    args = parser.parse_args()
    figures: dict[str, object] = {"flavour": args.flavour, "jobs": args.jobs}
    tmp = Path(tempfile.mkdtemp(prefix="bmd-bench-"))
    proc, url = start_emulator_process(args.flavour, tmp / "server")
    try:
        # connect, cold, three times
        connects = []
        for _ in range(3):
            c = Wan2GPClient(url, output_dir=tmp / "ours")
            t = time.perf_counter()
            c.connect()
            connects.append(time.perf_counter() - t)
            c.disconnect()
        figures["connect_s"] = statistics.median(connects)

        client = Wan2GPClient(url, output_dir=tmp / "ours")
        client.connect()
        forks = []
        for _ in range(20):
            t = time.perf_counter()
            session = client._fork_session()
            forks.append(time.perf_counter() - t)
            session.close()
        figures["second_session_ms"] = statistics.median(forks) * 1000

        ours, theirs = [], []
        client.generate(**SHOT)  # warm the model form cache, as a session would
        for _ in range(args.jobs):  # interleaved so that drift affects both alike
            t = time.perf_counter()
            client.generate(**SHOT)
            ours.append(time.perf_counter() - t)
            theirs.append(hand_written_chain(url, tmp / "theirs"))
        figures["job_ours_s"] = statistics.median(ours)
        figures["job_hand_written_s"] = statistics.median(theirs)
        figures["overhead_ratio"] = figures["job_ours_s"] / figures["job_hand_written_s"]

        # download throughput: a 64 MiB file uploaded to the server's cache, fetched both ways
        big = tmp / "big.bin"
        big.write_bytes(os.urandom(64 * 1024 * 1024))
        with httpx.Client(timeout=60) as http:
            uploaded = http.post(url.rstrip("/") + "/gradio_api/upload", files={"files": big.open("rb")}).json()[0]
            file_url = f"{url.rstrip('/')}/gradio_api/file={uploaded}"
            raw, mine = [], []
            for _ in range(3):
                t = time.perf_counter()
                with http.stream("GET", file_url) as r:
                    for _chunk in r.iter_bytes(1024 * 1024):
                        pass
                raw.append(time.perf_counter() - t)
                t = time.perf_counter()
                download(RemoteFile(file_url, "big.bin"), tmp / "dl" / "big.bin", client=http,
                         max_bytes=2**31, timeout=60)
                mine.append(time.perf_counter() - t)
        size_mb = 64.0
        figures["download_raw_MBps"] = size_mb / statistics.median(raw)
        figures["download_ours_MBps"] = size_mb / statistics.median(mine)
        figures["download_ratio"] = figures["download_ours_MBps"] / figures["download_raw_MBps"]
        figures["client_rss_MB"] = psutil.Process().memory_info().rss / 2**20
        client.disconnect()
    finally:
        proc.terminate()
        proc.wait(10)

    figures["progress_latency_median_ms"], figures["progress_latency_p90_ms"] = progress_latency(args.flavour, tmp)
    figures["targets"] = {"second_session_ms": 50, "overhead_ratio": 1.15, "progress_latency_median_ms": 100,
                          "download_ratio": 0.8, "client_rss_MB": 80}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        if key != "targets":
            print(f"{key:32} {value:.3f}" if isinstance(value, float) else f"{key:32} {value}")
    print(f"saved {RESULTS}")


def progress_latency(flavour: str, tmp: Path) -> tuple[float, float]:
    """Server step (emulator event time) -> our progress callback, same process and clock."""
    from wan2gp_emulator import EmulatorServer

    received: dict[int, float] = {}
    with EmulatorServer(flavour=flavour, output_dir=tmp / "lat", step_seconds=0.1) as server:
        with Wan2GPClient(server.url, output_dir=tmp / "lat-out") as client:
            job = client.submit(prompt="latency", frames=9, steps=20)

            def on_progress(_job, p):
                if p.step is not None and p.step not in received:
                    received[p.step] = time.monotonic()

            job.add_progress_callback(on_progress)
            job.result(timeout=120)
        steps = {e["step"]: e["t"] for e in server.events() if e["event"] == "step"}
    lat = [(received[s] - t) * 1000 for s, t in steps.items() if s in received]
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.9) - 1]


if __name__ == "__main__":
    main()
