"""What the Blender add-on knows about shots, in plain Python: no bpy, no backend at import.

Between the panel's settings (plain values, read from Blender by ``ui/convert.py``), the backend's models
(``GenerationSettings``, results, progress), the records kept on jobs and strips (JSON), and the timeline's
arithmetic (frame counts, free channels). Everything here is imported and tested without Blender.
The functions that need the WanGP client import it when called, which happens on worker threads
(gradio_client takes ~0.3 s to import).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Mapping
from typing import Any

# Job states as the add-on shows them. The backend's JobStatus values, plus our own:
# "submitting" (sent to a worker, no server job yet), "cancelling", "reconnecting" (being reconciled after a
# load) and "lost" (the server no longer knows the job).
ACTIVE = frozenset({"submitting", "queued", "uploading", "running", "downloading", "cancelling", "reconnecting"})
FINISHED = frozenset({"completed", "failed", "cancelled", "lost"})
BACKEND_STATES = frozenset({"queued", "uploading", "running", "downloading"})

# Settings a re-run must not copy from the stored ones: the job's own id on the server.
_NOT_COPIED = frozenset({"client_id"})

# Blender keeps at most this many characters of a marker's name: a name this long may have been cut.
MARKER_NAME_MAX = 63
MAX_CHANNEL = 128  # Blender's channel range is 1..128 since 2.8x
METADATA_FORMAT = 1  # of what a strip carries (strip_metadata)

# The panel's shot settings, by the names of their Blender properties (ui/properties.py: MD_SceneState).
SHOT_FIELDS = ("prompt", "negative_prompt", "model", "resolution", "seconds", "steps", "seed", "guidance_scale")


# --- settings -----------------------------------------------------------------------------------------------

def shot_request(shot: Mapping[str, Any]) -> dict[str, Any]:
    """The panel's shot settings (``SHOT_FIELDS``) as ``GenerationSettings`` keyword arguments (WanGP's names).

    Zero steps / guidance mean "the model's default" (WanGP's own form fills them in); seed -1 is random.
    """
    data: dict[str, Any] = {"model": str(shot["model"]).strip(), "prompt": shot["prompt"]}
    if str(shot["negative_prompt"]).strip():
        data["negative_prompt"] = shot["negative_prompt"]
    if str(shot["resolution"]).strip():
        data["resolution"] = str(shot["resolution"]).strip()
    data["seconds"] = round(float(shot["seconds"]), 3)
    if shot["steps"] > 0:
        data["num_inference_steps"] = int(shot["steps"])
    data["seed"] = int(shot["seed"])
    if shot["guidance_scale"] > 0:
        data["guidance_scale"] = round(float(shot["guidance_scale"]), 4)
    return data


def shot_from_settings(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The panel's shot settings for stored WanGP settings (the reverse of :func:`shot_request`).

    ``current`` is what the panel holds now: values the stored settings don't have are kept.
    """
    shot = {name: current[name] for name in SHOT_FIELDS}
    shot["prompt"] = str(stored.get("prompt", ""))
    shot["negative_prompt"] = str(stored.get("negative_prompt") or "")
    shot["model"] = str(stored.get("model_type") or stored.get("model") or current["model"])
    if stored.get("resolution"):
        shot["resolution"] = str(stored["resolution"])
    if stored.get("num_inference_steps"):
        shot["steps"] = int(stored["num_inference_steps"])
    if stored.get("seed") is not None:
        shot["seed"] = int(stored["seed"])
    if stored.get("guidance_scale") is not None:
        shot["guidance_scale"] = float(stored["guidance_scale"])
    return shot


def quick_check(request: Mapping[str, Any]) -> str | None:
    """What is obviously wrong with a request, checked on the main thread without the backend; else None.

    The full validation (``GenerationSettings`` and the server's rules for the model) runs on the worker,
    and a failure there shows on the job with its message.
    """
    if not str(request.get("prompt", "")).strip():
        return "The prompt is empty: describe the shot"
    if not str(request.get("model", "")).strip():
        return "No model is chosen"
    return None


def rerun_request(stored: Mapping[str, Any], *, variation: bool, rng: random.Random | None = None) -> dict[str, Any]:
    """A request that makes a stored shot again: the same settings and seed, or a new seed (variation).

    ``stored`` is WanGP's settings format (``GenerationSettings.to_wangp_json()``), as kept on strips.
    """
    data = {k: v for k, v in stored.items() if k not in _NOT_COPIED}
    if variation:
        old = data.get("seed")
        rng = rng or random.Random()
        seed = rng.randrange(0, 2**31)
        while seed == old:
            seed = rng.randrange(0, 2**31)
        data["seed"] = seed
    return {"__wangp__": data}


def settings_from_request(request: Mapping[str, Any]) -> Any:
    """``GenerationSettings`` from a request made by :func:`shot_request` or :func:`rerun_request`.

    Raises ``Wan2GPValidationError`` saying what is wrong (e.g. a start image that no longer exists).
    """
    from pydantic import ValidationError

    from .backend.wan2gp import GenerationSettings, Wan2GPValidationError

    try:
        if "__wangp__" in request:
            return GenerationSettings.from_wangp_json(request["__wangp__"])
        return GenerationSettings(**request)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        where = f"{field}: " if field and not message.startswith(field) else ""
        raise Wan2GPValidationError(f"{where}{message}", field=field or None) from None


def request_summary(request: Mapping[str, Any]) -> tuple[str, str]:
    """``(prompt, model)`` of a request, for the queue list."""
    data = request.get("__wangp__", request)
    return str(data.get("prompt", "")), str(data.get("model") or data.get("model_type") or "")


# --- frames and durations ------------------------------------------------------------------------------------

def span_seconds(start: int, end: int, scene_fps: float) -> float:
    """The shot duration that fills timeline frames ``start`` to ``end`` (exclusive).

    WanGP's clips have ``seconds * fps + 1`` frames, so a span of N frames is ``(N - 1) / fps`` seconds.
    """
    return round(max(1, end - start - 1) / scene_fps, 3)


def model_rule(info: Mapping[str, Any] | None) -> Any | None:
    """The model's frame rule (the backend's ``FrameRule``) from a ``ModelInfo`` dict, when both are known.

    Returns None while the backend is not imported yet (it is, as soon as a server was contacted): the
    panel then does not claim a frame count it could not check.
    """
    enums = sys.modules.get(f"{__package__}.backend.wan2gp._enums")
    if enums is None or not info or not info.get("fps"):
        return None
    fps, step = int(info["fps"]), int(info.get("frames_step") or 1)
    minimum, maximum = int(info.get("frames_minimum") or 1), int(info.get("frames_maximum") or 10_000)
    return enums.FrameRule(fps=fps, step=step, minimum=minimum, maximum=maximum)


def frames_for(seconds: float, info: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """``(frames, fps)`` the model will really produce for ``seconds``, when its rule is known."""
    rule = model_rule(info)
    if rule is None:
        return None
    return rule.frames_for_seconds(seconds), rule.fps


def fps_differs(clip_fps: float | None, scene_fps: float) -> bool:
    return bool(clip_fps) and abs(float(clip_fps) - scene_fps) > 1e-3


def timeline_length(frames: int, clip_fps: float | None, scene_fps: float, fps_policy: str) -> int:
    """Scene frames a clip of ``frames`` frames takes on the timeline: in real time (``"STRETCH"``, a
    16 fps clip of 17 frames lasts 26 frames at 24 fps), or one scene frame per clip frame (``"KEEP"``)."""
    if fps_policy == "STRETCH" and clip_fps and fps_differs(clip_fps, scene_fps):
        return max(1, round(frames * scene_fps / clip_fps))
    return frames


# --- free channels -------------------------------------------------------------------------------------------

Span = tuple[int, int, int]  # (channel, first frame, frame after the last) of a strip or a shot on its way


def occupied(spans: Iterable[Span], channel: int, start: int, end: int) -> bool:
    """True if one of ``spans`` is on ``channel`` and overlaps ``[start, end)``."""
    return any(c == channel and s < end and start < e for c, s, e in spans)


def _free(spans: list[Span], channel: int, height: int, start: int, end: int) -> bool:
    return 1 <= channel and channel + height - 1 <= MAX_CHANNEL and not any(
        occupied(spans, c, start, end) for c in range(channel, channel + height))


def first_free_channel(spans: Iterable[Span], lowest: int, start: int, end: int, *, height: int = 1) -> int:
    """The lowest channel >= ``lowest`` free over ``[start, end)`` (``height`` channels in a row)."""
    spans = list(spans)
    for channel in range(max(1, lowest), MAX_CHANNEL + 1):
        if _free(spans, channel, height, start, end):
            return channel
    raise RuntimeError(f"no free channel from {lowest} up between frames {start} and {end}")


def nearest_free_channel(spans: Iterable[Span], channel: int, start: int, end: int, *, height: int = 1) -> int:
    """``channel`` if free over ``[start, end)``, else the nearest free one (upwards first on a tie)."""
    spans = list(spans)
    for distance in range(MAX_CHANNEL):
        for candidate in (channel + distance, channel - distance):
            if _free(spans, candidate, height, start, end):
                return candidate
    raise RuntimeError(f"no free channel between frames {start} and {end}")


def empty_channel(channels_used: Iterable[int]) -> int:
    """A channel with nothing on it at all (the highest): a strip can go there before its length is known."""
    used = set(channels_used)
    return next((c for c in range(MAX_CHANNEL, 0, -1) if c not in used), MAX_CHANNEL)


# --- results, records and strip metadata --------------------------------------------------------------------

def result_record(result: Any) -> dict[str, Any]:
    """A finished shot (the backend's ``GenerationResult``) as stored on its job and, with
    :func:`strip_metadata`, on its strip."""
    settings = result.sent_settings or result.settings.to_wangp_json()
    return {
        "job_id": result.job_id,
        "video_path": str(result.video_path),
        "files": [str(p) for p in result.files],
        "settings": settings,
        "model": result.model,
        "seed": result.settings.seed,
        "frames": result.frames,
        "fps": result.fps,
        "width": result.width,
        "height": result.height,
        "server": result.server,
        "wangp_version": result.wangp_version,
        "elapsed_seconds": round(result.elapsed_seconds, 2),
    }


def client_id(key: str) -> str:
    """The client id a shot of the add-on gets on the server (WanGP's queue shows it), from its job key."""
    return f"bmd-blender-{key}"


def strip_metadata(record: Mapping[str, Any], *, kind: str, addon_version: str, created: float) -> dict[str, Any]:
    """What a strip carries: everything needed to make the shot again (Regenerate, Variation)."""
    data = dict(record)
    data.pop("files", None)
    data.update({"kind": kind, "addon_version": addon_version, "created": created, "format": METADATA_FORMAT})
    return data


def dumps(data: Any) -> str:
    """JSON as kept in a string property of the .blend (jobs' requests, records and results; strips' metadata)."""
    return json.dumps(data, sort_keys=True, default=str)


def loads(text: str | None) -> Any:
    """The reverse of :func:`dumps`; None for an empty or damaged text."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def metadata_from_text(text: str | None) -> dict[str, Any] | None:
    """A strip's shot metadata from its custom property; None if it has none (or not a shot's)."""
    data = loads(text)
    return data if isinstance(data, dict) else None


# --- what the queue shows ------------------------------------------------------------------------------------

def describe_error(exc: BaseException) -> str:
    """An error as shown to the user: the backend's errors already say what happened and what to do."""
    from .backend.wan2gp import Wan2GPError

    if isinstance(exc, Wan2GPError):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (this is a bug in Movie Director; please report it)"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(job: Any) -> str:
    """One line for a job's progress bar: phase, step/total, queue position, ETA (``job``: a job item's fields
    ``status``, ``phase``, ``step``, ``total``, ``queue_position``, ``eta``)."""
    status = job.status
    if status in FINISHED:
        return status.capitalize()
    parts = [job.phase or status.capitalize()]
    if job.total > 0:
        parts.append(f"{job.step}/{job.total}")
    if job.queue_position >= 0 and status == "queued":
        parts.append(f"#{job.queue_position + 1} in queue")
    eta = format_eta(job.eta if job.eta >= 0 else None)
    if eta:
        parts.append(f"ETA {eta}")
    return " · ".join(parts)


def batch_counts(items: Iterable[Any]) -> dict[str, Any]:
    """How far a Generate All run is: shots in all, completed, failed (or lost), cancelled, still active, and
    the fraction of the run's work done (each unfinished shot counts with its own progress)."""
    items = list(items)
    counts: dict[str, Any] = {"total": len(items), "completed": 0, "failed": 0, "cancelled": 0, "active": 0}
    work = 0.0
    for item in items:
        if item.status == "completed":
            counts["completed"] += 1
        elif item.status in ("failed", "lost"):
            counts["failed"] += 1
        elif item.status == "cancelled":
            counts["cancelled"] += 1
        else:
            counts["active"] += 1
        work += 1.0 if item.status in FINISHED else float(item.fraction)
    counts["fraction"] = work / len(items) if items else 0.0
    return counts


def batch_text(counts: Mapping[str, Any]) -> str:
    text = f"Batch: {counts['completed']}/{counts['total']} done"
    for key in ("failed", "cancelled"):
        if counts[key]:
            text += f", {counts[key]} {key}"
    return text
