"""Load: 40 short jobs through one client from 8 threads against one emulator process (``benchmarks/load.py``
runs 200 and records the figures). All accounted for, outputs valid, no duplicate or missing file, memory and
threads flat."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

_spec = importlib.util.spec_from_file_location("load_benchmark",
                                               Path(__file__).resolve().parents[2] / "benchmarks" / "load.py")
assert _spec is not None and _spec.loader is not None
load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load)


def test_forty_jobs_from_eight_threads_all_accounted_for_and_nothing_leaks(emulator_process, tmp_path):
    server = emulator_process("--port", "0", "--step-seconds", "0")
    out = tmp_path / "shots"
    out.mkdir()
    figures = load.run_load(server.url, jobs=40, threads=8, out_dir=out, window=10, timeout=150)
    assert figures["completed"] == 40, figures
    # Looser bounds than the benchmark's: 30 jobs between the windows, still filling the job history.
    found = load.problems(figures, rss_growth_MB=25.0, thread_growth=2.0, object_growth=0.25)
    assert not found, (found, figures)
