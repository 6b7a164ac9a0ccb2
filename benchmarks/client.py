"""Client benchmark: our Wan2GPClient side by side with plain gradio_client doing the reference chain by hand.

    python benchmarks/client.py [--jobs 5]

Prints a table and saves benchmarks/results/client-<flavour>.json. Figures (targets from issue 3):
- connect: cold Wan2GPClient.connect() (reads /config and the API description once)
- second session: a new WanGP session on an already-connected server (target <= 50 ms, no download)
- overhead per job: median wall time of one 17-frame 832x480 4-step shot through our client vs the
  hand-written chain (target <= 1.15x), emulator with --step-seconds 0
- progress latency: server step -> our progress callback, median (target <= 100 ms)
- download throughput: our checked download (temporary name, fsync, rename) vs a raw HTTP GET of the same
  64 MiB file into a file (target >= 0.8x)
- client memory: RSS of a process running only our client after 20 shots, emulator in another process
  (target <= 80 MB)
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

from blender_movie_director.backend.wan2gp import Wan2GPClient  # noqa: E402
from blender_movie_director.backend.wan2gp._files import RemoteFile, download  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHOT = {"prompt": "a red fox running through snow", "frames": 17, "steps": 4, "resolution": "832x480",
        "seed": 1}


def start_emulator_process(flavour: str, out: Path, step_seconds: float = 0,
                           real_size: bool = True) -> tuple[subprocess.Popen, str]:
    """An emulator in its own process; 12.60 at the real size (2.6 MB /config) unless told."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan2gp_emulator", "--flavour", flavour, "--port", "0", "--step-seconds",
         str(step_seconds), "--output-dir", str(out), *(["--real-size"] if real_size else [])],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return proc, line.split("=", 1)[1].strip()
    raise RuntimeError("emulator did not start")


def hand_written_chain(client, out: Path) -> float:
    """Reference §4 route A with plain gradio_client on an open Client; returns the wall time of one shot."""
    started = time.perf_counter()
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
    switch_id = by_name[switch[-1]]["id"]
    fill_name = next(d["api_name"] for d in config["dependencies"]
                     if d.get("api_name", "").startswith("fill_inputs") and d.get("trigger_after") == switch_id)
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
    status.result(timeout=30)  # ends by itself with the queue (cancelling it can break the session's stream)
    gallery = client.predict(api_name="/refresh_gallery")
    files = gallery[1] if "change_model_from_target" in by_name else gallery[0]
    assert files, "no output"
    return time.perf_counter() - started


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
            session = client._transport.fork()
            forks.append(time.perf_counter() - t)
            session.close()
        figures["second_session_ms"] = statistics.median(forks) * 1000

        from gradio_client import Client

        plain = Client(url, verbose=False, download_files=str(tmp / "theirs"))
        ours, theirs = [], []
        client.generate(**SHOT)  # warm both: model form cache, first model switch
        hand_written_chain(plain, tmp / "theirs")
        for _ in range(args.jobs):  # interleaved so that drift affects both alike
            t = time.perf_counter()
            client.generate(**SHOT)
            ours.append(time.perf_counter() - t)
            theirs.append(hand_written_chain(plain, tmp / "theirs"))
        plain.close()
        figures["client_rss_MB"], figures["client_threads"] = client_memory(url, tmp / "rss", 20)
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
            for i in range(7):  # new files each time, as real shots are; deleted outside the timed part
                target = tmp / f"raw-{i}.bin"
                t = time.perf_counter()
                with http.stream("GET", file_url) as r, target.open("wb") as f:
                    for chunk in r.iter_bytes(1024 * 1024):
                        f.write(chunk)
                raw.append(time.perf_counter() - t)
                target.unlink()
                target = tmp / "dl" / f"ours-{i}.bin"
                t = time.perf_counter()
                download(RemoteFile(file_url, "big.bin"), target, client=http, max_bytes=2**31, timeout=60)
                mine.append(time.perf_counter() - t)
                target.unlink()
        size_mb = 64.0
        figures["download_raw_MBps"] = size_mb / statistics.median(raw)
        figures["download_ours_MBps"] = size_mb / statistics.median(mine)
        figures["download_ratio"] = figures["download_ours_MBps"] / figures["download_raw_MBps"]
        client.disconnect()
    finally:
        proc.terminate()
        proc.wait(10)

    (figures["progress_latency_median_ms"], figures["progress_latency_p90_ms"], figures["progress_steps_seen"],
     figures["progress_steps_made"], figures["progress_client_side_ms"]) = progress_latency(args.flavour, tmp)
    figures["targets"] = {"second_session_ms": 50, "overhead_ratio": 1.15, "progress_latency_median_ms": 100,
                          "download_ratio": 0.8, "client_rss_MB": 80}
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / f"client-{args.flavour}.json"
    saved.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        if key != "targets":
            print(f"{key:32} {value:.3f}" if isinstance(value, float) else f"{key:32} {value}")
    print(f"saved {saved}")


_RSS_CHILD = """
import json, sys, psutil
from blender_movie_director.backend.wan2gp import Wan2GPClient
client = Wan2GPClient(sys.argv[1], output_dir=sys.argv[2])
for i in range(int(sys.argv[3])):
    client.generate(prompt="memory", frames=17, steps=4, seed=i)
me = psutil.Process()
print(json.dumps([me.memory_info().rss / 2**20, me.num_threads()]))
"""


def client_memory(url: str, out: Path, jobs: int) -> tuple[float, int]:
    """RSS and thread count of a process that only runs our client (after ``jobs`` shots)."""
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, url, str(out), str(jobs)], capture_output=True,
                          text=True, check=True, timeout=300)
    rss, threads = json.loads(done.stdout.strip().splitlines()[-1])
    return rss, threads


def progress_latency(flavour: str, tmp: Path) -> tuple[float, float, int, int, float]:
    """Server step (emulator event time) -> our progress callback, same process and clock.

    Gradio sends progress at most every 100 ms (later updates overwrite earlier ones) and WanGP polls its
    status once per step (0.5 s on the real server, the step time on the emulator): those are the floor.
    Returns (median ms, p90 ms, steps seen by the callback, steps the server made, median ms from the
    message's arrival at our SSE reader to the callback, i.e. the client's own share), over 4 jobs.
    """
    from blender_movie_director.backend.wan2gp._webui import session as session_module
    from wan2gp_emulator import EmulatorServer

    arrivals: dict[int, float] = {}
    original_append = session_module._NotifyingList.append

    def timed_append(self, message):  # the moment the SSE reader receives a progress message
        if isinstance(message, dict) and message.get("msg") == "progress":
            index = (message.get("progress_data") or [{}])[-1].get("index")
            arrivals.setdefault(index, time.monotonic())
        original_append(self, message)

    session_module._NotifyingList.append = timed_append
    latencies: list[float] = []
    client_side: list[float] = []
    seen = made = 0
    with EmulatorServer(flavour=flavour, output_dir=tmp / "lat", step_seconds=0.12, real_size=True) as server:
        with Wan2GPClient(server.url, output_dir=tmp / "lat-out") as client:
            for _ in range(4):
                received: dict[int, float] = {}

                def on_progress(_job, p, received=received):
                    if p.step is not None and p.step not in received:
                        received[p.step] = time.monotonic()

                before = len(server.events())
                arrivals.clear()
                job = client.submit(prompt="latency", frames=9, steps=15)
                job.add_progress_callback(on_progress)
                job.result(timeout=120)
                steps = {e["step"]: e["t"] for e in server.events()[before:] if e["event"] == "step"}
                latencies += [(received[s] - t) * 1000 for s, t in steps.items() if s in received]
                seen += len(set(steps) & set(received))
                client_side += [(received[s] - t) * 1000 for s, t in arrivals.items() if s in received]
                made += len(steps)
    session_module._NotifyingList.append = original_append
    latencies.sort()
    return (statistics.median(latencies), latencies[int(len(latencies) * 0.9) - 1], seen, made,
            statistics.median(client_side))


if __name__ == "__main__":
    main()
