"""Model catalog and per-family rules of the emulated WanGP.

The model lists come from the real servers (``data/catalog.json``): the 217 model definitions of WanGP 12.60 from
``list_model_metadata()``; for 8.11, 9.81 and 11.66 the models of each release's "Selectable Generative Models"
list (51, 97, 176), with the family, base type, group, outputs and inputs WanGP 12.60 gives the same model type;
the 31 entries of WanGP 6.31's model dropdown. What a model *does* (frame rule, frame rate, outputs, default form
values) is decided here: :data:`FAMILY_RULES` for 8.11 and later (the 12.60 values, assumed for the older
releases), :func:`_v6_info` for 6.31. The dropdowns (families, base-type groups, variants) are built the way
WanGP's ``generate_dropdown_model_list``, ``change_model_family`` and ``change_model_base_types`` build them.

Sources of the numbers in :data:`FAMILY_RULES` (checked against WanGP's public sources where noted):

* Wan 2.1 / 2.2: 16 fps, frames ``4n+1``, minimum 5 (``head_model_schema_t2v_1.3B.json``: fps 16, minimum 5,
  step 4). The form slider's maximum for ``t2v_1.3B`` is 337 (``head_fill_inputs_t2v_1.3B.json``).
* LTX-2: 24 fps, ``8n+1``, minimum 17 (``models/ltx2/ltx2_handler.py``: ``"fps": 24, "frames_minimum": 17,
  "frames_steps": 8``).
* LTX Video: 30 fps, ``8n+1`` (WanGP 6.31 ``generate_video``: ``fps = 30``, ``latent_size = 8`` for ltxv).
* Hunyuan Video: 24 fps, ``4n+1``; Hunyuan Avatar / Custom Audio 25 fps; SkyReels2 diffusion forcing 24 fps;
  Fantasy Talking 23 fps (WanGP 6.31 ``generate_video``).
* Hunyuan 1.5, Kandinsky 5, LongCat, Magi Human, MiniMax H3, Wan 2.2 5B models: not looked up; the values below
  are assumptions (marked ``assumed``) that keep each family's frame rule self-consistent.
* Image families (Flux, Qwen, Z-Image, ...) write still images; Music and TTS write audio.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from . import _spec

# Resolution groups of the v12 "Resolution Budget" dropdown. The 480p group is the captured one.
RESOLUTION_GROUPS: dict[str, list[tuple[str, str]]] = {
    "480p": [("832x624 (4:3)", "832x624"), ("624x832 (3:4)", "624x832"), ("720x720 (1:1)", "720x720"),
             ("832x480 (16:9)", "832x480"), ("480x832 (9:16)", "480x832")],
    "720p": [("1280x960 (4:3)", "1280x960"), ("960x1280 (3:4)", "960x1280"), ("1024x1024 (1:1)", "1024x1024"),
             ("1280x720 (16:9)", "1280x720"), ("720x1280 (9:16)", "720x1280")],
    "1080p": [("1920x1440 (4:3)", "1920x1440"), ("1440x1920 (3:4)", "1440x1920"),
              ("1440x1440 (1:1)", "1440x1440"), ("1920x1080 (16:9)", "1920x1080"),
              ("1080x1920 (9:16)", "1080x1920")],
}


@dataclass(frozen=True)
class FamilyRule:
    fps: int
    frames_minimum: int
    frames_steps: int
    frames_maximum: int
    default_frames: int
    output: str = "video"  # "video" | "image" | "audio"
    resolution: str = "832x480"
    steps: int = 30


_VIDEO = FamilyRule(16, 5, 4, 337, 81)
FAMILY_RULES: dict[str, FamilyRule] = {
    "wan": _VIDEO,
    "wan2_2": _VIDEO,
    "hunyuan": FamilyRule(24, 5, 4, 337, 97, resolution="1280x720"),
    "hunyuan_1_5": FamilyRule(24, 5, 4, 337, 121),  # assumed
    "ltxv": FamilyRule(30, 17, 8, 737, 97),
    "ltx2": FamilyRule(24, 17, 8, 737, 121),
    "kandinsky5": FamilyRule(24, 5, 4, 337, 121),  # assumed
    "longcat": FamilyRule(15, 5, 4, 337, 93),  # assumed
    "magi_human": FamilyRule(25, 5, 4, 337, 121),  # assumed
    "minimax_h3": FamilyRule(24, 5, 4, 337, 121),  # assumed
    "flux": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=28),
    "flux2": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=28),
    "qwen": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=30),
    "z_image": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=8),
    "hidream": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=28),
    "ideogram4": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=20),
    "krea2": FamilyRule(1, 1, 1, 1, 1, output="image", resolution="1024x1024", steps=20),
    "music": FamilyRule(1, 1, 1, 1, 1, output="audio", resolution="832x480", steps=8),
    "tts": FamilyRule(1, 1, 1, 1, 1, output="audio", resolution="832x480", steps=8),
}

# Per-model frame rates that differ from the family's (regex on the model type).
FPS_OVERRIDES: list[tuple[str, int]] = [
    (r"^sky_df", 24),
    (r"^fantasy", 23),
    (r"multitalk|infinitetalk", 25),
    (r"^hunyuan_(avatar|custom_audio)", 25),
    (r"^(ti2v_2_2|ovi|lucy_edit|kiwi_edit)", 24),  # Wan 2.2 5B models, assumed
]
# Models that need a start image (image-to-video): their default image_prompt_type is "S" ("SE" for FLF2V).
START_IMAGE_MODELS = re.compile(r"(^|_)i2v($|_)|flf2v|fun_inp|^k5_.*_i2v|^hunyuan_1_5_.*i2v")
FAST_STEPS: list[tuple[str, int]] = [
    (r"lightning|lightx2v|4-step|nvfp4|schnell|_sf$|^t2v_sf|accvideo|fast", 4),
    (r"distill|turbo", 8),
    (r"fusionix|cocktail", 10),
]

# WanGP 6.31: the frame rate and latent size come from generate_video's model-name tests.
V6_RESOLUTIONS = [
    ("1920x832 (21:9, 1080p)", "1920x832"), ("832x1920 (9:21, 1080p)", "832x1920"),
    ("1280x720 (16:9, 720p)", "1280x720"), ("720x1280 (9:16, 720p)", "720x1280"),
    ("1024x1024 (1:1, 720p)", "1024x1024"), ("1280x544 (21:9, 720p)", "1280x544"),
    ("544x1280 (9:21, 720p)", "544x1280"), ("1104x832 (4:3, 720p)", "1104x832"),
    ("832x1104 (3:4, 720p)", "832x1104"), ("960x960 (1:1, 720p)", "960x960"),
    ("832x480 (16:9, 480p)", "832x480"), ("480x832 (9:16, 480p)", "480x832"),
    ("832x624 (4:3, 480p)", "832x624"), ("624x832 (3:4, 480p)", "624x832"),
    ("720x720 (1:1, 480p)", "720x720"), ("512x512 (1:1, 480p)", "512x512"),
]


@dataclass(frozen=True)
class ModelInfo:
    """What the emulator knows about one model type."""

    model_type: str
    name: str
    family: str
    family_label: str
    base_model_type: str
    main_output: tuple[str, ...]
    inputs: tuple[str, ...]
    fps: int
    frames_minimum: int
    frames_steps: int
    frames_maximum: int
    default_frames: int
    output: str  # "video" | "image" | "audio"
    default_resolution: str
    default_steps: int
    needs_start_image: bool
    needs_end_image: bool = False
    parent: str = ""  # the model whose group (the base-type dropdown's entry) this one belongs to
    hidden: bool = False  # defined but not offered in the model dropdowns

    def valid_frames(self, frames: int) -> bool:
        return (self.frames_minimum <= frames <= self.frames_maximum
                and (frames - self.frames_minimum) % self.frames_steps == 0)

    def nearest_frames(self, frames: int) -> int:
        k = max(0, round((frames - self.frames_minimum) / self.frames_steps))
        return min(self.frames_minimum + k * self.frames_steps, self.frames_maximum)

    @property
    def default_image_prompt_type(self) -> str:
        if self.needs_end_image:
            return "SE"
        return "S" if self.needs_start_image else ""

    @property
    def image_mode(self) -> int:
        return 1 if self.output == "image" else 0


@cache
def _raw() -> dict:
    text = resources.files("wan2gp_emulator").joinpath("data/catalog.json").read_text(encoding="utf-8")
    return json.loads(text)


def _steps_for(model_type: str, name: str, default: int) -> int:
    key = f"{model_type} {name}".lower()
    for pattern, steps in FAST_STEPS:
        if re.search(pattern, key):
            return steps
    return default


def _resolution_for(model_type: str, name: str, rule: FamilyRule) -> str:
    if rule.output == "image":
        return rule.resolution
    key = f"{model_type} {name}".lower()
    if "1080" in key:
        return "1920x1080"
    if "720p" in key:
        return "1280x720"
    return rule.resolution


def _info(entry: dict, family_label: str) -> ModelInfo:
    model_type, family = entry["model_type"], entry["family"]
    rule = FAMILY_RULES.get(family, _VIDEO)
    main_output = tuple(entry["main_output"])
    output = rule.output
    if output == "video" and main_output == ("image",):
        output = "image"  # e.g. Chrono Edit: an image model in the Wan family
    fps = rule.fps
    for pattern, value in FPS_OVERRIDES:
        if re.search(pattern, model_type):
            fps = value
            break
    needs_start = output == "video" and bool(START_IMAGE_MODELS.search(model_type))
    return ModelInfo(
        model_type=model_type, name=entry["name"].strip(), family=family, family_label=family_label,
        base_model_type=entry["base_model_type"], main_output=main_output, inputs=tuple(entry["inputs"]),
        fps=fps if output == "video" else 1,
        frames_minimum=rule.frames_minimum if output == "video" else 1,
        frames_steps=rule.frames_steps if output == "video" else 1,
        frames_maximum=rule.frames_maximum if output == "video" else 1,
        default_frames=rule.default_frames if output == "video" else 1,
        output=output,
        default_resolution=_resolution_for(model_type, entry["name"], FAMILY_RULES.get(family, _VIDEO)
                                           if output != "image" else FamilyRule(1, 1, 1, 1, 1, "image",
                                                                                  "1024x1024")),
        default_steps=_steps_for(model_type, entry["name"], rule.steps),
        needs_start_image=needs_start,
        needs_end_image=model_type.startswith("flf2v"),
        parent=entry["parent"],
        hidden=entry.get("hidden", False),
    )


def _v6_info(entry: dict) -> ModelInfo:
    model_type, name = entry["model_type"], entry["name"]
    if model_type.startswith("hunyuan"):
        family, label = "hunyuan", "Hunyuan Video"
    elif model_type.startswith("ltxv"):
        family, label = "ltxv", "LTX Video"
    else:
        family, label = "wan", "Wan2.1"
    # WanGP 6.31 generate_video: avatar / custom audio 25, diffusion forcing and Hunyuan 24, fantasy 23,
    # LTX Video 30, everything else 16; latent size 8 for LTX Video, else 4.
    if model_type in ("hunyuan_avatar", "hunyuan_custom_audio"):
        fps = 25
    elif model_type.startswith("sky_df") or family == "hunyuan":
        fps = 24
    elif model_type == "fantasy":
        fps = 23
    elif family == "ltxv":
        fps = 30
    else:
        fps = 16
    step = 8 if family == "ltxv" else 4
    minimum = 17 if family == "ltxv" else 5
    maximum = 193 if step == 4 else 257
    default_frames = 97 if family in ("ltxv", "hunyuan") else 81
    inputs = ["text"]
    needs_start = bool(re.search(r"i2v|flf2v|fun_inp", model_type))
    if needs_start or model_type.startswith(("vace", "phantom", "hunyuan_custom", "hunyuan_avatar")):
        inputs.append("image")
    if model_type.startswith(("vace", "recam", "sky_df", "hunyuan_custom_edit")):
        inputs.append("video")
    if model_type in ("fantasy", "hunyuan_avatar", "hunyuan_custom_audio"):
        inputs.append("audio")
    return ModelInfo(
        model_type=model_type, name=name, family=family, family_label=label, base_model_type=model_type,
        main_output=("video",), inputs=tuple(inputs), fps=fps, frames_minimum=minimum, frames_steps=step,
        frames_maximum=maximum, default_frames=default_frames, output="video",
        default_resolution="1280x720" if ("720p" in name or family == "hunyuan") else "832x480",
        default_steps=_steps_for(model_type, name, 30), needs_start_image=needs_start,
        needs_end_image=model_type.startswith("flf2v"), parent=model_type,
    )


@cache
def models(flavour: str) -> dict[str, ModelInfo]:
    """All model types the flavour knows, in the real server's order."""
    raw = _raw()[flavour]
    if flavour == "v6":
        return {e["model_type"]: _v6_info(e) for e in raw["models"]}
    labels = dict(families(flavour))
    return {e["model_type"]: _info(e, {v: k for k, v in labels.items()}.get(e["family"], e["family"]))
            for e in raw["models"]}


def model(flavour: str, model_type: str) -> ModelInfo | None:
    return models(flavour).get(model_type)


@cache
def families(flavour: str) -> list[tuple[str, str]]:
    """The family dropdown's (label, value) choices, in WanGP's family order (none on 6.31)."""
    return [(label, value) for label, value in _raw()[flavour]["families"]]


def resolution_choices(flavour: str, resolution: str) -> list[tuple[str, str]]:
    """Choices the resolution dropdown shows when ``resolution`` is selected."""
    if flavour == "v6":
        return list(V6_RESOLUTIONS)
    for group in RESOLUTION_GROUPS.values():
        if any(value == resolution for _, value in group):
            return list(group)
    return list(RESOLUTION_GROUPS["480p"])


# ---------------------------------------------------------------------------------------------- model dropdowns
UNKNOWN_FAMILY = ("Unknown", "unknown")  # wgp.py families_infos["unknown"], last in the family order


def compact_name(info: ModelInfo) -> str:
    """wgp.py compact_name: the model name without its family's label."""
    if info.name.startswith(info.family_label):
        return info.name[len(info.family_label):].strip()
    return info.name


def _decorate(flavour: str, label: str) -> str:
    # 11.66 and 12.60 prefix base types and variants with the download status (no weights: missing)
    return f"\u2b1b {label}" if _raw()[flavour]["status_prefix"] else label


def family_models(flavour: str, family: str, current: str = "") -> list[ModelInfo]:
    """A family's models sorted by compact name, as the two-level model dropdown (8.x) lists them (a hidden model
    only when it is the ``current`` one, as WanGP adds the current model to the list)."""
    return sorted((m for m in models(flavour).values()
                   if m.family == family and (not m.hidden or m.model_type == current)), key=compact_name)


def _groups(flavour: str, family: str, current: str = "") -> dict[str, list[ModelInfo]]:
    """wgp.py create_models_hierarchy: {parent: its models, the parent first, then by compact name}."""
    groups: dict[str, list[ModelInfo]] = {}
    for info in family_models(flavour, family, current):
        groups.setdefault(info.parent, []).append(info)
    for parent, members in groups.items():
        members.sort(key=lambda m: m.model_type != parent)  # stable: the others keep the name order
    return groups


def _group_label(flavour: str, parent: str, members: list[ModelInfo]) -> str:
    return _raw()[flavour]["labels"]["group"].get(parent) or compact_name(members[0])


def _variant_label(flavour: str, info: ModelInfo) -> str:
    return _raw()[flavour]["labels"]["variant"].get(info.model_type) or compact_name(info)


def group_choices(flavour: str, family: str, current: str = "") -> list[tuple[str, str]]:
    """The base-type dropdown: one entry per group of the family, sorted by label."""
    entries = [(_group_label(flavour, parent, members), parent)
               for parent, members in _groups(flavour, family, current).items()]
    return [(_decorate(flavour, label), parent) for label, parent in sorted(entries, key=lambda e: e[0])]


def variant_choices(flavour: str, family: str, parent: str, current: str = "") -> list[tuple[str, str]]:
    """The model dropdown of a three-level release: the models of one group."""
    return [(_decorate(flavour, _variant_label(flavour, m)), m.model_type)
            for m in _groups(flavour, family, current).get(parent, [])]


def _interactive(flavour: str, kwargs: dict) -> dict:
    return {**kwargs, "interactive": True} if _spec.load(flavour).dropdown_interactive else kwargs


def model_dropdowns(flavour: str, model_type: str) -> dict[str, dict]:
    """wgp.py generate_dropdown_model_list: the update of each model dropdown, by role, for ``model_type``.

    An unknown model type is added to the lists the way WanGP does (family "Unknown", no group)."""
    info = model(flavour, model_type)
    family_choices = families(flavour)
    if info is None:
        name = f"Unknown model {model_type}"
        out = {"model_family": {"choices": [*family_choices, UNKNOWN_FAMILY], "value": UNKNOWN_FAMILY[1]},
               "model_choice": {"choices": [(name, model_type)], "value": model_type}}
        if _levels(flavour) == 3:
            out["model_base_type"] = {"choices": [(name, model_type)], "value": model_type, "visible": True}
            out["model_choice"]["visible"] = False
        return {role: _interactive(flavour, kwargs) for role, kwargs in out.items()}
    if _levels(flavour) == 2:
        return {"model_family": {"choices": family_choices, "value": info.family},
                "model_choice": {"choices": [(compact_name(m), m.model_type)
                                             for m in family_models(flavour, info.family, model_type)],
                                 "value": model_type}}
    variants = variant_choices(flavour, info.family, info.parent, model_type)
    out = {"model_family": {"choices": family_choices, "value": info.family},
           "model_base_type": {"choices": group_choices(flavour, info.family, model_type), "value": info.parent,
                               "visible": True},
           "model_choice": {"choices": variants, "value": model_type, "visible": len(variants) > 1}}
    return {role: _interactive(flavour, kwargs) for role, kwargs in out.items()}


def family_change(flavour: str, family: str, last_per_family: dict) -> dict[str, dict]:
    """wgp.py change_model_family: the family's last used model (or its first) and its lists."""
    members = family_models(flavour, family)
    model_type = last_per_family.get(family, "")
    if model_type not in [m.model_type for m in members]:
        model_type = members[0].model_type
    if _levels(flavour) == 2:
        return {"model_choice": {"choices": [(compact_name(m), m.model_type) for m in members],
                                 "value": model_type}}
    parent = models(flavour)[model_type].parent
    variants = variant_choices(flavour, family, parent)
    return {"model_base_type": {"choices": group_choices(flavour, family), "value": parent},
            "model_choice": {"choices": variants, "value": model_type, "visible": len(variants) > 1}}


def base_type_change(flavour: str, family: str, parent: str, last_per_type: dict) -> dict[str, dict]:
    """wgp.py change_model_base_types: the group's models; the base-type dropdown keeps its value."""
    variants = variant_choices(flavour, family, parent)
    model_type = last_per_type.get(parent, "")
    if model_type not in [value for _, value in variants]:
        model_type = variants[0][1]
    return {"model_base_type": {},
            "model_choice": {"choices": variants, "value": model_type, "visible": len(variants) > 1}}


def _levels(flavour: str) -> int:
    return _spec.load(flavour).dropdown_levels


# ---------------------------------------------------------------------------------------------- control videos
# The modes the form's control dropdowns offer a VACE model: WanGP 12.60's wan_handler.py (guide_preprocessing,
# mask_preprocessing, image_ref_choices of the VACE class, labels from wgp.py's guide_preprocessing_labels_all),
# and 6.31's wgp.py (81021e7a, its hand-written VACE list). 8.11 to 11.66 are given 12.60's lists: their order and
# labels were not captured for a VACE model (the captures' start-up model is t2v) and may differ a little.
_GUIDE_V12 = [("No Control Video", ""), ("Keep Control Video Unchanged", "UV"), ("Transfer Human Motion", "PV"),
              ("Transfer Aligned Human Motion", "OV"), ("Transfer Depth", "DV"), ("Transfer Shapes", "SV"),
              ("Transfer Flow", "LV"), ("Recolorize", "CV"), ("Perform Inpainting", "MV"),
              ("Use Vace raw format", "V"), ("Transfer Human Motion & Depth", "PDV"),
              ("Transfer Human Motion & Shapes", "PSV"), ("Transfer Human Motion & Flow", "PLV"),
              ("Transfer Depth & Shapes", "DSV"), ("Transfer Depth & Flow", "DLV"), ("Transfer Shapes & Flow", "SLV")]
_GUIDE_V6 = [("No Control Video", ""), ("Transfer Human Motion", "PV"), ("Transfer Depth", "DV"),
             ("Transfer Shapes", "SV"), ("Transfer Flow", "LV"), ("Recolorize", "CV"), ("Perform Inpainting", "MV"),
             ("Use Vace raw format", "V"), ("Keep Unchanged", "UV"), ("Transfer Human Motion & Depth", "PDV"),
             ("Transfer Human Motion & Shapes", "PSV"), ("Transfer Human Motion & Flow", "PLV"),
             ("Transfer Depth & Shapes", "DSV"), ("Transfer Depth & Flow", "DLV"), ("Transfer Shapes & Flow", "SLV")]
_MASK = [("Whole Frame", ""), ("Masked Area", "A"), ("Non Masked Area", "NA"), ("Masked Area, rest Inpainted", "XA"),
         ("Non Masked Area, rest Inpainted", "XNA"), ("Masked Area, rest Depth", "YA"),
         ("Non Masked Area, rest Depth", "YNA"), ("Masked Area, rest Shapes", "WA"),
         ("Non Masked Area, rest Shapes", "WNA")]
_REFS = [("None", ""), ("People / Objects", "I"), ("Landscape followed by People / Objects (if any)", "KI"),
         ("Positioned Frames followed by People / Objects (if any)", "FI")]
NO_CHOICES = [("", "")]


def takes_control_video(info: ModelInfo) -> bool:
    """VACE models (12.60's test_vace base types and their finetunes), except Ditto, which has no guide
    process dropdown."""
    return info.base_model_type.startswith("vace") and not info.base_model_type.startswith("vace_ditto")


def control_choices(flavour: str, info: ModelInfo) -> dict[str, list[tuple[str, str]]]:
    """{"video_guide" | "video_mask" | "image_refs": (label, value) choices} the form shows for the model."""
    if not takes_control_video(info):
        return {"video_guide": NO_CHOICES, "video_mask": NO_CHOICES, "image_refs": [("None", "")]}
    return {"video_guide": list(_GUIDE_V6 if flavour == "v6" else _GUIDE_V12), "video_mask": list(_MASK),
            "image_refs": list(_REFS)}
