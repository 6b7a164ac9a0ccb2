"""Blender Movie Director: generate shots with a WanGP server from Blender's Video Sequence Editor.

Also an importable library: ``blender_movie_director.backend.wan2gp`` is the WanGP client, usable from any
Python 3.11 program. Importing this package imports nothing heavy (no bpy, no gradio_client): Blender calls
:func:`register`, which imports the add-on's ``ui`` package; the WanGP client is imported on first use.
"""

__version__ = "0.1.0"


def register() -> None:
    """Enable the Blender add-on (called by Blender)."""
    from .ui import register as _register

    _register()


def unregister() -> None:
    """Disable the Blender add-on (called by Blender): jobs go on on the server and are picked up again."""
    from .ui import unregister as _unregister

    _unregister()
