"""Hostile or broken server answers, through our hostile gateway in front of the emulator.

Each is refused with a clear error; nothing is written outside the output folder (and nothing unchecked inside
it); memory stays bounded whatever size the server claims or sends.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import FAULT_TIMEOUTS, make_client, wait_until
from hostile import Cut

from blender_movie_director.backend.wan2gp import (
    JobFailedError,
    UnsupportedServerError,
    Wan2GPServerError,
)
from blender_movie_director.backend.wan2gp._mp4 import probe
from blender_movie_director.backend.wan2gp._webui import session as session_module

pytestmark = pytest.mark.timeout(90)

GALLERY = "/refresh_gallery"  # the gallery endpoint of the emulated WanGP 12 (the client finds it itself)


def _rewrite_gallery(change: Callable[[list[dict]], list[dict]]) -> Callable[[str, list], list]:
    """A rewrite_output that replaces the gallery items of the gallery endpoint's answer."""

    def rewrite(api_name: str, data: list) -> list:
        if api_name != GALLERY:
            return data
        for i, value in enumerate(data):
            items = value.get("value") if isinstance(value, dict) else None
            if isinstance(items, list) and items and isinstance(items[0], dict) and ("video" in items[0]):
                data[i] = {**value, "value": change(items)}
        return data

    return rewrite


def _with_file(url: str, **fields) -> dict:
    return {"video": {"path": "/tmp/gradio/x/out.mp4", "url": url, "size": None, "orig_name": "out.mp4",
                      "mime_type": "video/mp4", "is_stream": False, "meta": {"_type": "gradio.FileData"},
                      **fields}, "caption": None}


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(output folder, its parent): afterwards the parent holds nothing but the output folder."""
    out = tmp_path / "shots"
    out.mkdir()
    yield out, tmp_path
    assert _tree(tmp_path) - _tree(out) == {out}, "something was written outside the output folder"


@pytest.mark.parametrize(("bad", "words"), [
    ({"path": "/tmp/gradio/x/../../../etc/passwd", "url": None}, "goes up with '..'"),
    ({"url": "GATEWAY/gradio_api/file=/tmp/gradio/%2e%2e/%2e%2e/etc/passwd"}, "goes up with '..'"),
    ({"url": "http://203.0.113.9/out.mp4"}, "another host"),  # no connection is even tried (see the guard)
    ({"url": "file:///etc/passwd"}, "another host"),
])
def test_a_gallery_that_points_elsewhere_is_refused(bad, words, emulator_v12, hostile_to, sandbox):
    out, _ = sandbox
    gateway = hostile_to(emulator_v12.url)
    bad = {k: (v.replace("GATEWAY/", gateway.url) if isinstance(v, str) else v) for k, v in bad.items()}
    gateway.rewrite_output = _rewrite_gallery(lambda items: [{"video": {**items[0]["video"], **bad},
                                                              "caption": None}])
    with make_client(gateway.url, out) as client:
        with pytest.raises(JobFailedError, match=words):
            client.generate(prompt="a gallery that lies", frames=5, steps=1)
    assert not list(out.iterdir())


def test_odd_names_from_the_server_are_never_used_as_paths(emulator_v12, hostile_to, sandbox):
    out, parent = sandbox
    odd = ["../../../evil.sh", "/etc/cron.d/evil", "C:\\Windows\\System32\\evil.exe", "CON", "a\x00b.mp4",
           "\u202eevil\u202c.mp4", "x" * 600 + ".mov", ".hidden", "~/.bashrc"]
    gateway = hostile_to(emulator_v12.url)
    gateway.rewrite_output = _rewrite_gallery(
        lambda items: [{"video": {**items[0]["video"], "orig_name": name}, "caption": None} for name in odd])
    with make_client(gateway.url, out) as client:
        result = client.generate(prompt="odd names", frames=5, steps=1)
    assert len(result.files) == len(odd)
    for path in result.files:
        assert path.parent == out and path.name.startswith("odd_names_t2v_1_3B_")
        assert path.suffix in (".mp4", ".mov") and probe(path).frames == 5
    assert not (parent / "evil.sh").exists() and not Path("/etc/cron.d/evil").exists()


def _endless(chunk: bytes = b"\0" * 65536) -> Iterator[bytes]:
    while True:
        yield chunk


def _peak_rss_during(fn: Callable[[], None]) -> int:
    """The largest rise of this process's RSS while ``fn`` runs (sampled every 10 ms)."""
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join(2)
    return peak[0] - base


def _hostile_download(route, fields, server, hostile_to, out, cap: int) -> tuple[list[BaseException], int]:
    """Generate through a gateway whose gallery offers ``route``'s file. Returns (errors, peak RSS rise)."""
    gateway = hostile_to(server.url)
    gateway.routes["/hostile/out.mp4"] = route
    gateway.rewrite_output = _rewrite_gallery(lambda items: [_with_file(gateway.url + "hostile/out.mp4",
                                                                        **fields)])
    errors: list[BaseException] = []
    with make_client(gateway.url, out, max_jobs=1) as client:
        client.settings.max_download_bytes = cap

        def run() -> None:
            try:
                client.generate(prompt="a hostile download", frames=5, steps=1)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        rise = _peak_rss_during(run)
    return errors, rise


@pytest.mark.parametrize(("route", "fields", "words"), [
    # announced 1000 bytes, sends 5 MB
    (lambda h: h.send(200, b"\0" * 5_000_000, {"Content-Type": "video/mp4"}), {"size": 1000},
     "more than the 1000 bytes it announced"),
    # announces a terabyte
    (lambda h: h.stream(200, iter([b"\0"]), {"Content-Length": str(10**12)}), {}, "offers a 1000000000000 byte file"),
    # no length, never ends: stopped at the size cap (32 MB here)
    (lambda h: h.stream(200, _endless(), {"Content-Type": "video/mp4"}), {}, "exceeded the 33554432 byte limit"),
    # not a video at all
    (lambda h: h.send(200, b"<html>502 Bad Gateway</html>" * 100, {"Content-Type": "video/mp4"}), {},
     "not a usable video"),
])
def test_downloads_that_are_too_large_or_not_videos_are_refused(route, fields, words, emulator_v12, hostile_to,
                                                                sandbox):
    out, _ = sandbox
    errors, _ = _hostile_download(route, fields, emulator_v12, hostile_to, out, cap=32 * 1024 * 1024)
    assert errors and isinstance(errors[0], JobFailedError), errors
    assert words in str(errors[0])
    assert not list(out.iterdir())  # no partial, no unchecked file


def test_an_endless_download_is_streamed_to_disk_not_held_in_memory(emulator_v12, hostile_to, sandbox):
    # The process also runs the emulator and the gateway, so its RSS moves by tens of MB on its own: the cap is
    # set far above that noise, and a client that buffered the download would rise by the whole cap.
    out, _ = sandbox
    cap = 256 * 1024 * 1024
    route = lambda h: h.stream(200, _endless(), {"Content-Type": "video/mp4"})  # noqa: E731
    errors, rise = _hostile_download(route, {}, emulator_v12, hostile_to, out, cap=cap)
    assert errors and f"exceeded the {cap} byte limit" in str(errors[0]), errors
    assert rise < cap // 3, f"memory rose by {rise / 2**20:.0f} MB while {cap / 2**20:.0f} MB streamed in"
    assert not list(out.iterdir())


def _one_shot(match: bytes, replace: Callable[[bytes], bytes | None]) -> Callable[[bytes], bytes | None]:
    """A rewrite_sse that changes the first line containing ``match``, and only that one."""
    done = threading.Event()

    def rewrite(line: bytes) -> bytes | None:
        if not done.is_set() and match in line:
            done.set()
            return replace(line)
        return line

    return rewrite


@pytest.mark.parametrize(("replace", "words"), [
    (lambda line: line[:40], "malformed JSON"),
    (lambda line: b"data: [1, 2, 3]", "without a type"),
    (lambda line: b"event: surprise", "not an event"),
    (lambda line: b"data: " + b'"' + b"x" * (2 * 1024 * 1024) + b'"', "over 1 MB"),
])
def test_a_malformed_event_stream_fails_the_job_clearly_and_stops_the_work(replace, words, make_emulator,
                                                                        hostile_to, out_dir, monkeypatch):
    monkeypatch.setattr(session_module, "MAX_EVENT_BYTES", 1024 * 1024)
    server = make_emulator("v12")
    gateway = hostile_to(server.url)
    gateway.rewrite_sse = _one_shot(b'"progress_data"', replace)
    with make_client(gateway.url, out_dir) as client:
        job = client.submit(prompt="a garbled stream [[slow]]", frames=9, steps=20)
        with pytest.raises(Wan2GPServerError, match=words):
            job.result(timeout=30)
    def events(kind: str) -> list[dict]:
        return [e for e in server.events() if e["session"] == job.session_hash and e["event"] == kind]

    wait_until(lambda: events("aborted"), 10, "the abort on the server (at the next step)")
    assert not events("completed")
    assert not list(out_dir.iterdir())


def test_a_stream_cut_in_the_middle_of_a_message_is_a_dropped_connection(make_emulator, hostile_to, out_dir):
    server = make_emulator("v12")
    gateway = hostile_to(server.url)
    cut = threading.Event()

    def rewrite(line: bytes) -> bytes | Cut:
        if not cut.is_set() and re.search(rb'"index":\s*2\b', line):
            cut.set()
            return Cut(line[: len(line) // 2])  # half a message, then the connection closes
        return line

    gateway.rewrite_sse = rewrite
    with make_client(gateway.url, out_dir) as client:
        job = client.submit(prompt="cut mid-message [[slow]]", frames=9, steps=6)
        result = job.result(timeout=60)
    assert cut.is_set() and probe(result.video_path).frames == 9
    events = [e for e in server.events() if e["session"] == job.session_hash]
    assert len([e for e in events if e["event"] == "started"]) == 1  # collected from the same run, not run again


@pytest.mark.parametrize(("rewrite", "error", "words"), [
    (lambda config: b'{"components": [{"id": 1, "type": "markdown"', UnsupportedServerError, "not valid JSON"),
    (lambda config: [1, 2, 3], UnsupportedServerError, "not a JSON object"),
    (lambda config: {**config, "dependencies": "none"}, UnsupportedServerError, "no usable dependency graph"),
    (lambda config: {**config, "dependencies": [{**d, "api_name": "run_" + d["api_name"]}
                                                if str(d.get("api_name")).startswith("process_tasks") else d
                                                for d in config["dependencies"]]},
     UnsupportedServerError, "cannot resolve its generation chain; missing: process_tasks"),
])
def test_a_broken_config_or_endpoint_graph_is_refused_at_connect(rewrite, error, words, emulator_v12, hostile_to,
                                                                 out_dir):
    gateway = hostile_to(emulator_v12.url)
    gateway.rewrite_config = rewrite
    with pytest.raises(error, match=words):
        make_client(gateway.url, out_dir).connect()


def test_an_endless_config_is_refused_with_bounded_memory(emulator_v12, hostile_to, out_dir, monkeypatch):
    monkeypatch.setattr(session_module, "MAX_DESCRIBE_BYTES", 16 * 1024 * 1024)
    gateway = hostile_to(emulator_v12.url)
    gateway.routes["/config"] = lambda h: h.stream(200, _endless(b"[" * 65536), {"Content-Type": "application/json"})
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            make_client(gateway.url, out_dir).connect()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    rise = _peak_rss_during(connect)
    assert errors and isinstance(errors[0], UnsupportedServerError) and "larger than 16 MB" in str(errors[0])
    assert rise < 48 * 1024 * 1024, f"memory rose by {rise / 2**20:.0f} MB"


def test_a_slow_first_answer_does_not_fail_the_shot(emulator_v12, hostile_to, out_dir):
    """A loaded server (or machine) may take longer than ``timeouts.connect`` to say who it is as a shot starts;
    that read is idempotent and is tried again, where a heartbeat probe that times out means a frozen server."""
    gateway = hostile_to(emulator_v12.url)
    app_id = httpx.get(emulator_v12.url + "gradio_api/app_id", timeout=5).content
    slow_answers: list[float] = []

    def slow_once(handler) -> None:
        if not slow_answers:
            slow_answers.append(time.monotonic())
            time.sleep(FAULT_TIMEOUTS.connect + 1)  # the client has given up on this one
        handler.send(200, app_id, {"Content-Type": "application/json"})

    with make_client(gateway.url, out_dir) as client:
        client.connect()
        gateway.routes["/gradio_api/app_id"] = slow_once
        result = client.generate(prompt="a slow server", frames=5, steps=1)
    assert slow_answers, "the shot never asked the server who it is"
    assert probe(result.files[0]).frames == 5
    assert sum(r.startswith("GET /gradio_api/app_id") for r in gateway.requests) >= 2


def test_a_server_whose_queue_answers_503_after_a_drop_is_waited_for(emulator_v12, hostile_to, out_dir):
    """After the job's stream drops, the same server (its app id unchanged) answers 503 on queue/join for a while,
    as one that is stopping does (seen in the suite: the old process still answered through a kept-alive
    connection). The re-attachment waits for its queue within ``timeouts.reconnect``; the shot is collected."""
    gateway = hostile_to(emulator_v12.url)
    cut, busy = threading.Event(), []

    def busy_twice(handler) -> None:
        busy.append(time.monotonic())
        if len(busy) >= 2:
            gateway.routes.pop("/gradio_api/queue/join", None)
        handler.send(503, b'{"detail": "Queue is full."}', {"Content-Type": "application/json"})

    def cut_when_asked(line: bytes) -> bytes | None:
        if cut.is_set() and "/gradio_api/queue/join" not in gateway.routes and not busy:
            gateway.routes["/gradio_api/queue/join"] = busy_twice
            return None  # the stream ends here: the client sees a drop
        return line

    gateway.rewrite_sse = cut_when_asked
    with make_client(gateway.url, out_dir) as client:
        job = client.submit(prompt="back after a drop [[slow]]", frames=9, steps=6)
        wait_until(lambda: (job.progress.step or 0) >= 2 or job.done(), 30, "the job to run")
        cut.set()
        result = job.result(timeout=60)
    assert len(busy) == 2, busy
    assert probe(result.video_path).frames == 9


def test_a_malformed_queue_answer_fails_clearly(emulator_v12, hostile_to, out_dir):
    gateway = hostile_to(emulator_v12.url)
    gateway.routes["/gradio_api/queue/join"] = lambda h: h.send(200, b"<html>proxy error</html>")
    with make_client(gateway.url, out_dir) as client:
        with pytest.raises(Wan2GPServerError, match="answer to queue/join is malformed"):
            client.generate(prompt="no queue", frames=5, steps=1)
