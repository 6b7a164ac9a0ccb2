"""The Blender side of the add-on: the only code that imports bpy.

Modules register their own classes (``bpy.utils.register_classes_factory``); this package registers them in
order and unregisters them in reverse. Nothing here imports the WanGP client: it is imported on first use,
on a worker thread.
"""

from __future__ import annotations

from . import farm_ops, from_camera, operators, panels, persistence, preferences, properties, pump

_MODULES = (preferences, properties, operators, from_camera, panels, farm_ops)


def register() -> None:
    for module in _MODULES:
        module.register()
    pump.start()
    persistence.register()


def unregister() -> None:
    persistence.unregister()
    pump.stop()
    for module in reversed(_MODULES):
        module.unregister()
