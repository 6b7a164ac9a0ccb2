"""Model catalog, categories and constants.

The built-in catalog (``data/catalog.json``) lists the model types of WanGP 12.60 (217) and 6.31, as the real
servers reported them (``tools/build_catalog.py``). It serves offline checks, categories and "did you mean";
the connected server's own form (frame rule, fps, resolutions) always takes precedence.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


class JobStatus(enum.StrEnum):
    """Life cycle of a :class:`Wan2GPJob`."""

    QUEUED = "queued"  # waiting: on our side, or in WanGP's queue behind other work
    UPLOADING = "uploading"  # setting the form and sending input files
    RUNNING = "running"  # WanGP is generating
    DOWNLOADING = "downloading"  # fetching and checking the output
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class ModelCategory(enum.StrEnum):
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    CONTROLNET = "controlnet"  # VACE and other control-video models
    HUNYUAN = "hunyuan"
    LTX = "ltx"
    FAST = "fast"  # distilled / few-step variants
    HIGH_QUALITY = "high_quality"  # large (14B+) or 720p+ variants, not distilled
    TEXT_TO_IMAGE = "text_to_image"
    AUDIO = "audio"


@dataclass(frozen=True)
class FrameRule:
    """Frame counts a family takes: ``minimum + k * step`` up to ``maximum``, at ``fps``."""

    fps: int
    step: int
    minimum: int
    maximum: int

    def is_valid(self, frames: int) -> bool:
        return self.minimum <= frames <= self.maximum and (frames - self.minimum) % self.step == 0

    @property
    def last(self) -> int:
        """The largest frame count the rule takes (``maximum`` itself may be off the rule)."""
        return self.maximum - (self.maximum - self.minimum) % self.step

    def nearest(self, frames: int) -> int:
        k = max(0, round((frames - self.minimum) / self.step))
        return min(self.minimum + k * self.step, self.last)

    def frames_for_seconds(self, seconds: float) -> int:
        return self.nearest(round(seconds * self.fps) + 1)


# Fallback rules per family, used only when the server's form does not say (it does on 6.x and 12.x:
# the video_length slider carries minimum/maximum/step and its label the fps).
# Wan 2.1: 16 fps, 4n+1, min 5 (head_model_schema_t2v_1.3B.json). LTX-2 / LTX Video: 8n+1 at 24 / 30 fps.
FAMILY_RULES: dict[str, FrameRule] = {
    "wan": FrameRule(16, 4, 5, 337),
    "wan2_2": FrameRule(16, 4, 5, 337),
    "hunyuan": FrameRule(24, 4, 5, 337),
    "hunyuan_1_5": FrameRule(24, 4, 5, 337),
    "kandinsky5": FrameRule(24, 4, 5, 337),
    "longcat": FrameRule(16, 4, 5, 337),
    "ltx2": FrameRule(24, 8, 9, 737),
    "ltxv": FrameRule(30, 8, 9, 737),
}
DEFAULT_RULE = FrameRule(16, 4, 5, 337)

_FAST = re.compile(r"distill|fast|fusionix|lightning|(^|_)sf($|_)|schnell|accvideo|turbo|causvid|fastwan")
_I2V = re.compile(r"(^|_)i2v|flf2v|fun_inp|(^|_)ti2v")
_REQUIRES_START = re.compile(r"(^|_)i2v|flf2v|fun_inp")
_BIG = re.compile(r"14B|19B|22B|720p|1080p|13B|20B")


@cache
def catalog() -> dict[str, dict[str, Any]]:
    """model_type -> {family, family_label, base_model_type, name, inputs, outputs, versions}."""
    text = resources.files(__package__).joinpath("data/catalog.json").read_text(encoding="utf-8")
    return json.loads(text)


def categories_of(model_type: str, entry: dict[str, Any] | None = None) -> frozenset[ModelCategory]:
    """The categories a model type belongs to, from its catalog entry and its name."""
    entry = entry if entry is not None else catalog().get(model_type, {})
    family = entry.get("family", "")
    outputs = entry.get("outputs", ["video"])
    cats: set[ModelCategory] = set()
    if "video" not in outputs:
        cats.add(ModelCategory.AUDIO if "audio" in outputs else ModelCategory.TEXT_TO_IMAGE)
        return frozenset(cats)
    if _I2V.search(model_type):
        cats.add(ModelCategory.IMAGE_TO_VIDEO)
    if not _REQUIRES_START.search(model_type):
        cats.add(ModelCategory.TEXT_TO_VIDEO)
    if "vace" in model_type or family in ("vace",):
        cats.add(ModelCategory.CONTROLNET)
    if family.startswith("hunyuan"):
        cats.add(ModelCategory.HUNYUAN)
    if family in ("ltx2", "ltxv"):
        cats.add(ModelCategory.LTX)
    if _FAST.search(model_type.lower()):
        cats.add(ModelCategory.FAST)
    elif _BIG.search(model_type) or _BIG.search(entry.get("name", "")):
        cats.add(ModelCategory.HIGH_QUALITY)
    return frozenset(cats)


def requires_start_image(model_type: str) -> bool:
    """True for image-to-video models that can't run without a start image (i2v, FLF2V, Fun InP)."""
    return bool(_REQUIRES_START.search(model_type))


def family_rule(model_type: str) -> FrameRule:
    return FAMILY_RULES.get(catalog().get(model_type, {}).get("family", ""), DEFAULT_RULE)


# The str enum of known model types. Member names are the model types made identifiers
# (``Wan2GPModel.T2V_1_3B == "t2v_1.3B"``); any other string a server offers is accepted too.
Wan2GPModel = enum.Enum(  # type: ignore[misc]
    "Wan2GPModel",
    {re.sub(r"\W", "_", key).upper(): key for key in catalog()},
    type=str,
    module=__name__,
)
Wan2GPModel.__doc__ = "Model types known from WanGP 12.60 and 6.31 (str enum; values are WanGP model types)."
Wan2GPModel.__str__ = lambda self: self.value  # type: ignore[method-assign,attr-defined]

# Sensible defaults: the light Wan 2.1 model exists on every WanGP since 2025 and fits small GPUs.
QUICK_MODEL = "t2v_1.3B"
HIGH_QUALITY_MODEL = "t2v"
