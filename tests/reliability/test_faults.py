"""Network and server faults, through our fault proxy in front of the emulator (or a real emulator process).

Each test says which guarantee it pins: slowness alone trips no timeout; a dropped stream re-attaches and
collects; a crash fails at once and the next job works; a frozen server fails within bounds; a cancel under
each fault leaves nothing running on the server.
"""

from __future__ import annotations

import time

import pytest
from conftest import FAULT_TIMEOUTS, make_client, wait_until
from quiet import wait_worker_ended

from blender_movie_director.backend.wan2gp import (
    JobCancelledError,
    JobStatus,
    Retries,
    ServerRestartedError,
    Wan2GPTimeoutError,
)
from blender_movie_director.backend.wan2gp._mp4 import probe

pytestmark = pytest.mark.timeout(90)


def _session_events(server, session: str | None) -> list[dict]:
    return [e for e in server.events() if e["session"] == session]


def _kinds(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["event"] == kind]


def _running(job, step: int = 1) -> None:
    wait_until(lambda: (job.progress.step or 0) >= step or job.done(), 30, "the job to run")
    assert not job.done(), job.exception()


def _nothing_left(out_dir) -> None:
    assert not list(out_dir.glob(".*.part")), "a temporary download was left behind"


def test_latency_and_throttling_alone_trip_no_timeout(emulator_v12, proxy_to, out_dir):
    proxy = proxy_to(emulator_v12.url)
    proxy.latency = 0.2  # each way: every request and every event arrives 200 ms late
    proxy.bandwidth = 1024 * 1024  # bytes/s per connection, each way (connecting reads 1.3 MB)
    with make_client(proxy.url, out_dir) as client:
        started = time.monotonic()
        result = client.generate(prompt="through a slow link", frames=9, steps=4)
        elapsed = time.monotonic() - started
    assert probe(result.video_path).frames == 9
    assert elapsed > 2.0  # the faults were really there
    _nothing_left(out_dir)


@pytest.mark.parametrize("flavour", ["v12", "v6"])
def test_dropped_stream_reattaches_and_collects_the_same_run(flavour, make_emulator, proxy_to, out_dir):
    server = make_emulator(flavour)  # private: a lost stream leaves server state behind (see the next test)
    proxy = proxy_to(server.url)
    with make_client(proxy.url, out_dir) as client:
        job = client.submit(prompt="dropped mid-stream [[slow]]", frames=9, steps=6)
        _running(job, 2)
        dropped_at = time.monotonic()
        assert proxy.drop("/queue/data") >= 1  # the job's event stream: process_tasks and its status
        result = job.result(timeout=60)
        assert "dropped" not in job.progress.message  # once re-attached, the loss is no longer reported
    assert probe(result.video_path).frames == 9
    events = _session_events(server, job.session_hash)
    assert len(_kinds(events, "queued")) == 1 and len(_kinds(events, "started")) == 1  # one run, not two
    assert len(_kinds(events, "completed")) == 1
    assert time.monotonic() - dropped_at < 30
    assert [p.name for p in out_dir.iterdir()] == [result.video_path.name]


def test_after_a_dropped_stream_the_next_job_has_progress_again(emulator_v12, proxy_to, out_dir):
    # The lost process_tasks never resets the session's status flag, so WanGP's status poller of that session
    # would run on and, with a concurrency limit of 1, hold up every later job's status stream. The client
    # resets it once it has collected the output (WanGP 12).
    proxy = proxy_to(emulator_v12.url)
    with make_client(proxy.url, out_dir) as client:
        job = client.submit(prompt="dropped, then collected [[slow]]", frames=9, steps=6)
        _running(job, 2)
        proxy.drop("/queue/data")
        job.result(timeout=60)
        after = client.submit(prompt="the next one [[slow]]", frames=9, steps=6)
        _running(after, 1)
        after.result(timeout=60)


def test_cancel_after_a_dropped_stream_stops_the_work_on_the_server(emulator_v12, proxy_to, out_dir):
    proxy = proxy_to(emulator_v12.url)
    with make_client(proxy.url, out_dir) as client:
        job = client.submit(prompt="dropped then cancelled [[slow]]", frames=9, steps=40)
        _running(job, 1)
        proxy.drop("/queue/data")
        wait_until(lambda: "re-attached" in job.progress.phase, 20, "the re-attachment")
        assert job.cancel()
        with pytest.raises(JobCancelledError):
            job.result(timeout=20)
    session = job.session_hash
    wait_until(lambda: _kinds(_session_events(emulator_v12, session), "aborted"), 10, "the abort on the server")
    wait_worker_ended(emulator_v12, session, _kinds(_session_events(emulator_v12, session), "aborted")[-1]["t"])
    events = _session_events(emulator_v12, session)
    assert not _kinds(events, "completed")
    assert not emulator_v12.sessions().get(session, {}).get("queue"), "the task is still queued on the server"
    assert not list(out_dir.iterdir())


def test_server_crash_fails_at_once_and_the_next_job_works_after_a_restart(emulator_process, out_dir):
    first = emulator_process("--port", "0", "--step-seconds", "0.05", "--crash-after-steps", "3")
    port = first.url.rstrip("/").rsplit(":", 1)[1]
    with make_client(first.url, out_dir) as client:
        job = client.submit(prompt="the server dies under me", frames=9, steps=20)
        wait_until(lambda: job.status() == JobStatus.RUNNING or job.done(), 30, "the job to run")
        first.process.wait(30)  # os._exit(70) after 3 steps
        crashed = time.monotonic()
        with pytest.raises(ServerRestartedError, match="stopped or restarted") as caught:
            job.result(timeout=30)
        assert time.monotonic() - crashed < 5, "the crash was not noticed within seconds"
        assert "submit the shot again" in str(caught.value)
        assert not list(out_dir.iterdir())  # no partial file, no temporary file

        emulator_process("--port", port, "--step-seconds", "0.05")  # WanGP started again, same address
        result = client.generate(prompt="after the restart", frames=5, steps=1)  # the same client object
        assert probe(result.video_path).frames == 5


def test_server_restarted_while_the_link_was_down_is_reported(emulator_process, proxy_to, out_dir):
    # Processes, as a real restart: an in-process server's old app went on answering the proxy's kept-alive
    # connection for a moment after its stop (503s from its stopped queue), which no restarted WanGP does.
    server = emulator_process("--port", "0", "--step-seconds", "0.05")
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    proxy = proxy_to(server.url)
    # A new process takes seconds to answer (gradio's imports: 5 s and more on a loaded machine), longer than
    # the 4 s FAULT_TIMEOUTS give a reconnect.
    timeouts = FAULT_TIMEOUTS.model_copy(update={"reconnect": 40.0})
    with make_client(proxy.url, out_dir, timeouts=timeouts) as client:
        job = client.submit(prompt="restarted behind my back [[slow]]", frames=9, steps=40)
        _running(job, 1)
        server.stop()  # the process's state is gone...
        emulator_process("--port", port, "--step-seconds", "0.05")  # ...and a new one on the same address
        with pytest.raises(ServerRestartedError, match="restarted"):
            job.result(timeout=30)
        assert client.generate(prompt="next one", frames=5, steps=1).video_path.exists()
    _nothing_left(out_dir)


def test_frozen_server_fails_within_bounds_with_a_timeout(emulator_v12, proxy_to, out_dir):
    proxy = proxy_to(emulator_v12.url)
    with make_client(proxy.url, out_dir) as client:
        job = client.submit(prompt="the server freezes [[slow]]", frames=9, steps=40)
        _running(job, 1)
        proxy.freeze()  # connections stay open; nothing comes back; new connections are never answered
        frozen = time.monotonic()
        with pytest.raises(Wan2GPTimeoutError, match="did not answer"):
            job.result(timeout=60)
        took = time.monotonic() - frozen
        t = FAULT_TIMEOUTS
        assert took < t.heartbeat + t.connect + t.reconnect + t.connect + 3, took
        proxy.thaw()
    # the stop could not be sent while frozen: it was retried in the background once the server answered
    session = job.session_hash
    wait_until(lambda: _kinds(_session_events(emulator_v12, session), "aborted"), 15, "the delayed abort")
    assert not _kinds(_session_events(emulator_v12, session), "completed")


def test_connect_to_a_frozen_server_is_bounded(emulator_v12, proxy_to, out_dir):
    proxy = proxy_to(emulator_v12.url)
    proxy.freeze()
    timeouts = FAULT_TIMEOUTS.model_copy(update={"describe": 2.0, "call": 2.0})
    client = make_client(proxy.url, out_dir, timeouts=timeouts, retries=Retries(attempts=2, backoff=0.1))
    started = time.monotonic()
    with pytest.raises(Wan2GPTimeoutError):
        client.connect()
    assert time.monotonic() - started < 2 * (timeouts.describe + 1)  # attempts x the read bound


def test_cancel_while_frozen_returns_at_once_and_stops_the_work_later(emulator_v12, proxy_to, out_dir):
    proxy = proxy_to(emulator_v12.url)
    with make_client(proxy.url, out_dir) as client:
        job = client.submit(prompt="cancelled while frozen [[slow]]", frames=9, steps=40)
        _running(job, 1)
        proxy.freeze()
        cancelled = time.monotonic()
        job.cancel()
        with pytest.raises(JobCancelledError):
            job.result(timeout=20)
        assert time.monotonic() - cancelled < min(FAULT_TIMEOUTS.call, 2 * FAULT_TIMEOUTS.connect) + 2
        proxy.thaw()
        session = job.session_hash
        wait_until(lambda: _kinds(_session_events(emulator_v12, session), "aborted"), 15, "the delayed abort")
    wait_worker_ended(emulator_v12, session, _kinds(_session_events(emulator_v12, session), "aborted")[-1]["t"])
    assert not _kinds(_session_events(emulator_v12, session), "completed")
    assert not emulator_v12.sessions().get(session, {}).get("queue")


def test_cancel_through_a_slow_link_stops_the_work(make_emulator, proxy_to, out_dir):
    # private: each call crosses the slow link, so a shared server's model switch or queue left by another test
    # could use up the bound a call gets (FAULT_TIMEOUTS.call)
    server = make_emulator("v12")
    proxy = proxy_to(server.url)
    proxy.latency = 0.1
    with make_client(proxy.url, out_dir) as client:
        job = client.submit(prompt="cancelled over a slow link [[slow]]", frames=9, steps=40)
        _running(job, 1)
        job.cancel()
        with pytest.raises(JobCancelledError):
            job.result(timeout=20)
    session = job.session_hash
    assert _kinds(_session_events(server, session), "aborted")
    wait_worker_ended(server, session, _kinds(_session_events(server, session), "aborted")[-1]["t"])
    assert not _kinds(_session_events(server, session), "completed")
