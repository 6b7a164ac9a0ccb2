"""Between the add-on's PropertyGroups and the backend's models (``GenerationSettings``, results, progress).

This module does not import bpy: it reads PropertyGroups by attribute, so it is tested without Blender.
It does not import the backend at module level either (gradio_client takes ~0.3 s to import); the functions
that need it import it when called, which happens on worker threads.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

# Job states as the add-on shows them. The backend's JobStatus values, plus our own:
# "submitting" (sent to a worker, no server job yet), "cancelling", "reconnecting" (being reconciled after a
# load) and "lost" (the server no longer knows the job).
ACTIVE = frozenset({"submitting", "queued", "uploading", "running", "downloading", "cancelling", "reconnecting"})
FINISHED = frozenset({"completed", "failed", "cancelled", "lost"})
BACKEND_STATES = frozenset({"queued", "uploading", "running", "downloading"})

# Settings a re-run must not copy from the stored ones: the job's own id on the server.
_NOT_COPIED = frozenset({"client_id"})


def shot_request(shot: Any) -> dict[str, Any]:
    """The shot settings of the panel as ``GenerationSettings`` keyword arguments (WanGP's names).

    Zero steps / guidance mean "the model's default" (WanGP's own form fills them in); seed -1 is random.
    """
    data: dict[str, Any] = {"model": shot.model.strip(), "prompt": shot.prompt}
    if shot.negative_prompt.strip():
        data["negative_prompt"] = shot.negative_prompt
    if shot.resolution.strip():
        data["resolution"] = shot.resolution.strip()
    data["seconds"] = round(float(shot.seconds), 3)
    if shot.steps > 0:
        data["num_inference_steps"] = int(shot.steps)
    data["seed"] = int(shot.seed)
    if shot.guidance_scale > 0:
        data["guidance_scale"] = round(float(shot.guidance_scale), 4)
    return data


def quick_check(request: dict[str, Any]) -> str | None:
    """What is obviously wrong with a request, checked on the main thread without the backend; else None.

    The full validation (``GenerationSettings`` and the server's rules for the model) runs on the worker,
    and a failure there shows on the job with its message.
    """
    if not str(request.get("prompt", "")).strip():
        return "The prompt is empty: describe the shot"
    if not str(request.get("model", "")).strip():
        return "No model is chosen"
    return None


# Blender keeps at most this many characters of a marker's name: a name this long may have been cut.
MARKER_NAME_MAX = 63


def span_seconds(start: int, end: int, scene_fps: float) -> float:
    """The shot duration that fills timeline frames ``start`` to ``end`` (exclusive).

    WanGP's clips have ``seconds * fps + 1`` frames, so a span of N frames is ``(N - 1) / fps`` seconds.
    """
    return round(max(1, end - start - 1) / scene_fps, 3)


def rerun_request(stored: dict[str, Any], *, variation: bool, rng: random.Random | None = None) -> dict[str, Any]:
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


def settings_from_request(request: dict[str, Any]) -> Any:
    """``GenerationSettings`` from a request made by :func:`shot_request` or :func:`rerun_request`.

    Raises ``Wan2GPValidationError`` saying what is wrong (e.g. a start image that no longer exists).
    """
    from pydantic import ValidationError

    from ..backend.wan2gp import GenerationSettings, Wan2GPValidationError

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


def request_summary(request: dict[str, Any]) -> tuple[str, str]:
    """``(prompt, model)`` of a request, for the queue list."""
    data = request.get("__wangp__", request)
    return str(data.get("prompt", "")), str(data.get("model") or data.get("model_type") or "")


def shot_from_settings(shot: Any, stored: dict[str, Any]) -> None:
    """Fill the panel's shot settings from stored WanGP settings (the reverse of :func:`shot_request`)."""
    shot.prompt = str(stored.get("prompt", ""))
    shot.negative_prompt = str(stored.get("negative_prompt") or "")
    shot.model = str(stored.get("model_type") or stored.get("model") or shot.model)
    if stored.get("resolution"):
        shot.resolution = str(stored["resolution"])
    if stored.get("num_inference_steps"):
        shot.steps = int(stored["num_inference_steps"])
    if stored.get("seed") is not None:
        shot.seed = int(stored["seed"])
    if stored.get("guidance_scale") is not None:
        shot.guidance_scale = float(stored["guidance_scale"])


# --- frames and durations ------------------------------------------------------------------------------------

def model_rule(info: dict[str, Any] | None) -> Any | None:
    """The model's frame rule (the backend's ``FrameRule``) from a ``ModelInfo`` dict, when both are known.

    Returns None while the backend is not imported yet (it is, as soon as a server was contacted): the
    panel then does not claim a frame count it could not check.
    """
    enums = sys.modules.get(__package__.rpartition(".")[0] + ".backend.wan2gp.enums")
    if enums is None or not info or not info.get("fps"):
        return None
    fps, step = int(info["fps"]), int(info.get("frames_step") or 1)
    minimum, maximum = int(info.get("frames_minimum") or 1), int(info.get("frames_maximum") or 10_000)
    return enums.FrameRule(fps=fps, step=step, minimum=minimum, maximum=maximum)


def frames_for(seconds: float, info: dict[str, Any] | None) -> tuple[int, int] | None:
    """``(frames, fps)`` the model will really produce for ``seconds``, when its rule is known."""
    rule = model_rule(info)
    if rule is None:
        return None
    return rule.frames_for_seconds(seconds), rule.fps


def timeline_length(frames: int, clip_fps: float | None, scene_fps: float, fps_policy: str) -> int:
    """Scene frames a clip of ``frames`` frames will take on the timeline."""
    if clip_fps and fps_policy == "STRETCH" and abs(clip_fps - scene_fps) > 1e-3:
        return max(1, round(frames * scene_fps / clip_fps))
    return frames


# --- results and progress ------------------------------------------------------------------------------------

def result_record(result: Any) -> dict[str, Any]:
    """A finished shot as stored on its job and, with :func:`strip_metadata`, on its strip."""
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


def strip_metadata(record: dict[str, Any], *, kind: str, addon_version: str, created: float) -> dict[str, Any]:
    """What a strip carries: everything needed to make the shot again (Regenerate, Variation)."""
    data = dict(record)
    data.pop("files", None)
    data.update({"kind": kind, "addon_version": addon_version, "created": created, "format": 1})
    return data


def describe_error(exc: BaseException) -> str:
    """An error as shown to the user: the backend's errors already say what happened and what to do."""
    from ..backend.wan2gp import Wan2GPError

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
    """One line for a job's progress bar: phase, step/total, queue position, ETA."""
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


def batch_counts(items: list[Any]) -> dict[str, Any]:
    """How far a Generate All run is: shots in all, completed, failed (or lost), cancelled, still active, and
    the fraction of the run's work done (each unfinished shot counts with its own progress)."""
    counts = {"total": len(items), "completed": 0, "failed": 0, "cancelled": 0, "active": 0}
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


def batch_text(counts: dict[str, Any]) -> str:
    text = f"Batch: {counts['completed']}/{counts['total']} done"
    for key in ("failed", "cancelled"):
        if counts[key]:
            text += f", {counts[key]} {key}"
    return text


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def loads(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
