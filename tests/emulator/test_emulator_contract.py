"""The emulator's API description against the captured real one (``tests/captures``), for every release."""

from __future__ import annotations

import re
import uuid

import pytest
from captures import load
from gradio_client import Client
from gradio_client.exceptions import AppError
from wangp_route import FLAVOURS, Route, base_name, capture

# Endpoints a client needs (issue 2, "API fidelity"), by role; roles resolved through /config are marked. The
# optional ones exist only in some releases: the emulator must have them exactly where the capture has them.
ENDPOINTS = [
    "fill_inputs@chain", "validate_wizard_prompt@chain", "save_inputs@chain", "process_prompt_and_add_tasks",
    "activate_status", "process_tasks", "refresh_status_async", "refresh_gallery", "finalize_generation",
    "abort_generation", "clear_queue_action", "save_queue_action", "export_settings", "load_settings_from_file",
]
OPTIONAL = ["pause_generation", "resume_generation", "early_stop_generation", "abort_generation@client_id",
            "one_more_sample", "refresh_model_dropdowns"]


def switch_record(flavour: str) -> dict:
    return load("versions_model_switch.json")[FLAVOURS[flavour]]


def usable_switch_endpoints(flavour: str) -> dict[str, dict]:
    """The model-switch endpoints a gradio_client can call: no EventData, not the Edit tab's ``_N`` copy."""
    return {name: e for name, e in switch_record(flavour)["switch_endpoints"].items()
            if not e["collects_event_data"] and base_name(name) == name}


class Description:
    """An API description (view_api dict + /config) with the role resolution of the reference."""

    def __init__(self, view: dict, config: dict) -> None:
        self.view, self.config = view, config
        self.deps = {d["id"]: d for d in config["dependencies"]}
        self.by_name = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}
        self.comps = {c["id"]: c for c in config["components"]}

    def has(self, role: str) -> bool:
        try:
            return f"/{self.resolve(role)}" in self.view
        except StopIteration:
            return False

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
            change = self.by_name.get("change_model_from_target") or self.by_name["change_model"]
            return next(d["api_name"] for d in self.config["dependencies"]
                        if d.get("trigger_after") == change["id"] and base_name(d["api_name"]) == name)
        return name

    def header(self) -> str:
        return next(c["props"]["value"] for c in self.config["components"]
                    if c["type"] == "markdown" and "GP</SUP>" in str(c["props"].get("value")))


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
def descriptions(request: pytest.FixtureRequest) -> dict:
    out = {}
    for flavour in FLAVOURS:
        client = Client(request.getfixturevalue(f"emulator_{flavour}").url, verbose=False)
        view = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        out[flavour] = {"emulator": Description(view, client.config),
                        "real": Description(capture(flavour, "view_api")["named_endpoints"],
                                            capture(flavour, "config"))}
        client.close()
    return out


def _same_endpoint(mine: dict, theirs: dict) -> None:
    assert [p["parameter_name"] for p in mine["parameters"]] == [p["parameter_name"] for p in theirs["parameters"]]
    assert [_python_type(p) for p in mine["parameters"]] == [_python_type(p) for p in theirs["parameters"]]
    assert [p["component"] for p in mine["parameters"]] == [p["component"] for p in theirs["parameters"]]
    assert ([(p["parameter_has_default"], p["parameter_default"]) for p in mine["parameters"]]
            == [(p["parameter_has_default"], p["parameter_default"]) for p in theirs["parameters"]])
    assert [r["component"] for r in mine["returns"]] == [r["component"] for r in theirs["returns"]]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_endpoints_match_the_real_ones(descriptions: dict, flavour: str) -> None:
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    roles = ENDPOINTS + [role for role in OPTIONAL if real.has(role)]
    assert not [role for role in OPTIONAL if emu.has(role) and not real.has(role)]
    for role in roles:
        mine, theirs = emu.view[f"/{emu.resolve(role)}"], real.view[f"/{real.resolve(role)}"]
        try:
            _same_endpoint(mine, theirs)
        except AssertionError as exc:
            raise AssertionError(f"{flavour} {role}: {exc}") from exc


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_model_switch_endpoints_match_the_capture(descriptions: dict, flavour: str) -> None:
    """versions_model_switch.json's switch_endpoints: parameters, returns, state inputs, trigger, components."""
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    roles = {name: c.get("elem_id") for name, c in switch_record(flavour)["switch_components"].items()}
    for name, record in usable_switch_endpoints(flavour).items():
        dep = emu.by_name[name]
        endpoint = emu.view[f"/{name}"]
        assert [p["parameter_name"] for p in endpoint["parameters"]] == record["api_parameters"], name
        assert [r["component"] for r in endpoint["returns"]] == [r.split(":")[0] for r in record["api_returns"]]
        assert sum(1 for c in dep["inputs"] if emu.comps[c].get("skip_api")) == record["n_state_inputs"]
        assert dep["queue"] == record["queue"]
        assert [t[1] for t in dep["targets"]] == [t["event"] for t in record["triggers"]], name
        for cids, roles_used in ((dep["inputs"], record["inputs"]), (dep["outputs"], record["outputs"])):
            visible = [c for c in cids if not emu.comps[c].get("skip_api")]
            assert len(visible) == len(roles_used), name
            for cid, role in zip(visible, roles_used, strict=True):
                if roles.get(role):
                    assert emu.comps[cid]["props"].get("elem_id") == roles[role], (name, role)
        _same_endpoint(endpoint, real.view[f"/{name}"])
    # The switch sequence the probe found working exists; 12.60 has no change_model any more.
    assert ("/change_model" in emu.view) == ("/change_model" in real.view)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_startup_dropdowns_match_a_fresh_server(descriptions: dict, flavour: str) -> None:
    emu = descriptions[flavour]["emulator"]
    for name, real in switch_record(flavour)["startup_dropdowns"].items():
        mine = next(c for c in emu.config["components"] if c["props"].get("elem_id") == real["elem_id"])
        assert mine["props"]["value"] == real["value"], name
        assert [list(c) for c in mine["props"]["choices"]] == [list(c) for c in real["choices"]], name
        assert mine["props"].get("visible") == real["visible"], name
        assert mine["props"].get("interactive") == real["interactive"], name


def _updates(result) -> list[dict]:
    items = result if isinstance(result, (list, tuple)) else [result]
    return [{key: value for key, value in item.items() if key in ("value", "visible", "interactive")}
            | ({"choice_values": [c[1] for c in item["choices"]]} if "choices" in item else {})
            for item in items]


def _captured_updates(result) -> list[dict]:
    items = result if isinstance(result, list) else [result]
    return [{key: value for key, value in item["update"].items() if key != "n_choices"} for item in items]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_switch_probe_is_reproduced(request: pytest.FixtureRequest, flavour: str) -> None:
    """Each API switch sequence the probe tried in a fresh session: same success or refusal, same dropdown
    updates (values, visibility, choices), same number of form values from fill_inputs."""
    client = Client(request.getfixturevalue(f"emulator_{flavour}").url, verbose=False)
    for probe in switch_record(flavour)["api_switch_probe"]:
        client.session_hash = uuid.uuid4().hex  # a fresh session, as the probe used a new Client each time
        for call in probe["calls"]:
            where = f"{probe['model']}: {probe['sequence']}: {call['api_name']}"
            if "args" not in call:  # the fill_inputs step after the switch
                assert len(client.predict(api_name=call["api_name"])) == call["n_outputs"], where
                continue
            if not call["ok"]:
                with pytest.raises(AppError) as refused:
                    client.predict(*call["args"], api_name=call["api_name"])
                assert f"AppError: {refused.value}".startswith(call["error"]), where
                continue
            result = client.predict(*call["args"], api_name=call["api_name"])
            captured = call["result"]
            if isinstance(captured, list) and captured and isinstance(captured[0], dict):
                assert _updates(result) == _captured_updates(captured), where
            elif isinstance(captured, dict) and "update" in captured:
                assert _updates(result) == _captured_updates(captured), where
            else:  # change_model's header (the description text is the emulator's own)
                assert isinstance(result, (str, tuple)), where
    client.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_save_inputs_has_the_real_parameter_counts(descriptions: dict, flavour: str) -> None:
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    for role, side in (("save_inputs@chain", "parameters"), ("fill_inputs@chain", "returns")):
        assert len(emu.view[f"/{emu.resolve(role)}"][side]) == len(real.view[f"/{real.resolve(role)}"][side])
    assert len(emu.view[f"/{emu.resolve('save_inputs@chain')}"]["parameters"]) == \
        {"v6": 51, "v8": 82, "v9": 91, "v11": 110, "v12": 129}[flavour]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_chain_numbers_differ_from_the_real_server_and_decoys_exist(descriptions: dict, flavour: str) -> None:
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    chain = (emu.resolve("validate_wizard_prompt@chain"), emu.resolve("save_inputs@chain"))
    real_chain = (real.resolve("validate_wizard_prompt@chain"), real.resolve("save_inputs@chain"))
    assert chain[0] != real_chain[0] and chain[1] != real_chain[1]
    # A client hard-coding the real numbers does not reach the chain's save_inputs with target "state".
    real_save = emu.by_name.get(real_chain[1])
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
    if real.has("abort_generation@client_id"):
        assert emu.resolve("abort_generation@client_id") != real.resolve("abort_generation@client_id")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_chain_is_wired_like_the_real_generate_button(descriptions: dict, flavour: str) -> None:
    """Follow trigger_after from the chain that reaches process_tasks: same function names as the real UI."""
    def sequence(desc: Description) -> list[str]:
        start = desc.deps[desc.by_name["process_tasks"]["trigger_after"]]
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


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_header_and_title_carry_the_version(descriptions: dict, flavour: str) -> None:
    emu, real = descriptions[flavour]["emulator"], descriptions[flavour]["real"]
    assert emu.config["title"] == "WanGP"
    match = re.search(r"Wan\s*(?:<SUP[^>]*>\s*)?GP\s*(?:</SUP>)?\s*v(\d+(?:\.\d+)*)", emu.header())
    assert match and match.group(1) == FLAVOURS[flavour]
    assert emu.header() == real.header()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_save_inputs_takes_the_fill_inputs_components(descriptions: dict, flavour: str) -> None:
    """A client maps fill_inputs' values to save_inputs' parameters through component ids, as on the real one."""
    outsiders = {}
    for side in ("emulator", "real"):
        desc = descriptions[flavour][side]
        save = desc.by_name[desc.resolve("save_inputs@chain")]
        fill = desc.by_name[desc.resolve("fill_inputs@chain")]
        visible = [i for i in save["inputs"] if not desc.comps[i].get("skip_api")]
        outsiders[side] = [(desc.comps[i]["type"], desc.comps[i]["props"].get("value"))
                           for i in visible if i not in fill["outputs"]]
    assert outsiders["emulator"] == outsiders["real"]
    assert ("textbox", "state") in outsiders["real"]  # the target field of the chain's save_inputs


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_fill_inputs_updates_follow_the_model(request: pytest.FixtureRequest, flavour: str) -> None:
    client = Client(request.getfixturevalue(f"emulator_{flavour}").url, verbose=False)
    route = Route(client)
    by_param = {}
    models = ("t2v_1.3B", "ltxv_13B" if flavour == "v6" else "ltxv_distilled" if flavour == "v12" else "ltxv_13B")
    for model in models:
        route.select_model(model)
        form = route.fill_values()
        names = dict(zip([i for i in route.save["inputs"] if not route.comps[i].get("skip_api")],
                         [p["parameter_name"] for p in route.view[f"/{route.save['api_name']}"]["parameters"]],
                         strict=True))
        by_param[model] = {names[c]: v for c, v in form.items() if c in names}
    frames = by_param["t2v_1.3B"]["video_length"]
    assert (frames["minimum"], frames["step"], frames["value"]) == (5, 4, 81)
    assert frames["label"].startswith("Number of frames (16")
    ltx = by_param[models[1]]["video_length"]
    assert (ltx["minimum"], ltx["step"]) == (17, 8) and ltx["label"].startswith("Number of frames (30")
    resolution = by_param["t2v_1.3B"]["resolution"]
    assert resolution["value"] == "832x480" and "832x480" in [c[1] for c in resolution["choices"]]
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


def test_the_v12_config_and_api_description_have_the_real_size_and_shape(make_emulator) -> None:
    """With ``real_size``, 12.60 is served whole (the rest of its UI inert and hidden): connecting costs what it
    would on the real server."""
    emulator_v12 = make_emulator("v12", real_size=True)
    import collections
    import json

    import httpx

    real_config = load("head-2026-08_config.json")
    real_info = load("head-2026-08_gradio_api_info.json")
    config_body = httpx.get(emulator_v12.url + "config", timeout=60).content
    info = httpx.get(emulator_v12.url + "gradio_api/info", timeout=60).json()
    config = json.loads(config_body)
    # the capture's note gives what it left out: the UI's own CSS and JS, and long help texts
    stripped = sum(int(n) for n in re.findall(r"\((\d+) chars\)", real_config["_capture_note"] + "".join(
        str(c["props"].get("value")) for c in real_config["components"] if "stripped" in str(c["props"].get("value")))))
    real_bytes = len(json.dumps(real_config)) + stripped
    assert 0.9 < len(config_body) / real_bytes < 1.1, (len(config_body), real_bytes)
    assert 0.9 < len(json.dumps(info)) / len(json.dumps(real_info)) < 1.1
    assert abs(len(config["dependencies"]) - len(real_config["dependencies"])) <= 2
    assert abs(len(info["named_endpoints"]) - len(real_info["named_endpoints"])) <= 5

    from wan2gp_emulator._app import STAND_INS

    def kinds(components: list[dict]) -> collections.Counter:  # layout wrappers aside (gradio adds its own)
        return collections.Counter(STAND_INS.get(c["type"], c["type"]) for c in components
                                   if c["type"] not in ("form", "tabs"))

    ours, real = kinds(config["components"]), kinds(real_config["components"])
    for kind, count in real.items():
        assert abs(ours[kind] - count) <= max(2, count // 20), (kind, ours[kind], count)
    # the stand-ins are inert and say so: no client takes one for a step of WanGP's chain
    inert = [name for name in info["named_endpoints"] if name.startswith("/inert_")]
    assert len(inert) > 500
