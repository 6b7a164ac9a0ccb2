"""The captured shape of each WanGP release, as extracted by ``data/extract.py``, and its behaviour switches.

Component and dependency ids in the data files are the *real* server's ids; the emulator builds its own components
from them and keeps a map from real id to emulated component. Handlers address components by *role* (``gallery``,
``queue_view``, ``model_choice``...), found per release by ``extract.py``, so one handler serves every release.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

VERSIONS = {"v6": "6.31", "v8": "8.11", "v9": "9.81", "v11": "11.66", "v12": "12.60"}


@dataclass(frozen=True)
class Behaviour:
    """What differs between releases beyond the API shapes the captures show.

    Read from WanGP's ``wgp.py`` at the captured commit of each release (``tests/captures/README.md`` names them);
    none of it is visible in the captured API description."""

    generating_status: str  # process_tasks' first status text
    status_per_task: bool  # the queue worker sets the "Generating..." status again before each task (12.60)
    seconds_total_time: bool  # "Total Generation Time: 0.4s" always in seconds (6.31) instead of format_time
    progress_desc: str  # gr.Progress text: "phase" (6.31), "elapsed" ("phase | 1.2s"), "estimate" ("| 1.2s / 3s")
    requires_validate: bool  # process_prompt_and_add_tasks returns without queueing unless validate_wizard_prompt ran
    persists_last_model: bool  # change_model writes last_model_type to wgp_config.json, read at start-up
    finalize_sends_files: bool  # finalize_generation's Gallery update carries the file list, not only the index
    abort_status_from_last_task: bool  # the final "was aborted" text follows the last task's abort (loop variable)
    settings_version: float  # written into settings files and queue.json


BEHAVIOUR = {
    "v6": Behaviour("Generating Video", False, True, "phase", True, False, False, True, 2),
    "v8": Behaviour("Generating Video", False, False, "elapsed", True, True, False, True, 2.26),
    "v9": Behaviour("Generating Video", False, False, "elapsed", False, True, False, True, 2.41),
    "v11": Behaviour("Generating...", False, False, "elapsed", False, True, True, False, 2.58),
    "v12": Behaviour("Generating...", True, False, "estimate", False, True, True, False, 2.74),
}


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
        self.roles: dict[str, int] = raw["roles"]
        self.role_of: dict[int, str] = {cid: role for role, cid in self.roles.items()}
        self.main_state: int = self.roles["main_state"]
        self.form_dep: int = raw["form_dep"]  # the generation chain's save_inputs: names the form's fields
        # Hidden gr.State inputs besides the session state: {real id: (parameter name, initial value)}.
        self.hidden_states: dict[int, tuple[str, Any]] = {
            int(k): (v["name"], v["value"]) for k, v in raw["hidden_states"].items()}
        self.model_switch: list[str] = raw["model_switch"]  # the endpoints a client calls to switch, in order
        self.dropdown_levels: int = raw["dropdown_levels"]  # 1: model list; 2: + family; 3: + base-type group
        self.dropdown_interactive: bool = raw["dropdown_interactive"]
        self.startup_model: str = raw["startup_model"]
        self.save_queue_form: str = raw["save_queue"]["form"]  # "base64" zip or a "download" link
        self.save_queue_min_tasks: int = raw["save_queue"]["min_tasks"]
        self.queue_params_keys: list[str] = raw["queue_params_keys"]
        self.behaviour = BEHAVIOUR[flavour]

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
    text = resources.files("wan2gp_emulator").joinpath(f"data/wangp_{flavour}.json").read_text(encoding="utf-8")
    return FlavourSpec(flavour, json.loads(text))


@cache
def load_rest(flavour: str) -> dict | None:
    """The rest of the release's real UI (``extract.py``'s ``extract_rest``), for flavours served at real size."""
    path = resources.files("wan2gp_emulator").joinpath(f"data/wangp_{flavour}_rest.json.gz")
    if not path.is_file():
        return None
    rest: dict = json.loads(gzip.decompress(path.read_bytes()))
    return rest
