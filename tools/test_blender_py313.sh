#!/usr/bin/env bash
# The Blender tests on Python 3.13 with the newest bpy for it (Blender 5.1+ embeds Python 3.13), in a second
# venv, .venv313, beside the project's .venv (Python 3.11, bpy 5.0.1). Reused when it is already there.
#
#   bash tools/test_blender_py313.sh            # then: tests/addon and tests/blender, on bpy 5.3.0
#   BPY313=5.2.3 bash tools/test_blender_py313.sh -k vse    # another bpy; extra arguments go to pytest
#
# The emulator (gradio 5.29) installs and runs on Python 3.13, so the tests start it in-process, as on 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
BPY313="${BPY313:-5.3.0}"  # the newest bpy on PyPI for Python 3.13 when this was written

python313="$(command -v python3.13 || true)"
if [ -z "$python313" ] || ! "$python313" -c pass 2>/dev/null; then  # e.g. a pyenv shim of a version not selected
    python313="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1 || true)"
fi
if [ -z "$python313" ]; then
    echo "python3.13 was not found: install Python 3.13 to run the Blender tests on it" >&2
    exit 1
fi

if [ ! -x .venv313/bin/python ]; then
    "$python313" -m venv .venv313
fi
# What the Blender tests need: the add-on's dependencies, the emulator, bpy, pytest (not the dev extra:
# it pins bpy 5.0.1, which is for Python 3.11).
.venv313/bin/python -m pip install --quiet -e ".[emulator]" "bpy==$BPY313" "pytest>=8" "pytest-timeout>=2.3" \
    "pytest-xdist>=3.5"
timeout 900 .venv313/bin/python -m pytest tests/addon tests/blender -q -n 4 "$@"
