"""The server pool: its dispatch rule on its own state; its scheduling and recovery on scripted servers behind the
seam (``scripted.py``, milliseconds); and against real emulators on loopback: dispatch, a server stopped mid-run,
and its return."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from quiet import wait_until

from blender_movie_director.backend.health import HealthReport
from blender_movie_director.backend.pool import ServerPool, _Server
from blender_movie_director.backend.wan2gp import GenerationSettings, JobLostError, Timeouts, Wan2GPConnectionError
from wan2gp_emulator import EmulatorServer

from .scripted import ScriptedTransport, scripted_pool

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30, resume_wait=30)


def _pool(urls, tmp_path, **options) -> ServerPool:
    options.setdefault("health_period", 0.5)
    options.setdefault("lost_after", 2.0)
    return ServerPool(urls, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", timeouts=FAST, **options)


def _state(pool: ServerPool, url: str) -> str:
    return next(s for s in pool.view().servers if s.url == url).state


def _started(server: EmulatorServer) -> Counter:
    return Counter(e["client_id"] for e in server.events() if e["event"] == "started")


# --- the dispatch rule, on the pool's own state (no server contacted) -----------------------------------------


def _policy_pool(tmp_path, **states: dict) -> ServerPool:
    pool = ServerPool([f"http://127.0.0.1:{9000 + i}" for i in range(len(states))], cache_dir=tmp_path,
                      api_cache=False, result_cache=False)
    from blender_movie_director.backend.pool import PoolJob

    for server, state in zip(pool._servers.values(), states.values(), strict=True):
        server.state = "up"
        server.model = state.get("model")
        for _ in range(state.get("running", 0)):
            running = PoolJob(pool, GenerationSettings(prompt="running", model=state.get("model") or "t2v_1.3B"))
            server.running[running.id] = running
    return pool


def _place(pool: ServerPool, model: str = "t2v_1.3B") -> int:
    from blender_movie_director.backend.pool import PoolJob

    job = PoolJob(pool, GenerationSettings(prompt="a fox", model=model))
    pool._assign(job)
    return next(i for i, s in enumerate(pool._servers.values()) if job in s.queue)


def test_dispatch_prefers_idle_then_loaded_model_then_shortest_queue(tmp_path):
    # idle beats busy, even when the busy one has the model loaded
    pool = _policy_pool(tmp_path, a={"running": 1, "model": "t2v_1.3B"}, b={"model": "t2v"})
    assert _place(pool) == 1
    # two idle servers: the one with the model loaded wins
    pool = _policy_pool(tmp_path, a={"model": "t2v"}, b={"model": "t2v_1.3B"})
    assert _place(pool) == 1
    # all busy: the shortest queue; among equal queues, the loaded model
    pool = _policy_pool(tmp_path, a={"running": 1, "model": "t2v_1.3B"}, b={"running": 1, "model": "t2v"})
    assert _place(pool) == 0
    assert _place(pool) == 1  # a's queue is longer now
    pool = _policy_pool(tmp_path, a={"running": 1}, b={"running": 1}, c={"model": None})
    assert _place(pool) == 2


def test_waiting_jobs_go_to_any_free_server_and_pinned_ones_wait_for_theirs(tmp_path):
    from blender_movie_director.backend.pool import PoolJob

    pool = _policy_pool(tmp_path, a={"running": 1}, b={"running": 1})
    a, b = pool._servers.values()
    jobs = [PoolJob(pool, GenerationSettings(prompt=f"shot {i}")) for i in range(3)]
    for job in jobs:
        pool._assign(job)
    pinned = PoolJob(pool, GenerationSettings(prompt="resumed"), pinned=a.url, resume={"x": 1})
    pool._assign(pinned)
    b.running.clear()  # b is free: it takes a's queued work too, oldest first, never a job pinned to a
    order = [pool._next_for(b) for _ in range(4)]
    assert pinned not in order and set(order[:3]) == set(jobs) and order[3] is None


def test_a_running_job_whose_stream_still_brings_progress_is_not_given_up_on_failed_health_checks(tmp_path):
    from blender_movie_director.backend.pool import PoolJob

    pool = _policy_pool(tmp_path, a={})
    (server,) = pool._servers.values()
    job = PoolJob(pool, GenerationSettings(prompt="a long shot"))
    pool._assign(job)
    ((_, started, attempt),) = pool._plan()
    assert started is job
    # the health checks have failed for longer than the pool's patience...
    server.state, server.down_since = "down", time.monotonic() - pool.lost_after - 5
    pool._on_progress(job, attempt, job.progress.model_copy(update={"step": 3, "total": 30}))
    assert pool._expire() == []  # ...but the job's own stream spoke just now: it runs on
    attempt.heard_at -= pool.lost_after + 1  # and silent for as long as the server looks down: given up
    ((expired, given_up, reason),) = pool._expire()
    assert expired is job and given_up is attempt and "has been down for" in reason


# --- scripted servers: the pool's clients and health checks behind the seam (milliseconds) --------------------


def _scripted(tmp_path, count: int, **options):
    """``count`` scripted servers by URL (loopback ports 1, 2...: no HTTP is spoken to them) and their pool."""
    servers = {f"http://127.0.0.1:{port}": ScriptedTransport() for port in range(1, count + 1)}
    return servers, scripted_pool(servers, tmp_path, **options)


def _gated(gate: threading.Event):
    return (("queued", 0), ("step", 1, 3), ("gate", gate), ("step", 3, 3))


def test_scripted_jobs_spread_one_per_server_and_the_rest_wait_in_the_pool(tmp_path):
    gate = threading.Event()
    servers, pool = _scripted(tmp_path, 2)
    for server in servers.values():
        server.scripts = [_gated(gate)] * 4
    with pool:
        assert pool.wait_for_servers(2, timeout=5)
        jobs = [pool.submit(prompt=f"spread {i}") for i in range(4)]
        assert wait_until(lambda: sum(len(s.events) for s in servers.values()) == 2, timeout=5)  # one sent each
        view = pool.view()
        assert {s.state for s in view.servers} == {"busy"} and sum(len(s.running) for s in view.servers) == 2
        assert sum(len(s.queued) for s in view.servers) + len(view.waiting) == 2  # one at a time per server
        assert [len(s.events) for s in servers.values()] == [1, 1]  # the gate holds: the others never left the pool
        gate.set()
        assert all(j.result(timeout=5).video_path.exists() for j in jobs)
        assert {j.server for j in jobs} == {f"{url}/" for url in servers}
        assert all(s.completed >= 1 for s in pool.view().servers)


def test_scripted_a_server_busy_for_someone_else_is_avoided(tmp_path):
    servers, pool = _scripted(tmp_path, 2)
    shared, free = servers.values()
    shared.busy_for_others = True
    with pool:
        assert pool.wait_for_servers(2, timeout=5)
        assert wait_until(lambda: _state(pool, "http://127.0.0.1:1/") == "busy", timeout=5)
        for i in range(3):  # one after the other: the free server is idle each time
            job = pool.submit(prompt=f"ours {i}")
            assert job.result(timeout=5).video_path.exists() and job.server == "http://127.0.0.1:2/"
        assert shared.events == [] and [what for what, _ in free.events].count("collected") == 3
        shared.busy_for_others = False  # their shot is done: the next check says so, and it takes work again
        assert wait_until(lambda: _state(pool, "http://127.0.0.1:1/") == "idle", timeout=5)


def test_scripted_a_lost_job_runs_elsewhere_only_when_retries_were_asked(tmp_path):
    gate = threading.Event()
    servers, pool = _scripted(tmp_path, 3)
    for server in servers.values():
        server.scripts = [_gated(gate)]
    with pool:
        assert pool.wait_for_servers(3, timeout=5)
        again = pool.submit(prompt="retry me", retries=1)
        once = pool.submit(prompt="do not retry me")
        assert wait_until(lambda: again.progress.step == 1 and once.progress.step == 1, timeout=5)
        assert again.server != once.server
        first = again.server
        for job in (again, once):  # their servers stop: the runs' connections drop, the health checks say down
            servers[job.server.rstrip("/")].stop_server()
        with pytest.raises(JobLostError) as lost:
            once.result(timeout=5)
        assert once.server in lost.value.reason and lost.value.server == once.server
        gate.set()
        assert again.result(timeout=5).video_path.exists()
        third = next(f"{url}/" for url in servers if f"{url}/" not in (first, once.server))
        assert [h["server"] for h in again.history] == [first, third]
        assert again.history[0]["outcome"].startswith("lost")


def test_scripted_a_server_that_restarts_mid_run_loses_the_job_and_keeps_serving(tmp_path):
    servers, pool = _scripted(tmp_path, 1)
    (server,) = servers.values()
    gate = threading.Event()
    server.scripts = [(("step", 1, 3), ("gate", gate), ("restart",))]
    with pool:
        job = pool.submit(prompt="lost to a restart")
        assert wait_until(lambda: job.progress.step == 1, timeout=5)  # the pool follows the run: it reached WanGP
        gate.set()
        with pytest.raises(JobLostError, match="restarted"):
            job.result(timeout=5)
        after = pool.submit(prompt="after the restart")  # the new process takes work (a new client session)
        assert after.result(timeout=5).video_path.exists()
        assert server.instance == 2 and server.opened == 2


# --- real servers -----------------------------------------------------------------------------------------------


def test_pool_spreads_jobs_and_shows_its_view(make_emulator, tmp_path):
    servers = [make_emulator("v12"), make_emulator("v12")]
    with _pool([s.url for s in servers], tmp_path) as pool:
        assert pool.wait_for_servers(2, timeout=10)
        jobs = [pool.submit(prompt=f"spread {i} [[slow]]", frames=5, steps=4) for i in range(4)]  # ~2 s each
        assert wait_until(lambda: sum(len(v.running) for v in pool.view().servers) == 2, timeout=10)
        view = pool.view()
        assert {s.state for s in view.servers} == {"busy"}
        assert sum(len(s.queued) for s in view.servers) + sum(len(s.running) for s in view.servers) + len(
            view.waiting) == sum(not j.done() for j in jobs)
        results = [j.result(timeout=60) for j in jobs]
        assert all(r.video_path.exists() for r in results)
        assert {j.server for j in jobs} == {s.url for s in servers}
        view = pool.view()
        assert sum(s.completed for s in view.servers) == 4 and all(s.completed >= 1 for s in view.servers)
        assert all(s.state == "idle" and s.model == "t2v_1.3B" and s.wangp_version == "12.60" for s in view.servers)
        assert "idle" in str(view)


def test_a_server_busy_for_someone_else_is_avoided(make_emulator, tmp_path):
    # (The reverse, our own work not taken for someone else's once it is done, is the last check of
    # test_pool_spreads_jobs_and_shows_its_view.)
    from blender_movie_director.backend.wan2gp import Wan2GPClient

    shared, free = make_emulator("v12"), make_emulator("v12")
    with _pool([shared.url, free.url], tmp_path) as pool:
        assert pool.wait_for_servers(2, timeout=10)

        with Wan2GPClient(shared.url, output_dir=tmp_path / "theirs", timeouts=FAST) as someone:
            # Two of theirs: one generates, the other waits in Gradio's queue, which is what a stranger sees.
            theirs = [someone.submit(prompt=f"someone else's shot {i} [[slow]]", frames=5, steps=20)
                      for i in range(2)]
            assert wait_until(lambda: _state(pool, shared.url) == "busy", timeout=15)
            job = pool.submit(prompt="ours, while they generate", frames=5, steps=1)
            job.result(timeout=60)
            assert job.server == free.url
            for shot in theirs:
                shot.cancel()


def test_each_job_saves_into_its_own_folder_and_its_record_keeps_it(make_emulator, tmp_path):
    server = make_emulator("v12")
    with _pool([server.url], tmp_path) as pool:
        job = pool.submit(prompt="a fox in its folder", frames=5, steps=2, seed=7, output_dir=tmp_path / "a")
        assert job.to_record()["output_dir"] == str(tmp_path / "a")
        assert job.result(timeout=60).video_path.parent == tmp_path / "a"
        # the same fixed-seed shot, asked for elsewhere: the cached video is put in that job's folder
        twin = pool.submit(prompt="a fox in its folder", frames=5, steps=2, seed=7, output_dir=tmp_path / "b")
        assert twin.result(timeout=30).video_path.parent == tmp_path / "b" and twin.cached
        plain = pool.submit(prompt="a hare", frames=5, steps=2)  # no folder of its own: the pool's
        assert plain.result(timeout=60).video_path.parent == tmp_path / "out"
        resumed = pool.resume(job.to_record() | {"job": None})  # nothing to re-attach to: sent again, same folder
        assert resumed.result(timeout=30).video_path.parent == tmp_path / "a"


def test_server_stopped_mid_run_its_queue_moves_and_it_rejoins(make_emulator, tmp_path):
    a, b = make_emulator("v12"), make_emulator("v12")
    with _pool([a.url, b.url], tmp_path) as pool:
        assert pool.wait_for_servers(2, timeout=10)
        lost = pool.submit(prompt="lost on a [[slow]]", frames=5, steps=20)  # 10 s on a, unless stopped
        assert wait_until(lambda: lost.server is not None)
        victim = a if lost.server == a.url else b
        survivor = b if victim is a else a
        assert wait_until(lambda: any(e["event"] == "step" for e in victim.events()))
        others = [pool.submit(prompt=f"after {i}", frames=5, steps=4) for i in range(4)]
        assert wait_until(lambda: any(pool._servers[victim.url].queue), timeout=10)  # some wait in the victim's queue
        port, victim_url = victim.port, victim.url
        victim.stop()
        with pytest.raises(JobLostError) as info:
            lost.result(timeout=30)
        assert victim_url in info.value.reason and info.value.server == victim_url and "lost" in str(info.value)
        assert all(j.result(timeout=60).video_path.exists() for j in others)  # moved to the survivor
        assert {j.server for j in others} == {survivor.url}
        assert wait_until(lambda: _state(pool, victim_url) == "down", timeout=5)

        back = EmulatorServer("v12", port=port, output_dir=tmp_path / "back", step_seconds=0.05)
        back.start()
        try:
            assert wait_until(lambda: _state(pool, victim_url) == "idle", timeout=10)
            jobs = [pool.submit(prompt=f"rejoined {i}", frames=5, steps=4) for i in range(2)]
            assert all(j.result(timeout=60).video_path.exists() for j in jobs)
            assert {j.server for j in jobs} == {victim_url, survivor.url}  # the returning server took work again
        finally:
            back.stop()


def test_unreachable_servers_fail_waiting_jobs_after_the_wait(tmp_path):
    with _pool(["http://127.0.0.1:9"], tmp_path, wait_for_server=0.5) as pool:
        job = pool.submit(prompt="nowhere to go")
        with pytest.raises(Wan2GPConnectionError, match="no WanGP server"):
            job.result(timeout=10)
        assert pool.view().servers[0].state == "down"


def test_cancel_a_job_waiting_in_the_pool(tmp_path):
    with _pool(["http://127.0.0.1:9"], tmp_path) as pool:
        job = pool.submit(prompt="cancel me")
        assert job.cancel() and job.status().value == "cancelled"
        assert not job.cancel()


def test_health_report_of_a_non_wangp_marks_the_server_unsupported(tmp_path):
    pool = _policy_pool(tmp_path, a={})
    server: _Server = next(iter(pool._servers.values()))
    report = HealthReport(server.url, True, time.time(), kind="gradio")
    with pool._lock:
        pool._mark_up(server, report)
    assert pool.view().servers[0].state == "unsupported"
