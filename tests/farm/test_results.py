"""What a farm job's output folder says without Blender: the storyboard's places carried from the batch file to
the output folder (and through an OpenJD bundle), checked on the way; the stand-in Manager's schema check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blender_movie_director.backend.farm import MANIFEST, load_timeline, read_output
from blender_movie_director.backend.wan2gp import Wan2GPValidationError
from blender_movie_director.cli import main

from .flamenco_manager import check

PLACES = [{"frame_start": 1, "channel": 2, "fill": 20, "meta": ""}, {"frame_start": 21, "channel": 2, "fill": 0,
                                                                    "meta": ""}]


def _batch(tmp_path: Path, places: list[dict]) -> Path:
    path = tmp_path / "film.json"
    path.write_text(json.dumps({"shots": [{"prompt": "one", "frames": 17}, {"prompt": "two", "frames": 17}],
                                "timeline": {"format": 1, "scene": "Scene", "fps": 16, "places": places}}))
    return path


def test_the_bundle_carries_the_storyboards_places(tmp_path: Path) -> None:
    pytest.importorskip("openjd.model")
    batch = _batch(tmp_path, PLACES)
    assert main(["-q", "batch", str(batch), "--openjd", str(tmp_path / "bundle")]) == 0
    copied = tmp_path / "bundle" / "shots.json"
    assert load_timeline(copied) == load_timeline(batch) and load_timeline(copied)["places"] == PLACES
    assert [s["prompt"] for s in json.loads(copied.read_text())["shots"]] == ["one", "two"]


def test_a_bad_timeline_is_refused_before_any_shot_is_sent(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    batch = _batch(tmp_path, PLACES[:1])  # one place for two shots
    out = tmp_path / "out"
    assert main(["shot", str(batch), "--shots", "0", "-o", str(out), "--server", "http://127.0.0.1:9"]) == 2
    assert "one place per shot (2), not 1" in capsys.readouterr().err
    assert not (out / MANIFEST).exists()
    batch = _batch(tmp_path, [PLACES[0], {**PLACES[1], "channel": 0}])
    with pytest.raises(Wan2GPValidationError, match="place 1 must be"):
        load_timeline(batch)


def test_an_output_folder_before_its_first_shot_is_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Wan2GPValidationError, match="is not the output folder of a Movie Director farm job"):
        read_output(out)
    (out / MANIFEST).write_text(json.dumps({"format": 1, "job": "x", "shots": 2, "timeline": None}))
    output = read_output(out)
    assert output.total == 2 and output.problems() == ["shot 0: no task has run it yet",
                                                       "shot 1: no task has run it yet"]


def test_the_stand_in_manager_checks_bodies_against_flamencos_schema() -> None:
    job = {"name": "film", "type": "movie-director-shots", "priority": 50, "submitter_platform": "linux",
           "settings": {"shot_count": 3}, "metadata": {"user.name": "ann"}}
    schema = {"$ref": "#/components/schemas/SubmittedJob"}
    assert check(job, schema) == []
    assert check({**job, "priority": "high"}, schema) == ["body.priority: expected an integer, got 'high'"]
    assert check({**job, "metadata": {"shots": 3}}, schema) == ["body.metadata.shots: expected string, got int 3"]
    assert check({k: v for k, v in job.items() if k != "submitter_platform"}, schema) == [
        "body: submitter_platform is required"]
    assert check({**job, "initial_status": "started"}, schema)[0].startswith("body.initial_status: 'started' is not")


def test_a_task_process_ends_with_its_code_and_all_its_output(tmp_path: Path, emulator_v12) -> None:
    """`movie-director shot` as its own process ends at once when its work is written (end_task): the exit code,
    its JSON and its files are all there, for a shot made now and for one done already."""
    import os
    import subprocess
    import sys

    from blender_movie_director.backend.farm import shot_video_name

    batch = _batch(tmp_path, PLACES)
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "movie-director"), "--json", "shot", str(batch), "-o", str(out),
               "--server", emulator_v12.url]
    env = {**os.environ, "WAN2GP_STATE_DIR": str(tmp_path / "state")}
    for shots, skipped in (("0", False), ("0-1", None)):
        run = subprocess.run([*command, "--shots", shots], capture_output=True, text=True, env=env, timeout=120,
                             check=False)
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout)
        assert [s["skipped"] for s in answer["shots"]] == ([False] if skipped is False else [True, False])
    assert (out / shot_video_name(1)).stat().st_size > 0
    assert json.loads((out / MANIFEST).read_text())["timeline"]["places"] == PLACES


class _CountingForwarder:
    """A loopback TCP forwarder to a server that notes the first request line of each connection (health checks
    read ``/config`` on a connection of its own)."""

    def __init__(self, target: str) -> None:
        import socket
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        self.target = (parts.hostname, parts.port)
        self.first_lines: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            outbound = socket.create_connection(self.target)
            first = inbound.recv(65536)
            self.first_lines.append(first.split(b"\r\n", 1)[0].decode("latin-1"))
            outbound.sendall(first)
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def configs(self) -> int:
        return sum(line.startswith("GET /config") for line in self.first_lines)

    def close(self) -> None:
        self.listener.close()


def test_a_tasks_first_health_check_does_not_read_config_of_a_known_server(tmp_path: Path, emulator_v12) -> None:
    """A farm task is a new program: its pool's first check of the worker's WanGP reads /config (2.6 MB on a real
    12.60) unless the disk API cache knows that server process, as it does once any task has connected to it."""
    from blender_movie_director.backend.pool import ServerPool
    from blender_movie_director.backend.wan2gp import Wan2GPClient
    from blender_movie_director.backend.wan2gp._cache import ApiCache

    forwarder = _CountingForwarder(emulator_v12.url)
    try:
        before = forwarder.configs()
        with ServerPool([forwarder.url], cache_dir=tmp_path / "empty", result_cache=False) as pool:
            assert pool.wait_for_servers(1, timeout=10)
            assert forwarder.configs() == before + 1  # nothing known: /config is read
        client = Wan2GPClient(forwarder.url, output_dir=tmp_path / "out")
        client.api_cache = ApiCache(tmp_path / "cache")
        client.connect()  # an earlier task, recording the server process in the disk cache
        client.close()
        before = forwarder.configs()
        with ServerPool([forwarder.url], cache_dir=tmp_path / "cache", result_cache=False) as pool:
            assert pool.wait_for_servers(1, timeout=10)
            assert pool.view().servers[0].wangp_version
            assert forwarder.configs() == before  # known: not read again
    finally:
        forwarder.close()
