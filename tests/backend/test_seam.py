"""The job handle, the book of jobs and the client over an in-memory transport (``scripted.py``): milliseconds.

The same client code runs here as over the web UI; only the transport behind the seam differs. The web UI's
runner is covered against the emulator (test_client_live, test_resume, tests/reliability).
"""

from __future__ import annotations

import json
import threading

import pytest
from quiet import wait_until

from blender_movie_director.backend.wan2gp import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    JobPhase,
    JobRecord,
    JobStatus,
    StopReason,
    Wan2GPClient,
    Wan2GPError,
    Wan2GPValidationError,
)

from .scripted import ScriptedTransport

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def server():
    return ScriptedTransport()


@pytest.fixture
def client(server, tmp_path):
    with Wan2GPClient("http://127.0.0.1:7999", output_dir=tmp_path / "shots", transport=server, max_jobs=4) as c:
        yield c


def _record_of(job):
    return json.loads(json.dumps(job.to_record()))  # what a .blend or a journal keeps: JSON


def test_a_shot_reports_its_way_in_order_and_ends_completed(client, server):
    seen, phases = [], []
    job = client.submit(prompt="a fox", model="t2v_1.3B")
    job.add_progress_callback(lambda j, p: (seen.append((p.status, p.step)), phases.append(j.phase)))
    result = job.result(timeout=5)
    assert result.video_path.read_bytes() == b"scripted r1"
    assert job.status() is JobStatus.COMPLETED and job.phase is JobPhase.DOWNLOADING
    steps = [step for status, step in seen if status is JobStatus.RUNNING]
    assert steps == sorted(steps) and steps[-1] == 3  # never out of order, the last step seen
    assert seen[-1][0] is JobStatus.COMPLETED
    assert server.events == [("sent", "r1"), ("collected", "r1")]


def test_a_callback_added_while_the_job_waits_silently_hears_where_it_stands(client, server):
    gate = threading.Event()  # the shot then waits in WanGP's queue, which says nothing more for an hour
    server.scripts = [(("queued", 3), ("gate", gate), ("step", 1, 1))]
    job = client.submit(prompt="late listener", model="t2v_1.3B")
    first: list = []
    job.add_progress_callback(lambda j, p: first.append(p.queue_position))
    assert wait_until(lambda: job.progress.queue_position == 3, timeout=5)
    late: list = []
    job.add_progress_callback(lambda j, p: late.append((p.status, p.queue_position)))
    assert late == [(JobStatus.QUEUED, 3)]  # at once, on this thread: not only at the next change
    assert first[-1] == 3  # the first callback did not get the snapshot twice or out of order
    gate.set()
    job.result(timeout=5)
    assert late[-1][0] is JobStatus.COMPLETED and first.count(3) == 1


def test_shots_are_sent_in_the_order_they_were_submitted(client, server):
    server.scripts = [(("slow", 0.05), ("step", 1, 1))] * 6
    jobs = [client.submit(prompt=f"shot {i}", model="t2v_1.3B") for i in range(6)]
    for job in jobs:
        job.result(timeout=5)
    sent = [remote for what, remote in server.events if what == "sent"]
    assert [job.state.remote_job_id for job in jobs] == sent  # the i-th submitted is the i-th sent


def test_cancel_stops_the_work_on_the_server_and_says_why(client, server):
    server.scripts = [(("step", 1, 10), ("slow", 30), ("step", 2, 10))]
    job = client.submit(prompt="long", model="t2v_1.3B")
    running = threading.Event()
    job.add_progress_callback(lambda j, p: p.step == 1 and running.set())
    assert running.wait(5)
    assert job.cancel() is True
    with pytest.raises(JobCancelledError):
        job.result(timeout=5)
    assert job.stop_reason is StopReason.USER and job.status() is JobStatus.CANCELLED
    assert ("aborted", "r1") in server.events and ("collected", "r1") not in server.events
    assert job.cancel() is False  # already finished


def test_detach_leaves_the_job_on_the_server_and_resume_collects_it_without_sending_again(client, server):
    server.scripts = [(("step", 1, 2), ("slow", 30), ("step", 2, 2))]
    job = client.submit(prompt="overnight", model="t2v_1.3B")
    running = threading.Event()
    job.add_progress_callback(lambda j, p: p.step == 1 and running.set())
    assert running.wait(5)
    assert job.detach() is True
    with pytest.raises(Wan2GPError, match="detached"):
        job.result(timeout=5)
    assert job.status() is JobStatus.RUNNING  # as it was: it goes on on the server
    assert job.runner.let_go_called and ("aborted", "r1") not in server.events
    record = _record_of(job)
    assert record["record_version"] == 1 and record["transport"] == "scripted"
    assert record["remote_job_id"] == "r1" and record["processing_started"] is True

    again = client.resume_job(record)
    assert again.id == job.id
    assert again.result(timeout=5).video_path.read_bytes() == b"scripted r1"
    assert [e for e in server.events if e[0] == "sent"] == [("sent", "r1")]  # never sent twice


def test_each_job_saves_into_its_own_folder_and_its_record_keeps_it(client, server, tmp_path):
    server.scripts = [(("step", 1, 1),), (("step", 1, 2), ("slow", 30), ("step", 2, 2)), (("step", 1, 1),)]
    default = client.submit(prompt="default", model="t2v_1.3B")
    elsewhere = client.submit(prompt="elsewhere", model="t2v_1.3B", output_dir=tmp_path / "scene-2")
    running = threading.Event()
    elsewhere.add_progress_callback(lambda j, p: p.step == 1 and running.set())
    assert default.result(timeout=5).video_path.parent == tmp_path / "shots"
    assert running.wait(5) and elsewhere.detach()
    record = _record_of(elsewhere)
    assert record["output_dir"] == str(tmp_path / "scene-2")
    with Wan2GPClient("http://127.0.0.1:7999", output_dir=tmp_path / "another", transport=server) as other:
        assert other.resume_job(record).result(timeout=5).video_path.parent == tmp_path / "scene-2"
    old = {k: v for k, v in _record_of(default).items() if k != "output_dir"}  # a record of before
    old.update(status="running", task_queued=True, remote_job_id="r3")
    server.remote["r3"] = {"steps": [("step", 1, 1)], "done": False}
    assert client.resume_job(old).result(timeout=5).video_path.parent == tmp_path / "shots"
    assert not (tmp_path / "another").exists()


def test_a_job_the_server_lost_in_a_restart_fails_as_lost(client, server):
    server.scripts = [(("step", 1, 2), ("slow", 30))]
    job = client.submit(prompt="gone", model="t2v_1.3B")
    running = threading.Event()
    job.add_progress_callback(lambda j, p: p.step == 1 and running.set())
    assert running.wait(5)
    job.detach()
    server.restart()
    with pytest.raises(JobLostError) as caught:
        client.resume_job(_record_of(job)).result(timeout=5)
    assert isinstance(caught.value, JobFailedError) and caught.value.reason == "the server restarted"


def test_a_failed_generation_carries_the_servers_message(client, server):
    server.scripts = [(("step", 1, 2), ("fail", "CUDA out of memory"))]
    job = client.submit(prompt="too big", model="t2v_1.3B")
    with pytest.raises(JobFailedError, match="CUDA out of memory"):
        job.result(timeout=5)
    assert job.status() is JobStatus.FAILED and "CUDA out of memory" in job.progress.message


def test_a_record_never_sent_is_lost_without_a_server_round_trip(client, server):
    record = {"job_id": "abc", "settings": {"prompt": "x", "model_type": "t2v_1.3B"}, "status": "uploading",
              "transport": "scripted"}
    job = client.resume_job(record)
    with pytest.raises(JobLostError, match="before WanGP queued it"):
        job.result(timeout=1)
    assert server.events == []


def test_records_of_the_version_before_records_had_versions_still_load():
    # what Wan2GPJob.to_record() wrote up to December 2026: no record_version, no transport
    old = {"job_id": "1a2b3c4d5e6f", "client_id": "bmd-1a2b3c4d5e6f", "session_hash": "k3j4h5", "server":
           "http://127.0.0.1:7860", "settings": {"prompt": "a fox", "model_type": "t2v_1.3B"}, "sent_settings":
           {"prompt": "a fox", "model_type": "t2v_1.3B", "video_length": 33}, "submitted_at": 1764000000.0,
           "status": "running", "task_queued": True, "processing_started": True, "app_id": "2093847"}
    record = JobRecord.load(old)
    assert record.record_version == 1 and record.transport == "webui" and record.reattachable
    assert (record.session_hash, record.app_id, record.sent_settings["video_length"]) == ("k3j4h5", "2093847", 33)


@pytest.mark.parametrize(("data", "words"), [
    ({"job_id": "x", "settings": {}, "record_version": 7}, "newer Movie Director"),
    ({"settings": {}}, "job_id"),
    (["not", "a", "record"], "is a dict"),
])
def test_what_is_not_a_record_is_refused_clearly(data, words):
    with pytest.raises(Wan2GPValidationError, match=words):
        JobRecord.load(data)


def test_a_record_of_another_transport_is_not_resumed_here(client):
    record = {"job_id": "x", "settings": {"prompt": "x"}, "transport": "webui", "task_queued": True,
              "session_hash": "s", "sent_settings": {"prompt": "x"}}
    with pytest.raises(Wan2GPValidationError, match="webui transport"):
        client.resume_job(record)


def test_an_unknown_transport_name_is_refused():
    with pytest.raises(Wan2GPValidationError, match="unknown transport 'carrier-pigeon'"):
        Wan2GPClient("http://127.0.0.1:7999", transport="carrier-pigeon")


def test_web_ui_only_calls_say_so_on_another_transport(client):
    with pytest.raises(Wan2GPValidationError, match="no Gradio endpoints"):
        client.call("/refresh_gallery")


def test_closing_the_client_cancels_what_is_unfinished(server, tmp_path):
    server.scripts = [(("step", 1, 2), ("slow", 30))]
    client = Wan2GPClient("http://127.0.0.1:7999", output_dir=tmp_path / "shots", transport=server)
    job = client.submit(prompt="left running", model="t2v_1.3B")
    running = threading.Event()
    job.add_progress_callback(lambda j, p: p.step == 1 and running.set())
    assert running.wait(5)
    client.close()
    with pytest.raises(JobCancelledError):
        job.result(timeout=5)
    assert job.stop_reason is StopReason.USER
    assert ("aborted", "r1") in server.events  # nothing left working on the GPU for nobody
