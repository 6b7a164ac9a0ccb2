"""What the MCP transport adds to the Blender extension: wheels, size, and import time.

    python benchmarks/extension.py

Builds this machine's extension zip twice with ``tools/build_extension.py --from-installed`` (the installed
distributions, repacked: offline), as shipped and ``--without mcp`` (the SDK and what only it needs left out),
and times, each in new processes (medians of 7):
- ``import blender_movie_director.backend.wan2gp``: what enabling the add-on pays for the client (the MCP
  transport is not imported then);
- the MCP SDK's import (``mcp.ClientSession`` and its streamable HTTP client): paid once, by the first connection
  to an MCP server.

Saves benchmarks/results/extension.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT / "tools"))

import build_extension  # noqa: E402


def build(out: Path, without: list[str]) -> dict:
    args = ["--from-installed", "--platform", build_extension.this_platform(), "--output-dir", str(out)]
    for name in without:
        args += ["--without", name]
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_extension.py"), *args], check=True,
                   capture_output=True, text=True)
    (zip_path,) = out.glob("*.zip")
    with zipfile.ZipFile(zip_path) as archive:
        wheels = sorted(n.removeprefix("wheels/") for n in archive.namelist()
                        if n.startswith("wheels/") and n.endswith(".whl"))
    size = zip_path.stat().st_size
    return {"zip": zip_path.name, "bytes": size, "megabytes": round(size / 1e6, 2), "wheels": len(wheels),
            "wheel_files": wheels}


def median_seconds(code: str, repeat: int = 7) -> float:
    timed = f"import time; t0 = time.perf_counter(); {code}; print(time.perf_counter() - t0)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(repeat))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        shipped = build(Path(tmp) / "with", [])
        bare = build(Path(tmp) / "without", ["mcp"])
    added = sorted(set(w.split("-")[0] for w in shipped["wheel_files"]) - set(w.split("-")[0]
                                                                             for w in bare["wheel_files"]))
    figures = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "extension_platform": build_extension.this_platform()},
        "with_mcp": {k: v for k, v in shipped.items() if k != "wheel_files"},
        "without_mcp": {k: v for k, v in bare.items() if k != "wheel_files"},
        "mcp_adds": {"wheels": shipped["wheels"] - bare["wheels"],
                     "megabytes": round((shipped["bytes"] - bare["bytes"]) / 1e6, 2), "distributions": added},
        "import_seconds": {
            "client_at_enable": median_seconds("import blender_movie_director.backend.wan2gp"),
            "mcp_sdk_at_first_connection": median_seconds(
                "from mcp import ClientSession; from mcp.client.streamable_http import streamable_http_client"),
        },
        "note": "one platform and this Python (--from-installed); the shipped zips hold each wheel for 3.11 and "
                "3.13. Enabling the add-on does not import the SDK: without MCP it would cost the same.",
    }
    print(json.dumps(figures, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "extension.json").write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
