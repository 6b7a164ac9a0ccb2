"""Build the Blender extension zip(s) of Movie Director, with its Python dependencies bundled as wheels.

Blender 4.2+ installs the wheels listed in ``blender_manifest.toml`` itself: nothing is pip-installed at run
time. This script

1. resolves the add-on's runtime dependencies (``[project].dependencies`` of pyproject.toml, minus what the
   add-on never imports, see ``EXCLUDED``) to the exact versions installed in this environment, with the
   dependencies each target platform and Python adds (environment markers evaluated for them);
2. gets their wheels for each platform and each Python Blender embeds (``PYTHON_VERSIONS``: 3.11 for Blender
   4.2 - 5.0, 3.13 for 5.1 - 5.3), unmodified from PyPI with ``pip download --only-binary=:all: --platform ...
   --python-version ...`` (default; needs the network), or, with ``--from-installed``, by repacking the
   distributions installed here (this machine's platform and Python only; no network: what tests use);
3. keeps pure-Python wheels once and compiled ones per platform and Python (Blender installs those of its own
   Python and platform), stages the add-on with them, writes the ``wheels`` and ``platforms`` of the staged
   manifest, and builds with Blender's own extension tool (``bl_pkg/cli/blender_ext.py`` from the bpy module,
   or ``--blender-ext``): one zip per platform (``--split-platforms``) unless ``--single-zip``;
4. validates every zip with the same tool, and checks that each holds, for each Python, one wheel of every
   dependency that Python needs on that platform.

Examples::

    python tools/build_extension.py                                   # all four platforms, from PyPI
    python tools/build_extension.py --from-installed --platform linux-x64 --output-dir /tmp/ext
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata as metadata
import importlib.util
import io
import json
import platform as platform_module
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "blender_movie_director"
# The Pythons Blender embeds: 3.11 in Blender 4.2 - 5.0, 3.13 in 5.1 - 5.3 (blender_manifest.toml's range).
PYTHON_VERSIONS = ("3.11", "3.13")

# Dependencies of the distribution that the add-on never imports inside Blender.
EXCLUDED = {
    "rich": "the command-line tool's output only",
    "hf-xet": "an optional accelerator of Hugging Face Hub downloads, which the add-on never makes",
    # With it go cryptography, cffi and pycparser: 5 MB of the 6 MB the mcp SDK adds. Its client side, as the
    # MCP transport uses it (streamable HTTP, a bearer token), never imports jwt.
    "pyjwt": "the mcp SDK's OAuth JWT signing (private-key JWT clients, the auth server), never used by the add-on",
}


@dataclass(frozen=True)
class Target:
    """A Blender platform: pip's platform tags for it, and its environment markers."""

    name: str
    pip_platforms: tuple[str, ...]
    markers: dict[str, str]


TARGETS = {
    "linux-x64": Target("linux-x64", (
        "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
        "manylinux1_x86_64"), {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                               "platform_machine": "x86_64"}),
    "windows-x64": Target("windows-x64", ("win_amd64",), {
        "sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64"}),
    # Blender 4.2+ needs macOS 11.2 on both architectures.
    "macos-arm64": Target("macos-arm64", ("macosx_11_0_arm64", "macosx_11_0_universal2"), {
        "sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix", "platform_machine": "arm64"}),
    "macos-x64": Target("macos-x64", (
        "macosx_11_0_x86_64", "macosx_10_15_x86_64", "macosx_10_13_x86_64", "macosx_10_12_x86_64",
        "macosx_10_9_x86_64", "macosx_10_9_universal2"), {
        "sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix", "platform_machine": "x86_64"}),
}


def this_platform() -> str:
    system = {"darwin": "macos", "windows": "windows"}.get(platform_module.system().lower(),
                                                            platform_module.system().lower())
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform_module.machine().lower(),
                                                                        platform_module.machine().lower())
    return f"{system}-{machine}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- dependencies -------------------------------------------------------------------------------------------

def runtime_requirements() -> list[str]:
    """``[project].dependencies`` of pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def resolve(requirements: list[str], markers: dict[str, str], python: str,
            without: frozenset[str] = frozenset()) -> dict[str, str | None]:
    """Every distribution needed on a platform with a Python: name -> installed version (None: not here).
    ``without``: more names to leave out, with what only they need."""
    environment = default_environment()
    environment.update(markers)
    environment["python_version"] = python
    environment["python_full_version"] = python + ".0"
    found: dict[str, str | None] = {}
    stack = [(Requirement(r), "") for r in requirements]
    while stack:
        requirement, extra = stack.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name in EXCLUDED or name in without or name in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            found[name] = None  # needed on that platform only (e.g. colorama on Windows): pip finds it
            continue
        found[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            for wanted in [""] + sorted(requirement.extras):
                if sub.marker is None or sub.marker.evaluate({**environment, "extra": wanted}):
                    stack.append((sub, wanted))
                    break
    return dict(sorted(found.items()))


# --- wheels ---------------------------------------------------------------------------------------------------

def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_tag(wheel_text: str) -> str:
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags]
    python = ".".join(dict.fromkeys(p[0] for p in parts))
    abi = ".".join(dict.fromkeys(p[1] for p in parts))
    plat = ".".join(dict.fromkeys(p[2] for p in parts))
    return f"{python}-{abi}-{plat}"


def repack_installed(name: str, dest: Path) -> Path:
    """Rebuild the wheel an installed distribution came from (its files as installed, RECORD recomputed)."""
    dist = metadata.distribution(name)
    dist_info = Path(dist._path)  # type: ignore[attr-defined]  # the .dist-info folder
    wheel_text = dist.read_text("WHEEL") or ""
    project = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    filename = f"{project}-{dist.version}-{_wheel_tag(wheel_text)}.whl"
    skip = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
    records: list[tuple[str, str, str]] = []
    path = dest / filename
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in dist.files or []:
            posix = file.as_posix()
            if posix.startswith("..") or "__pycache__" in file.parts or posix.endswith(".pyc"):
                continue  # scripts outside site-packages, and caches
            if file.parent.name == dist_info.name and file.name in skip:
                continue
            data = Path(file.locate()).read_bytes()
            archive.writestr(posix, data)
            records.append((posix, _record_hash(data), str(len(data))))
        record_name = f"{dist_info.name}/RECORD"
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows(records)
        writer.writerow((record_name, "", ""))
        archive.writestr(record_name, buffer.getvalue())
    return path


def download(pins: dict[str, str | None], target: Target, python: str, dest: Path, *, pip_args: list[str]) -> None:
    """``pip download`` the exact versions, binary only, for one platform and one Python."""
    requirements = [f"{name}=={version}" if version else name for name, version in pins.items()]
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
               "--python-version", python, "--implementation", "cp", "-d", str(dest), "--quiet"]
    for tag in target.pip_platforms:
        command += ["--platform", tag]
    command += pip_args + requirements
    log(f"  pip download {len(requirements)} wheels for {target.name}, Python {python}")
    subprocess.run(command, check=True)


def is_pure(wheel: Path) -> bool:
    return wheel.name.endswith("-none-any.whl")


def wheel_name(wheel: str) -> str:
    """The distribution a wheel file is of, canonicalized (``pydantic_core-2.33.2-cp311-...`` -> pydantic-core)."""
    return canonicalize_name(Path(wheel).name.split("-")[0])


def wheel_pythons(wheel: str) -> set[str]:
    """The Pythons of ``PYTHON_VERSIONS`` a wheel file installs on, by its tags (Blender reads them the same way:
    ``cp311``/``py3``, and an ``abi3`` wheel on its Python and the later ones)."""
    python_tag, abi_tag = Path(wheel).name[:-4].split("-")[-3:-1]
    found = set()
    for python in PYTHON_VERSIONS:
        major, minor = (int(n) for n in python.split("."))
        for tag in python_tag.split("."):
            digits = tag[2:]
            if tag[:2] not in ("cp", "py") or not digits.isdigit():
                continue
            if digits == str(major) or digits == f"{major}{minor}":
                found.add(python)
            elif abi_tag == "abi3" and digits.startswith(str(major)) and int(digits[1:] or 0) <= minor:
                found.add(python)
    return found


def check_bundle(wheels: list[str], needed: dict[str, set[str]]) -> list[str]:
    """What is wrong with one platform's wheels: ``needed`` maps each Python to the distributions it needs.

    Each of them must have exactly one wheel for that Python (Blender keeps one wheel per name and version),
    and no wheel may serve no Python at all (a wheel not needed).
    """
    problems = []
    for python, names in needed.items():
        for name in sorted(names):
            count = sum(1 for w in wheels if wheel_name(w) == name and python in wheel_pythons(w))
            if count != 1:
                problems.append(f"{count} wheels of {name} for Python {python}")
    for wheel in wheels:
        serves = wheel_pythons(wheel) & set(needed)
        if not serves or all(wheel_name(wheel) not in needed[p] for p in serves):
            problems.append(f"{Path(wheel).name} is not needed")
    return problems


# --- staging and building ---------------------------------------------------------------------------------------

def stage(source: Path, stage_dir: Path, wheels: list[Path], platforms: list[str]) -> Path:
    """A copy of the add-on with its wheels, and a manifest listing them."""
    target = stage_dir / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wheels"))
    wheel_dir = target / "wheels"
    wheel_dir.mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, wheel_dir / wheel.name)
    manifest = target / "blender_manifest.toml"
    text = manifest.read_text(encoding="utf-8")
    listed = "".join(f'    "./wheels/{w.name}",\n' for w in sorted(wheels, key=lambda w: w.name))
    text, n_wheels = re.subn(r"(?m)^wheels = \[[^\]]*\]", "wheels = [\n" + listed + "]", text)
    text, n_platforms = re.subn(r"(?m)^platforms = \[[^\]]*\]", "platforms = " + json.dumps(platforms), text)
    if n_wheels != 1 or n_platforms != 1:
        raise SystemExit("blender_manifest.toml must have one `wheels = [...]` and one `platforms = [...]` line")
    manifest.write_text(text, encoding="utf-8")
    return target


def find_blender_ext(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("bpy")  # the bpy module's files; bpy itself is not imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("Blender's extension tool was not found: install the bpy module "
                         "(pip install bpy==5.0.1) or pass --blender-ext .../bl_pkg/cli/blender_ext.py")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    raise SystemExit("bl_pkg/cli/blender_ext.py is not in the installed bpy module; pass --blender-ext")


def blender_ext(tool: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"blender_ext {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def build(args: argparse.Namespace) -> list[Path]:
    started = time.perf_counter()
    platforms = args.platform or list(TARGETS)
    unknown = [p for p in platforms if p not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown platform(s) {unknown}; known: {', '.join(TARGETS)}")
    if args.from_installed and platforms != [this_platform()]:
        raise SystemExit(f"--from-installed repacks this machine's packages: use --platform {this_platform()}")
    output = Path(args.output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    tool = find_blender_ext(args.blender_ext)
    pythons = ["{}.{}".format(*sys.version_info[:2])] if args.from_installed else list(PYTHON_VERSIONS)
    requirements = runtime_requirements()
    wheels: dict[str, dict[str, Path]] = {}  # platform -> file name -> path (a pure wheel: the same file)
    needed: dict[str, dict[str, set[str]]] = {}  # platform -> Python -> distributions
    zips: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="md-extension-") as temp:
        temp_dir = Path(temp)
        for name in platforms:
            target = TARGETS[name]
            for python in pythons:
                pins = resolve(requirements, target.markers, python,
                               frozenset(canonicalize_name(n) for n in getattr(args, "without", None) or []))
                needed.setdefault(name, {})[python] = set(pins)
                wheel_dir = temp_dir / "wheels" / name / python
                wheel_dir.mkdir(parents=True)
                if args.from_installed:
                    missing = [n for n, v in pins.items() if v is None]
                    if missing:
                        raise SystemExit(f"not installed here: {missing}")
                    log(f"  repacking {len(pins)} installed distributions for {name}, Python {python}")
                    for dist_name in pins:
                        repack_installed(dist_name, wheel_dir)
                else:
                    download(pins, target, python, wheel_dir, pip_args=args.pip_arg or [])
                for wheel in wheel_dir.glob("*.whl"):
                    wheels.setdefault(name, {}).setdefault(wheel.name, wheel)
        # One zip per platform holds that platform's wheels only (a pure wheel one platform needs, such as
        # colorama on Windows, is not in the others); --single-zip puts every platform's in one.
        groups = [platforms] if args.single_zip else [[name] for name in platforms]
        for group in groups:
            files = {n: w for name in group for n, w in wheels[name].items()}
            pure = sum(1 for w in files.values() if is_pure(w))
            log(f"  {', '.join(group)}: {len(files)} wheels, {pure} pure-Python, {len(files) - pure} compiled "
                f"(Python {', '.join(pythons)})")
            staged = stage(PACKAGE, temp_dir / "stage" / "+".join(group), list(files.values()), group)
            blender_ext(tool, "validate", str(staged))
            build_args = ["build", "--source-dir", str(staged), "--output-dir", str(output)]
            if not args.single_zip:
                build_args.append("--split-platforms")  # names the zip after its platform
            before = {p: p.stat().st_mtime_ns for p in output.glob("*.zip")}
            blender_ext(tool, *build_args)
            zips += [p for p in output.glob("*.zip") if before.get(p) != p.stat().st_mtime_ns]
    for path in zips:
        blender_ext(tool, "validate", str(path))
        with zipfile.ZipFile(path) as archive:
            bundled = [n for n in archive.namelist() if n.startswith("wheels/") and n.endswith(".whl")]
            manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        zip_platforms = manifest.get("platforms", platforms)
        if len(zip_platforms) == 1:  # a zip of one platform: exactly its wheels, one per name and Python
            problems = check_bundle(bundled, needed[zip_platforms[0]])
            if problems:
                raise SystemExit(f"{path.name}: " + "; ".join(problems))
        log(f"  built and validated {path} ({path.stat().st_size / 1e6:.1f} MB)")
    log(f"  done in {time.perf_counter() - started:.1f} s")
    return zips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", action="append", choices=sorted(TARGETS),
                        help="a Blender platform to build for (repeatable; default: all four)")
    parser.add_argument("--from-installed", action="store_true",
                        help="repack the distributions installed here instead of downloading (offline; this "
                             "machine's platform only)")
    parser.add_argument("--output-dir", default=str(ROOT / "dist"), help="where the zips go (default: dist/)")
    parser.add_argument("--single-zip", action="store_true", help="one zip for all platforms")
    parser.add_argument("--blender-ext", help="path to Blender's bl_pkg/cli/blender_ext.py")
    parser.add_argument("--pip-arg", action="append", help="an extra argument for pip download (repeatable)")
    parser.add_argument("--without", action="append", metavar="DIST",
                        help="leave a dependency out, with what only it needs (repeatable): to measure what it "
                             "adds (benchmarks/extension.py); the add-on then lacks what it brings")
    args = parser.parse_args(argv)
    for path in build(args):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
