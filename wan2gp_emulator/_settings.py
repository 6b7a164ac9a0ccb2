"""Settings dicts in WanGP's shapes: factory defaults, the form <-> settings mapping, task params, exports."""

from __future__ import annotations

import copy
from typing import Any

from . import _catalog, _spec

VIDEO_PROMPT = (
    "A large orange octopus is seen resting on the bottom of the ocean floor, blending in with the sandy and rocky "
    "terrain. Its tentacles are spread out around its body, and its eyes are closed. The octopus is unaware of a "
    "king crab that is crawling towards it from behind a rock, its claws raised and ready to attack. The crab is "
    "brown and spiny, with long legs and antennae. The scene is captured from a wide angle, showing the vastness "
    "and depth of the ocean. The water is clear and blue, with rays of sunlight filtering through. The shot is "
    "sharp and crisp, with a high dynamic range. The octopus and the crab are in focus, while the background is "
    "slightly blurred, creating a depth of field effect."
)
IMAGE_PROMPT = "A red fox sitting in fresh snow at dawn, detailed fur, soft golden light"
AUDIO_PROMPT = "A calm piano melody with soft strings"

# Form fields whose values WanGP keeps as ints (sliders send floats over the API).
INT_KEYS = {
    "image_mode", "video_length", "batch_size", "seed", "num_inference_steps", "repeat_generation",
    "guidance_phases", "model_switch_phase", "multi_images_gen_type", "skip_steps_start_step_perc",
    "sliding_window_size", "sliding_window_overlap", "sub_parallel_window_size", "sub_parallel_window_overlap",
    "sliding_window_overlap_noise", "sliding_window_discard_last_frames", "sliding_window_trim_first_frames",
    "image_refs_relative_size", "remove_background_images_ref", "RIFLEx_setting", "perturbation_switch",
    "perturbation_start_perc", "perturbation_end_perc", "apg_switch", "cfg_star_switch", "cfg_zero_step",
    "min_frames_if_references", "mask_expand", "self_refiner_setting", "top_k", "slg_switch", "slg_start_perc",
    "slg_end_perc", "multi_prompts_gen_type_v6", "tea_cache_start_step_perc", "switch_threshold",
    "switch_threshold2",
}
MEDIA_KEYS = ["image_start", "image_end", "image_refs", "image_guide", "image_mask", "video_guide", "video_guide2",
              "video_mask", "video_source", "audio_guide", "audio_guide2", "audio_source", "replace_voice_sample",
              "replace_voice_sample2", "custom_guide"]
# Keys of the compact settings export (head_export_settings_t2v_1.3B.json), in order, before the metadata.
EXPORT_KEYS = ["prompt", "image_mode", "resolution", "video_length", "num_inference_steps", "seed",
               "guidance_phases", "guidance_scale", "sample_solver", "flow_shift", "repeat_generation",
               "multi_prompts_gen_type", "RIFLEx_setting"]


def _int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _prompt_for(info: _catalog.ModelInfo) -> str:
    if info.output == "image":
        return IMAGE_PROMPT
    if info.output == "audio":
        return AUDIO_PROMPT
    return VIDEO_PROMPT


def factory_settings(flavour: str, model_type: str) -> dict:
    """WanGP's factory defaults for a model (no ``mode`` key, as the real ones): 12.60's captured defaults, or the
    generation form's start-up values of older releases, with the model's own prompt, size, length and steps."""
    info = _catalog.model(flavour, model_type)
    if info is None:
        raise KeyError(model_type)
    spec = _spec.load(flavour)
    if "default_settings_t2v_1.3B" in spec.raw:
        settings = copy.deepcopy(spec.raw["default_settings_t2v_1.3B"])
    else:
        settings = {}
        dep = spec.dep(spec.form_dep)
        for cid, name in zip(dep.inputs, dep.params, strict=True):
            if name in ("target", "lset_name", "mode") or name.startswith("state_"):
                continue
            value = spec.components[cid]["props"].get("value")
            settings["activated_loras" if name == "loras_choices" else name] = copy.deepcopy(value)
        settings["keep_frames_video_source"] = ""
    settings.update(
        prompt=_prompt_for(info),
        resolution=info.default_resolution,
        video_length=info.default_frames,
        num_inference_steps=info.default_steps,
        image_prompt_type=info.default_image_prompt_type,
    )
    if "image_mode" in settings:
        settings["image_mode"] = info.image_mode
    for key in MEDIA_KEYS:
        if key in settings and isinstance(settings[key], list):
            settings[key] = None
    return settings


def settings_from_form(values: dict[str, Any]) -> dict:
    """What ``save_inputs(target="state")`` stores: the form values under WanGP's settings keys."""
    settings: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("target", "image_mask_guide", "plugin_data") or name.startswith("state_"):
            continue
        if name.startswith("custom_setting_"):
            if value not in (None, "", 0, 0.0):
                custom[name] = value
            continue
        if name == "loras_choices":
            settings["activated_loras"] = list(value or [])
            continue
        if name == "multi_prompts_gen_type" and isinstance(value, float):
            value = int(value)
        settings[name] = _int(value) if name in INT_KEYS else value
    if "custom_setting_1" in values or "custom_setting_slider_1" in values:
        settings["custom_settings"] = custom or None
    return settings


def form_value(name: str, settings: dict) -> Any:
    """The value a form field shows for a settings dict (the inverse of :func:`settings_from_form`)."""
    if name == "loras_choices":
        return list(settings.get("activated_loras") or [])
    if name.startswith("custom_setting_dropdown_") or name == "image_mask_guide":
        return None
    if name.startswith("custom_setting_slider_"):
        return (settings.get("custom_settings") or {}).get(name, 0)
    if name.startswith("custom_setting_"):
        return (settings.get("custom_settings") or {}).get(name, "")
    return settings.get(name)


def queue_params(flavour: str, params: dict) -> dict:
    """A task's params as ``queue.json`` holds them: the release's captured keys (media as file names)."""
    out = {key: params.get(key) for key in _spec.load(flavour).queue_params_keys}
    info = _catalog.model(flavour, params.get("model_type", ""))
    for key, value in (("settings_version", _spec.load(flavour).behaviour.settings_version),
                       ("base_model_type", info.base_model_type if info else params.get("model_type")),
                       ("model_filename", model_filename(params.get("model_type", "")))):
        if key in out:
            out[key] = value
    return out


def export_settings(flavour: str, settings: dict, model_type: str, version: str) -> dict:
    """The compact "Export Settings" file: the main keys, the non-default ones, then the metadata."""
    info = _catalog.model(flavour, model_type)
    defaults = factory_settings(flavour, model_type)
    out: dict[str, Any] = {}
    for key in EXPORT_KEYS:
        if key in settings:
            out[key] = settings[key]
    for key, value in settings.items():
        if key in out or key in MEDIA_KEYS or key in ("client_id", "mode", "lset_name", "state"):
            continue
        if key.startswith("_") or value is None:
            continue
        if key in defaults and defaults[key] == value:
            continue
        if key not in defaults and value in ("", [], {}):
            continue
        out[key] = value
    name = info.name if info else model_type
    out["settings_version"] = _spec.load(flavour).behaviour.settings_version
    out["type"] = f"WanGP v{version} by DeepBeepMeep - {name}"
    out["model_filename"] = model_filename(model_type)
    out["model_type"] = model_type
    return out


def model_filename(model_type: str) -> str:
    """The model's transformer URL as settings files carry it (the real one for t2v_1.3B, else a look-alike)."""
    if model_type == "t2v_1.3B":
        return _spec.load("v12").raw["export_settings_t2v_1.3B"]["model_filename"]
    return f"https://huggingface.co/DeepBeepMeep/emulated/resolve/main/{model_type}_mbf16.safetensors"
