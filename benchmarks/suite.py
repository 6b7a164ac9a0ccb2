"""How long the test suite takes, in all and per folder (the seam issue's figure: ≤ 4 min wall on 2 cores).

Runs ``python -m pytest -n 4`` once (the README's test command, without the Python 3.13 pass) with a JUnit
report, then adds the tests' times up per folder of ``tests/``. A folder's time is the sum of its tests' own times
(set-up and tear-down included); the wall time is the whole run's, imports and collection included.

    python benchmarks/suite.py              # prints the table, saves benchmarks/results/suite.json
    python benchmarks/suite.py -- -x -k v12 # extra arguments after -- go to pytest
    python benchmarks/suite.py -- -n 0      # one worker: no parallel tests
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "suite.json"


def folder_of(classname: str) -> str:
    """``tests.backend.test_pool`` -> ``tests/backend``; ``tests.test_figures`` -> ``tests``."""
    parts = classname.split(".")
    module = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
    return "/".join(parts[:module]) or "tests"


def main(argv: list[str]) -> int:
    extra = ["-n", "4", *(argv[argv.index("--") + 1:] if "--" in argv else [])]  # a later -n wins
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                f"--junitxml={report}", *extra], cwd=ROOT, env=os.environ.copy())
        wall = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # pytest and its workers
        cpu = children.ru_utime + children.ru_stime
        cases = ET.parse(report).getroot().iter("testcase")
        per_folder: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for case in cases:
            folder = folder_of(case.get("classname", ""))
            per_folder[folder] += float(case.get("time") or 0)
            counts[folder] += 1
    rows = sorted(per_folder.items(), key=lambda kv: -kv[1])
    print(f"\n{'folder':<22} {'tests':>6} {'seconds':>9}")
    for folder, seconds in rows:
        print(f"{folder:<22} {counts[folder]:>6} {seconds:>9.1f}")
    print(f"{'wall, in all':<22} {sum(counts.values()):>6} {wall:>9.1f}   (CPU {cpu:.0f} s; pytest exit code {code})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "tests": sum(counts.values()),
        "exit_code": code, "cpu_count": os.cpu_count(),
        "per_folder": {f: {"tests": counts[f], "seconds": round(s, 1)} for f, s in rows},
        "pytest_arguments": extra, "target_wall_seconds": 240,
    }, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
