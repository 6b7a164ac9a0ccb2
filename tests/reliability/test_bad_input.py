"""Bad input: a corpus of invalid settings, each refused with its own specific error, and nothing sent.

"Nothing sent" is checked on the server: no task is queued and no generation starts, whatever the corpus holds.
The model's rules (frame rule, resolutions, ranges) come from the server's own form, read once up front.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import make_client
from PIL import Image

from blender_movie_director.backend.wan2gp import Wan2GPClient, Wan2GPValidationError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("inputs")
    png = base / "start.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(png)
    empty = base / "empty.png"
    empty.write_bytes(b"")
    fake = base / "fake.png"
    fake.write_text("this is not an image")
    text = base / "notes.txt"
    text.write_text("hello")
    folder = base / "folder.png"
    folder.mkdir()
    return {"png": png, "empty": empty, "fake": fake, "text": text, "folder": folder,
            "missing": base / "missing.png"}


@pytest.fixture(scope="module")
def client(emulator_v12, tmp_path_factory: pytest.TempPathFactory):
    with make_client(emulator_v12.url, tmp_path_factory.mktemp("shots")) as client:
        for model in ("t2v_1.3B", "i2v"):
            client.get_model_info(model)  # the server's form: its rules are then checked at submit()
        yield client


def _corpus(files: dict[str, Path]) -> list[tuple[str, dict, str, str | None]]:
    """(case id, settings, the error's words, the field named: as the caller named it, alias or not)"""
    f = files
    return [
        ("empty prompt", {"prompt": ""}, "prompt is empty", "prompt"),
        ("blank prompt", {"prompt": " \n\t "}, "prompt is empty", "prompt"),
        ("prompt not text", {"prompt": 123}, "valid string", "prompt"),
        ("prompt missing", {"frames": 5}, "Field required", "prompt"),
        ("huge prompt", {"prompt": "x" * 20_001}, "longer than 20,000", "prompt"),
        ("frames off the 4n+1 rule", {"frames": 18}, "does not fit t2v_1.3B .*use 17 or 21", "video_length"),
        ("frames over the model's maximum", {"frames": 1001}, "does not fit", "video_length"),
        ("zero frames", {"frames": 0}, "greater than or equal to 1", "frames"),
        ("negative frames", {"frames": -5}, "greater than or equal to 1", "frames"),
        ("absurd frames", {"frames": 10**9}, "less than or equal to 10000", "frames"),
        ("fractional frames", {"frames": 3.5}, "valid integer", "frames"),
        ("frames as words", {"frames": "many"}, "valid integer", "frames"),
        ("frames and seconds", {"frames": 17, "seconds": 2}, "either frames", None),
        ("negative seconds", {"seconds": -1}, "greater than 0", "seconds"),
        ("infinite seconds", {"seconds": float("inf")}, "less than or equal to 600", "seconds"),
        ("zero steps", {"steps": 0}, "greater than or equal to 1", "steps"),
        ("steps over the form's range", {"steps": 999}, "outside what t2v_1.3B takes", "num_inference_steps"),
        ("absurd steps", {"steps": 10**6}, "less than or equal to 1000", "steps"),
        ("seed below -1", {"seed": -2}, "greater than or equal to -1", "seed"),
        ("seed too large", {"seed": 2**40}, "less than or equal to", "seed"),
        ("seed as words", {"seed": "lucky"}, "valid integer", "seed"),
        ("guidance not a number", {"guidance": float("nan")}, "guidance: .*(finite|less|greater)", "guidance"),
        ("negative guidance", {"guidance": -1}, "greater than or equal to 0", "guidance"),
        ("flow shift too large", {"flow_shift": 101}, "less than or equal to 100", "flow_shift"),
        ("resolution the model doesn't take", {"resolution": "1000x1000"}, "does not take resolution 1000x1000",
         "resolution"),
        ("resolution that is not a size", {"resolution": "big"}, 'must look like "832x480"', "resolution"),
        ("resolution too small", {"resolution": "0x0"}, "greater than or equal to 64", "resolution"),
        ("unknown model", {"model": "t2v_13B"}, 'has no model .*did you mean "t2v_1.3B"', "model"),
        ("empty model", {"model": ""}, "at least 1 character", "model"),
        ("misspelt setting", {"stepz": 3}, 'unknown setting .*did you mean "steps"', "stepz"),
        ("misspelt WanGP setting", {"extra": {"num_inference_step": 3}}, 'did you mean "num_inference_steps"',
         "num_inference_step"),
        ("extra not a mapping", {"extra": "x"}, "valid dictionary", "extra"),
        ("loras not a list", {"loras": "x"}, "valid list", "loras"),
        ("repeat zero times", {"repeat_generation": 0}, "greater than or equal to 1", "repeat_generation"),
        ("client id too long", {"client_id": "c" * 201}, "at most 200 characters", "client_id"),
        ("start image missing", {"model": "i2v", "image_start": f["missing"]}, "file not found", "image_start"),
        ("start image is a folder", {"model": "i2v", "image_start": f["folder"]}, "is a folder", "image_start"),
        ("start image empty", {"model": "i2v", "image_start": f["empty"]}, "is empty", "image_start"),
        ("start image not an image name", {"model": "i2v", "image_start": f["text"]}, "is not an image file",
         "image_start"),
        ("start image not image data", {"model": "i2v", "image_start": f["fake"]}, "does not contain image data",
         "image_start"),
        ("video source not a video", {"video_source": f["png"]}, "is not a video file", "video_source"),
        ("image-to-video without a start image", {"model": "i2v", "frames": 9}, "give a start image",
         "image_start"),
        ("text-to-video given a start image", {"image_start": f["png"]}, "takes no start image", "image_start"),
        ("end image without a start image", {"model": "i2v", "image_end": f["png"]}, "needs image_start", None),
    ]


def test_every_bad_input_is_refused_with_its_own_error_and_nothing_is_sent(client, emulator_v12, files):
    before = len(emulator_v12.events())
    problems = []
    for case, settings, words, field in _corpus(files):
        if case != "prompt missing":
            settings = {"prompt": "a valid prompt", **settings}
        try:
            job = client.submit(**settings)
            job.result(timeout=30)  # only the unknown model needs the server's answer (it is asked, not sent)
        except Wan2GPValidationError as exc:
            if not re.search(words, str(exc)):
                problems.append(f"{case}: {exc!s} (expected /{words}/)")
            elif field is not None and exc.field != field:
                problems.append(f"{case}: field {exc.field!r} instead of {field!r}")
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            problems.append(f"{case}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{case}: accepted")
    assert not problems, "\n".join(problems)
    started = [e for e in emulator_v12.events()[before:] if e["event"] in ("queued", "started")]
    assert not started, started


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://127.0.0.1:7860", "http:// or https://"),
    ("abidlabs whisper", "not a server URL"),
    ("http://127.0.0.1:99999", "invalid port"),
    ("http://", "no host"),
])
def test_bad_server_addresses_are_refused_before_any_connection(url, words, tmp_path):
    with pytest.raises(Wan2GPValidationError, match=words):
        Wan2GPClient(url, output_dir=tmp_path)


def test_a_bare_host_and_port_means_http(tmp_path):
    # gradio_client would take a bare name for a Hugging Face Space and look it up on huggingface.co
    assert Wan2GPClient("127.0.0.1:7860", output_dir=tmp_path).settings.url == "http://127.0.0.1:7860"


_CLI_FLAGS = {"frames": "--frames", "seconds": "--seconds", "steps": "--steps", "seed": "--seed",
              "resolution": "--resolution", "model": "--model", "image_start": "--image-start",
              "image_end": "--image-end"}
_LIBRARY_NAMES = re.compile(r"\b(num_inference_steps|video_length|image_start|image_end|negative_prompt|model_type|"
                            r"list_models|resume_job|client\.\w+)\b")


def test_through_the_cli_every_bad_input_names_the_commands_own_flags(emulator_v12, files, capsys, tmp_path):
    """The same corpus through ``movie-director generate`` (every case the command's flags can express): refused
    with exit code 2, in words that name its flags, never the library's names."""
    from blender_movie_director.cli import main

    problems, tried = [], 0
    for case, settings, _words, _field in _corpus(files):
        flags = {k: v for k, v in settings.items() if k != "prompt"}
        if not set(flags) <= set(_CLI_FLAGS) or not isinstance(settings.get("prompt", ""), str):
            continue
        argv = ["generate"] + ([settings["prompt"]] if "prompt" in settings else ["a valid prompt"] * (
            case != "prompt missing"))
        for key, value in flags.items():
            argv += [_CLI_FLAGS[key], str(value)]
        tried += 1
        code = main([*argv, "--server", emulator_v12.url, "-o", str(tmp_path / "never.mp4")])
        err = capsys.readouterr().err
        ours = "\n".join(line for line in err.splitlines() if not line.startswith("[")) or err
        if code != 2:
            problems.append(f"{case}: exit {code}: {ours}")
        elif not re.search(r"--[a-z]|\bPROMPT\b", ours):
            problems.append(f"{case}: names none of the command's flags: {ours}")
        elif _LIBRARY_NAMES.search(ours):
            problems.append(f"{case}: speaks Python: {ours}")
    assert tried >= 25 and not problems, "\n".join(problems)
    assert not (tmp_path / "never.mp4").exists()
