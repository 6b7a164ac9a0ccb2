"""Run the extension zip end to end on several Blender versions (bpy from PyPI), and save what happened.

CI runs the Blender tests on bpy 5.0.1 (Python 3.11) and the newest bpy for Python 3.13; this covers the
other lines, 4.2 and 4.5 LTS among them, which CI has no time for. For each version: a venv with only that
bpy (``.venvs/bpy-<version>``, made once; Python 3.11 up to 5.0, 3.13 from 5.1), then
``tools/blender_scenario.py``: install the zip with Blender's own installer, enable, generate at a chosen
frame and channel on the emulator, regenerate, extend, save and reload with a job running, quit with a job
running (the seconds until the process is gone are measured), and collect that job on the next load.

    python tools/blender_versions.py                              # every version below; builds the zip first
    python tools/blender_versions.py --versions 4.2.23 4.5.15 --zip dist/blender_movie_director-0.1.0-linux_x64.zip

Saves ``benchmarks/results/blender_versions.json``. Run from the project's venv (the emulator runs there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "blender_versions.json"
VERSIONS = ("4.2.23", "4.5.15", "5.0.1", "5.1.2", "5.2.3", "5.3.0")
STEPS = ("install", "generate", "regenerate", "extend", "save_reload", "quit", "collect")
ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def python_for(version: str) -> str:
    """The Python that Blender ``version`` embeds: 3.13 from 5.1, 3.11 before."""
    return "3.13" if tuple(int(n) for n in version.split(".")[:2]) >= (5, 1) else "3.11"


def find_python(minor: str) -> str:
    """``python3.X`` on the PATH, else pyenv's (its shim fails for a version that is not selected)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in (shutil.which(f"python{minor}"), *sorted(pyenv.glob(f"versions/{minor}*/bin/python{minor}"))):
        if candidate and subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return str(candidate)
    raise SystemExit(f"python{minor} was not found")


def venv_for(version: str, venvs: Path) -> Path:
    """A venv with bpy ``version`` and nothing else, made once."""
    python = venvs / f"bpy-{version}" / "bin" / "python"
    if not python.exists():
        subprocess.run([find_python(python_for(version)), "-m", "venv", str(python.parent.parent)], check=True)
    check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('bpy'))"],
                           capture_output=True, text=True)
    if check.stdout.strip() != version:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"bpy=={version}"], check=True)
    return python


def start_emulator() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "wan2gp_emulator", "--port", "0", "--step-seconds", "0.05"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **ENV})
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("WAN2GP_EMULATOR_URL="):
            return process, line.split("=", 1)[1].strip().rstrip("/")
        if not line and process.poll() is not None:
            break
    process.kill()
    raise SystemExit("the emulator did not start")


def _results(out: str) -> dict[str, dict]:
    return {r["step"]: r for r in (json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT "))}


def run_version(version: str, python: Path, zip_path: Path, url: str) -> dict:
    scenario = str(ROOT / "tools" / "blender_scenario.py")
    with tempfile.TemporaryDirectory(prefix=f"md-bpy-{version}-") as temp:
        work = Path(temp)
        env = {**os.environ, **ENV, "BLENDER_USER_RESOURCES": str(work / "user")}
        process = subprocess.Popen([str(python), scenario, "use", str(zip_path), url, str(work)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += "\n(killed: still running after 600 s)"
        exited_at = time.time()
        steps = _results(out)
        if "quit" in steps:
            steps["quit"]["exit_seconds"] = round(exited_at - steps["quit"].pop("quit_at"), 2)
            steps["quit"]["returncode"] = process.returncode
            steps["quit"]["ok"] = process.returncode == 0 and steps["quit"]["exit_seconds"] <= 2.0
            collect = subprocess.run([str(python), scenario, "collect", url, str(work)], capture_output=True,
                                     text=True, env=env, timeout=300)
            steps.update(_results(collect.stdout))
            if collect.returncode != 0:
                steps.setdefault("collect", {"ok": False})["returncode"] = collect.returncode
                err += collect.stderr
    outcome = {"bpy": version, "python": python_for(version), "steps": steps,
               "ok": all(steps.get(s, {}).get("ok") for s in STEPS)}
    if not outcome["ok"]:
        outcome["stderr_tail"] = err[-2000:]
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS))
    parser.add_argument("--zip", help="the extension zip for this machine (default: build it into dist/)")
    parser.add_argument("--venvs", default=str(ROOT / ".venvs"), help="where the bpy venvs are kept")
    args = parser.parse_args(argv)
    if args.zip:
        zip_path = Path(args.zip).resolve()
    else:
        sys.path.insert(0, str(ROOT / "tools"))
        import build_extension

        zip_path = build_extension.build(argparse.Namespace(
            platform=[build_extension.this_platform()], from_installed=False, output_dir=str(ROOT / "dist"),
            single_zip=False, blender_ext=None, pip_arg=None))[0]
    process, url = start_emulator()
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(),
                     "cpus": os.cpu_count(), "zip": zip_path.name, "zip_mb": round(zip_path.stat().st_size / 1e6, 2),
                     "versions": []}
    try:
        for version in args.versions:
            python = venv_for(version, Path(args.venvs))
            outcome = run_version(version, python, zip_path, url)
            results["versions"].append(outcome)
            steps = outcome["steps"]
            print(f"bpy {version} (Python {outcome['python']}): {'ok' if outcome['ok'] else 'FAILED'}; "
                  + ", ".join(f"{s} {'ok' if steps.get(s, {}).get('ok') else 'FAILED'}" for s in STEPS)
                  + f"; exit with a job running: {steps.get('quit', {}).get('exit_seconds')} s", flush=True)
    finally:
        process.terminate()
        process.wait(10)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0 if all(v["ok"] for v in results["versions"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
