"""WanGP's form for one model, and the ``save_inputs`` arguments built from it.

``fill_inputs`` returns the whole form for the session's model: update dicts whose ``value`` is the model's
default and whose props carry its rules (the frame slider's minimum/maximum/step, the resolution choices,
the fps in the frame slider's label). The arguments sent to ``save_inputs`` start from those values; every
field the caller set replaces its value by parameter name. Nothing comes from a hand-written table.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradio_client import handle_file

from ._webui.endpoints import ServerApi
from .enums import FrameRule, catalog, categories_of, family_rule, requires_start_image
from .errors import Wan2GPValidationError, did_you_mean
from .schemas import GenerationSettings, ModelInfo

# Our own generator: drawing a seed never touches the global `random` state of the host program.
_rng = random.Random()
_FPS_IN_LABEL = re.compile(r"\((\d+)\s*(?:frames\s*)?=\s*1\s*s", re.IGNORECASE)
_MEDIA_COMPONENTS = {"Gallery", "Video", "Audio", "Image", "File", "Wangpimageeditor", "Imageeditor"}

# Our field names whose WanGP form parameter has another name.
_PARAM_FOR_FIELD = {"activated_loras": "loras_choices"}
_NOT_FORM_FIELDS = {"model", "seconds", "extra"}


def _value(update: Any) -> tuple[bool, Any]:
    """(has_value, value) of one fill_inputs output (an update dict or a plain value)."""
    if isinstance(update, dict) and update.get("__type__") == "update":
        return ("value" in update, update.get("value"))
    return True, update


def _props(update: Any) -> dict[str, Any]:
    return update if isinstance(update, dict) else {}


@dataclass
class ModelForm:
    """The server's form for one model: values by ``save_inputs`` parameter name, and the model's rules."""

    model_type: str
    values: dict[str, Any]
    rule: FrameRule
    resolutions: list[str]
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def from_fill(cls, api: ServerApi, model_type: str, outputs: tuple[Any, ...] | list[Any]) -> ModelForm:
        values: dict[str, Any] = {}
        props: dict[str, dict[str, Any]] = {}
        for name, index in api.chain.form_index.items():
            initial = api.save_inputs_component(name).get("props", {})
            update = outputs[index] if index < len(outputs) else None
            has, value = _value(update)
            values[name] = value if has else initial.get("value")
            props[name] = {**initial, **_props(update)}

        fallback = family_rule(model_type)
        slider = props.get("video_length", {})
        fps_match = _FPS_IN_LABEL.search(str(slider.get("label") or ""))
        rule = FrameRule(
            fps=int(fps_match.group(1)) if fps_match else fallback.fps,
            step=int(slider.get("step") or fallback.step),
            minimum=int(slider.get("minimum") or fallback.minimum),
            maximum=int(slider.get("maximum") or fallback.maximum),
        )
        choices = props.get("resolution", {}).get("choices") or []
        resolutions = [str(c[1]) if isinstance(c, list | tuple) else str(c) for c in choices]
        ranges = {
            name: (p.get("minimum"), p.get("maximum"))
            for name, p in props.items()
            if "minimum" in p or "maximum" in p
        }
        return cls(model_type, values, rule, resolutions, ranges)

    def info(self) -> ModelInfo:
        entry = catalog().get(self.model_type, {})
        return ModelInfo(
            model_type=self.model_type,
            name=entry.get("name", self.model_type),
            family=entry.get("family", ""),
            categories=sorted(c.value for c in categories_of(self.model_type, entry)),
            inputs=entry.get("inputs", []),
            outputs=entry.get("outputs", []),
            fps=self.rule.fps,
            frames_minimum=self.rule.minimum,
            frames_step=self.rule.step,
            frames_maximum=self.rule.maximum,
            resolutions=self.resolutions,
            requires_start_image=self.requires_start_image,
            defaults={k: v for k, v in self.values.items() if isinstance(v, str | int | float | bool | None)},
            on_server=True,
        )

    @property
    def requires_start_image(self) -> bool:
        return "S" in str(self.values.get("image_prompt_type") or "") or requires_start_image(self.model_type)

    def frames_for(self, settings: GenerationSettings) -> int:
        """The frame count the model will really produce for these settings."""
        if settings.video_length is not None:
            return settings.video_length
        if settings.seconds is not None:
            return self.rule.frames_for_seconds(settings.seconds)
        default = self.values.get("video_length")
        return int(default) if isinstance(default, int | float) else self.rule.minimum


def _describe_rule(rule: FrameRule) -> str:
    return f"{rule.step}n+{rule.minimum % rule.step or rule.step} frames, from {rule.minimum} to {rule.last}"


def check_settings(settings: GenerationSettings, form: ModelForm, param_names: list[str], version: str | None) -> None:
    """Model-specific checks against the server's form; raises :class:`Wan2GPValidationError`."""
    rule = form.rule
    low: Any
    high: Any
    if settings.video_length is not None and not rule.is_valid(settings.video_length):
        low = rule.nearest(settings.video_length)
        options = sorted({low, min(low + rule.step, rule.last)} - {settings.video_length})
        raise Wan2GPValidationError(
            f"{settings.video_length} frames does not fit {form.model_type} ({_describe_rule(rule)}); "
            f"use {' or '.join(map(str, options))}",
            field="video_length",
        )
    if settings.resolution is not None and form.resolutions and settings.resolution not in form.resolutions:
        raise Wan2GPValidationError(
            f"{form.model_type} does not take resolution {settings.resolution}; "
            f"it takes: {', '.join(form.resolutions)}",
            field="resolution",
        )
    for name, field_name in (("num_inference_steps", "num_inference_steps"), ("guidance_scale", "guidance_scale"),
                             ("flow_shift", "flow_shift")):
        value: Any = getattr(settings, field_name)
        low, high = form.ranges.get(name, (None, None))
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            raise Wan2GPValidationError(
                f"{field_name}={value} is outside what {form.model_type} takes ({low} to {high})", field=field_name
            )
    if form.requires_start_image and settings.image_start is None and settings.video_source is None:
        raise Wan2GPValidationError(
            f"{form.model_type} is an image-to-video model: give a start image (image_start)", field="image_start"
        )
    entry = catalog().get(form.model_type)
    if settings.image_start is not None and entry and "image" not in entry.get("inputs", []):
        raise Wan2GPValidationError(
            f"{form.model_type} takes no start image; choose an image-to-video model (e.g. i2v)", field="image_start"
        )
    for name in sorted(settings.model_fields_set - _NOT_FORM_FIELDS - {"client_id"}):
        param = _PARAM_FOR_FIELD.get(name, name)
        if param not in param_names:
            raise Wan2GPValidationError(
                f"WanGP {version or ''} has no setting {name!r}".replace("  ", " "), field=name
            )
    for name in settings.extra:
        if name not in param_names or name == "target":
            raise Wan2GPValidationError(
                f"unknown WanGP setting {name!r}{did_you_mean(name, param_names)}", field=name
            )


def _media_payload(component: str, path: Path, gradio_major: int) -> Any:
    """An input file in the shape the server's gradio version expects for this component."""
    file = handle_file(str(path))
    if component == "Gallery":
        return {"image": file, "caption": None}
    if component == "Video" and gradio_major < 6:
        return {"video": file, "subtitles": None}
    return file


def build_save_args(
    settings: GenerationSettings,
    form: ModelForm,
    api: ServerApi,
    *,
    client_id: str,
) -> tuple[dict[str, Any], GenerationSettings]:
    """The ``save_inputs`` keyword arguments, and the settings as actually sent (frames and seed fixed).

    A seed of -1 is drawn here rather than by WanGP, so that the result records the seed that made it.
    """
    save = api.endpoints[api.chain.save_inputs]
    params = {p.name: p for p in save.parameters}
    check_settings(settings, form, list(params), api.wangp_version)

    gradio_major = int((api.gradio_version or "5").split(".")[0] or 5)
    args: dict[str, Any] = {}
    for name, param in params.items():
        if name == "target":
            args[name] = "state"  # "settings" would overwrite the model's saved defaults on the server
        elif param.component in _MEDIA_COMPONENTS:
            args[name] = [] if param.component == "Gallery" else None
        elif name in form.values:
            args[name] = form.values[name]
        else:
            args[name] = param.default if param.has_default else None

    # What is sent is a frame count; a duration given in seconds has become that count.
    updates: dict[str, Any] = {"video_length": form.frames_for(settings), "seconds": None}
    if settings.seed == -1:
        updates["seed"] = _rng.randint(0, 2**31 - 1)
    sent = settings.model_copy(update=updates)

    for name in (settings.model_fields_set | set(updates)) - {"seconds"}:
        if name in _NOT_FORM_FIELDS or name == "client_id":
            continue
        key = _PARAM_FOR_FIELD.get(name, name)
        if key not in params:
            continue
        value = getattr(sent, name)
        if params[key].component in _MEDIA_COMPONENTS:
            paths = value if isinstance(value, list) else [value] if value else []
            payload = [_media_payload(params[key].component, Path(p), gradio_major) for p in paths]
            value = payload if params[key].component == "Gallery" else (payload[0] if payload else None)
        args[key] = value
    args.update(settings.extra)
    if "client_id" in params:
        args["client_id"] = client_id

    if "image_prompt_type" in params:
        letters = str(args.get("image_prompt_type") or "")
        for given, letter in ((settings.image_start, "S"), (settings.image_end, "E"), (settings.video_source, "V")):
            if given is not None and letter not in letters:
                letters += letter
        args["image_prompt_type"] = letters
    for name, value in list(args.items()):
        if params[name].python_type == "float" and isinstance(value, bool):
            args[name] = float(value)
    return args, sent
