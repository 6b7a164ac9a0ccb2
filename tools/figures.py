"""The figures tables of the README and docs/, generated from the benchmarks' saved results.

Each benchmark saves its JSON in ``benchmarks/results/``; the tables quote those files and nothing else, so the
README, docs/ and the results cannot disagree. After running a benchmark:

    python tools/figures.py          # rewrite the tables in place
    python tools/figures.py --check  # exit 1 (and say which) when a table differs from the results

A table sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` lines; what is between them is
replaced. ``tests/test_figures.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def figures() -> list[str]:
    v12, v6 = _load("client-v12"), _load("client-v6")
    releases, emulator, discovery = _load("releases"), _load("emulator"), _load("discovery")
    pool, blender, connect, farm = _load("pool"), _load("blender"), _load("connect"), _load("farm")
    cold = releases["cold_connect"]
    wait = releases["long_wait"]
    zips = blender["zips"]["zips"]
    platforms = [re.sub(r".*-(\w+?)_(\w+)\.zip$", r"\1-\2", name) for name in zips]
    rows = [
        ["a second session on a connected server", f"{v12['second_session_ms']:.2f} ms, no download",
         f"≤ {v12['targets']['second_session_ms']} ms", "benchmarks/client.py"],
        ["client time per shot vs plain gradio_client doing the chain by hand",
         f"{v12['overhead_ratio']:.2f}x (v12), {v6['overhead_ratio']:.2f}x (v6)",
         f"≤ {v12['targets']['overhead_ratio']}x", "benchmarks/client.py"],
        ["progress: the client's own share (SSE arrival → callback)",
         f"{v12['progress_client_side_ms']:.2f} ms median", "", "benchmarks/client.py"],
        ["progress: server step → callback, end to end",
         f"{v12['progress_latency_median_ms']:.0f} ms (v12), {v6['progress_latency_median_ms']:.0f} ms (v6) median",
         f"≤ {v12['targets']['progress_latency_median_ms']} ms", "benchmarks/client.py"],
        ["download vs a raw HTTP GET of the same 64 MiB file",
         f"{v12['download_ratio']:.2f}x (v12), {v6['download_ratio']:.2f}x (v6)",
         f"≥ {v12['targets']['download_ratio']}x", "benchmarks/client.py"],
        ["client memory after 20 shots (RSS, emulator in another process)",
         f"{v12['client_rss_MB']:.0f} MB (v12), {v6['client_rss_MB']:.0f} MB (v6), {v12['client_threads']} threads",
         f"≤ {v12['targets']['client_rss_MB']} MB", "benchmarks/client.py"],
        ["cold connect vs plain `gradio_client.Client(url)` (v12 at the real size: 2.6 MB /config, 4.5 MB API "
         "description read in the background; with it)",
         f"{connect['cold_ratio']:.2f}x ({connect['cold_with_api_description_ratio']:.2f}x)",
         f"≤ {connect['targets']['cold_ratio']}x", "benchmarks/connect.py"],
        ["warm connect vs plain `gradio_client.Client(url)`: from memory / from disk in a new process / after a "
         "restart of the same build",
         f"{connect['warm_memory_ratio']:.3f}x / {connect['warm_disk_ratio']:.3f}x / "
         f"{connect['restarted_same_build_ratio']:.2f}x",
         f"≤ {connect['targets']['warm_memory_ratio']}x / ≤ {connect['targets']['warm_disk_ratio']}x / -",
         "benchmarks/connect.py"],
        ["first shot to WanGP's queue vs the hand-made chain: another group's model / the start-up model / a new "
         "process with the disk cache; later shots",
         f"{connect['first_shot_ratio']:.2f}x / {connect['first_shot_startup_model_ratio']:.2f}x / "
         f"{connect['first_shot_warm_process_ratio']:.2f}x; {connect['later_shot_ratio']:.2f}x",
         f"≤ {connect['targets']['first_shot_ratio']}x", "benchmarks/connect.py"],
        ["`movie-director status` wall time, a new process, cold / warm, vs `curl` of /config",
         f"{connect['status_cold_s']:.2f} s / {connect['status_warm_s']:.2f} s vs {connect['curl_config_s']:.2f} s",
         "", "benchmarks/connect.py"],
        [f"cold connect vs plain `gradio_client.Client(url)`, per release ({' / '.join(cold)}), median of "
         f"{len(next(iter(cold.values()))['ours_all'])}",
         " / ".join(f"{c['ratio']:.2f}" for c in cold.values()) + "x", "≤ 1.0x", "benchmarks/releases.py"],
        [f"a shot queued behind a {wait['long_shot_run_s']:.0f} s run, stall {wait['stall_s']:.0f} s (a 20-minute "
         "shot and the 15-minute default, scaled)",
         (f"completed, after {wait['queued_wait_s']:.0f} s in the queue" if wait["completed"] else "failed"),
         "completes", "benchmarks/releases.py"],
        ["emulator start, in-process (12.60 at the real size)", f"{emulator['start_seconds']:.2f} s median", "< 1 s",
         "benchmarks/emulator.py"],
        [f"{emulator['generation']['frames']}-frame {emulator['generation']['resolution']} "
         f"{emulator['generation']['steps']}-step shot through the whole chain, `--step-seconds 0`",
         f"{emulator['chain_seconds']:.2f} s ({emulator['chain_with_model_switch_seconds']:.2f} s with model switch)",
         "< 1.5 s", "benchmarks/emulator.py"],
        [f"discovery of {discovery['nothing_listening']['ports_probed']} loopback ports, nothing listening / two "
         "servers up",
         f"{discovery['nothing_listening']['ms_median']:.1f} ms / {discovery['two_emulators']['ms_median']:.0f} ms "
         "median", "< 1 s / < 1.5 s", "benchmarks/discovery.py"],
        [f"{pool['throughput']['many']['shots']} shots on {pool['throughput']['many']['servers']} servers vs 1 "
         "(pool throughput)",
         f"{pool['throughput']['ratio']:.2f}x; {pool['killed_halfway']['done']}/{pool['killed_halfway']['shots']} "
         "done with one server killed halfway", f"≥ {pool['targets']['throughput_ratio']}x", "benchmarks/pool.py"],
        ["result-cache hit (identical shot, fixed seed)", f"{pool['cache_hit']['submit_hit_median_ms']:.2f} ms median",
         f"≤ {pool['targets']['cache_hit_ms']:.0f} ms", "benchmarks/pool.py"],
        [f"a storyboard on a farm: `openjd run` of {farm['shots']} shots over {farm['servers']} workers vs "
         "`movie-director batch` of the same shots (wall time; per-task start-up, direct / through `openjd run`)",
         f"{farm['ratio']:.2f}x at load average {farm['load_average_before']:.1f} on {farm['cpus']} CPUs; "
         f"{farm['task_startup_shot_s']:.2f} s / {farm['task_startup_openjd_run_s']:.2f} s",
         f"≤ {farm['target_ratio']}x", "benchmarks/farm.py"],
        [f"Blender: enabling the add-on, bpy {blender['bpy']} / {blender['quit_py313']['bpy']}",
         f"{blender['enable']['enable_ms']['median']:.0f} ms / {blender['enable_py313']['enable_ms']['median']:.0f} ms",
         f"≤ {blender['enable']['target_ms']} ms", "benchmarks/blender.py"],
        [f"Blender: timer tick p99 with {blender['tick_live']['jobs']} jobs in flight",
         f"{blender['tick_live']['tick_ms']['p99']:.2f} ms", f"≤ {blender['tick_live']['target_p99_ms']:g} ms",
         "benchmarks/blender.py"],
        [f"Blender: quit with {blender['quit']['jobs_in_flight']} jobs in flight, until the process has exited "
         f"(bpy {blender['quit']['bpy']} / {blender['quit_py313']['bpy']})",
         f"{blender['quit']['exit_seconds']['median']:.2f} s / {blender['quit_py313']['exit_seconds']['median']:.2f} s",
         f"≤ {blender['quit']['target_seconds']:.0f} s", "benchmarks/blender.py"],
        [f"extension zip size ({' / '.join(platforms)})", " / ".join(f"{z['mb']:.1f}" for z in zips.values()) + " MB",
         "", "benchmarks/blender.py"],
    ]
    if "control" in blender:  # issue 14
        control = blender["control"]
        names = {"BLENDER_WORKBENCH": "Workbench", "BLENDER_EEVEE": "Eevee", "BLENDER_EEVEE_NEXT": "Eevee",
                 "CYCLES": "Cycles CPU"}
        rows += [
            [f"Blender: {control['frames']}-frame {control['size']} depth control video, headless render "
             f"({' / '.join(names.get(e, e) for e in control['render_seconds'])})",
             " / ".join(f"{s:.0f} s" + ("" if control["rendered_frames"][e] == control["frames"]
                                         else f" for {control['rendered_frames'][e]} frames")
                        for e, s in control["render_seconds"].items()), "", "benchmarks/blender.py"],
            ["a VACE shot's frame-by-frame correlation with its control video / with the opposite camera move's",
             f"{control['follow_own']:.2f} / {control['follow_other_move']:.2f}", "first clearly higher",
             "benchmarks/blender.py"],
        ]
    rows = [[what, figure, target, f"`{script}`"] for what, figure, target, script in rows]
    return _table(["what", "figure", "target", "script"], rows)


def reliability() -> list[str]:
    load, faults = _load("load"), _load("faults")
    heap = (load["heap_blocks_last"] / load["heap_blocks_first"] - 1) * 100
    problems = load["duplicate_paths"] + len(load["missing_files"]) + len(load["temporary_files_left"])
    drop, crash, restart = faults["drop_then_collect"], faults["server_crash"], faults["server_restarted"]
    rows = [
        [f"{load['jobs']} shots through one client from {load['threads']} threads",
         f"{load['completed']} completed, {problems} duplicate, missing or temporary files; {load['wall_s']:.0f} s"],
        [f"client threads / Python heap / RSS, first {load['window']} vs last {load['window']} shots",
         f"{load['threads_first']:.0f} → {load['threads_last']:.0f} / {heap:+.1f} % / "
         f"{load['rss_MB_first']:.1f} → {load['rss_MB_last']:.1f} MB"],
        ["connection dropped mid-generation",
         f"output saved {drop['seconds_after_drop']:.1f} s after the drop (the run had {drop['run_remaining_s']:.1f} s "
         "left)" if drop["outcome"] == "completed" else f"{drop['outcome']}"],
        ["server crash / restart",
         f"job fails {crash['seconds_after_the_process_died']:.2f} s / {restart['seconds_after_stop']:.1f} s after; "
         f"the next job runs on the same client ({faults['next_job_after_restart_s']:.1f} s)"],
        ["frozen server", f"`{faults['frozen_server']['outcome']}` after "
         f"{faults['frozen_server']['seconds_after_freeze']:.1f} s (test timeouts; about 70 s with the defaults)"],
        ["200 ms added latency each way and 1 MB/s",
         f"the job completes ({faults['latency_200ms_1MBps_job_s']:.1f} s instead of {faults['plain_job_s']:.1f} s); "
         "no timeout trips"],
    ]
    return _table(["what", "figure"], rows)


def blender_versions() -> list[str]:
    data = _load("blender_versions")
    rows = []
    for version in data["versions"]:
        failed = [name for name, step in version["steps"].items() if not step.get("ok", True)]
        outcome = "all steps pass" if version["ok"] and not failed else "fails: " + ", ".join(failed)
        rows.append([version["bpy"], version["python"], outcome, f"{version['steps']['quit']['exit_seconds']} s"])
    table = _table(["Blender (bpy)", "Python", "outcome", "exit with a job running"], rows)
    return table + ["", f"Measured {data['when'][:10]} on Linux x86-64 ({data['zip']}, {data['zip_mb']} MB)."]


TABLES: dict[str, tuple[Path, Callable[[], list[str]]]] = {
    "figures": (ROOT / "README.md", figures),
    "reliability": (ROOT / "README.md", reliability),
    "blender-versions": (ROOT / "docs" / "blender.md", blender_versions),
}


def render(text: str, name: str, lines: list[str]) -> str:
    """``text`` with the block ``name`` replaced by ``lines``; ValueError if the markers are missing."""
    begin, end = f"<!-- figures:{name} -->", f"<!-- /figures:{name} -->"
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no '{begin}' ... '{end}' block")
    return pattern.sub(lambda _m: "\n".join([begin, *lines, end]), text, count=1)


def stale() -> list[str]:
    """The tables whose text differs from what the results give."""
    out = []
    for name, (path, build) in TABLES.items():
        text = path.read_text()
        if render(text, name, build()) != text:
            out.append(f"{path.relative_to(ROOT)}: {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the tables match the results")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        for item in differ:
            print(f"stale: {item} (run: python tools/figures.py)", file=sys.stderr)
        return 1 if differ else 0
    for name, (path, build) in TABLES.items():
        path.write_text(render(path.read_text(), name, build()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
