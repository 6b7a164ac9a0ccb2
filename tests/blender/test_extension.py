"""The extension zip: built by tools/build_extension.py, validated by Blender's own tool, installed and enabled
with ``bpy.ops.extensions.package_install_files`` in a fresh Blender (a subprocess). No network: the wheels are
repacked from the packages installed in this environment (``--from-installed``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ADDON

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_extension  # noqa: E402

_INSTALL = """
import json, os, sys
import bpy
result = bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.{addon}"
enabled = module in bpy.context.preferences.addons
site = os.path.join(os.environ["BLENDER_USER_RESOURCES"], "extensions", ".local", "lib",
                    "python%d.%d" % sys.version_info[:2], "site-packages")
installed = sorted(os.listdir(site)) if os.path.isdir(site) else []
registered = hasattr(bpy.types.Scene, "movie_director") and bpy.ops.movie_director.generate.poll()
heavy = "gradio_client" in sys.modules
from mcp import ClientSession  # the MCP transport's SDK, from the bundled wheels
from mcp.client.streamable_http import streamable_http_client
mcp_file, jwt = sys.modules["mcp"].__file__, "jwt" in sys.modules  # pyjwt (and cryptography) are not bundled
import addon_utils
addon_utils.disable(module, default_set=True)
print(json.dumps({{"result": sorted(result), "enabled": enabled, "registered": registered, "heavy": heavy,
                  "installed": installed, "mcp_file": mcp_file, "jwt": jwt}}))
"""


@pytest.mark.slow
def test_extension_zip_builds_validates_installs_and_enables(tmp_path):
    if build_extension.this_platform() not in build_extension.TARGETS:
        pytest.skip(f"no wheels are built for {build_extension.this_platform()}")
    out = tmp_path / "dist"
    zips = build_extension.build(build_extension.argparse.Namespace(
        platform=[build_extension.this_platform()], from_installed=True, output_dir=str(out), single_zip=False,
        blender_ext=None, pip_arg=None))  # validates the staged source and each zip with blender_ext.py
    assert len(zips) == 1 and zips[0].name.endswith(f"-{build_extension.this_platform().replace('-', '_')}.zip")
    with zipfile.ZipFile(zips[0]) as archive:
        names = archive.namelist()
        manifest = archive.read("blender_manifest.toml").decode()
    wheels = [n for n in names if n.startswith("wheels/") and n.endswith(".whl")]
    assert any(w.startswith("wheels/gradio_client-") for w in wheels)
    python = "cp{}{}".format(*sys.version_info[:2])
    assert any(w.startswith("wheels/pydantic_core-") and f"-{python}-" in w for w in wheels)  # compiled, this Python
    assert not any("rich-" in w or "hf_xet" in w for w in wheels)  # not needed inside Blender
    assert any(w.startswith("wheels/mcp-") for w in wheels)
    assert not any(w.startswith(("wheels/PyJWT-", "wheels/pyjwt-", "wheels/cryptography-")) for w in wheels)
    assert all(f'"./{w}"' in manifest for w in wheels)
    assert "__init__.py" in names and "ui/vse.py" in names and not any("__pycache__" in n for n in names)

    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user")}
    run = subprocess.run([sys.executable, "-c", _INSTALL.format(zip=str(zips[0]), addon=ADDON)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["result"] == ["FINISHED"] and result["enabled"] and result["registered"]
    assert not result["heavy"]  # enabling imports no gradio_client
    assert "pydantic_core" in result["installed"] and "gradio_client" in result["installed"]
    assert "mcp" in result["installed"] and not result["jwt"]  # the MCP client runs without pyjwt
