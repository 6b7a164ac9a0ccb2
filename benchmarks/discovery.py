"""Benchmark: the discovery scan of the default loopback ports (7860-7870, 7866, 8000).

Measured, not asserted. Two scenarios:

1. nothing listening on those ports;
2. two WanGP emulators up (v12 and v6, each its own process, as a real WanGP is), on 7860 and 7861 when
   they are free (else on free ports, added to the scan).

Every scan is fresh (``max_age=0``); one cached scan is timed too. Prints a summary and saves
``benchmarks/results/discovery.json``. Run: ``python benchmarks/discovery.py [--repeat 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gzip  # noqa: E402

import httpx  # noqa: E402

from blender_movie_director.backend.discovery import DEFAULT_PORTS, discover, probe  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "discovery.json"
REAL_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "captures" / "head-2026-08_config.json.gz"


def _routes(url: str) -> dict:
    """What the candidate identification routes cost: bytes and time of a full GET, against a probe."""
    out = {}
    with httpx.Client(timeout=10, trust_env=False) as client:
        for route in ("", "config", "gradio_api/info", "gradio_api/app_id"):
            started = time.perf_counter()
            response = client.get(url + route)
            out[f"GET /{route}"] = {"bytes": len(response.content), "status": response.status_code,
                                    "ms": round((time.perf_counter() - started) * 1000, 1)}
    times = []
    for _ in range(5):
        started = time.perf_counter()
        info = probe(url)
        times.append((time.perf_counter() - started) * 1000)
    out["probe (streamed /config, stops at the header)"] = {"ms_median": round(statistics.median(times), 1),
                                                             "kind": info.kind.value,
                                                             "wangp_version": info.wangp_version}
    return out


def _real_config_probe() -> dict | None:
    """The captured real WanGP 12.60 /config (1.8 MB as stored) served as-is: full read against probe."""
    if not REAL_CONFIG.exists():
        return None
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = gzip.decompress(REAL_CONFIG.read_bytes())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/config" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if self.path == "/config" else 0))
            self.end_headers()
            if self.path == "/config":
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the probe hung up after the header: that is the point

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        full, probes = [], []
        for _ in range(5):
            started = time.perf_counter()
            json.loads(httpx.get(url + "config", trust_env=False).content)
            full.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            info = probe(url)
            probes.append((time.perf_counter() - started) * 1000)
        return {"config_bytes": len(body), "full_get_and_parse_ms_median": round(statistics.median(full), 1),
                "probe_ms_median": round(statistics.median(probes), 1), "kind": info.kind.value,
                "wangp_version": info.wangp_version}
    finally:
        server.shutdown()
        server.server_close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _start_emulator(flavour: str, port: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wan2gp_emulator", "--flavour", flavour, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return process, line.split("=", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"the {flavour} emulator did not start")


def _scans(ports: list[int], repeat: int) -> dict:
    times, last = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        last = discover(ports=ports, include_env=False, max_age=0)
        times.append((time.perf_counter() - started) * 1000)
    discover(ports=ports, include_env=False)  # primes the cache
    cached_started = time.perf_counter()
    discover(ports=ports, include_env=False)
    cached = (time.perf_counter() - cached_started) * 1000
    return {
        "ports_probed": len(ports),
        "repeat": repeat,
        "ms_min": round(min(times), 2),
        "ms_median": round(statistics.median(times), 2),
        "ms_max": round(max(times), 2),
        "ms_first": round(times[0], 2),
        "ms_cached": round(cached, 3),
        "found": [s.to_dict() for s in last if s.kind.listening],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    busy = [p for p in DEFAULT_PORTS if not _port_free(p)]
    ports = list(DEFAULT_PORTS)
    results: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "default_ports": list(DEFAULT_PORTS),
        "ports_in_use_before": busy,
    }
    results["nothing_listening"] = _scans(ports, args.repeat)
    if busy:
        results["nothing_listening"]["note"] = f"ports {busy} were in use: not an empty scan for those"

    wanted = [p for p in (7860, 7861) if _port_free(p)]
    emulators = []
    try:
        for flavour in ("v12", "v6"):
            port = wanted.pop(0) if wanted else 0
            process, url = _start_emulator(flavour, port)
            emulators.append((flavour, process, url))
        scan_ports = list(ports)
        for _flavour, _process, url in emulators:
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            if port not in scan_ports:
                scan_ports.append(port)
        results["two_emulators"] = _scans(scan_ports, args.repeat)
        results["two_emulators"]["emulators"] = [{"flavour": f, "url": u} for f, _p, u in emulators]
        results["identification_routes"] = {f: _routes(u) for f, _p, u in emulators}
    finally:
        for _flavour, process, _url in emulators:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    results["real_v12_config"] = _real_config_probe()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for name in ("nothing_listening", "two_emulators"):
        r = results[name]
        print(f"{name:<18} {r['ports_probed']} ports: median {r['ms_median']:.1f} ms "
              f"(min {r['ms_min']:.1f}, max {r['ms_max']:.1f}, first {r['ms_first']:.1f}, cached {r['ms_cached']:.3f})")
        for s in r["found"]:
            print(f"{'':<18} {s['url']} {s['kind']} {s['wangp_version'] or ''} {s['latency_ms']} ms")
    for flavour, routes in results.get("identification_routes", {}).items():
        for route, figures in routes.items():
            print(f"{flavour:<4} {route:<48} {figures}")
    if results["real_v12_config"]:
        print(f"real v12 /config served as a file: {results['real_v12_config']}")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
