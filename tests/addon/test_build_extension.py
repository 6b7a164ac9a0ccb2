"""The extension builder's wheel rules, without building anything (bpy-free)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import build_extension  # noqa: E402


def test_which_python_a_wheel_serves():
    assert build_extension.wheel_pythons("pydantic_core-2.33.2-cp311-cp311-win_amd64.whl") == {"3.11"}
    assert build_extension.wheel_pythons("pydantic_core-2.33.2-cp313-cp313-win_amd64.whl") == {"3.13"}
    assert build_extension.wheel_pythons("httpx-0.28.1-py3-none-any.whl") == {"3.11", "3.13"}
    assert build_extension.wheel_pythons("colorama-0.4.6-py2.py3-none-any.whl") == {"3.11", "3.13"}
    assert build_extension.wheel_pythons("x-1.0-cp38-abi3-manylinux_2_17_x86_64.whl") == {"3.11", "3.13"}
    assert build_extension.wheel_pythons("x-1.0-cp312-abi3-manylinux_2_17_x86_64.whl") == {"3.13"}
    assert build_extension.wheel_pythons("x-1.0-cp312-cp312-win_amd64.whl") == set()


def test_a_bundle_has_one_wheel_per_dependency_and_python_and_nothing_more():
    needed = {"3.11": {"pydantic-core", "httpx"}, "3.13": {"pydantic-core", "httpx"}}
    good = ["wheels/pydantic_core-2.33.2-cp311-cp311-win_amd64.whl",
            "wheels/pydantic_core-2.33.2-cp313-cp313-win_amd64.whl", "wheels/httpx-0.28.1-py3-none-any.whl"]
    assert build_extension.check_bundle(good, needed) == []
    assert build_extension.check_bundle(good[1:], needed) == ["0 wheels of pydantic-core for Python 3.11"]
    extra = [*good, "wheels/colorama-0.4.6-py2.py3-none-any.whl", "wheels/websockets-15.0.1-cp312-cp312-win_amd64.whl"]
    assert build_extension.check_bundle(extra, needed) == ["colorama-0.4.6-py2.py3-none-any.whl is not needed",
                                                          "websockets-15.0.1-cp312-cp312-win_amd64.whl is not needed"]
