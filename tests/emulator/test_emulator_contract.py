"""The emulator's API description against the captured real one (../shared/wan2gp-real), for both flavours."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from wangp_route import Route, base_name

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "wan2gp-real"
PREFIX = {"v12": "head-2026-08", "v6": "2025-06"}
VERSION = {"v12": "12.60", "v6": "6.31"}

# Endpoints a client needs (issue 2, "API fidelity"), per flavour. Roles resolved through /config are marked.
V12_ENDPOINTS = [
    "goto_model_type_with_filter", "change_model_from_target", "fill_inputs@chain", "validate_wizard_prompt@chain",
    "save_inputs@chain", "process_prompt_and_add_tasks", "activate_status", "process_tasks",
    "refresh_status_async", "refresh_gallery", "finalize_generation", "abort_generation",
    "abort_generation@client_id", "clear_queue_action", "save_queue_action", "export_settings",
    "load_settings_from_file", "pause_generation", "resume_generation",
]
V6_ENDPOINTS = [
    "change_model", "fill_inputs@chain", "validate_wizard_prompt@chain", "save_inputs@chain",
    "process_prompt_and_add_tasks", "process_tasks", "refresh_status_async", "refresh_gallery",
    "finalize_generation", "abort_generation", "clear_queue_action", "save_queue_action", "activate_status",
    "export_settings", "load_settings_from_file",
]
# The real servers' chain numbers (reference §4): the emulator must not copy them.
REAL_CHAIN = {"v12": ("validate_wizard_prompt_15", "save_inputs_15"), "v6": ("validate_wizard_prompt_7",
                                                                              "save_inputs_5")}

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/wan2gp-real is not present")


def _load(flavour: str, kind: str) -> dict:
    return json.loads((REAL / f"{PREFIX[flavour]}_{kind}.json").read_text())


class Description:
    """An API description (view_api dict + /config) with the role resolution of the reference."""

    def __init__(self, view: dict, config: dict, flavour: str) -> None:
        self.view, self.config, self.flavour = view, config, flavour
        self.deps = {d["id"]: d for d in config["dependencies"]}
        self.by_name = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    def resolve(self, role: str) -> str:
        name, _, how = role.partition("@")
        if how == "client_id":
            return next(n.lstrip("/") for n, e in self.view.items() if base_name(n.lstrip("/")) == name
                        and [p["parameter_name"] for p in e["parameters"]] == ["client_id"])
        if how == "chain":
            save = self.deps[self.by_name["process_prompt_and_add_tasks"]["trigger_after"]]
            if name == "save_inputs":
                return save["api_name"]
            if name == "validate_wizard_prompt":
                return self.deps[save["trigger_after"]]["api_name"]
            change = self.by_name["change_model" if self.flavour == "v6" else "change_model_from_target"]
            return next(d["api_name"] for d in self.config["dependencies"]
                        if d.get("trigger_after") == change["id"] and base_name(d["api_name"]) == name)
        return name


def _python_type(param: dict) -> str:
    text = param["python_type"]["type"]
    # pydantic >= 2.11 marks FileData's free-form "meta" object with additionalProperties, which
    # gradio_client prints as dict(str, Any); the capture's pydantic printed dict(). Same type.
    text = text.replace("dict(str, Any)", "dict()")
    if param["component"] in ("Dropdown", "Radio") and "Literal[" in text:
        # Model-dependent choices (model list, resolutions, presets): compare the shape only.
        text = re.sub(r"Literal\[[^\]]*\]", "Literal[...]", text)
    return text


@pytest.fixture(scope="module")
def descriptions(emulator_v12, emulator_v6) -> dict:
    out = {}
    for flavour, server in (("v12", emulator_v12), ("v6", emulator_v6)):
        client = Client(server.url, verbose=False)
        view = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        out[flavour] = {
            "emulator": Description(view, client.config, flavour),
            "real": Description(_load(flavour, "view_api")["named_endpoints"], _load(flavour, "config"), flavour),
        }
        client.close()
    return out


@pytest.mark.parametrize(("flavour", "role"), [("v12", r) for r in V12_ENDPOINTS] + [("v6", r) for r in V6_ENDPOINTS])
def test_endpoint_matches_the_real_one(descriptions: dict, flavour: str, role: str) -> None:
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    emu_name, real_name = emu.resolve(role), real.resolve(role)
    mine, theirs = emu.view[f"/{emu_name}"], real.view[f"/{real_name}"]
    assert [p["parameter_name"] for p in mine["parameters"]] == [p["parameter_name"] for p in theirs["parameters"]]
    assert [_python_type(p) for p in mine["parameters"]] == [_python_type(p) for p in theirs["parameters"]]
    assert [p["component"] for p in mine["parameters"]] == [p["component"] for p in theirs["parameters"]]
    assert ([(p["parameter_has_default"], p["parameter_default"]) for p in mine["parameters"]]
            == [(p["parameter_has_default"], p["parameter_default"]) for p in theirs["parameters"]])
    assert [r["component"] for r in mine["returns"]] == [r["component"] for r in theirs["returns"]]
    assert len(mine["returns"]) == len(theirs["returns"])


def test_save_inputs_has_the_real_parameter_counts(descriptions: dict) -> None:
    for flavour, count in (("v12", 129), ("v6", 51)):
        emu = descriptions[flavour]["emulator"]
        assert len(emu.view[f"/{emu.resolve('save_inputs@chain')}"]["parameters"]) == count
    emu = descriptions["v12"]["emulator"]
    assert len(emu.view[f"/{emu.resolve('fill_inputs@chain')}"]["returns"]) == 182
    assert len(descriptions["v6"]["emulator"].view[
        f"/{descriptions['v6']['emulator'].resolve('fill_inputs@chain')}"]["returns"]) == 73


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_chain_numbers_differ_from_the_real_server_and_decoys_exist(descriptions: dict, flavour: str) -> None:
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    chain = (emu.resolve("validate_wizard_prompt@chain"), emu.resolve("save_inputs@chain"))
    assert (real.resolve("validate_wizard_prompt@chain"), real.resolve("save_inputs@chain")) == REAL_CHAIN[flavour]
    assert chain[0] != REAL_CHAIN[flavour][0] and chain[1] != REAL_CHAIN[flavour][1]
    # A client hard-coding the real numbers does not reach the chain's save_inputs with target "state".
    real_save = emu.by_name.get(REAL_CHAIN[flavour][1])
    if real_save is not None:
        default_target = emu.view[f"/{real_save['api_name']}"]["parameters"][0]["parameter_default"]
        assert default_target != "state" or real_save["api_name"] != chain[1]
    names = list(emu.by_name)
    saves = [n for n in names if base_name(n) == "save_inputs"]
    validates = [n for n in names if base_name(n) == "validate_wizard_prompt"]
    fills = [n for n in names if base_name(n) == "fill_inputs"]
    assert len(saves) >= 4 and len(validates) >= 4 and len(fills) >= 2
    targets = {emu.view[f"/{n}"]["parameters"][0]["parameter_default"] for n in saves}
    assert targets == {"state", "settings"}  # decoys write the model's default settings, not the state
    # Decoy validate_wizard_prompt endpoints are bound to other triggers than the chain's.
    chain_trigger = emu.by_name[chain[0]]["targets"]
    assert any(emu.by_name[n]["targets"] != chain_trigger for n in validates if n != chain[0])
    if flavour == "v12":
        assert emu.resolve("abort_generation@client_id") != real.resolve("abort_generation@client_id")


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_chain_is_wired_like_the_real_generate_button(descriptions: dict, flavour: str) -> None:
    """Follow trigger_after from the chain's validate step: same sequence of function names as the real UI."""
    def sequence(desc: Description) -> list[str]:
        start = desc.by_name[desc.resolve("validate_wizard_prompt@chain")]
        if flavour == "v12":  # the Generate button's chain is the one that reaches process_tasks
            start = desc.deps[desc.deps[desc.by_name["process_tasks"]["trigger_after"]]["trigger_after"]]
            while start.get("trigger_after") is not None:
                start = desc.deps[start["trigger_after"]]
        out, current = [], start
        while current is not None:
            out.append(base_name(current["api_name"]))
            current = next((d for d in desc.config["dependencies"] if d.get("trigger_after") == current["id"]),
                           None)
        return out

    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    assert sequence(emu) == sequence(real)
    assert "process_tasks" in sequence(emu)


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_header_and_title_carry_the_version(descriptions: dict, flavour: str) -> None:
    config = descriptions[flavour]["emulator"].config
    assert config["title"] == "WanGP"
    first_markdown = next(c for c in config["components"] if c["type"] == "markdown")
    match = re.search(r"Wan\s*(?:<SUP[^>]*>\s*)?GP\s*(?:</SUP>)?\s*v(\d+(?:\.\d+)*)", first_markdown["props"]["value"])
    assert match and match.group(1) == VERSION[flavour]
    real_header = next(c for c in _load(flavour, "config")["components"] if c["id"] == 1)["props"]["value"]
    assert first_markdown["props"]["value"] == real_header


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_save_inputs_takes_the_fill_inputs_components(descriptions: dict, flavour: str) -> None:
    """A client maps fill_inputs' values to save_inputs' parameters through component ids, as on the real one."""
    for side in ("emulator", "real"):
        desc = descriptions[flavour][side]
        save = desc.by_name[desc.resolve("save_inputs@chain")]
        fill = desc.by_name[desc.resolve("fill_inputs@chain")]
        outsiders = [i for i in save["inputs"] if i not in fill["outputs"]]
        comps = {c["id"]: c for c in desc.config["components"]}
        assert len(outsiders) == 1, side
        assert comps[outsiders[0]]["type"] == "textbox" and comps[outsiders[0]]["props"]["value"] == "state"


def test_fill_inputs_updates_follow_the_model(emulator_v12) -> None:
    client = Client(emulator_v12.url, verbose=False)
    route = Route(client, "v12")
    by_param = {}
    for model in ("t2v_1.3B", "ltx2_22B_distilled"):
        route.select_model(model)
        form = route.fill_values()
        names = dict(zip([i for i in route.save["inputs"] if not route.comps[i].get("skip_api")],
                         [p["parameter_name"] for p in route.view[f"/{route.save['api_name']}"]["parameters"]],
                         strict=True))
        by_param[model] = {names[c]: v for c, v in form.items() if c in names}
    frames = by_param["t2v_1.3B"]["video_length"]
    assert (frames["minimum"], frames["step"], frames["maximum"], frames["value"]) == (5, 4, 337, 81)
    assert frames["label"].startswith("Number of frames (16 frames = 1s)")
    ltx = by_param["ltx2_22B_distilled"]["video_length"]
    assert (ltx["minimum"], ltx["step"]) == (17, 8) and ltx["label"].startswith("Number of frames (24 frames = 1s)")
    resolution = by_param["t2v_1.3B"]["resolution"]
    assert resolution["value"] == "832x480" and ["832x480 (16:9)", "832x480"] in resolution["choices"]
    assert by_param["t2v_1.3B"]["num_inference_steps"]["value"] == 30
    client.close()


def test_dropdown_choices_are_per_session(emulator_v12) -> None:
    """A model outside the session's choices is rejected by gradio until goto_model_type_with_filter ran."""
    client = Client(emulator_v12.url, verbose=False)
    with pytest.raises(AppError, match=re.escape(
            "Value: t2v_1.3B is not in the list of choices: ['t2v', 'moviigen', 't2v_fusionix', 't2v_sf']")):
        client.predict(0, "t2v_1.3B", api_name="/process_prompt_and_add_tasks")
    client.predict("t2v_1.3B", api_name="/goto_model_type_with_filter")
    # Accepted by gradio now; WanGP itself refuses it while the session's model is still "t2v".
    with pytest.raises(AppError, match="Webform can not be used as the App has been restarted"):
        client.predict(0, "t2v_1.3B", api_name="/process_prompt_and_add_tasks")
    other = Client(emulator_v12.url, verbose=False)  # another session still has the startup choices
    with pytest.raises(AppError, match="is not in the list of choices"):
        other.predict(0, "t2v_1.3B", api_name="/process_prompt_and_add_tasks")
    client.close()
    other.close()
