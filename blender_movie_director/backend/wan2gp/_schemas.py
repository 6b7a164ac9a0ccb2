"""Typed settings, results, status and progress. Strict in (``extra="forbid"``), tolerant out.

Field names of :class:`GenerationSettings` are WanGP's own setting names (those of its ``save_inputs`` form
and of its settings JSON), so a shot round-trips with WanGP's "Export Settings" files. Friendlier aliases are
accepted: ``frames`` for ``video_length``, ``steps`` for ``num_inference_steps``, ``model`` or ``model_type``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from ._enums import JobStatus, catalog

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a"}

# Settings that name input files, and the kind of file each takes.
MEDIA_FIELDS: dict[str, str] = {
    "image_start": "image",
    "image_end": "image",
    "image_refs": "image",
    "video_source": "video",
    "video_guide": "video",
    "video_mask": "video",
    "audio_guide": "audio",
}

# Our names for the modes of the control inputs; WanGP itself knows only the letters of video_prompt_type.
CONTROL_MODE_FIELDS = frozenset({"control_mode", "mask_mode", "refs_mode"})

_MAGIC = {
    "image": (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"RIFF"),
    "video": (b"\x1a\x45\xdf\xa3", b"RIFF"),
    "audio": (b"RIFF", b"ID3", b"\xff\xfb", b"\xff\xf3", b"fLaC", b"OggS"),
}


def _check_media_file(path: Path, kind: str, field: str) -> Path:
    """A media input must exist, be a non-empty regular file, and look like its kind."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"{field}: file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{field}: {path} is a folder; give a file")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{field}: {path} is empty")
    suffixes = {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES, "audio": AUDIO_SUFFIXES}[kind]
    if path.suffix.lower() not in suffixes:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"{field}: {path.name} is not {article} {kind} file "
                         f"(expected {', '.join(sorted(suffixes))})")
    with path.open("rb") as f:
        head = f.read(16)
    ok = any(head.startswith(m) for m in _MAGIC[kind])
    if kind in ("video", "audio") and head[4:8] == b"ftyp":  # mp4/mov/m4a
        ok = True
    if kind == "video" and head[4:8] in (b"moov", b"mdat", b"free", b"wide"):
        ok = True
    if not ok:
        raise ValueError(f"{field}: {path.name} does not contain {kind} data (its content does not match)")
    return path.resolve()


class Resolution(BaseModel):
    """A frame size, written ``"832x480"`` (width x height) as WanGP does."""

    model_config = ConfigDict(frozen=True)

    width: int = Field(ge=64, le=8192)
    height: int = Field(ge=64, le=8192)

    @classmethod
    def parse(cls, value: str | Resolution | tuple[int, int]) -> Resolution:
        if isinstance(value, Resolution):
            return value
        if isinstance(value, tuple):
            return cls(width=value[0], height=value[1])
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(value))
        if not match:
            raise ValueError(f'resolution must look like "832x480" (width x height), not {value!r}')
        return cls(width=int(match.group(1)), height=int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class GenerationSettings(BaseModel):
    """What to generate. Only the fields you set are sent; WanGP's own form for the model fills the rest.

    Example::

        GenerationSettings(prompt="a red fox in snow", model="t2v_1.3B", frames=33, steps=8, seed=42)
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    model: str = Field("t2v_1.3B", validation_alias=AliasChoices("model", "model_type"), min_length=1)
    prompt: str
    negative_prompt: str | None = Field(None, validation_alias=AliasChoices("negative_prompt", "negative"))
    resolution: str | None = None
    video_length: int | None = Field(None, ge=1, le=10_000, validation_alias=AliasChoices("video_length", "frames"))
    seconds: float | None = Field(None, gt=0, le=600, description="duration; turned into the model's frame count")
    num_inference_steps: int | None = Field(
        None, ge=1, le=1000, validation_alias=AliasChoices("num_inference_steps", "steps")
    )
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1: random")
    guidance_scale: float | None = Field(
        None, ge=0, le=100, validation_alias=AliasChoices("guidance_scale", "guidance")
    )
    flow_shift: float | None = Field(None, ge=0, le=100)
    sample_solver: str | None = None
    repeat_generation: int | None = Field(None, ge=1, le=100)
    image_start: Path | None = None
    image_end: Path | None = None
    image_refs: list[Path] = Field(default_factory=list)
    video_source: Path | None = None
    video_guide: Path | None = None
    video_mask: Path | None = None
    # How the model uses the control inputs: each is one of the modes the server's form offers for the selected
    # model (its value, e.g. "UV" or "DV", or its label, e.g. "Transfer Depth"; ``Wan2GPClient.get_model_info``
    # lists them as ``control_modes``). The client turns them into WanGP's ``video_prompt_type`` letters the
    # way WanGP's own dropdown handlers do.
    control_mode: str | None = Field(None, max_length=200, description="the Control Video process")
    mask_mode: str | None = Field(None, max_length=200, description="the Area Processed by the mask")
    refs_mode: str | None = Field(None, max_length=200, description="how the reference images are used")
    audio_guide: Path | None = None
    activated_loras: list[str] = Field(default_factory=list, validation_alias=AliasChoices("activated_loras", "loras"))
    loras_multipliers: str | None = None
    client_id: str | None = Field(None, max_length=200)
    # Any other WanGP form setting by its name (checked against the server's own parameter list).
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("the prompt is empty: describe the shot")
        if len(value) > 20_000:
            raise ValueError("the prompt is longer than 20,000 characters")
        return value

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> str | None:
        return None if value is None else str(Resolution.parse(value))

    @field_validator("guidance_scale", "flow_shift", "seconds")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("image_start", "image_end", "video_source", "video_guide", "video_mask", "audio_guide")
    @classmethod
    def _media(cls, value: Path | None, info) -> Path | None:
        return None if value is None else _check_media_file(value, MEDIA_FIELDS[info.field_name], info.field_name)

    @field_validator("image_refs")
    @classmethod
    def _refs(cls, value: list[Path]) -> list[Path]:
        return [_check_media_file(p, "image", "image_refs") for p in value]

    @model_validator(mode="after")
    def _frames_or_seconds(self) -> GenerationSettings:
        if self.video_length is not None and self.seconds is not None and "seconds" in self.model_fields_set \
                and "video_length" in self.model_fields_set:
            raise ValueError("give either frames (video_length) or seconds, not both")
        if self.image_end is not None and self.image_start is None:
            raise ValueError("image_end needs image_start too (WanGP interpolates from start to end)")
        entry = catalog().get(self.model)
        control = sorted(n for n in ("video_guide", "video_mask", "control_mode", "mask_mode")
                         if getattr(self, n) is not None)
        if control and entry is not None and "video" not in entry.get("inputs", []):
            raise ValueError(f"{self.model} takes no control video ({', '.join(control)} given); choose a "
                             "control-video model (VACE), e.g. vace_1.3B or vace_14B")
        if self.video_mask is not None and self.video_guide is None:
            raise ValueError("video_mask needs a control video too (video_guide): the mask says where it applies")
        return self

    # --- WanGP settings JSON ("Export Settings" format) -------------------------------------------------

    def to_wangp_json(self) -> dict[str, Any]:
        """The settings as a WanGP settings file (the compact export format, plus ``mode``)."""
        data: dict[str, Any] = {"model_type": self.model, "prompt": self.prompt, "mode": ""}
        for name in self.model_fields_set - {"model", "prompt", "extra", "seconds"} - CONTROL_MODE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, list):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            data[name] = value
        if "seconds" in self.model_fields_set and self.video_length is None:
            data["duration_seconds_hint"] = self.seconds
        data.update(self.extra)
        for name in CONTROL_MODE_FIELDS & self.model_fields_set:  # ours, not WanGP's: kept under our own key
            data.setdefault("movie_director", {})[name] = getattr(self, name)
        return data

    @classmethod
    def from_wangp_json(cls, data: dict[str, Any]) -> GenerationSettings:
        """Read a WanGP settings file (its export, a queue task's ``params``, or our own export)."""
        known = set(cls.model_fields) - {"extra", "model"}
        kwargs: dict[str, Any] = {"extra": {}}
        # Metadata WanGP writes into exports that is not a setting to send back.
        metadata = {"settings_version", "type", "model_filename", "base_model_type", "mode", "state",
                    "duration_seconds_hint"}
        for key, value in data.items():
            if key == "movie_director" and isinstance(value, dict):
                kwargs.update({k: v for k, v in value.items() if k in CONTROL_MODE_FIELDS})
            elif key == "model_type":
                kwargs["model"] = value
            elif key in known:
                if key in MEDIA_FIELDS and not value:
                    continue
                if key in ("image_start", "image_end") and isinstance(value, list):
                    value = value[0] if value else None
                    if value is None:
                        continue
                kwargs[key] = value
            elif key not in metadata:
                kwargs["extra"][key] = value
        if "duration_seconds_hint" in data and "video_length" not in data:
            kwargs["seconds"] = data["duration_seconds_hint"]
        if CONTROL_MODE_FIELDS & set(kwargs):  # the modes make video_prompt_type again, on the server's form
            kwargs["extra"].pop("video_prompt_type", None)
        return cls(**kwargs)


class JobProgress(BaseModel):
    """A snapshot of a job's progress, as the CLI and Blender display it."""

    model_config = ConfigDict(extra="allow")

    status: JobStatus = JobStatus.QUEUED
    fraction: float = 0.0  # 0..1 over the whole job
    step: int | None = None
    total: int | None = None
    phase: str = ""  # WanGP's status text, e.g. "Denoising", "Loading model ..."
    queue_position: int | None = None  # 0 = next to run
    eta_seconds: float | None = None
    message: str = ""  # the latest notice from the server (toasts)
    updated_at: datetime = Field(default_factory=datetime.now)


class GenerationResult(BaseModel):
    """A finished shot: where its video is and exactly how it was made."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    video_path: Path
    files: list[Path] = Field(default_factory=list)
    settings: GenerationSettings
    model: str
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    server: str
    wangp_version: str | None = None
    elapsed_seconds: float = 0.0
    sent_settings: dict[str, Any] = Field(default_factory=dict, description="what save_inputs received")

    @property
    def duration(self) -> float | None:
        return self.frames / self.fps if self.frames and self.fps else None


class ServerStatus(BaseModel):
    """Health of one WanGP server, as seen by this client."""

    model_config = ConfigDict(extra="allow")

    url: str
    reachable: bool
    latency_ms: float | None = None
    wangp_version: str | None = None
    gradio_version: str | None = None
    current_model: str | None = None
    queue_length: int = 0  # this client's shots waiting or running on the server
    busy: bool | None = None  # True: a generation of this client runs; None: unknown (never known idle)
    endpoint_count: int = 0  # the web UI's named endpoints, or the MCP server's tools
    transport: str | None = None  # "webui", or "mcp" with its contract ("mcp v2")
    error: str | None = None


class QueueItem(BaseModel):
    """A shot in the queue: one of this client's jobs, with what the server says of it."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    client_id: str
    prompt: str
    model: str
    status: JobStatus
    position: int | None = None
    progress: float = 0.0
    task_id: int | None = None  # WanGP's task id, once the server has queued it


class ModelInfo(BaseModel):
    """What a model takes, from the catalog and, when connected, from the server's own form."""

    model_config = ConfigDict(extra="allow")

    model_type: str
    name: str = ""
    family: str = ""
    categories: list[str] = Field(default_factory=list)
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    fps: int | None = None
    frames_minimum: int | None = None
    frames_step: int | None = None
    frames_maximum: int | None = None
    resolutions: list[str] = Field(default_factory=list)
    requires_start_image: bool = False
    # The modes of each control input the server's form offers for this model, as (label, value) pairs:
    # {"video_guide": [("Transfer Depth", "DV"), ...], "video_mask": [...], "image_refs": [...]}; empty for a
    # model that takes no control video.
    control_modes: dict[str, list[tuple[str, str]]] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict, description="the server's form values")
    on_server: bool | None = None  # None: not checked
