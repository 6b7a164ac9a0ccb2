"""The figures tables of the README and docs/ are the benchmarks' saved results (tools/figures.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _figures_module():
    spec = importlib.util.spec_from_file_location("figures_tool", ROOT / "tools" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_says_what_the_saved_results_say():
    assert _figures_module().stale() == [], "run: python tools/figures.py"


def test_a_changed_result_shows_as_a_stale_table(tmp_path, monkeypatch):
    figures = _figures_module()
    results = tmp_path / "results"
    shutil.copytree(figures.RESULTS, results)
    pool = json.loads((results / "pool.json").read_text())
    pool["throughput"]["ratio"] = 1.23
    (results / "pool.json").write_text(json.dumps(pool))
    monkeypatch.setattr(figures, "RESULTS", results)
    assert figures.stale() == ["README.md: figures"]
    assert "| 1.23x; " in "\n".join(figures.figures())


def test_a_missing_block_is_a_clear_error():
    with pytest.raises(ValueError, match="figures:nowhere"):
        _figures_module().render("no markers here\n", "nowhere", ["| a |"])
