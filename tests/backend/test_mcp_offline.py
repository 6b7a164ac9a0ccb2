"""The MCP connection's parts that need no server, on what real WanGP MCP servers answered (tests/captures)."""

from __future__ import annotations

import json

import captures
import pytest

from blender_movie_director.backend.wan2gp._errors import (
    JobCancelledError,
    JobFailedError,
    ServerBusyError,
    ServerRestartedError,
    UnsupportedServerError,
    Wan2GPServerError,
    Wan2GPValidationError,
)
from blender_movie_director.backend.wan2gp._mcp import (
    Contract,
    JobSnapshot,
    ModelRecord,
    ModelSchema,
    ToolInfo,
    detect_contract,
    media_roles,
    names_of,
)
from blender_movie_director.backend.wan2gp._mcp._contract import result_data
from blender_movie_director.backend.wan2gp._mcp._refusals import refusal_error


def _tools_12_60() -> list[ToolInfo]:
    return [ToolInfo.from_dict(t) for t in captures.load("head_mcp_tools_list.json")["tools"]]


def _tools_v2() -> list[ToolInfo]:
    schemas = captures.load("v13_mcp_v2_contract.json")["conventions"]["input_schemas"]
    tools = [ToolInfo.from_dict({"name": name, "inputSchema": schemas[name]})
             for name in ("wangp_models", "wangp_model", "wangp_postprocess")]
    tools += [ToolInfo.from_dict({"name": name, "inputSchema": schemas["action_arguments_only"]})
              for name in schemas["uses_action_arguments_only"]]
    return tools


def _tools_v1_13() -> list[ToolInfo]:
    delta = captures.load("v13_mcp_v2_contract.json")["v1_delta_12_60_to_13"]
    removed = {r["tool"] for r in delta["removed"]}
    tools = [t for t in _tools_12_60() if t.name not in removed]
    return tools + [ToolInfo(a["tool"], frozenset(a.get("args", {}))) for a in delta["added"]
                    if a["tool"].startswith("wangp_")]


def test_the_contract_is_told_from_the_tool_names_of_each_server():
    assert detect_contract(_tools_12_60()) is Contract.V1_12
    assert detect_contract(_tools_v1_13()) is Contract.V1_13
    assert detect_contract(_tools_v2()) is Contract.V2
    assert len(_tools_v2()) == 9


def test_extra_tools_of_plugins_are_tolerated_and_a_foreign_server_is_refused():
    plugin = [ToolInfo("deepy_prime_paint", frozenset({"x"})), ToolInfo("rg", frozenset())]
    assert detect_contract(_tools_v2() + plugin) is Contract.V2
    with pytest.raises(UnsupportedServerError, match="not a WanGP server"):
        detect_contract([ToolInfo("read_file"), ToolInfo("write_file")], server="http://127.0.0.1:9/mcp")
    without_schema = [t for t in _tools_12_60() if t.name != "wangp_get_model_schema"]
    with pytest.raises(UnsupportedServerError, match="wangp_get_model_schema") as info:
        detect_contract(without_schema)
    assert info.value.missing == ["wangp_get_model_schema"]


def test_a_v2_shaped_generate_beside_wangp_session_is_still_v1_when_it_takes_source():
    # v1 tools ignore unknown keys: a server whose wangp_generate takes `source` must not be spoken to as v2
    tools = [*_tools_v1_13(), ToolInfo("wangp_session", frozenset({"action", "arguments"}))]
    assert detect_contract(tools) is Contract.V1_13


def test_capabilities_and_media_roles_read_the_same_from_maps_and_lists():
    probe = next(c for c in captures.load("head_mcp_probe_calls.json") if c["tool"] == "wangp_get_model_schema")
    v1 = ModelRecord.parse(json.loads(probe["text"])["metadata"])
    v2 = ModelRecord.parse({**json.loads(probe["text"])["metadata"], "capabilities": ["text_to_video", "lora"],
                            "media_inputs": {}})
    assert v1.capabilities == v2.capabilities == {"text_to_video", "lora"}
    assert v1.media_inputs == v2.media_inputs == {}
    assert names_of({"start": True, "end": False}) == names_of(["start"]) == {"start"}
    assert media_roles({"image": {"start": True, "end": True}, "audio": {"prompt": False}}) == \
        media_roles({"image": ["start", "end"]}) == {"image": {"start", "end"}}


def test_a_model_schema_gives_the_frame_rule_and_fps():
    schema = ModelSchema.parse(captures.load("head_model_schema_t2v_1.3B.json"), {"video_length": 81})
    assert (schema.fps, schema.frames_minimum, schema.frames_step, schema.frames_maximum) == (16, 5, 4, 97)
    assert schema.record.model_type == "t2v_1.3B" and schema.defaults["video_length"] == 81


def _flow_snapshots(job_id: str) -> list[dict]:
    flow = captures.load("head_mcp_success_flow.json")["exchanges"]
    out = []
    for exchange in flow:
        body = (exchange.get("response") or {}).get("body")
        content = body.get("result", {}).get("structuredContent") if isinstance(body, dict) else None
        if isinstance(content, dict) and content.get("job_id") == job_id:
            out.append(content)
    return out


def test_captured_12_60_snapshots_give_progress_then_a_completed_job_with_server_paths_only():
    summary = captures.load("head_mcp_success_flow.json")["summary"]
    snapshots = _flow_snapshots(summary["job1"]["job_id"])
    progress = None
    steps = []
    for data in snapshots:
        snapshot = JobSnapshot.parse(data, previous=progress)
        progress = snapshot.progress
        if progress is not None and progress.step is not None:
            steps.append(progress.step)
    assert steps == sorted(steps) and steps[-1] == 4 and progress is not None and progress.total_steps == 4
    assert progress.phase == "decoding" and progress.percent == 95  # 12.60: step 4 of 4 is the VAE decoding
    final = JobSnapshot.parse(snapshots[-1])
    assert final.state == "completed" and final.done
    assert final.outputs == ()  # 12.60: gallery_items empty, the media id is found in the Gallery
    assert final.generated_files[0].endswith(".mp4")
    final.raise_for_state()


def test_the_captured_cancel_and_failure_become_the_projects_errors():
    summary = captures.load("head_mcp_success_flow.json")["summary"]
    cancelled = JobSnapshot.parse(_flow_snapshots(summary["job2"]["job_id"])[-1])
    assert cancelled.state == "cancelled"
    with pytest.raises(JobCancelledError):
        cancelled.raise_for_state()
    probe = [c for c in captures.load("head_mcp_probe_calls.json") if c["tool"] == "wangp_get_job"][-1]
    failed = JobSnapshot.parse(json.loads(probe["text"]))
    assert failed.state == "failed"
    with pytest.raises(JobFailedError, match="generation stage: An error happened") as info:
        failed.raise_for_state(server="http://127.0.0.1:7866/mcp")
    assert info.value.stage == "generation" and info.value.job_id == failed.job_id
    assert "internet access" in str(info.value)  # the project's hint for missing weights


def test_a_timed_out_v2_wait_is_a_running_job_with_its_id():
    snapshot = JobSnapshot.parse({"job_id": "a" * 32, "done": False, "status": "timeout",
                                  "waiting_timed_out": True, "events": [], "result": None})
    assert snapshot.state == "running" and snapshot.waiting_timed_out and snapshot.job_id == "a" * 32


@pytest.mark.parametrize(("text", "error", "field"), [
    ("WanGP session already has a generation in progress", ServerBusyError, None),
    ("'Unknown WanGP job_id: 0123'", ServerRestartedError, None),
    ("wait: True was expected. Required arguments: source. To read the contract, repeat ...",
     Wan2GPValidationError, "wait"),
    ("source.image_start: input would be ignored; requires image_prompt_type containing S (model i2v). "
     "Nothing was submitted.", Wan2GPValidationError, "image_start"),
    ("limit: 101 is greater than the maximum of 100. Required arguments: none. ...", Wan2GPValidationError, "limit"),
    ("Unknown tool: wangp_get_job", UnsupportedServerError, None),
    ("Unknown or unavailable action: list_queue. Omit action to discover available actions.",
     UnsupportedServerError, None),
    ("CUDA error: an illegal memory access", Wan2GPServerError, None),
])
def test_each_refusal_becomes_the_error_it_means(text, error, field):
    exc = refusal_error(text, server="http://127.0.0.1:7866/mcp", job_id="0123")
    assert type(exc) is error
    assert getattr(exc, "field", None) == field
    assert exc.job_id == "0123"


def test_every_refusal_text_of_the_contract_maps_to_a_project_error():
    catalog = captures.load("v13_mcp_v2_contract.json")["errors"]["catalog"]
    for entry in catalog:
        text = entry["text"].replace("Error executing tool <tool>: ", "")
        assert isinstance(refusal_error(text), Wan2GPServerError | Wan2GPValidationError | ServerRestartedError |
                          UnsupportedServerError), entry["when"]


def test_v1_list_results_are_unwrapped():
    class Result:
        structuredContent = {"result": [{"model_type": "t2v"}]}
        content: list = []
    assert result_data(Result()) == [{"model_type": "t2v"}]
