"""Queue, abort, sessions, validation toasts, faults and settings files, as the real WanGP behaves."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from captures import load
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from wangp_route import Route

from wan2gp_emulator import EmulatorServer

HF_ERROR = ("An error happened while trying to locate the file on the Hub and we cannot find the requested files "
            "in the local cache. Please check your connection and try again or make sure your Internet connection "
            "is on.")
GENERIC_ERROR = "The upstream Gradio app has raised an exception but has not enabled verbose error reporting"


def connect(server: EmulatorServer, flavour: str, model: str = "t2v_1.3B") -> Route:
    route = Route(Client(server.url, verbose=False))
    route.select_model(model)
    return route


def session_events(server: EmulatorServer, route: Route) -> list[dict]:
    return [e for e in server.events() if e["session"] == route.client.session_hash]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_abort_stops_the_running_task_between_steps(request: pytest.FixtureRequest, flavour: str) -> None:
    server = request.getfixturevalue(f"emulator_{flavour}")
    route = connect(server, flavour)
    route.add("t2v_1.3B", prompt="Long one [[slow]]", video_length=9, num_inference_steps=20, seed=1)
    gallery_before = len(server.sessions()[route.client.session_hash]["gallery"])
    route.client.predict(api_name="/activate_status")
    job = route.client.submit(api_name="/process_tasks")
    wait_for(lambda: any(e["event"] == "step" for e in session_events(server, route)))
    route.client.predict(api_name="/abort_generation")
    job.result(timeout=30)
    events = session_events(server, route)
    aborted = [e for e in events if e["event"] == "aborted"]
    assert len(aborted) == 1 and aborted[0]["step"] < 20
    after = [e for e in events if e["event"] == "step" and e["t"] > aborted[0]["t"]]
    assert after == []
    assert not any(e["event"] == "completed" for e in events)
    route.client.predict(api_name="/finalize_generation")
    own = server.sessions()[route.client.session_hash]
    assert len(own["gallery"]) == gallery_before and own["queue"] == [] and not own["generating"]
    route.client.close()


def test_queue_management_by_client_id_idle_abort_and_clear(emulator_v12) -> None:
    route = connect(emulator_v12, "v12")
    session = route.client.session_hash
    # Idle abort on a session that never ran: queue[0] is removed, then KeyError('prompt_no') (generic error).
    route.add("t2v_1.3B", prompt="never run", video_length=5, num_inference_steps=1)
    with pytest.raises(AppError, match=GENERIC_ERROR):
        route.client.predict(api_name="/abort_generation")
    assert emulator_v12.sessions()[session]["queue"] == []
    # abort_generation_N(client_id) removes the queued task with that client_id.
    route.add("t2v_1.3B", prompt="first", video_length=5, num_inference_steps=1, client_id="job-a")
    html = route.add("t2v_1.3B", prompt="second", video_length=5, num_inference_steps=1, client_id="job-b")
    assert "second" in html["value"] and "Queue is empty." not in html["value"]
    assert route.abort_by_client and route.abort_by_client != "abort_generation_1"  # not the real number
    answer = route.client.predict("job-b", api_name=f"/{route.abort_by_client}")
    assert "Queue is empty." in answer["value"]
    assert [t["client_id"] for t in emulator_v12.sessions()[session]["queue"]] == ["job-a"]
    removed = [e for e in session_events(emulator_v12, route) if e["event"] == "removed"]
    assert [e["client_id"] for e in removed] == ["", "job-b"]
    # Clear Queue: gr.Info toast, empty Html, one "cleared" event per task.
    route.add("t2v_1.3B", prompt="third", video_length=5, num_inference_steps=1)
    done, logs = route.call_logged("clear_queue_action")
    assert "Queue is empty." in done["output"]["data"][0]["value"]
    assert logs == [("Queue cleared.", "info")]
    assert emulator_v12.sessions()[session]["queue"] == []
    assert [e["event"] for e in session_events(emulator_v12, route)][-2:] == ["cleared", "cleared"]
    route.client.close()


def test_sessions_are_isolated(emulator_v12) -> None:
    one = connect(emulator_v12, "v12", "t2v_1.3B")
    two = connect(emulator_v12, "v12", "ltx2_22B_distilled")
    one.add("t2v_1.3B", prompt="session one", video_length=5, num_inference_steps=1)
    sessions = emulator_v12.sessions()
    mine, theirs = sessions[one.client.session_hash], sessions[two.client.session_hash]
    assert (mine["model_type"], theirs["model_type"]) == ("t2v_1.3B", "ltx2_22B_distilled")
    assert [t["prompt"] for t in mine["queue"]] == ["session one"] and theirs["queue"] == []
    assert two.client.predict(api_name="/process_tasks") is not None  # nothing to do in session two
    one.run()
    sessions = emulator_v12.sessions()
    assert len(sessions[one.client.session_hash]["gallery"]) == 1
    assert sessions[two.client.session_hash]["gallery"] == []
    one.client.close()
    two.client.close()


VALIDATION_CASES = {
    "v12": [("t2v_1.3B", {"video_length": 18}, "The number of frames (18) is not supported"),
            ("t2v_1.3B", {"prompt": ""}, "Prompt cannot be empty."),
            ("i2v", {"image_prompt_type": "S"}, "You must provide a Start Image")],
    "v6": [("t2v_1.3B", {"video_length": 20}, "The number of frames (20) is not supported"),
           ("t2v_1.3B", {"prompt": ""}, "Prompt cannot be empty.")],
}


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_validation_problems_are_only_toasts(request: pytest.FixtureRequest, flavour: str) -> None:
    server = request.getfixturevalue(f"emulator_{flavour}")
    route = Route(Client(server.url, verbose=False))
    selected = None
    for model, overrides, message in VALIDATION_CASES[flavour]:
        if model != selected:
            route.select_model(model)
            form, selected = route.fill_values(), model
        args = route.save_args(form, **{"prompt": "valid prompt", **overrides})
        route.client.predict("off", "", args["prompt"], "", *[""] * 10, api_name=f"/{route.validate['api_name']}")
        route.client.predict(**args, api_name=f"/{route.save['api_name']}")
        extra = [0] if flavour == "v12" else []
        # No error: the problem is reported as a gr.Info toast (an SSE "log" message) only.
        done, logs = route.call_logged("process_prompt_and_add_tasks", *extra, model)
        assert done["success"]
        assert [level for _, level in logs] == ["info"] and message in logs[0][0], message
    assert server.sessions()[route.client.session_hash]["queue"] == []
    assert not any(e["event"] == "queued" for e in session_events(server, route))
    route.client.close()


def test_missing_weights_fails_with_the_hub_error(make_emulator) -> None:
    server = make_emulator("v12", missing_weights=True)
    route = connect(server, "v12")
    route.add("t2v_1.3B", prompt="no weights here\n\nqueued behind", video_length=5, num_inference_steps=2)
    route.client.predict(api_name="/activate_status")
    # Raw SSE to see the gr.Info before the error (no other job of this session may read the stream meanwhile).
    done, logs = route.call_logged("process_tasks")
    assert not done["success"] and done["output"]["error"] == HF_ERROR  # gradio_client: AppError(HF_ERROR)
    assert logs == [("Error Queue autosaved successfully to error_queue.zip", "info")]
    assert server.sessions()[route.client.session_hash]["queue"] == []
    # the worker's worker_ended races the error branch's failed and cleared: left out
    kinds = [e["event"] for e in session_events(server, route) if e["event"] != "worker_ended"]
    assert kinds[-2:] == ["failed", "cleared"] and "step" not in kinds
    gallery = route.client.predict(api_name="/finalize_generation")[1]
    assert gallery["value"] == []
    route.client.close()


def test_fail_marker_raises_and_clears_the_queue(emulator_v6) -> None:
    route = connect(emulator_v6, "v6")
    route.add("t2v_1.3B", prompt="this breaks [[fail]]", video_length=5, num_inference_steps=3)
    route.client.predict(api_name="/activate_status")
    with pytest.raises(AppError, match=r"\[\[fail\]\]"):
        route.client.predict(api_name="/process_tasks")
    assert emulator_v6.sessions()[route.client.session_hash]["queue"] == []
    assert [e["event"] for e in session_events(emulator_v6, route)][-1] == "failed"
    route.client.close()


def test_save_queue_serves_queue_zip_once(emulator_v12) -> None:
    route = connect(emulator_v12, "v12")
    assert route.client.predict(api_name="/save_queue_action") == ""  # empty queue: nothing to save
    route.add("t2v_1.3B", prompt="A red fox running through snow", video_length=17, num_inference_steps=4,
              seed=42, client_id="q-1")
    route.add("t2v_1.3B", prompt="A second fox", video_length=17, num_inference_steps=4, seed=43)
    answer = json.loads(route.client.predict(api_name="/save_queue_action"))
    assert answer["filename"] == "queue.zip" and answer["url"].startswith("/wangp_api/download/")
    url = emulator_v12.url.rstrip("/") + answer["url"]
    response = httpx.get(url)
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        manifest = json.loads(zf.read("queue.json"))
    assert [t["params"]["prompt"] for t in manifest] == ["A red fox running through snow", "A second fox"]
    params = manifest[0]["params"]
    assert (params["video_length"], params["num_inference_steps"], params["seed"], params["client_id"]) == \
        (17, 4, 42, "q-1")
    assert params["model_type"] == params["base_model_type"] == "t2v_1.3B"
    real = load("head_queue_json_two_tasks_t2v_1.3B.json")
    assert list(params) == list(real[0]["params"])  # the same 116 keys, in the same order
    assert httpx.get(url).status_code == 404  # single use
    route.client.predict(api_name="/clear_queue_action")
    route.client.close()


def test_v6_needs_validate_and_saves_the_queue_as_base64(emulator_v6) -> None:
    route = connect(emulator_v6, "v6")
    session = route.client.session_hash
    route.add("t2v_1.3B", validate=False, prompt="skipped validation", video_length=5, num_inference_steps=1)
    assert emulator_v6.sessions()[session]["queue"] == []  # 6.3 queues nothing without validate_wizard_prompt
    route.add("t2v_1.3B", prompt="only one", video_length=5, num_inference_steps=1)
    assert route.client.predict(api_name="/save_queue_action") == ""  # 6.3 saves from 2 tasks on
    route.add("t2v_1.3B", prompt="now two", video_length=5, num_inference_steps=1)
    payload = route.client.predict(api_name="/save_queue_action")
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(payload))) as zf:
        assert [t["params"]["prompt"] for t in json.loads(zf.read("queue.json"))] == ["only one", "now two"]
    route.client.predict(api_name="/clear_queue_action")
    assert emulator_v6.sessions()[session]["queue"] == []
    route.client.close()


def test_export_and_load_settings_with_the_mode_quirk(emulator_v12, tmp_path: Path) -> None:
    route = connect(emulator_v12, "v12")
    form = route.fill_values()
    route.client.predict(**route.save_args(form, prompt="exported prompt", video_length=9,
                                           num_inference_steps=3),
                         api_name=f"/{route.save['api_name']}")
    answer = json.loads(route.client.predict(False, api_name="/export_settings"))
    assert answer["filename"].startswith("t2v_1.3B_") and answer["filename"].endswith(".json")
    exported = httpx.get(emulator_v12.url.rstrip("/") + answer["url"]).json()
    assert (exported["prompt"], exported["video_length"], exported["num_inference_steps"]) == \
        ("exported prompt", 9, 3)
    assert exported["model_type"] == "t2v_1.3B" and exported["type"].startswith("WanGP v12.60 by DeepBeepMeep")
    assert "mode" not in exported
    assert set(load("head_export_settings_t2v_1.3B.json")) <= set(exported)

    # Route B: load the file, then add. Without "mode" WanGP fails with KeyError('mode') (a generic error).
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(exported))
    other = connect(emulator_v12, "v12")
    other.client.predict(handle_file(str(settings_file)), api_name="/load_settings_from_file")
    with pytest.raises(AppError, match=GENERIC_ERROR):
        other.client.predict(0, "t2v_1.3B", api_name="/process_prompt_and_add_tasks")
    settings_file.write_text(json.dumps({**exported, "mode": ""}))
    other.client.predict(handle_file(str(settings_file)), api_name="/load_settings_from_file")
    other.client.predict(0, "t2v_1.3B", api_name="/process_prompt_and_add_tasks")
    queue = emulator_v12.sessions()[other.client.session_hash]["queue"]
    assert [t["prompt"] for t in queue] == ["exported prompt"]
    zipped = json.loads(other.client.predict(api_name="/save_queue_action"))
    with zipfile.ZipFile(io.BytesIO(httpx.get(emulator_v12.url.rstrip("/") + zipped["url"]).content)) as zf:
        params = json.loads(zf.read("queue.json"))[0]["params"]
    assert (params["video_length"], params["num_inference_steps"]) == (9, 3)
    other.client.predict(api_name="/clear_queue_action")
    route.client.close()
    other.client.close()
