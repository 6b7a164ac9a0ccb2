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

from ._enums import FrameRule, catalog, categories_of, family_rule, requires_start_image
from ._errors import Wan2GPValidationError, did_you_mean
from ._mp4 import NotAVideo, VideoInfo, probe
from ._schemas import GenerationSettings, ModelInfo
from ._webui.endpoints import ServerApi

# Our own generator: drawing a seed never touches the global `random` state of the host program.
_rng = random.Random()
_FPS_IN_LABEL = re.compile(r"\((\d+)\s*(?:frames\s*)?=\s*1\s*s", re.IGNORECASE)
_MEDIA_COMPONENTS = {"Gallery", "Video", "Audio", "Image", "File", "Wangpimageeditor", "Imageeditor"}

# Our field names whose WanGP form parameter has another name.
_PARAM_FOR_FIELD = {"activated_loras": "loras_choices"}
_NOT_FORM_FIELDS = {"model", "seconds", "extra", "control_mode", "mask_mode", "refs_mode"}
# Each control input, the mode field that says how the model uses it, and the letter its modes carry.
_CONTROL_ROLES = (("video_guide", "control_mode", "V"), ("video_mask", "mask_mode", "A"),
                  ("image_refs", "refs_mode", "I"))


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
    # role -> the (label, value) choices fill_inputs gives the model's control dropdown (see Chain.control_index)
    control_choices: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

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
        control: dict[str, list[tuple[str, str]]] = {}
        for role, index in api.chain.control_index.items():
            update = _props(outputs[index] if index < len(outputs) else None)
            pairs = [(str(c[0]), str(c[1])) if isinstance(c, list | tuple) else (str(c), str(c))
                     for c in update.get("choices") or []]
            control[role] = [(label, value) for label, value in pairs if value]  # "" is "none"
        return cls(model_type, values, rule, resolutions, ranges, control)

    @property
    def takes_control_video(self) -> bool:
        """True when the server's form offers a Control Video process for this model (VACE and kin)."""
        return any("V" in value for _, value in self.control_choices.get("video_guide", []))

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
            control_modes={role: list(pairs) for role, pairs in self.control_choices.items() if pairs},
            defaults={k: v for k, v in self.values.items() if isinstance(v, str | int | float | bool | None)},
            on_server=True,
        )

    @property
    def requires_start_image(self) -> bool:
        return "S" in str(self.values.get("image_prompt_type") or "") or requires_start_image(self.model_type)

    def frames_for(self, settings: GenerationSettings) -> int:
        """The frame count the model will really produce for these settings (a control video's, if unset)."""
        if settings.video_length is not None:
            return settings.video_length
        if settings.seconds is not None:
            return self.rule.frames_for_seconds(settings.seconds)
        if settings.video_guide is not None:
            info = _probe_control(settings.video_guide, "video_guide")
            return info.frames
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
    check_control(settings, form)
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


def _probe_control(path: Path, field_name: str) -> VideoInfo:
    try:
        return probe(Path(path))
    except NotAVideo as exc:
        raise Wan2GPValidationError(f"{field_name}: {Path(path).name} is not a readable video ({exc})",
                                    field=field_name) from exc


def _describe_modes(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{value!r} ({label})" for label, value in pairs)


def control_mode_value(form: ModelForm, role: str, mode: str) -> str:
    """The value of one of the form's choices for a control input, given as its value or its label."""
    pairs = form.control_choices.get(role, [])
    for label, value in pairs:
        if mode in (value, label) or mode.casefold() == label.casefold():
            return value
    field_name = dict((r, f) for r, f, _ in _CONTROL_ROLES)[role]
    if not pairs:
        raise Wan2GPValidationError(f"{form.model_type} offers no modes for {role}", field=field_name)
    raise Wan2GPValidationError(
        f"{field_name}={mode!r} is not one of {form.model_type}'s modes for {role}: {_describe_modes(pairs)}",
        field=field_name)


def check_control(settings: GenerationSettings, form: ModelForm) -> None:
    """Control video, mask and reference images against what the server offers for the model (its form's
    control dropdowns on the web UI, its schema's declared modes over MCP); raises
    :class:`Wan2GPValidationError`. Both transports use it."""
    given = {name for name in ("video_guide", "video_mask", "control_mode", "mask_mode")
             if getattr(settings, name) is not None}
    if given and not form.takes_control_video:
        control_models = [m for m, e in catalog().items() if m.startswith("vace")][:4]
        raise Wan2GPValidationError(
            f"{form.model_type} takes no control video ({', '.join(sorted(given))} given); choose a control-video "
            f"model (VACE), e.g. {', '.join(control_models)}", field=sorted(given)[0])
    if (settings.image_refs or settings.refs_mode) and not any(
            "I" in value for _, value in form.control_choices.get("image_refs", [])):
        raise Wan2GPValidationError(f"{form.model_type} takes no reference images (image_refs); "
                                    "choose a model that does, e.g. a VACE model", field="image_refs")
    if "video_prompt_type" in settings.extra and any(getattr(settings, f) is not None for _, f, _ in _CONTROL_ROLES):
        raise Wan2GPValidationError("give the control modes (control_mode, mask_mode, refs_mode) or "
                                    "extra['video_prompt_type'], not both", field="video_prompt_type")
    default = str(form.values.get("video_prompt_type") or "")
    for role, mode_field, letter in _CONTROL_ROLES:
        mode = getattr(settings, mode_field)
        files = getattr(settings, role)
        value = control_mode_value(form, role, mode) if mode is not None else None
        letters = {c for _, v in form.control_choices.get(role, []) for c in v}
        current = value if value is not None else "".join(c for c in default if c in letters)
        if files and letter not in current:
            pairs = [p for p in form.control_choices.get(role, []) if letter in p[1]]
            raise Wan2GPValidationError(
                f"{role} is given: choose how {form.model_type} uses it with {mode_field}, one of "
                f"{_describe_modes(pairs)}", field=mode_field)
        if value is not None and letter in value and not files:
            raise Wan2GPValidationError(f"{mode_field}={mode!r} needs {role}: give the file(s)", field=role)
    if settings.video_guide is None:
        return
    guide = _probe_control(settings.video_guide, "video_guide")
    frames = form.frames_for(settings)
    if guide.frames != frames:
        raise Wan2GPValidationError(
            f"the control video has {guide.frames} frames but the shot has {frames}: render the control video "
            f"with {frames} frames, or set frames={guide.frames}", field="video_guide")
    if not form.rule.is_valid(guide.frames):
        raise Wan2GPValidationError(
            f"the control video has {guide.frames} frames, which does not fit {form.model_type} "
            f"({_describe_rule(form.rule)}); use {form.rule.nearest(guide.frames)}", field="video_guide")
    if abs(guide.fps - form.rule.fps) > 0.01:
        raise Wan2GPValidationError(
            f"the control video runs at {guide.fps:g} fps but {form.model_type} makes {form.rule.fps} fps: "
            f"render it at {form.rule.fps} fps (WanGP would resample it and change its timing)", field="video_guide")
    size = f"{guide.width}x{guide.height}"
    wanted = settings.resolution or (size if size in form.resolutions or not form.resolutions else None)
    if wanted is None:
        raise Wan2GPValidationError(
            f"the control video is {size}, which {form.model_type} does not make; render it at one of: "
            f"{', '.join(form.resolutions)}", field="video_guide")
    if size != wanted:
        raise Wan2GPValidationError(f"the control video is {size} but the shot is {wanted}: render it at {wanted}",
                                    field="video_guide")
    if settings.video_mask is not None:
        mask = _probe_control(settings.video_mask, "video_mask")
        if (mask.frames, mask.width, mask.height) != (guide.frames, guide.width, guide.height):
            raise Wan2GPValidationError(
                f"the video mask ({mask.frames} frames, {mask.width}x{mask.height}) does not match the control "
                f"video ({guide.frames} frames, {size})", field="video_mask")


def shot_shape(settings: GenerationSettings, form: ModelForm) -> dict[str, Any]:
    """The frame count the shot is sent with and, when its control video sets it, its resolution."""
    shape: dict[str, Any] = {"video_length": form.frames_for(settings)}
    if settings.video_guide is not None and settings.resolution is None:  # the shot takes the control's size
        guide = _probe_control(settings.video_guide, "video_guide")
        shape["resolution"] = f"{guide.width}x{guide.height}"
    return shape


def video_prompt_type_for(settings: GenerationSettings, form: ModelForm) -> str | None:
    """WanGP's ``video_prompt_type`` for the chosen control modes, or None when none was chosen.

    Starts from the model's own value in the form and, for each mode chosen, removes the letters of that
    input's choices and adds the chosen value's, as WanGP's ``refresh_video_prompt_type_*`` handlers do.
    """
    chosen = [(role, getattr(settings, mode_field)) for role, mode_field, _ in _CONTROL_ROLES
              if getattr(settings, mode_field) is not None]
    if not chosen:
        return None
    letters = str(form.values.get("video_prompt_type") or "")
    for role, mode in chosen:
        value = control_mode_value(form, role, mode)
        for _, other in form.control_choices.get(role, []):
            letters = "".join(c for c in letters if c not in other)
        letters += "".join(c for c in value if c not in letters)
    return letters


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
    updates: dict[str, Any] = {**shot_shape(settings, form), "seconds": None}
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
    video_prompt_type = video_prompt_type_for(settings, form)
    if video_prompt_type is not None and "video_prompt_type" in params:
        args["video_prompt_type"] = video_prompt_type
        sent = sent.model_copy(update={"extra": {**sent.extra, "video_prompt_type": video_prompt_type}})
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
