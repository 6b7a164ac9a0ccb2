"""The farm task inside Blender: ``blender -b FILE.blend --python-expr EXPR -- SHOTS.json --shots N -o DIR``.

A Flamenco worker runs Blender, not a shell command of ours; with the extension installed, ``EXPR`` is
``import importlib; importlib.import_module("bl_ext.user_default.blender_movie_director.headless").main()``
(the first part is the extension's repository on the worker). :func:`main` reads the arguments after ``--``,
runs them as ``movie-director shot`` does (the same journal per shot, ``shot-NNNN.mp4``, exit codes and
``openjd_progress``/``openjd_status`` lines), and, in a Blender that runs in the background, ends Blender with
that exit code so the farm sees a failed task as failed. Nothing here touches bpy's data.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, *, exit_blender: bool | None = None) -> int:
    """Run the shots given by ``argv`` (default: Blender's arguments after ``--``); returns the exit code.

    ``exit_blender`` (default: when Blender runs in the background, and ``argv`` is not given) ends the process
    with that code, as ``blender -b`` would otherwise exit 0 whatever the script did.
    """
    from .cli import main as cli_main

    given = argv is not None
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    code = cli_main(["shot", *argv])
    if exit_blender is None:
        exit_blender = not given and _blender_in_background()
    if exit_blender:
        sys.stdout.flush()
        raise SystemExit(code)
    return code


def _blender_in_background() -> bool:
    try:
        import bpy
    except ImportError:
        return False
    return bool(bpy.app.background)
