"""Each captured release, with plain gradio_client: a model outside the start-up group is generated, the queue is
saved in that release's form, an unknown model is answered as that release answers it, and the last model is
kept across restarts (8.11 and later)."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import zipfile
from pathlib import Path

import av
import httpx
import pytest
from captures import load
from gradio_client import Client
from gradio_client.exceptions import AppError
from wangp_route import FLAVOURS, Route

from wan2gp_emulator import EmulatorServer

GENERIC_ERROR = "The upstream Gradio app has raised an exception but has not enabled verbose error reporting"
# A model outside the group the model dropdown shows at start-up (6.31's dropdown lists every model).
OTHER_MODEL = {"v6": "t2v", "v8": "t2v_2_2", "v9": "t2v_2_2", "v11": "t2v_2_2", "v12": "t2v_2_2"}


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_model_outside_the_startup_group_generates(request: pytest.FixtureRequest, flavour: str) -> None:
    server = request.getfixturevalue(f"emulator_{flavour}")
    model = OTHER_MODEL[flavour]
    client = Client(server.url, verbose=False)
    route = Route(client)
    start = next(c for c in client.config["components"] if c["props"].get("elem_id") == "model_list")
    assert flavour == "v6" or model not in [c[1] for c in start["props"]["choices"]]
    route.select_model(model)
    route.add(model, prompt="Another group's model", video_length=9, num_inference_steps=2, seed=7,
              resolution="832x480")
    result, statuses = route.run()
    assert statuses[-1].startswith("Total Generation Time: ")
    client.predict(api_name="/finalize_generation")
    files = route.gallery()
    assert len(files) == 1
    with av.open(files[0]) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (frames, stream.width, stream.height, float(stream.average_rate)) == (9, 832, 480, 16.0)
    session = server.sessions()[client.session_hash]
    assert session["model_type"] == model and Path(session["gallery"][0]).is_file()
    started = [e for e in server.events() if e["session"] == client.session_hash and e["event"] == "started"]
    assert [e["detail"].split(":")[0] for e in started] == [model]
    client.close()


def _answer(server: EmulatorServer, value: str) -> dict:
    """A save_queue_action answer, described like versions_model_switch.json describes the real ones."""
    if value == "":
        return {"value": ""}
    if value.startswith("{"):
        link = json.loads(value)
        assert link["filename"] == "queue.zip" and re.fullmatch(r"/wangp_api/download/[0-9a-f]+", link["url"])
        first = httpx.get(server.url.rstrip("/") + link["url"])
        second = httpx.get(server.url.rstrip("/") + link["url"])
        download = {"status": first.status_code, "content_type": first.headers["content-type"],
                    "content_disposition": first.headers["content-disposition"]}
        data, extra = first.content, {"kind": "download link (JSON text)", "download": download,
                                      "second_download_status": second.status_code}
    else:
        data, extra = base64.b64decode(value), {"kind": "inline base64 zip"}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        tasks = json.loads(zf.read("queue.json"))
    return {**extra, "n_tasks": len(tasks), "keys": sorted(tasks[0]["params"]),
            "prompts": [t["params"]["prompt"] for t in tasks]}


def _captured(record: dict) -> dict:
    if "kind" not in record:
        return {"value": record["value"]}
    out = {"kind": record["kind"], "n_tasks": record["zip"]["queue_json"]["n_tasks"]}
    if "download" in record:
        out.update(download=record["download"], second_download_status=record["second_download_status"])
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_save_queue_action_answers_like_the_capture(request: pytest.FixtureRequest, flavour: str) -> None:
    """0, 1 and 2 tasks waiting, 1 running, 1 running + 1 waiting, after Clear Queue: the capture's forms."""
    server = request.getfixturevalue(f"emulator_{flavour}")
    record = load("versions_model_switch.json")[FLAVOURS[flavour]]
    keys = sorted(next(a["zip"]["queue_json"]["param_keys_task0"]
                       for part in ("save_queue_action", "save_queue_action_running")
                       for a in record[part]["answers"].values()
                       if "param_keys_task0" in a.get("zip", {}).get("queue_json", {})))
    route = Route(Client(server.url, verbose=False))
    route.select_model("t2v_1.3B")

    def check(part: str, label: str, *, toasts: bool = True) -> None:
        """The answer; its gr.Info toast too when no other job of the session reads its event stream."""
        real = record[part]["answers"][label]
        if toasts:
            done, logs = route.call_logged("save_queue_action")
            value = done["output"]["data"][0]
            assert [list(log) for log in logs] == (real.get("info_log") or []), label
        else:
            value = route.client.predict(api_name="/save_queue_action")
        mine = _answer(server, value)
        assert {k: v for k, v in mine.items() if k not in ("keys", "prompts")} == _captured(real), label
        if "keys" in mine:
            assert mine["keys"] == keys, label

    check("save_queue_action", "0 tasks")
    route.add("t2v_1.3B", prompt="C1 queue probe task one", video_length=17, num_inference_steps=4, seed=101)
    check("save_queue_action", "1 task waiting")
    route.add("t2v_1.3B", prompt="C1 queue probe task two", video_length=17, num_inference_steps=4, seed=102)
    check("save_queue_action", "2 tasks waiting")
    route.client.predict(api_name="/clear_queue_action")
    check("save_queue_action", "after clear_queue_action")

    route.add("t2v_1.3B", prompt="C1 running queue task one [[slow]]", video_length=17, num_inference_steps=40)
    route.client.predict(api_name="/activate_status")
    job = route.client.submit(api_name="/process_tasks")
    wait_for(lambda: any(e["event"] == "step" and e["session"] == route.client.session_hash
                         for e in server.events()))
    check("save_queue_action_running", "1 task running", toasts=False)
    route.add("t2v_1.3B", prompt="C1 running queue task two", video_length=17, num_inference_steps=4)
    check("save_queue_action_running", "2 tasks (1 running, 1 waiting)", toasts=False)
    route.client.predict(api_name="/clear_queue_action")
    job.result(timeout=30)
    check("save_queue_action_running", "after clear_queue_action")
    route.client.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_unknown_model_is_answered_like_the_release(request: pytest.FixtureRequest, flavour: str) -> None:
    """6.31 and 8.11: gradio's choice check refuses it. 9.81-12.60: the first switch step accepts it (WanGP
    adds it to the lists) and the second fails with a generic error (an AttributeError in WanGP)."""
    server = request.getfixturevalue(f"emulator_{flavour}")
    client = Client(server.url, verbose=False)
    endpoints = load("versions_model_switch.json")[FLAVOURS[flavour]]["switch_endpoints"]
    if "goto_model_type_with_filter" in endpoints:
        first, second = "goto_model_type_with_filter", "change_model_from_target"
    elif "goto_model_type" in endpoints:
        first, second = "goto_model_type", "change_model"
    else:
        with pytest.raises(AppError, match=re.escape("Value: no_such_model is not in the list of choices")):
            client.predict("no_such_model", api_name="/change_model")
        first = second = None
    if first is not None:
        updates = client.predict("no_such_model", api_name=f"/{first}")
        assert updates[2]["value"] == "no_such_model"
        with pytest.raises(AppError, match=GENERIC_ERROR):
            client.predict("no_such_model", api_name=f"/{second}")
    client.close()


@pytest.mark.parametrize("flavour", ["v8", "v9", "v12"])
def test_the_last_model_is_kept_across_restarts(flavour: str, tmp_path: Path) -> None:
    """change_model records last_model_type in wgp_config.json; at start-up the dropdowns show its group."""
    state_dir = tmp_path / "state"
    with EmulatorServer(flavour, step_seconds=0.02, output_dir=tmp_path / "out", state_dir=state_dir) as server:
        route = Route(Client(server.url, verbose=False))
        route.select_model("t2v_2_2")
        route.client.close()
    assert json.loads((state_dir / "wgp_config.json").read_text())["last_model_type"] == "t2v_2_2"
    with EmulatorServer(flavour, step_seconds=0.02, output_dir=tmp_path / "out", state_dir=state_dir) as server:
        client = Client(server.url, verbose=False)
        dropdowns = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
        assert dropdowns["family_list"]["value"] == "wan2_2"
        assert dropdowns["model_list"]["value"] == "t2v_2_2"
        if flavour != "v8":
            assert dropdowns["model_base_types_list"]["value"] == "t2v_2_2"
        # A new session starts on that model: its form can be used for it straight away.
        route = Route(client)
        route.add("t2v_2_2", prompt="after the restart", video_length=5, num_inference_steps=1)
        assert server.sessions()[client.session_hash]["queue"][0]["model_type"] == "t2v_2_2"
        route.client.predict(api_name="/clear_queue_action")
        client.close()


def test_a_631_server_does_not_record_the_model(tmp_path: Path) -> None:
    """WanGP 6.31's change_model writes no wgp_config.json: every start shows t2v_1.3B."""
    (tmp_path / "wgp_config.json").write_text(json.dumps({"last_model_type": "t2v"}))  # a later release's file
    with EmulatorServer("v6", step_seconds=0.02, output_dir=tmp_path / "out", state_dir=tmp_path) as server:
        client = Client(server.url, verbose=False)
        model_list = next(c for c in client.config["components"] if c["props"].get("elem_id") == "model_list")
        assert model_list["props"]["value"] == "t2v_1.3B"
        client.predict("i2v", api_name="/change_model")
        client.close()
    assert json.loads((tmp_path / "wgp_config.json").read_text()) == {"last_model_type": "t2v"}
