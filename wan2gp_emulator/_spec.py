"""The captured shape of each WanGP version, as extracted by ``data/extract.py``.

Component and dependency ids in these files are the *real* server's ids; the emulator builds its own components
from them and keeps a map from real id to emulated component.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

VERSIONS = {"v12": "12.60", "v6": "6.31"}
STARTUP_MODEL = {"v12": "t2v", "v6": "t2v_1.3B"}  # the model each captured server showed at start


@dataclass(frozen=True)
class Dependency:
    real_id: int
    api_name: str
    fn: str | None
    js: bool
    inputs: list[int]
    outputs: list[int]
    targets: list[list[Any]]
    trigger_after: int | None
    queue: bool
    show_progress: str
    show_progress_on: list[int] | None
    generator: bool
    trigger_mode: str
    params: list[str]
    param_default_none: list[bool]
    n_returns: int


class FlavourSpec:
    def __init__(self, flavour: str, raw: dict) -> None:
        self.flavour = flavour
        self.raw = raw
        self.version: str = raw["version"]
        self.title: str = raw["title"]
        self.theme: str = raw["theme"]
        self.fill_width: bool = raw["fill_width"]
        self.header_id: int = raw["header_id"]
        self.components: dict[int, dict] = {int(k): v for k, v in raw["components"].items()}
        self.dependencies: dict[int, Dependency] = {
            int(k): Dependency(real_id=int(k), **v) for k, v in raw["dependencies"].items()
        }

    def dep(self, real_id: int) -> Dependency:
        return self.dependencies[real_id]

    def api_outputs(self, real_id: int) -> list[int]:
        """The API-visible outputs of a dependency (what a client receives), as real component ids."""
        return [c for c in self.dep(real_id).outputs if not self.components[c]["skip_api"]]

    def input_names(self, real_id: int) -> dict[int, str]:
        dep = self.dep(real_id)
        return dict(zip(dep.inputs, dep.params, strict=True))


@cache
def load(flavour: str) -> FlavourSpec:
    if flavour not in VERSIONS:
        raise ValueError(f"unknown flavour {flavour!r}: expected one of {sorted(VERSIONS)}")
    name = "wangp_v12.json" if flavour == "v12" else "wangp_v6.json"
    text = resources.files("wan2gp_emulator").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return FlavourSpec(flavour, json.loads(text))
