"""The MCP connection (backend/wan2gp/_mcp) beside a hand-written sequence of the same MCP calls with the SDK.

    python benchmarks/mcp_connection.py [--shots 8]

On the project's MCP emulator (``EmulatorServer(mcp=True)``) when this checkout has it, else on the tests'
stand-in, in this process, with 4 steps of 50 ms a shot. Figures (medians, the two ways interleaved):
- per shot, API v1 (12.60) and v2 (13+ without --mcp-async): ``submit`` + ``wait`` + ``outputs`` +
  ``download`` on an open ``McpConnection``, beside one ``ClientSession`` doing generate, get_job polls at the
  same interval, the Gallery look-up (12.60) and the download ticket, and an httpx GET (target <= 1.1x);
- the same for the whole client (``client_per_shot_*``): ``Wan2GPClient(url).generate(...)`` with the same poll
  interval, which also checks the settings, keeps the job's record and checks the video it saves;
- server event -> progress callback: from a ``progress`` event's timestamp (the server's clock: same machine)
  to the ``on_progress`` call that reports it, with the default poll interval (1 s), steps of 0.5 s;
- import: ``import backend.wan2gp._mcp`` over ``import backend.wan2gp``, and the SDK's import, paid by the first
  ``open()``, each in a new process.

Saves benchmarks/results/mcp_connection.json.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from blender_movie_director.backend.wan2gp import Wan2GPClient  # noqa: E402
from blender_movie_director.backend.wan2gp._config import Timeouts  # noqa: E402
from blender_movie_director.backend.wan2gp._mcp import McpConnection  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHOT = {"prompt": "a red fox running through snow", "video_length": 17, "num_inference_steps": 4, "seed": 7}
POLL = 0.05
TARGET_RATIO = 1.1


def start_server(flavour: str, api: int, step_seconds: float, root: Path):
    try:
        from wan2gp_emulator import EmulatorServer

        if "mcp" in inspect.signature(EmulatorServer).parameters:
            server = EmulatorServer(flavour, mcp=True, mcp_api_version=api, step_seconds=step_seconds,
                                    output_dir=root)
            server.start()
            return server, "emulator"
    except ImportError:
        pass
    from backend.mcp_standin import StandIn

    return StandIn(api_version=api, flavour=flavour, step_seconds=step_seconds, root=root).start(), "stand-in"


def ours(mcp: McpConnection, out: Path) -> float:
    started = time.perf_counter()
    final = mcp.wait(mcp.submit("t2v_1.3B", SHOT), 60)
    mcp.download(mcp.outputs(final)[0], out)
    return time.perf_counter() - started


async def by_hand(session, http: httpx.AsyncClient, api: int, origin: str, out: Path) -> float:
    """The same calls, written out: what a script that knows the contract would send."""
    def data(result):
        if result.isError:
            raise RuntimeError(result.content[0].text)
        content = result.structuredContent
        return content["result"] if set(content) == {"result"} else content  # v1 lists: {"result": [...]}

    started = time.perf_counter()
    source = {"model_type": "t2v_1.3B", **SHOT, "resolution": "832x480"}
    if api == 2:
        answer = await session.call_tool("wangp_generate", {"action": "generate", "arguments": {
            "source": source, "wait": True, "timeout_s": 0}})
    else:
        answer = await session.call_tool("wangp_generate", {"source": source, "wait": False})
    job_id = data(answer)["job_id"]
    while True:
        if api == 2:
            snapshot = data(await session.call_tool("wangp_session", {"action": "get_job", "arguments": {
                "job_id": job_id, "event_limit": 100}}))
        else:
            snapshot = data(await session.call_tool("wangp_get_job", {"job_id": job_id, "event_limit": 100}))
        if snapshot["done"]:
            break
        await asyncio.sleep(POLL)
    items = snapshot["result"]["gallery_items"]
    if items:
        media_id = items[0]["media_id"]
    else:  # 12.60: find it in the Gallery by file name
        name = snapshot["result"]["generated_files"][0].replace("\\", "/").rsplit("/", 1)[-1]
        gallery = data(await session.call_tool("wangp_list_gallery", {"media_type": "all", "limit": 50}))
        media_id = next(g.get("gallery_id") or g.get("media_id") for g in gallery
                        if str(g.get("path") or g.get("filename")).endswith(name))
    if api == 2:
        ticket = data(await session.call_tool("wangp_session", {"action": "create_gallery_download",
                                                                "arguments": {"media_id": media_id}}))
    else:
        key = "gallery_id" if "gallery_id" in str(snapshot) or not items else "media_id"
        ticket = data(await session.call_tool("wangp_create_gallery_download", {key: media_id}))
    response = await http.get(origin + ticket["download_url"])
    out.write_bytes(response.content)
    return time.perf_counter() - started


def whole_client(client: Wan2GPClient, out: Path) -> float:
    """The public client, as a user calls it: settings checked against the model's schema, the job, its
    progress, the checked download into the output folder."""
    started = time.perf_counter()
    client.generate(prompt=SHOT["prompt"], model="t2v_1.3B", frames=SHOT["video_length"],
                    steps=SHOT["num_inference_steps"], seed=SHOT["seed"], resolution="832x480")
    return time.perf_counter() - started


def per_shot(flavour: str, api: int, shots: int, *, client: bool = False) -> dict:
    """``client``: the whole Wan2GPClient (``generate``) instead of the bare connection."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, kind = start_server(flavour, api, 0.05, root / "server")
        try:
            mcp = McpConnection.open(server.url, poll_interval=POLL, timeouts=Timeouts(call=30))
            os.environ["WAN2GP_STATE_DIR"] = str(root / "state")  # its register of jobs, kept (a real cost)...
            whole = Wan2GPClient(server.url, output_dir=root / "client")  # ...but not in the user's
            whole.poll_interval = POLL
            loop = asyncio.new_event_loop()
            origin = mcp.url.split("/mcp")[0]

            async def session_and(run):
                async with httpx.AsyncClient() as http, streamable_http_client(mcp.url) as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        await session.list_tools()
                        return [await run(session, http, i) for i in range(shots + 1)]

            mine, theirs = [], []

            async def interleaved(session, http, i):
                theirs.append(await by_hand(session, http, api, origin, root / f"hand{i}.mp4"))
                if client:
                    mine.append(await asyncio.to_thread(whole_client, whole, root / "client"))
                else:
                    mine.append(await asyncio.to_thread(ours, mcp, root / f"ours{i}.mp4"))

            loop.run_until_complete(session_and(interleaved))
            loop.close()
            mcp.close()
            whole.disconnect()
        finally:
            server.stop()
    mine, theirs = mine[1:], theirs[1:]  # the first shot of each reads schemas: left out
    ratio = statistics.median(mine) / statistics.median(theirs)
    return {"server": kind, "ours_s": statistics.median(mine), "by_hand_s": statistics.median(theirs),
            "ratio": ratio, "target": TARGET_RATIO, "met": ratio <= TARGET_RATIO, "shots": shots}


def progress_latency(jobs: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server, kind = start_server("v13", 2, 0.37, Path(tmp))  # steps out of phase with the 1 s polls
        delays: list[float] = []
        try:
            with McpConnection.open(server.url) as mcp:  # the default poll interval
                seen: set[float] = set()  # event timestamps already reported
                for _ in range(jobs):

                    def report(snapshot) -> None:
                        now = time.time()
                        for event in snapshot.raw.get("events") or []:
                            stamp = event.get("timestamp")
                            if event.get("kind") == "progress" and stamp not in seen:
                                seen.add(stamp)
                                delays.append(now - stamp)

                    mcp.wait(mcp.submit("t2v_1.3B", {**SHOT, "num_inference_steps": 12}), 120, on_progress=report)
        finally:
            server.stop()
    delays.sort()
    return {"server": kind, "poll_interval_s": 1.0, "events": len(delays),
            "median_s": statistics.median(delays), "p90_s": delays[int(0.9 * (len(delays) - 1))],
            "set_by": "the poll interval: WanGP's MCP server sends no notifications (stateless JSON), so an "
                      "event waits for the next get_job; uniform over the interval, median about half of it"}


def import_times(repeat: int = 7) -> dict:
    """Each step timed in one new process, after the one before (medians of ``repeat`` processes)."""
    code = ("import json, time; t0 = time.perf_counter(); import blender_movie_director.backend.wan2gp; "
            "t1 = time.perf_counter(); import blender_movie_director.backend.wan2gp._mcp; t2 = time.perf_counter(); "
            "from mcp import ClientSession; from mcp.client.streamable_http import streamable_http_client; "
            "t3 = time.perf_counter(); print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(repeat)]
    backend, package, sdk = (statistics.median(r[i] for r in runs) for i in range(3))
    return {"backend_s": backend, "mcp_package_s": package, "sdk_at_first_open_s": sdk,
            "note": "the SDK is imported by the first open(), on the connection's thread, not at import"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=8)
    args = parser.parse_args()
    figures = {"machine": {"python": platform.python_version(), "platform": platform.platform()},
               "per_shot_v1_12": per_shot("v12", 1, args.shots), "per_shot_v2": per_shot("v13", 2, args.shots),
               "client_per_shot_v1_12": per_shot("v12", 1, args.shots, client=True),
               "client_per_shot_v2": per_shot("v13", 2, args.shots, client=True),
               "progress_latency": progress_latency(), "import": import_times()}
    print(json.dumps(figures, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mcp_connection.json").write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
