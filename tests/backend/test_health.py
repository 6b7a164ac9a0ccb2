"""Health checks and the monitor, against real emulators on loopback (stopped and restarted for real)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from quiet import wait_until

from blender_movie_director.backend.health import (
    HealthEvent,
    HealthEventKind,
    HealthMonitor,
    HealthReport,
    check_health,
)
from blender_movie_director.backend.wan2gp import Wan2GPClient
from blender_movie_director.backend.wan2gp._config import Timeouts
from wan2gp_emulator import EmulatorServer

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


class _Recorder:
    """Collects events with the monotonic time they arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, HealthEvent]] = []

    def __call__(self, event: HealthEvent) -> None:
        with self.lock:
            self.events.append((time.monotonic(), event))

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind.value for _, e in self.events]

    def first(self, kind: str, after: float = 0.0) -> float | None:
        with self.lock:
            return next((t for t, e in self.events if e.kind.value == kind and t >= after), None)


@pytest.fixture
def plain_http() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_check_of_a_wangp_server(emulator) -> None:
    report = check_health(emulator.url)
    assert report.reachable and report.is_wangp and report.kind == "wangp"
    assert report.wangp_version == emulator.version
    assert report.gradio_version and report.app_id
    assert report.latency_ms is not None and 0 < report.latency_ms < 2000
    # nothing waits, but another session may be generating alone: busy is unknown, never "idle"
    assert report.server_waiting == 0 and report.busy is None and report.state == "up"
    assert report.to_dict()["state"] == "up"


def test_check_of_nothing_and_of_another_server(plain_http) -> None:
    down = check_health(f"http://127.0.0.1:{_free_port()}/", timeout=0.5)
    assert not down.reachable and down.state == "down" and down.kind == "closed" and down.error
    other = check_health(plain_http, timeout=0.5)
    assert other.reachable and not other.is_wangp and other.kind == "http" and other.state == "up"


def test_same_process_is_not_fingerprinted_again(emulator_v12) -> None:
    first = check_health(emulator_v12.url)
    # a previous report of the same process (same app id) is trusted: /config is not read again
    marked = HealthReport(**{**first.__dict__, "wangp_version": "99.0"})
    assert check_health(emulator_v12.url, previous=marked).wangp_version == "99.0"
    other_process = HealthReport(**{**first.__dict__, "wangp_version": "99.0", "app_id": "something-else"})
    assert check_health(emulator_v12.url, previous=other_process).wangp_version == emulator_v12.version


def test_monitor_sees_a_server_stop_and_come_back_within_two_periods(make_emulator, tmp_path) -> None:
    server = make_emulator("v12")
    port = _port(server.url)
    period = 0.6  # checks are bounded by 0.48 s: room for a loaded 2-core machine
    recorder = _Recorder()
    monitor = HealthMonitor([server.url], period=period, history=100, on_event=recorder)
    with monitor:
        assert wait_until(lambda: "up" in recorder.kinds(), 5), recorder.kinds()
        stopping_at = time.monotonic()  # a check may see it gone before stop() returns
        server.stop()
        stopped_at = time.monotonic()
        assert wait_until(lambda: recorder.first("down", stopping_at) is not None, 4 * period)
        down_at = recorder.first("down", stopping_at)
        assert down_at - stopped_at <= 2 * period
        again = EmulatorServer(flavour="v12", host="127.0.0.1", port=port, output_dir=tmp_path / "again",
                               step_seconds=0.05)
        again.start()  # it listens before start() returns: the monitor may see it up even before that
        started_at = time.monotonic()
        try:
            assert wait_until(lambda: recorder.first("up", down_at + 1e-6) is not None, 4 * period), [
                (round(r.checked_at - time.time(), 2), r.reachable, r.error) for r in monitor.history()[-6:]]
            assert recorder.first("up", down_at + 1e-6) - started_at <= 2 * period
            monitor.stop()  # before the server: the last report is then "up"
        finally:
            again.stop()
    assert not monitor.running
    kinds = recorder.kinds()
    first_up = kinds.index("up")
    assert kinds[first_up:first_up + 3] == ["up", "down", "up"], kinds
    states = [r.reachable for r in monitor.history()]
    assert True in states and False in states
    assert monitor.latest().reachable  # the last check before stop() saw it up


def test_monitor_reports_busy_and_idle_with_a_client(emulator_v12, out_dir) -> None:
    recorder = _Recorder()
    with Wan2GPClient(emulator_v12.url, output_dir=out_dir, timeouts=FAST) as client:
        monitor = HealthMonitor([emulator_v12.url], period=0.2, timeout=2.0, clients={emulator_v12.url: client},
                                on_event=recorder)
        with monitor:
            assert wait_until(lambda: monitor.latest() is not None, 5)
            assert monitor.latest().busy is None
            job = client.submit(prompt="busy for a while", frames=9, steps=20)
            assert wait_until(lambda: "busy" in recorder.kinds(), 10), recorder.kinds()
            busy_report = next(e.report for _, e in recorder.events if e.kind is HealthEventKind.BUSY)
            assert wait_until(job.done, 60)
            assert wait_until(lambda: "idle" in recorder.kinds(), 5), recorder.kinds()
    assert busy_report.current_model == "t2v_1.3B" and busy_report.queue_length == 1
    kinds = recorder.kinds()
    assert kinds.index("busy") < kinds.index("idle")


def test_monitor_is_safe_to_use_from_threads(emulator_v12) -> None:
    calls: list[str] = []

    def broken(event: HealthEvent) -> None:
        raise RuntimeError("a listener bug")

    monitor = HealthMonitor(emulator_v12.url, period=0.05, timeout=2.0, history=3, on_event=broken)
    remove = monitor.add_listener(lambda e: calls.append(e.kind.value))
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(200):
                monitor.latest()
                monitor.history()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    monitor.start()
    assert monitor.start() is monitor and monitor.running  # idempotent
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert wait_until(lambda: monitor.rounds >= 5, 5)
    remove()
    monitor.stop()
    assert not monitor.running and not errors
    assert calls == ["up"]  # the broken listener did not stop the other one, nor the monitor
    assert len(monitor.history()) == 3  # bounded


def test_monitor_arguments() -> None:
    with pytest.raises(ValueError):
        HealthMonitor([], period=1)
    with pytest.raises(ValueError):
        HealthMonitor(["http://127.0.0.1:1"], period=0)
    monitor = HealthMonitor(["127.0.0.1:7860"], period=1.0)
    assert monitor.urls == ["http://127.0.0.1:7860/"] and monitor.timeout == 0.8
    assert monitor.latest() is None and monitor.history() == []
    with pytest.raises(KeyError):
        monitor.history("http://127.0.0.1:1")


def test_status_never_says_idle_while_another_session_generates(make_emulator, out_dir) -> None:
    server = make_emulator("v12")
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST) as someone:
        job = someone.submit(prompt="someone else's shot [[slow]]", frames=5, steps=10)
        assert wait_until(lambda: any(e["event"] == "step" for e in server.events()), 20)
        report = check_health(server.url)  # a stranger: it can't see that session
        assert report.reachable and report.state != "idle" and report.busy is not False
        job.result(timeout=60)
