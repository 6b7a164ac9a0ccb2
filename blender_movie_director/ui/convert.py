"""Between the add-on's PropertyGroups and plain values: the bpy side of ``blender_movie_director.storyboard``.

Everything that can be said without Blender (requests, records, frame counts, free channels, progress text)
lives in ``storyboard``; this module only reads and writes the scene's shot settings.
"""

from __future__ import annotations

from typing import Any

from .. import storyboard


def shot_values(shot: Any) -> dict[str, Any]:
    """The panel's shot settings (``scene.movie_director``) as plain values."""
    return {name: getattr(shot, name) for name in storyboard.SHOT_FIELDS}


def shot_request(shot: Any) -> dict[str, Any]:
    """The panel's shot settings as ``GenerationSettings`` keyword arguments."""
    return storyboard.shot_request(shot_values(shot))


def load_shot_settings(shot: Any, stored: dict[str, Any]) -> None:
    """Fill the panel's shot settings from stored WanGP settings (those a strip carries)."""
    for name, value in storyboard.shot_from_settings(stored, shot_values(shot)).items():
        if getattr(shot, name) != value:
            setattr(shot, name, value)
