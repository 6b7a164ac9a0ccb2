"""Shots of a batch file run as render-farm tasks, and the job bundles that hand a batch to a farm.

A farm (an Open Job Description runtime such as Deadline Cloud or ``openjd run``, or Flamenco) gives each worker
a task: "shots 4 to 7 of this batch file, into this folder". :func:`run_shots` does it against the WanGP on the
worker. Each shot keeps its own batch journal in the output folder (``.journal/shot-0004.jsonl``), so a task run
again (a farm's retry, a requeue) finds a done shot done and generates nothing, and a shot whose task died after
WanGP had queued it re-attaches to it there (:func:`~blender_movie_director.backend.batch.resume_batch`). A done
shot's video is also linked under a stable name, ``shot-0004.mp4``, which is what the farm collects.

:func:`write_openjd_bundle` writes the OpenJD job bundle of a batch: ``template.yaml`` (one step, one task per shot),
``parameter_values.yaml`` and ``shots.json`` (the batch, its input paths made absolute).

The output folder describes itself: every task writes ``movie_director.json`` there (the job's shot count, and
the storyboard's places when the batch file has them: ``{"shots": [...], "timeline": {...}}``, as Blender
writes it), so :func:`read_output` tells, from that folder alone, which shots are done, with their videos and the
settings they were made with, and where each goes on the timeline (what Blender's "Import Farm Results" places).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .batch import Journal, ShotState, _restore_result, load_shots, resume_batch, submit_batch
from .wan2gp._errors import Wan2GPConnectionError, Wan2GPValidationError
from .wan2gp._schemas import GenerationSettings

__all__ = ["FarmOutput", "FarmShot", "ShotOutcome", "load_timeline", "openjd_template", "parse_shot_range",
           "read_output", "run_shots", "shot_video_name", "write_openjd_bundle"]

# How long a task waits for the worker's WanGP to answer before it fails with the connection exit code: long
# enough for WanGP started by the worker's own start-up script, short enough that a dead worker frees its task.
DEFAULT_WAIT_FOR_SERVER = 60.0
OPENJD_STEP = "Shots"
MANIFEST = "movie_director.json"  # in the job's output folder: what read_output needs besides the journals
MANIFEST_FORMAT = 1
TIMELINE_FORMAT = 1


def shot_video_name(index: int) -> str:
    """The stable name of shot ``index``'s video in the job's output folder."""
    return f"shot-{index:04d}.mp4"


def parse_shot_range(text: str, total: int) -> list[int]:
    """``"3"``, ``"0-3"`` or ``"0,2,5-7"`` (0-based, as the OpenJD task parameter) as a list of shot indices."""
    indices: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            start, end = int(first), int(last or first)
            if end < start:
                raise ValueError
            indices.extend(range(start, end + 1))
    except ValueError:
        raise Wan2GPValidationError(f"--shots {text!r} is not a shot index or range", field="shots",
                                    hint='give 0-based indices: "3", "0-3" or "0,2,5-7"') from None
    outside = [i for i in indices if not 0 <= i < total]
    if outside:
        raise Wan2GPValidationError(f"--shots {text!r}: the batch has {total} shots (0-{total - 1})", field="shots")
    return list(dict.fromkeys(indices))


@dataclass(frozen=True)
class ShotOutcome:
    index: int
    video: Path | None
    skipped: bool  # done by an earlier run of the task: nothing was sent
    error: str | None = None


Progress = Callable[[float, str], None]


def _job_id(batch_file: Path, output_dir: Path) -> str:
    """One id per (batch, output folder): it names the shots on the servers, the same in every retry."""
    digest = hashlib.sha256(batch_file.read_bytes() + str(output_dir.resolve()).encode()).hexdigest()
    return digest[:12]


def run_shots(batch_file: str | Path, indices: list[int] | None, output_dir: str | Path, server: str, *,
              wait_for_server: float = DEFAULT_WAIT_FOR_SERVER, progress: Progress | None = None) -> list[ShotOutcome]:
    """Generate shots ``indices`` of ``batch_file`` (all when None) on ``server``, into ``output_dir``.

    Shots already done there (by their journals) are skipped without asking any server. Returns one outcome per
    shot, in order. Raises :class:`Wan2GPConnectionError` when a shot must run and ``server`` does not answer
    within ``wait_for_server`` seconds, :class:`Wan2GPValidationError` for a bad batch file or range.
    """
    from .pool import ServerPool

    batch_file = Path(batch_file).expanduser()
    output_dir = Path(output_dir).expanduser()
    shots = load_shots(batch_file)
    timeline = load_timeline(batch_file)
    indices = list(range(len(shots))) if indices is None else indices
    job = _job_id(batch_file, output_dir)
    journals = output_dir / ".journal"
    journals.mkdir(parents=True, exist_ok=True)
    _write_manifest(output_dir, job, len(shots), timeline)
    report = progress or (lambda fraction, status: None)
    outcomes: list[ShotOutcome] = []
    pool: ServerPool | None = None
    try:
        for n, index in enumerate(indices):
            journal = journals / f"shot-{index:04d}.jsonl"
            done = _done_video(journal, output_dir / shot_video_name(index))
            if done is not None:
                outcomes.append(ShotOutcome(index, _link_stable(done, output_dir, index), skipped=True))
                report((n + 1) / len(indices), f"shot {index}: done already")
                continue
            if pool is None:
                pool = ServerPool([server], output_dir=journals.parent / ".videos", wait_for_server=wait_for_server,
                                  result_cache=False)  # the journal, not the cache, keeps retries idempotent
                report(n / len(indices), f"waiting for WanGP at {server}")
                if not pool.wait_for_servers(1, timeout=wait_for_server):
                    raise Wan2GPConnectionError(
                        f"WanGP at {server} did not answer within {wait_for_server:.0f} s", server=server,
                        hint="start WanGP on this worker (on 127.0.0.1), or give its URL with --server")

            def shot_progress(fraction: float, status: str, n: int = n) -> None:
                report((n + fraction) / len(indices), status)

            outcomes.append(_run_one(pool, shots[index], index, job, journal, output_dir, shot_progress))
    finally:
        if pool is not None:
            pool.close()
    return outcomes


def _run_one(pool: Any, settings: GenerationSettings, index: int, job: str, journal: Path, output_dir: Path,
             report: Progress) -> ShotOutcome:
    if journal.exists():  # a run before this one sent it, or failed: the journal knows what happened
        batch = resume_batch(pool, journal)
    else:
        settings = settings.model_copy(update={"client_id": f"bmd-{job}-{index:04d}"})
        batch = submit_batch(pool, [settings], journal=journal, batch_id=f"{job}-{index:04d}")
    report(0.0, f"shot {index}: generating")
    last = [-1]
    lock = threading.Lock()

    def on_progress(b: Any, p: Any) -> None:
        percent = int(p.fraction * 100)
        with lock:
            if percent != last[0]:
                last[0] = percent
                report(p.fraction, f"shot {index}: generating")

    batch.add_progress_callback(on_progress)
    batch.wait()
    shot = batch.shots[0]
    if shot.state is not ShotState.DONE or shot.result is None:
        report(1.0, f"shot {index}: {shot.state.value}")
        return ShotOutcome(index, None, skipped=False, error=shot.error or shot.state.value)
    report(1.0, f"shot {index}: done")
    return ShotOutcome(index, _link_stable(Path(shot.result.video_path), output_dir, index), skipped=False)


def _done_video(journal: Path, stable: Path) -> Path | None:
    """The video of a shot its journal has as done (and that is still on disk), else None. The stable name
    counts too: another worker may see the output folder at another path (a farm's path mapping)."""
    if not journal.exists():
        return None
    try:
        header, states = Journal.read(journal)
    except (OSError, ValueError):
        return None
    state = states.get(0) or {}
    if state.get("state") != ShotState.DONE.value:
        return None
    if stable.is_file():
        return stable
    settings = GenerationSettings.model_construct(**(header.get("shots") or [{}])[0])
    result = _restore_result(state, settings)
    return Path(result.video_path) if result is not None else None


def _link_stable(video: Path, output_dir: Path, index: int) -> Path:
    """``video`` under its stable name in ``output_dir`` (a hard link where the file system allows, else a copy)."""
    target = output_dir / shot_video_name(index)
    if target.exists() and target.samefile(video):
        return target
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(video, tmp)
    except OSError:
        import shutil

        shutil.copyfile(video, tmp)
    os.replace(tmp, target)
    return target


# --- the output folder: the job's manifest, and the results as the artist's Blender imports them ------------


def load_timeline(batch_file: str | Path) -> dict[str, Any] | None:
    """The storyboard's places a batch file carries (``{"shots": [...], "timeline": {...}}``), else None.

    The timeline is ``{"format": 1, "scene": NAME, "fps": FPS, "places": [...]}``, one place per shot, in order:
    ``{"frame_start": F, "channel": C, "fill": FRAMES (0: the clip's own length), "meta": META STRIP or ""}``.
    Raises :class:`Wan2GPValidationError` saying what is wrong with it.
    """
    path = Path(batch_file).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # load_shots says what is wrong with the file itself
    if not isinstance(data, dict) or data.get("timeline") is None:
        return None
    return _checked_timeline(data["timeline"], len(data.get("shots") or []), f"the timeline of {path}")


def _checked_timeline(timeline: Any, total: int, where: str) -> dict[str, Any]:
    def bad(problem: str) -> Wan2GPValidationError:
        return Wan2GPValidationError(f"{where}: {problem}", field="timeline",
                                     hint="write the job again from Blender (Submit to Flamenco), or remove "
                                          "\"timeline\" from the batch file to place the shots end to end")

    if not isinstance(timeline, dict) or timeline.get("format") != TIMELINE_FORMAT:
        raise bad(f"expected an object with \"format\": {TIMELINE_FORMAT}")
    places = timeline.get("places")
    if not isinstance(places, list) or len(places) != total:
        raise bad(f"it must hold one place per shot ({total}), not {len(places) if isinstance(places, list) else 0}")
    for n, place in enumerate(places):
        fields = [place.get(k) for k in ("frame_start", "channel", "fill")] if isinstance(place, dict) else []
        ints = [v for v in fields if isinstance(v, int) and not isinstance(v, bool)]
        if len(ints) != 3 or not 1 <= ints[1] <= 128 or ints[2] < 0 or not isinstance(place.get("meta", ""), str):
            raise bad(f"place {n} must be {{\"frame_start\": int, \"channel\": 1-128, \"fill\": int >= 0, "
                      f"\"meta\": str}}, not {place!r}")
    return timeline


def _write_manifest(output_dir: Path, job: str, total: int, timeline: dict[str, Any] | None) -> None:
    """The job's manifest in its output folder, written whole (every task writes the same; the last one stays)."""
    data = {"format": MANIFEST_FORMAT, "job": job, "shots": total, "timeline": timeline}
    path = output_dir / MANIFEST
    try:
        if json.loads(path.read_text(encoding="utf-8")) == data:
            return
    except (OSError, ValueError):
        pass
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class FarmShot:
    """One shot of a farm job's output folder, as :func:`read_output` finds it."""

    index: int
    state: str  # "done", "pending" (no task ran it yet), "running", "failed", "cancelled", or "damaged"
    video: Path | None = None  # shot-NNNN.mp4 in the output folder, for a done shot
    result: Any = None  # its GenerationResult (the settings it was made with), for a done shot
    error: str = ""

    @property
    def done(self) -> bool:
        return self.state == "done"


@dataclass(frozen=True)
class FarmOutput:
    folder: Path
    total: int
    timeline: dict[str, Any] | None  # the storyboard's places (load_timeline), if the batch had them
    shots: list[FarmShot]

    def problems(self) -> list[str]:
        """A line per shot that is not done, saying why; empty when every shot can be imported."""
        return [f"shot {s.index}: {s.error or s.state}" for s in self.shots if not s.done]


def read_output(folder: str | Path) -> FarmOutput:
    """Every shot of the farm job whose output folder is ``folder``: done (its video checked, and the settings it
    was made with), or why not. Reads files only; asks no server.

    Raises :class:`Wan2GPValidationError` when ``folder`` is not a Movie Director farm output folder.
    """
    from .wan2gp import _mp4
    from .wan2gp._schemas import GenerationResult

    folder = Path(folder).expanduser()
    journals = folder / ".journal"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except OSError:
        manifest = None
    except ValueError:
        raise Wan2GPValidationError(f"{folder / MANIFEST} is not valid JSON", field="output",
                                    hint="run one task of the farm job again: it writes it anew") from None
    found = sorted(int(p.stem.removeprefix("shot-")) for p in journals.glob("shot-[0-9]*.jsonl")
                   if p.stem.removeprefix("shot-").isdigit()) if journals.is_dir() else []
    if not isinstance(manifest, dict) and not found:
        raise Wan2GPValidationError(f"{folder} is not the output folder of a Movie Director farm job (it has no "
                                    f"{MANIFEST} and no .journal folder)", field="output",
                                    hint="choose the folder the job wrote shot-NNNN.mp4 into (its OutputDir or "
                                         "output_dir), once its first task has started")
    if isinstance(manifest, dict):
        total = int(manifest.get("shots") or 0)
        timeline = manifest.get("timeline")
        if timeline is not None:
            timeline = _checked_timeline(timeline, total, f"the timeline in {folder / MANIFEST}")
    else:  # written before manifests existed: the journals found say how many shots there are at least
        total, timeline = max(found) + 1, None
    shots = []
    for index in range(total):
        journal, video = journals / f"shot-{index:04d}.jsonl", folder / shot_video_name(index)
        if not journal.exists():
            shots.append(FarmShot(index, "pending", error="no task has run it yet"))
            continue
        try:
            header, states = Journal.read(journal)
        except (OSError, ValueError) as exc:
            shots.append(FarmShot(index, "damaged", error=f"its journal can't be read ({exc})"))
            continue
        state = states.get(0) or {}
        status = str(state.get("state") or "pending")
        if status != ShotState.DONE.value:
            why = {"pending": "its task has not sent it yet", "running": "being generated (or its task stopped: "
                   "requeue it on the farm)", "cancelled": "cancelled: requeue its task"}.get(status, status)
            shots.append(FarmShot(index, status, error=str(state.get("error") or why)))
            continue
        try:
            settings = GenerationSettings.model_construct(**(header.get("shots") or [{}])[0])
            result = GenerationResult.model_validate({**state["result"], "settings": settings})
            info = _mp4.probe(video)
        except (KeyError, TypeError, ValueError, OSError) as exc:  # NotAVideo and pydantic's errors are ValueErrors
            shots.append(FarmShot(index, "damaged", error=f"done, but {video.name} or its journal is missing or "
                                  f"incomplete ({type(exc).__name__}: {exc}); run its task again"))
            continue
        if result.frames and info.frames != result.frames:
            shots.append(FarmShot(index, "damaged", error=f"{video.name} has {info.frames} frames, its journal "
                                  f"says {result.frames}: it is incomplete; run its task again"))
            continue
        shots.append(FarmShot(index, "done", video, result.model_copy(update={"video_path": video})))
    return FarmOutput(folder, total, timeline, shots)


# --- the command line: `movie-director shot` --------------------------------------------------------------------


def add_shot_arguments(parser: Any) -> None:
    """``movie-director shot``'s own arguments (the CLI adds --json/-q/-v/--server)."""
    parser.add_argument("batch", metavar="SHOTS.json", help="the batch file (as for `movie-director batch`)")
    parser.add_argument("--shots", metavar="RANGE", required=True,
                        help='0-based shot indices: "3", "0-3" or "0,2,5-7"')
    parser.add_argument("-o", "--output", metavar="DIR", required=True,
                        help="the job's output folder: shot-NNNN.mp4 and the shots' journals go there")
    parser.add_argument("--wait-for-server", type=float, default=DEFAULT_WAIT_FOR_SERVER, metavar="S",
                        help=f"how long to wait for WanGP before failing with exit code 3 "
                             f"(default {DEFAULT_WAIT_FOR_SERVER:.0f})")


def run_shot_cli(args: Any, out: Any, server: str) -> int:
    """``movie-director shot SHOTS.json --shots RANGE -o DIR``; returns the exit code (0, or 5 if a shot failed).

    Progress goes to stdout as OpenJD reads it (``openjd_progress: N``, ``openjd_status: TEXT``), unless --json.
    """
    total = len(load_shots(args.batch))
    indices = parse_shot_range(args.shots, total)

    def progress(fraction: float, status: str) -> None:
        if out.json:
            return
        sys.stdout.write(f"openjd_progress: {min(100.0, fraction * 100):.0f}\nopenjd_status: {status}\n")
        sys.stdout.flush()

    outcomes = run_shots(args.batch, indices, args.output, server, wait_for_server=args.wait_for_server,
                         progress=progress)
    failed = [o for o in outcomes if o.error]
    lines = [f"shot {o.index}: " + (f"failed: {o.error}" if o.error else
                                    f"{'done already' if o.skipped else 'done'}: {o.video}") for o in outcomes]
    out.result({"server": server, "shots": [{"index": o.index, "video": o.video, "skipped": o.skipped,
                                            "error": o.error} for o in outcomes]}, "\n".join(lines))
    return 5 if failed else 0  # the CLI's EXIT_SERVER / EXIT_OK


def end_task(code: int) -> NoReturn:
    """End a farm task's process with ``code`` at once, once its output is flushed.

    Everything a task leaves is on disk by then (journal lines are fsynced as written, videos renamed into place,
    the pool closed), so the interpreter's teardown (0.15-0.5 s of freeing the modules of the WanGP client,
    measured on 2 CPUs) is skipped: a farm waits for each task's process to end, once per shot.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


# --- OpenJD -------------------------------------------------------------------------------------------------------


def openjd_template(total: int, name: str) -> dict[str, Any]:
    """The OpenJD job template (jobtemplate-2023-09) of a batch of ``total`` shots: one task per shot."""
    return {
        "specificationVersion": "jobtemplate-2023-09",
        "name": f"Movie Director: {name}",
        "parameterDefinitions": [
            {"name": "ShotsFile", "type": "PATH", "objectType": "FILE", "dataFlow": "IN",
             "description": "The batch file (the bundle's shots.json).", "default": "shots.json"},
            {"name": "OutputDir", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT",
             "description": "Where shot-NNNN.mp4 and the shots' journals are written.", "default": "output"},
            {"name": "WanGPServer", "type": "STRING", "default": "", "maxLength": 500,
             "description": "The worker's WanGP URL; empty: WAN2GP_URL, then WanGP found on the worker's loopback."},
            {"name": "WaitForServer", "type": "INT", "default": int(DEFAULT_WAIT_FOR_SERVER), "minValue": 1,
             "description": "Seconds a task waits for the worker's WanGP before it fails (exit code 3)."},
            {"name": "MovieDirector", "type": "STRING", "default": "movie-director", "minLength": 1,
             "description": "The movie-director command on the workers."},
        ],
        "steps": [{
            "name": OPENJD_STEP,
            "parameterSpace": {"taskParameterDefinitions": [
                {"name": "Shot", "type": "INT", "range": f"0-{total - 1}"}]},
            "script": {"actions": {"onRun": {
                "command": "{{Param.MovieDirector}}",
                "args": ["shot", "{{Param.ShotsFile}}", "--shots", "{{Task.Param.Shot}}",
                         "--output", "{{Param.OutputDir}}", "--server", "{{Param.WanGPServer}}",
                         "--wait-for-server", "{{Param.WaitForServer}}"],
            }}},
        }],
    }


def write_openjd_bundle(shots_file: str | Path, bundle_dir: str | Path) -> Path:
    """Write the OpenJD job bundle of ``shots_file`` into ``bundle_dir``; returns the template's path.

    The template is checked with ``openjd-model`` (the ``farm`` extra) before it is written.
    """
    try:
        from openjd.model import DecodeValidationError, TemplateSpecificationVersion, decode_job_template
    except ImportError:
        raise Wan2GPValidationError("writing an OpenJD bundle needs openjd-model", field="openjd",
                                    hint='pip install "blender-movie-director[farm]"') from None
    import yaml

    shots_file = Path(shots_file).expanduser()
    shots = load_shots(shots_file)  # validates, and makes the shots' input paths absolute
    template = openjd_template(len(shots), shots_file.stem)
    try:
        decode_job_template(template=template, supported_extensions=[])
    except DecodeValidationError as exc:  # our own template: a bug here, not the user's
        raise RuntimeError(f"the OpenJD template is not valid: {exc}") from None
    assert template["specificationVersion"] == TemplateSpecificationVersion.JOBTEMPLATE_v2023_09.value
    bundle = Path(bundle_dir).expanduser()
    bundle.mkdir(parents=True, exist_ok=True)
    copied: Any = [s.model_dump(mode="json", exclude_unset=True) for s in shots]
    timeline = load_timeline(shots_file)
    if timeline is not None:  # the storyboard's places go with the shots, to the job's output folder
        copied = {"shots": copied, "timeline": timeline}
    (bundle / "shots.json").write_text(json.dumps(copied, indent=2) + "\n", encoding="utf-8")
    (bundle / "template.yaml").write_text(yaml.safe_dump(template, sort_keys=False), encoding="utf-8")
    values = {"parameterValues": [{"name": "ShotsFile", "value": str((bundle / "shots.json").resolve())},
                                  {"name": "OutputDir", "value": str((bundle / "output").resolve())}]}
    (bundle / "parameter_values.yaml").write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return bundle / "template.yaml"
