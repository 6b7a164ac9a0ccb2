"""The MCP server emulator against the captures: 12.60's tools and a whole generation
(``head_mcp_tools_list.json``, ``head_mcp_probe_calls.json``, ``head_mcp_success_flow.json``) and 13.x's API v2
and v1 (``v13_mcp_v2_contract.json``).

Every test talks to the emulator over HTTP with the official ``mcp`` SDK's streamable-HTTP client (the ticket
routes and the raw HTTP answers with httpx).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
import captures
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from PIL import Image

from wan2gp_emulator import _mcp
from wan2gp_emulator._wangp import FAIL_MESSAGE, HF_MISSING_ERROR

T2V = {"model_type": "t2v_1.3B", "prompt": "a red fox running through snow", "resolution": "832x480",
       "video_length": 17, "num_inference_steps": 4, "seed": 1234}


def run(url: str, fn: Callable[[ClientSession], Awaitable[Any]], headers: dict | None = None) -> Any:
    """Open an SDK session on ``url``, initialise it and run ``fn`` in it."""
    async def main() -> Any:
        async with streamablehttp_client(url, headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await fn(session)

    return asyncio.run(main())


def call(url: str, tool: str, arguments: dict, headers: dict | None = None) -> Any:
    async def fn(session: ClientSession) -> Any:
        return await session.call_tool(tool, arguments)

    return run(url, fn, headers)


def ok(result: Any) -> Any:
    assert not result.isError, result.content
    return result.structuredContent


def refused(result: Any) -> str:
    assert result.isError and result.structuredContent is None
    assert len(result.content) == 1
    return result.content[0].text


def captured_job_events(job: int) -> list[dict]:
    """Every event of job ``job`` (0, 1, 2) of the captured 12.60 session, gathered from all its snapshots."""
    seen: dict[tuple, dict] = {}
    jobs: list[str] = []
    for call_ in success_flow_calls("wangp_get_job") + success_flow_calls("wangp_cancel_job"):
        snapshot = call_["result"]["structuredContent"]
        if snapshot["job_id"] not in jobs:
            jobs.append(snapshot["job_id"])
        if snapshot["job_id"] == jobs[job] if len(jobs) > job else False:
            for event in snapshot["events"]:
                seen[(event["timestamp"], event["kind"])] = event
    return [seen[k] for k in sorted(seen)]


def shape(events: list[dict]) -> list[tuple]:
    """The events without the server's request log and without times: what a replay must reproduce."""
    out = []
    for event in events:
        data = event["data"]
        if event["kind"] == "stream":
            if data["stream"] == "stderr":
                continue
            out.append(("stream", data["stream"], data["text"].split(": ")[0]))
        elif event["kind"] in ("progress", "preview"):
            out.append((event["kind"], data["phase"], data["status"].split(" | ")[0], data["progress"],
                        data["current_step"], data["total_steps"]))
        elif event["kind"] in ("status", "info"):
            out.append((event["kind"], data))
        elif event["kind"] in ("error", "completed"):
            out.append((event["kind"], json.dumps({k: v for k, v in data.items() if k != "generated_files"},
                                                  sort_keys=True)))
        else:
            out.append((event["kind"],))
    return out


def success_flow_calls(tool: str) -> list[dict]:
    """Every tools/call of ``tool`` in the captured 12.60 session, with its structured answer."""
    out = []
    for exchange in captures.load("head_mcp_success_flow.json")["exchanges"]:
        request = exchange.get("request") or {}
        body = request.get("body") or {}
        if request.get("path") == "/mcp/" and body.get("method") == "tools/call" \
                and body["params"]["name"] == tool:
            out.append({"arguments": body["params"]["arguments"],
                        "result": exchange["response"]["body"]["result"]})
    return out


def contract() -> dict:
    return captures.load("v13_mcp_v2_contract.json")


# ---------------------------------------------------------------------------------------------- 12.60, API v1
def test_v12_initialize_and_tools_list_equal_the_capture(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12")
    captured = captures.load("head_mcp_tools_list.json")

    async def fn(session: ClientSession) -> Any:
        tools = await session.list_tools()
        prompts = await session.list_prompts()
        resources = await session.list_resources()
        return tools, prompts, resources

    tools, prompts, resources = run(server.url, fn)
    served = [t.model_dump(exclude_none=True, by_alias=True) for t in tools.tools]
    expected = [{k: v for k, v in t.items() if v is not None} for t in captured["tools"]]
    assert [t["name"] for t in served] == [t["name"] for t in expected]
    for got, want in zip(served, expected, strict=True):
        assert got["description"] == want["description"]
        assert got["inputSchema"] == want["inputSchema"], got["name"]
        assert got.get("outputSchema") == want.get("outputSchema"), got["name"]
    assert [p.name for p in prompts.prompts] == [p["name"] for p in captured["prompts"]]
    assert [str(r.uri) for r in resources.resources] == [r["uri"] for r in captured["resources"]]


def test_post_mcp_answers_307_and_the_endpoint_is_stateless_json(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12")
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "mcp", "version": "0.1.0"}}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    redirect = httpx.post(server.url, json=body, headers=headers, trust_env=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == server.url + "/"
    answer = httpx.post(server.url + "/", json=body, headers=headers, trust_env=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "mcp-session-id" not in answer.headers
    result = answer.json()["result"]
    captured = captures.load("head_mcp_success_flow.json")["exchanges"][1]["response"]["body"]["result"]
    assert result["serverInfo"]["name"] == captured["serverInfo"]["name"] == "WanGP"
    assert set(result["capabilities"]) >= {"prompts", "resources", "tools"}
    # The SDK's Host-header check on a loopback server (421), as WanGP 13's SDK would do it.
    bad_host = httpx.post(server.url + "/", json=body, headers={**headers, "host": "evil.example:80"},
                          trust_env=False)
    assert bad_host.status_code == 421


def _poll(url: str, job_id: str, tool: str = "wangp_get_job", seconds: float = 60.0, *,
          until: Callable[[dict], bool] = lambda snapshot: snapshot["done"], **extra: Any) -> list[dict]:
    """Every snapshot until the job is done, or ``until`` says so (v1 tool names, or v2's wangp_session when tool
    is 'v2')."""
    async def fn(session: ClientSession) -> list[dict]:
        snapshots = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if tool == "v2":
                result = await session.call_tool("wangp_session", {"action": "get_job", "arguments": {
                    "job_id": job_id, **extra}})
            else:
                result = await session.call_tool(tool, {"job_id": job_id, **extra})
            snapshots.append(ok(result))
            if until(snapshots[-1]):
                return snapshots
            await asyncio.sleep(0.05)
        raise AssertionError("the job did not get there")

    return run(url, fn)


def _denoising(snapshot: dict) -> bool:
    """The job has done a denoising step (it runs on the GPU)."""
    return any(e["kind"] == "progress" and (e["data"].get("current_step") or 0) >= 1 for e in snapshot["events"])


def test_v12_whole_generation_replays_the_captured_flow(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12")
    captured_submit = success_flow_calls("wangp_generate")[0]["result"]["structuredContent"]
    captured_done = success_flow_calls("wangp_get_job")[-1]["result"]["structuredContent"]

    first = ok(call(server.url, "wangp_generate", {"source": T2V, "wait": False}))
    assert set(first) == set(captured_submit)
    assert first["done"] is False and first["result"] is None and len(first["job_id"]) == 32
    snapshots = _poll(server.url, first["job_id"], event_limit=500)
    final = snapshots[-1]
    assert set(final) == set(captured_done)
    assert set(final["result"]) == set(captured_done["result"])
    assert final["result"]["success"] is True and final["result"]["errors"] == []
    assert final["result"]["gallery_items"] == []  # captured: 12.60 leaves it empty
    assert len(final["result"]["generated_files"]) == 1

    events = final["events"]
    assert shape(events) == shape(captured_job_events(0))  # the whole captured job, event by event
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and events[0]["data"] == {"tasks": 1}
    assert kinds[-2:] == ["output", "completed"]
    assert {"status", "refresh_models", "progress", "preview", "stream"} <= set(kinds)
    statuses = [e["data"] for e in events if e["kind"] == "status"]
    assert statuses == ["Loading model Wan2.1 Text2video 1.3B...", "Model loaded"]
    steps = [(e["data"]["phase"], e["data"]["progress"], e["data"]["current_step"]) for e in events
             if e["kind"] == "progress" and e["data"]["current_step"] is not None]
    captured_steps = [(e["data"]["phase"], e["data"]["progress"], e["data"]["current_step"])
                      for e in captured_done["events"] if e["kind"] == "progress"]
    assert steps[-len(captured_steps):] == captured_steps  # (inference, 36, 1) ... (decoding, 95, 4)
    for event in events:
        if event["kind"] == "progress":
            assert set(event["data"]) == {"phase", "status", "progress", "current_step", "total_steps",
                                          "raw_phase", "unit"}
    saved = [e["data"]["text"] for e in events if e["kind"] == "stream" and e["data"]["stream"] == "stdout"]
    assert saved and saved[-1].startswith("New video saved to Path: outputs/")
    # The server's own request log lands in the job's events, two lines per call.
    log_lines = [e for e in events if e["kind"] == "stream" and "CallToolRequest" in e["data"]["text"]]
    assert len(log_lines) >= len(snapshots) - 1
    assert final["events"][-1]["data"] == {k: v for k, v in final["result"].items() if k != "gallery_items"}

    # The Gallery record, the download ticket and its one use.
    gallery = ok(call(server.url, "wangp_list_gallery", {}))["result"]
    captured_gallery = success_flow_calls("wangp_list_gallery")[0]["result"]["structuredContent"]["result"]
    assert set(gallery[-1]) == set(captured_gallery[-1])
    assert gallery[-1]["gallery_id"].startswith("visual:") and len(gallery[-1]["gallery_id"]) == 19
    assert gallery[-1]["path"].startswith("outputs/")
    assert gallery[-1]["settings"]["prompt"] == T2V["prompt"]
    ticket = ok(call(server.url, "wangp_create_gallery_download", {"gallery_id": gallery[-1]["gallery_id"]}))
    captured_ticket = success_flow_calls("wangp_create_gallery_download")[0]["result"]["structuredContent"]
    assert set(ticket) == set(captured_ticket)
    assert ticket["download_url"].startswith("/wangp_api/gallery/download/")
    url = server.base_url.rstrip("/") + ticket["download_url"]
    got = httpx.get(url, trust_env=False)
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
    assert len(got.content) == ticket["size"]
    with av.open(io.BytesIO(got.content)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, float(stream.average_rate)) == (832, 480, 16.0)
        assert sum(1 for _ in container.decode(video=0)) == 17
    again = httpx.get(url, trust_env=False)
    assert again.status_code == 404 and again.json() == {"error": "Download expired or not found."}


def test_v12_cancel_ends_the_job_as_captured(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12")
    first = ok(call(server.url, "wangp_generate", {"source": T2V, "wait": False}))  # loads the model, as job 1 did
    _poll(server.url, first["job_id"])
    job = ok(call(server.url, "wangp_generate", {"source": {**T2V, "num_inference_steps": 200}, "wait": False}))
    _poll(server.url, job["job_id"], until=_denoising)  # cancelled while it runs, as in the capture
    answer = ok(call(server.url, "wangp_cancel_job", {"job_id": job["job_id"]}))
    assert answer["cancel_requested"] is True and answer["done"] is False
    final = _poll(server.url, job["job_id"], event_limit=500)[-1]
    result = final["result"]
    assert result["success"] is False and result["cancelled"] is True and result["generated_files"] == []
    assert result["errors"] == [{"message": "Generation was cancelled", "task_index": 1, "task_id": 1,
                                 "stage": "cancelled", "cancelled": True}]
    assert [e["kind"] for e in final["events"]][-3:] == ["output", "error", "completed"]
    ours = shape(final["events"])
    captured = shape(captured_job_events(1))  # 40 steps, cancelled during step 4
    assert ours[:4] == [(*e[:5], 200) if e[0] == "progress" and e[4] == 0 else e for e in captured[:4]]
    # ^ started, "Encoding Prompt" (the model is loaded already), step 0 twice
    assert ours[-3:] == captured[-3:]


def test_second_submit_is_refused_while_a_job_runs(mcp_emulator) -> None:
    server = mcp_emulator
    slow = {**T2V, "num_inference_steps": 200}
    if server.mcp_api_version == 2:
        args = {"action": "generate", "arguments": {"source": slow, "wait": False}}
    else:
        args = {"source": slow, "wait": False}
    job = ok(call(server.url, "wangp_generate", args))
    text = refused(call(server.url, "wangp_generate", args))
    assert text == "Error executing tool wangp_generate: WanGP session already has a generation in progress"
    assert [j["job_id"] for j in server.jobs()] == [job["job_id"]]  # nothing was queued
    cancel = ("wangp_session", {"action": "cancel_job", "arguments": {"job_id": job["job_id"]}}) \
        if server.mcp_api_version == 2 else ("wangp_cancel_job", {"job_id": job["job_id"]})
    ok(call(server.url, *cancel))
    _poll(server.url, job["job_id"], "v2" if server.mcp_api_version == 2 else "wangp_get_job")


@pytest.mark.parametrize("fault", ["missing_weights", "fail_marker"])
def test_faults_give_failed_snapshots_with_wangps_stage_and_message(make_mcp_emulator, fault: str) -> None:
    server = make_mcp_emulator("v12", missing_weights=fault == "missing_weights")
    prompt = T2V["prompt"] + (" [[fail]]" if fault == "fail_marker" else "")
    job = ok(call(server.url, "wangp_generate", {"source": {**T2V, "prompt": prompt}, "wait": False}))
    final = _poll(server.url, job["job_id"])[-1]
    captured = json.loads(captures.load("head_mcp_probe_calls.json")[-2]["text"])  # 12.60, no weights
    assert set(final["result"]) == set(captured["result"])
    assert final["result"]["success"] is False and final["result"]["cancelled"] is False
    message = HF_MISSING_ERROR if fault == "missing_weights" else FAIL_MESSAGE
    assert final["result"]["errors"] == [{"message": message, "task_index": 1, "task_id": 1,
                                          "stage": "generation", "cancelled": False}]
    if fault == "missing_weights":
        assert final["result"]["errors"] == captured["result"]["errors"]
        availability = ok(call(server.url, "wangp_get_model_availability", {"model_type": "t2v_1.3B"}))
        assert availability == json.loads(captures.load("head_mcp_probe_calls.json")[4]["text"])


def test_v12_probe_calls_answer_like_the_capture(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12", missing_weights=True)
    probes = captures.load("head_mcp_probe_calls.json")
    defaults = next(p for p in probes if p["tool"] == "wangp_get_default_settings")
    got = ok(call(server.url, "wangp_get_default_settings", defaults["args"]))
    assert got == json.loads(defaults["text"])
    schema = next(p for p in probes if p["tool"] == "wangp_get_model_schema")
    got = ok(call(server.url, "wangp_get_model_schema", schema["args"]))["result"]
    want = json.loads(schema["text"])
    assert set(got["metadata"]) == set(want["metadata"])
    for key in ("model_type", "family", "family_label", "media_inputs", "capabilities", "fps", "frames_minimum",
                "frames_steps", "name"):
        assert got["metadata"][key] == want["metadata"][key], key
    # frames_maximum: the emulator's catalog has the web UI's slider maximum (337), 12.60's schema says 97
    # (README: what the emulator could not know).
    assert got["metadata"]["frames_maximum"] >= want["metadata"]["frames_maximum"]
    search = next(p for p in probes if p["tool"] == "wangp_search_models")
    got = ok(call(server.url, "wangp_search_models", search["args"]))
    assert set(got) == set(json.loads(search["text"]))
    # List results: one text block per item (and none for an empty list).
    empty = call(server.url, "wangp_list_gallery", {"media_type": "all", "limit": 5})
    assert empty.structuredContent == {"result": []} and empty.content == []
    assert refused(call(server.url, "wangp_nope", {})) == "Unknown tool: wangp_nope"
    text = refused(call(server.url, "wangp_get_job", {"job_id": "0" * 32}))
    assert text == f"Error executing tool wangp_get_job: 'Unknown WanGP job_id: {'0' * 32}'"
    text = refused(call(server.url, "wangp_get_model", {}))
    assert text.startswith("Error executing tool wangp_get_model: 1 validation error for wangp_get_modelArguments\n"
                           "model_type\n  Field required [type=missing")


def test_v1_wait_timeout_fails_the_call_and_the_job_runs_on(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12")
    text = refused(call(server.url, "wangp_generate", {"source": {**T2V, "num_inference_steps": 200},
                                                       "wait": True, "timeout_s": 0.3}))
    assert text == "Error executing tool wangp_generate: WanGP session job timed out"
    (job,) = server.jobs()
    assert job["done"] is False
    ok(call(server.url, "wangp_cancel_job", {"job_id": job["job_id"]}))
    _poll(server.url, job["job_id"])


# ---------------------------------------------------------------------------------------------- tickets
def _png(color: tuple[int, int, int] = (219, 27, 26)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_ticket_then_i2v_from_the_uploaded_image(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v12")
    ticket = ok(call(server.url, "wangp_create_gallery_upload", {"filename": "../shot12_start.png"}))
    assert set(ticket) == {"upload_url", "method", "filename", "expires_in_seconds", "max_bytes"}
    assert (ticket["method"], ticket["filename"], ticket["expires_in_seconds"], ticket["max_bytes"]) \
        == ("PUT", "shot12_start.png", 600, 8589934592)
    url = server.base_url.rstrip("/") + ticket["upload_url"]
    put = httpx.put(url, content=_png(), headers={"content-type": "image/png"}, trust_env=False)
    assert put.status_code == 200
    record = put.json()
    assert {"status", "size", "gallery_id", "gallery", "index", "path", "media_type", "selected", "in_gallery",
            "settings"} <= set(record)
    assert (record["status"], record["media_type"], record["selected"]) == ("uploaded", "image", True)
    assert "/mcp_uploads/" in record["path"]
    again = httpx.put(url, content=_png(), trust_env=False)
    assert again.status_code == 404 and again.json() == {"error": "Upload expired or not found."}

    source = {"model_type": "i2v", "prompt": "the picture comes alive", "resolution": "832x480",
              "video_length": 17, "num_inference_steps": 4, "seed": 3, "image_prompt_type": "S",
              "image_start": record["gallery_id"]}
    job = ok(call(server.url, "wangp_generate", {"source": source, "wait": False}))
    final = _poll(server.url, job["job_id"])[-1]
    assert final["result"]["success"] is True, final["result"]
    text = refused(call(server.url, "wangp_generate", {"source": {**source, "image_start": "/etc/passwd"}}))
    assert "Direct filesystem paths are disabled for this MCP server" in text


def test_ticket_expiry_size_cap_and_bad_files(make_mcp_emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_mcp_emulator("v13", mcp_api_version=1)
    origin = server.base_url.rstrip("/")

    def upload_url(name: str = "a.png") -> str:
        return origin + ok(call(server.url, "wangp_create_gallery_upload", {"filename": name}))["upload_url"]

    text = refused(call(server.url, "wangp_create_gallery_upload", {"filename": "notes.txt"}))
    assert text.endswith("filename must have a supported image, video, or audio extension")
    bad = httpx.put(upload_url(), content=b"not a png", trust_env=False)
    assert bad.status_code == 400 and "error" in bad.json()
    monkeypatch.setattr(_mcp, "MAX_UPLOAD_BYTES", 100)
    big = httpx.put(upload_url(), content=_png(), trust_env=False)
    assert big.status_code == 413 and big.json() == {"error": "Upload exceeds the 100-byte limit."}
    monkeypatch.setattr(_mcp, "MAX_UPLOAD_BYTES", 8 * 1024**3)
    url = upload_url()
    monkeypatch.setattr(_mcp, "TICKET_TTL", 0.0)
    time.sleep(0.01)
    assert httpx.put(url, content=_png(), trust_env=False).status_code == 404
    monkeypatch.setattr(_mcp, "TICKET_TTL", 600.0)
    record = httpx.put(upload_url(), content=_png(), trust_env=False).json()
    assert record["media_id"].startswith("visual:") and "path" not in record  # 13.x: the compact record
    ticket = ok(call(server.url, "wangp_create_gallery_download", {"media_id": record["media_id"]}))
    assert ticket["media_id"] == record["media_id"]
    got = httpx.get(origin + ticket["download_url"], trust_env=False)
    assert got.status_code == 200 and got.content == _png()
    assert httpx.get(origin + ticket["download_url"], trust_env=False).status_code == 404


# ---------------------------------------------------------------------------------------------- 13.x
def test_v13_api_v1_tools_follow_the_delta(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13", mcp_api_version=1)
    delta = contract()["v1_delta_12_60_to_13"]

    async def fn(session: ClientSession) -> Any:
        return (await session.list_tools()).tools

    tools = {t.name: t for t in run(server.url, fn)}
    captured = {t["name"] for t in captures.load("head_mcp_tools_list.json")["tools"]}
    removed = {r["tool"] for r in delta["removed"]}
    added = {a["tool"] for a in delta["added"] if a["tool"].startswith("wangp_")}
    assert set(tools) == (captured - removed) | added
    assert set(tools["wangp_create_gallery_download"].inputSchema["required"]) == {"media_id"}
    assert "selected_only" in tools["wangp_list_gallery"].inputSchema["properties"]
    assert tools["wangp_get_job"].outputSchema["additionalProperties"] is True
    models = ok(call(server.url, "wangp_models", {"query": "1.3B", "limit": 3}))
    assert set(models) == {"models", "total", "returned", "offset", "has_more"}
    assert isinstance(models["models"][0]["capabilities"], list)  # arrays, where 12.60's tools have maps
    schema = ok(call(server.url, "wangp_model", {"model_type": "t2v_1.3B"}))
    assert schema["metadata"]["frames_steps"] == 4
    text = refused(call(server.url, "wangp_models", {"filters": {"colour": "red"}}))
    assert text.endswith("Unknown model filter: colour")


def test_v2_tools_list_and_input_schemas_equal_the_contract(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13")
    schemas = contract()["conventions"]["input_schemas"]

    async def fn(session: ClientSession) -> Any:
        return (await session.list_tools()).tools

    tools = {t.name: t for t in run(server.url, fn)}
    assert list(tools) == ["wangp_models", "wangp_model", "wangp_deepy_templates", "wangp_list_gallery", "wangp_io",
                           "wangp_toolbox", "wangp_generate", "wangp_postprocess", "wangp_session"]
    for name, tool in tools.items():
        expected = schemas.get(name, schemas["action_arguments_only"])
        assert tool.inputSchema == expected, name
        assert tool.outputSchema == {"additionalProperties": True, "title": f"{name}DictOutput", "type": "object"}
    assert "source" not in tools["wangp_generate"].inputSchema["properties"]  # how clients tell v2 from v1


def test_v2_progressive_discovery_and_refusals(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13")

    async def fn(session: ClientSession) -> dict:
        out = {}
        out["discovery"] = ok(await session.call_tool("wangp_session", {}))
        out["schema"] = ok(await session.call_tool("wangp_generate", {"action": "generate", "arguments": None}))
        out["capabilities"] = ok(await session.call_tool("wangp_model", {
            "model_type": "t2v_1.3B", "action": "capabilities", "arguments": {}}))
        out["defaults"] = ok(await session.call_tool("wangp_model", {
            "model_type": "t2v_1.3B", "action": "defaults", "arguments": {}}))
        for key, tool, args in [
            ("no_action", "wangp_session", {"arguments": {"job_id": "x"}}),
            ("unknown_action", "wangp_session", {"action": "list_queue", "arguments": {}}),
            ("extra_top", "wangp_session", {"action": "get_job", "arguments": {}, "job": "x"}),
            ("limit", "wangp_models", {"action": "search", "arguments": {"limit": 101}}),
            ("offset", "wangp_models", {"action": "search", "arguments": {"offset": 5}}),
            ("async", "wangp_generate", {"action": "generate", "arguments": {"source": T2V, "wait": False}}),
            ("unknown_job", "wangp_session", {"action": "get_job", "arguments": {"job_id": "nope"}}),
            ("unknown_model", "wangp_model", {"model_type": "nope"}),
            ("query_and_action", "wangp_models", {"query": "x", "action": "search"}),
            ("ignored_media", "wangp_generate", {"action": "generate", "arguments": {"source": {
                **T2V, "model_type": "i2v", "image_prompt_type": "", "image_start": "visual:000000000000"}}}),
            ("unsupported_media", "wangp_generate", {"action": "generate", "arguments": {
                "source": {**T2V, "image_start": "visual:000000000000"}}}),
            ("no_model", "wangp_generate", {"action": "generate", "arguments": {"source": [{"prompt": "x"}]}}),
        ]:
            out[key] = refused(await session.call_tool(tool, args))
        return out

    out = run(server.url, fn)
    assert out["discovery"]["status"] == "discovery"
    assert {"get_job", "cancel_job", "create_gallery_upload", "create_gallery_download"} <= set(
        out["discovery"]["actions"])
    schema = out["schema"]["action"]
    assert out["schema"]["status"] == "schema" and schema["name"] == "generate"
    assert schema["parameters"]["properties"]["wait"]["const"] is True  # no --mcp-async
    assert out["capabilities"]["metadata"]["frames_steps"] == 4
    assert isinstance(out["capabilities"]["metadata"]["capabilities"], list)
    assert out["defaults"]["video_length"] == 81
    tail = ("To read the contract, repeat this call with action='{}' and arguments=null (the entire object, not a "
            "nested value).")
    assert out["no_action"] == ('Error executing tool wangp_session: arguments requires an action at the top level, '
                                'beside arguments: {"action":"<action>","arguments":{...}}. Omit both to discover '
                                'actions.')
    assert out["unknown_action"] == ("Error executing tool wangp_session: Unknown or unavailable action: list_queue. "
                                     "Omit action to discover available actions.")
    assert out["extra_top"].startswith("Error executing tool wangp_session: 1 validation error for "
                                       "wangp_sessionArguments\njob\n  Extra inputs are not permitted")
    assert out["limit"] == ("Error executing tool wangp_models: limit: 101 is greater than the maximum of 100. "
                            "Required arguments: none. " + tail.format("search"))
    assert out["offset"] == ("Error executing tool wangp_models: arguments: Additional properties are not allowed "
                             "('offset' was unexpected). Required arguments: none. " + tail.format("search"))
    assert out["async"] == ("Error executing tool wangp_generate: wait: True was expected. Required arguments: "
                            "source. " + tail.format("generate"))
    assert out["unknown_job"] == "Error executing tool wangp_session: 'Unknown WanGP job_id: nope'"
    assert out["unknown_model"].endswith("Unknown model_type: nope")
    assert out["query_and_action"].endswith("Pass query alone, or use action='search' with query inside arguments "
                                            "alongside advanced filters.")
    assert out["ignored_media"].endswith("source.image_start: input would be ignored; requires image_prompt_type "
                                         "containing S (model i2v). Nothing was submitted.")
    assert out["unsupported_media"].endswith("source.image_start: input is unsupported in this model/output mode "
                                             "(model t2v_1.3B). Nothing was submitted.")
    assert out["no_model"].endswith("source[0].model_type must be a non-empty string for generation. Nothing was "
                                    "submitted.")
    assert server.jobs() == []  # nothing was submitted


def test_vace_declares_its_control_inputs_and_v2_refuses_the_ones_its_mode_ignores(make_mcp_emulator) -> None:
    """VACE's schema: control video, mask and reference roles, and the modes of each (WanGP's model definition
    keys); API v2 refuses, before submitting, control media the model can't use or its video_prompt_type ignores."""
    v12 = ok(call(make_mcp_emulator("v12").url, "wangp_get_model_schema", {"model_type": "vace_1.3B"}))["result"]
    meta = v12["metadata"]
    assert meta["media_inputs"]["video"] == {"continue": True, "last": True, "control": True, "mask": True}
    assert meta["media_inputs"]["image"]["reference"] and meta["capabilities"]["control_video"]
    assert ["Transfer Depth", "DV"] in meta["guide_preprocessing"]["choices"]
    assert ["Masked Area", "A"] in meta["mask_preprocessing"]["choices"]
    assert ["People / Objects", "I"] in meta["image_ref_choices"]["choices"]
    t2v = ok(call(make_mcp_emulator("v12").url, "wangp_get_model_schema", {"model_type": "t2v_1.3B"}))["result"]
    assert "guide_preprocessing" not in t2v["metadata"] and not t2v["metadata"]["media_inputs"]["video"]["control"]

    server = make_mcp_emulator("v13")
    vace = {**T2V, "model_type": "vace_1.3B", "video_guide": "visual:000000000000"}

    async def fn(session: ClientSession) -> dict:
        out = {"capabilities": ok(await session.call_tool("wangp_model", {
            "model_type": "vace_1.3B", "action": "capabilities", "arguments": {}}))}
        for key, source in [("no_mode", {**vace, "video_prompt_type": ""}),
                            ("unsupported", {**T2V, "video_guide": "visual:000000000000"}),
                            ("mask_kept", {**vace, "video_prompt_type": "UVA", "video_mask": "visual:000000000001"}),
                            ("refs_no_mode", {**vace, "video_prompt_type": "DV", "image_refs": ["visual:0"]})]:
            out[key] = refused(await session.call_tool("wangp_generate", {"action": "generate",
                                                                          "arguments": {"source": source}}))
        return out

    out = run(server.url, fn)
    assert out["capabilities"]["metadata"]["media_inputs"] == {"image": ["start", "reference", "multiple_references"],
                                                              "video": ["continue", "last", "control", "mask"]}
    assert out["no_mode"].endswith("source.video_guide: input would be ignored; requires an enabled Control Video "
                                   "mode (model vace_1.3B). Nothing was submitted.")
    assert out["unsupported"].endswith("source.video_guide: input is unsupported in this model/output mode (model "
                                       "t2v_1.3B). Nothing was submitted.")
    assert out["mask_kept"].endswith("source.video_mask: input would be ignored; requires an enabled Control Video "
                                     "mask mode (model vace_1.3B). Nothing was submitted.")
    assert out["refs_no_mode"].endswith("source.image_refs: input would be ignored or uses an unsupported mode; "
                                        "video_prompt_type must include one of ['I', 'KI'] (model vace_1.3B). "
                                        "Nothing was submitted.")
    assert server.jobs() == []


def test_v2_cursor_paging_is_followed_to_the_end(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13")

    async def fn(session: ClientSession) -> tuple[list[dict], list[dict], str, dict]:
        pages = []
        arguments: dict = {"filters": {"main_output": "video"}, "limit": 100}
        while True:
            page = ok(await session.call_tool("wangp_models", {"action": "search", "arguments": arguments}))
            pages.append(page)
            if not page["has_more"]:
                break
            assert page["next_call"]["action"] == "search"
            assert page["next_call"]["arguments"] == {**arguments, "cursor": page["next_cursor"]}
            arguments = page["next_call"]["arguments"]
        whole = ok(await session.call_tool("wangp_models", {"action": "search", "arguments": {
            "filters": {"main_output": "video"}, "summary_only": True}}))
        stale = refused(await session.call_tool("wangp_models", {"action": "search", "arguments": {
            "filters": {"main_output": "image"}, "cursor": pages[0]["next_cursor"]}}))
        return pages, [m for p in pages for m in p["models"]], stale, whole

    pages, models, stale, whole = run(server.url, fn)
    assert len(pages) > 1  # a page holds at most ~6000 characters: fewer items than the limit
    for page in pages:
        assert page["count"] == len(page["models"]) < 100
        assert len(json.dumps(page["models"])) <= 6000 + 2 * len(page["models"])
        assert page["match"] == "exact" and page["preferences"] == {"speed": "any", "size": "any"}
    types_ = [m["model_type"] for m in models]
    assert len(types_) == len(set(types_)) == whole["summary"]["stored_results"]
    assert all("video" in m["main_output"] for m in models)
    assert stale.endswith("Invalid or expired cursor, or changed filters. Repeat the original search without "
                          "cursor.")


def test_v2_generation_blocking_wait_async_and_download(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13", mcp_async=True)

    async def fn(session: ClientSession) -> dict:
        out = {}
        out["schema"] = ok(await session.call_tool("wangp_generate", {"action": "generate"}))
        out["blocking"] = ok(await session.call_tool("wangp_generate", {"action": "generate", "arguments": {
            "source": T2V, "timeout_s": 60}}))
        out["timeout"] = ok(await session.call_tool("wangp_generate", {"action": "generate", "arguments": {
            "source": {**T2V, "num_inference_steps": 200}, "timeout_s": 0.3, "event_limit": 5}}))
        job_id = out["timeout"]["job_id"]
        out["cancel"] = ok(await session.call_tool("wangp_session", {"action": "cancel_job", "arguments": {
            "job_id": job_id}}))
        while not out["cancel"]["done"]:
            await asyncio.sleep(0.05)
            out["cancel"] = ok(await session.call_tool("wangp_session", {"action": "get_job", "arguments": {
                "job_id": job_id}}))
        out["async"] = ok(await session.call_tool("wangp_generate", {"action": "generate", "arguments": {
            "source": T2V, "wait": False}}))
        item = out["blocking"]["result"]["gallery_items"][0]
        out["ticket"] = ok(await session.call_tool("wangp_session", {
            "action": "create_gallery_download", "arguments": {"media_id": item["media_id"]}}))
        out["gallery"] = ok(await session.call_tool("wangp_list_gallery", {"action": "list", "arguments": {}}))
        return out

    out = run(server.url, fn)
    assert "const" not in out["schema"]["action"]["parameters"]["properties"]["wait"]  # --mcp-async
    blocking = out["blocking"]
    assert blocking["done"] is True and blocking["result"]["success"] is True
    assert blocking["events"] == []  # v2 generate: event_limit defaults to 0
    (item,) = blocking["result"]["gallery_items"]
    assert (item["resolution"], item["frame_count"], item["fps"]) == ("832x480", 17, 16)
    assert item["media_id"].startswith("visual:") and "path" not in item
    timeout = out["timeout"]
    assert (timeout["status"], timeout["waiting_timed_out"], timeout["done"]) == ("timeout", True, False)
    assert len(timeout["events"]) <= 5
    assert out["cancel"]["result"]["cancelled"] is True
    assert out["cancel"]["result"]["errors"][0]["stage"] == "cancelled"
    assert out["async"]["done"] is False and out["async"]["result"] is None
    assert out["gallery"]["media"][0]["media_id"] == item["media_id"]  # newest first
    got = httpx.get(server.base_url.rstrip("/") + out["ticket"]["download_url"], trust_env=False)
    assert got.status_code == 200 and len(got.content) == out["ticket"]["size"]
    _poll(server.url, out["async"]["job_id"], "v2")


def test_bearer_token_guards_the_endpoint_and_the_tickets(make_mcp_emulator) -> None:
    server = make_mcp_emulator("v13", mcp_auth="s3cret")
    headers = {"Authorization": "Bearer s3cret"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    denied = httpx.post(server.url + "/", json=body, headers=accept, trust_env=False)
    assert denied.status_code == 401 and denied.json()["error"] == "invalid_token"
    assert denied.headers["www-authenticate"].startswith("Bearer")
    ticket = ok(call(server.url, "wangp_session", {"action": "create_gallery_upload",
                                                   "arguments": {"filename": "a.png"}}, headers))
    url = server.base_url.rstrip("/") + ticket["upload_url"]
    assert httpx.put(url, content=_png(), trust_env=False).status_code == 401
    assert httpx.put(url, content=_png(), headers=headers, trust_env=False).status_code == 200
