"""Caches, against a real emulator: API description (cold, warm, from disk, after a restart), model lists,
and finished shots (hit, opt-out, random seed, changed setting or input file)."""

from __future__ import annotations

import json
import time

import pytest

from blender_movie_director.backend.pool import ServerPool
from blender_movie_director.backend.wan2gp import GenerationSettings, Timeouts, Wan2GPClient, Wan2GPValidationError
from blender_movie_director.backend.wan2gp._cache import ApiCache, ModelListCache, ResultCache, cached_generate

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30)


def _connect(url: str, cache: ApiCache, out_dir) -> Wan2GPClient:
    client = Wan2GPClient(url, output_dir=out_dir, timeouts=FAST)
    client.api_cache = cache
    client.connect()
    return client


def _started(server) -> int:
    return len([e for e in server.events() if e["event"] == "started"])


def test_api_cache_cold_warm_from_disk_and_after_a_restart(emulator_v12, tmp_path, out_dir):
    cache = ApiCache(tmp_path)
    _connect(emulator_v12.url, cache, out_dir).close()
    assert cache.stats == {"warm": 0, "config": 0, "cold": 1} and cache.known(emulator_v12.url)
    client = _connect(emulator_v12.url, cache, out_dir)  # same server process: nothing downloaded
    try:
        assert cache.stats["warm"] == 1
        assert client.generate(prompt="warm connect", frames=5, steps=1).video_path.exists()
    finally:
        client.close()

    from_disk = ApiCache(tmp_path)  # another program
    _connect(emulator_v12.url, from_disk, out_dir).close()
    assert from_disk.stats == {"warm": 1, "config": 0, "cold": 0}

    # A restarted server (a new Gradio app id) with the same /config: only /config is downloaded again.
    index_path = tmp_path / "api" / "index.json"
    index = json.loads(index_path.read_text())
    next(iter(index.values()))["app_id"] = "an-earlier-process"
    index_path.write_text(json.dumps(index))
    restarted = ApiCache(tmp_path)
    client = _connect(emulator_v12.url, restarted, out_dir)
    try:
        assert restarted.stats == {"warm": 0, "config": 1, "cold": 0}
        assert client.generate(prompt="after a restart", frames=5, steps=1).video_path.exists()
    finally:
        client.close()
    assert ApiCache(tmp_path)._load_index() != index  # the new app id is remembered


def test_model_list_cache_keeps_a_list_for_its_lifetime(emulator_v6, out_dir):
    now = [0.0]
    cache = ModelListCache(ttl=30, clock=lambda: now[0])
    with Wan2GPClient(emulator_v6.url, output_dir=out_dir, timeouts=FAST) as client:
        calls = []
        real = client.list_models
        client.list_models = lambda **kw: calls.append(kw) or real(**kw)  # type: ignore[method-assign]
        first = cache.get(client)
        assert first and cache.get(client) == first and len(calls) == 1
        now[0] = 31.0
        cache.get(client)
        assert len(calls) == 2
        cache.invalidate(emulator_v6.url)
        cache.get(client)
        assert len(calls) == 3


def test_result_cache_hit_opt_out_random_seed_and_changed_setting(emulator_v12, tmp_path):
    shot = {"prompt": "a lighthouse in a storm", "frames": 5, "steps": 2, "seed": 1234}
    with ServerPool([emulator_v12.url], output_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                    timeouts=FAST, health_period=1.0) as pool:
        first = pool.submit(shot).result(timeout=60)
        started = _started(emulator_v12)

        hit_job = pool.submit(shot)
        hit = hit_job.result(timeout=1)
        assert hit_job.cached and hit.model_extra["cached"] and hit.model_extra["cached_from"] == first.job_id
        assert hit.video_path != first.video_path and hit.video_path.read_bytes() == first.video_path.read_bytes()
        assert hit.elapsed_seconds < 0.25 and _started(emulator_v12) == started  # nothing generated

        fresh = pool.submit(shot, use_cache=False).result(timeout=60)  # opt-out per call
        assert not fresh.model_extra.get("cached") and _started(emulator_v12) == started + 1

        changed = pool.submit({**shot, "steps": 3}).result(timeout=60)  # one setting differs: a miss
        assert not changed.model_extra.get("cached") and _started(emulator_v12) == started + 2

        for _ in range(2):  # -1 (random) seeds never hit
            random_seed = pool.submit({**shot, "seed": -1}).result(timeout=60)
            assert not random_seed.model_extra.get("cached")
        assert _started(emulator_v12) == started + 4


def test_identical_fixed_seed_shots_in_flight_are_generated_once(make_emulator, tmp_path):
    server = make_emulator("v12")
    shot = {"prompt": "the same shot twice at once", "frames": 5, "steps": 6, "seed": 77}
    with ServerPool([server.url], output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", timeouts=FAST,
                    health_period=1.0, per_server_limit=2) as pool:
        leader, twin, other = pool.submit(shot), pool.submit(shot), pool.submit({**shot, "seed": 78})
        assert "waiting for the identical job" in twin.progress.phase
        first, second = leader.result(timeout=60), twin.result(timeout=60)
        other.result(timeout=60)
        assert not leader.cached and twin.cached and second.model_extra["cached_from"] == first.job_id
        assert second.video_path.read_bytes() == first.video_path.read_bytes()
        assert _started(server) == 2  # the leader and the other seed: the twin generated nothing

        # The twin of a job that is cancelled runs itself: it did not ask to be cancelled.
        started = _started(server)
        leader, twin = pool.submit({**shot, "seed": 79}), pool.submit({**shot, "seed": 79})
        leader.cancel()
        result = twin.result(timeout=60)
        assert not twin.cached and result.video_path.exists() and _started(server) <= started + 2


def test_result_key_follows_input_file_content_not_name(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    image = tmp_path / "start.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"a" * 64)
    settings = GenerationSettings(prompt="from an image", model="i2v", image_start=image, seed=7)
    key = cache.key(settings, "12.60")
    assert key is not None and cache.key(settings, "12.60") == key
    assert cache.key(settings, "6.31") != key  # another WanGP version
    assert cache.key(settings.model_copy(update={"client_id": "another job"}), "12.60") == key
    assert cache.key(settings.model_copy(update={"seed": -1}), "12.60") is None
    copy = tmp_path / "renamed.png"
    copy.write_bytes(image.read_bytes())
    assert cache.key(GenerationSettings(prompt="from an image", model="i2v", image_start=copy, seed=7), "12.60") == key
    time.sleep(0.01)
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"b" * 64)  # same name, new content
    assert cache.key(GenerationSettings(prompt="from an image", model="i2v", image_start=image, seed=7),
                     "12.60") != key


def test_cached_generate_with_a_plain_client(emulator_v6, tmp_path, out_dir):
    cache = ResultCache(tmp_path / "cache")
    with Wan2GPClient(emulator_v6.url, output_dir=out_dir, timeouts=FAST) as client:
        first = cached_generate(client, {"prompt": "a quiet harbour", "frames": 5, "steps": 1, "seed": 3}, cache)
        started = _started(emulator_v6)
        again = cached_generate(client, {"prompt": "a quiet harbour", "frames": 5, "steps": 1, "seed": 3}, cache)
    assert again.model_extra["cached"] and again.video_path.read_bytes() == first.video_path.read_bytes()
    assert _started(emulator_v6) == started and len(cache) == 1


def test_config_fingerprint_ignores_what_changes_between_runs():
    from blender_movie_director.backend.wan2gp._cache import config_fingerprint

    def config(app_id: int, root: str, address: str, title: str = "WanGP") -> dict:
        return {"app_id": app_id, "root": root, "title": title, "components": [
            {"id": 1, "type": "state", "props": {"delete_callback": f"<function State.__init__.<locals>.<lambda> at "
                                                                     f"{address}>"}}]}

    first = config_fingerprint(config(1, "http://127.0.0.1:7860", "0x7f8f23ab8d60"))
    assert config_fingerprint(config(2, "http://gpu1:7860", "0x7f5e632edd00")) == first
    assert config_fingerprint(config(1, "http://127.0.0.1:7860", "0x7f8f23ab8d60", title="Other")) != first


def test_a_first_shot_reads_the_form_on_its_own_session_and_a_new_program_knows_it(make_emulator, tmp_path,
                                                                                  out_dir):
    server = make_emulator("v12")
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST) as client:
        client.api_cache = None
        result = client.generate(prompt="first", frames=5, steps=1, model="t2v_1.3B")
    assert result.video_path.exists()
    # the client's own session never switched models to read the form: one session, the shot's
    assert [s["model_type"] for s in server.sessions().values()] == ["t2v_1.3B"]

    cache = ApiCache(tmp_path)
    _connect(server.url, cache, out_dir).generate(prompt="kept", frames=5, steps=1, model="t2v_1.3B")
    later = _connect(server.url, ApiCache(tmp_path), out_dir)  # another program, same server build
    try:
        form = later._transport.known_form("t2v_1.3B")
        assert form is not None and form.rule.step == 4  # the rules are known before anything is sent
        with pytest.raises(Wan2GPValidationError, match="frames|video_length"):
            later.submit(prompt="a wrong length", video_length=6, model="t2v_1.3B")
    finally:
        later.close()


def test_a_new_session_starts_with_the_server_start_up_model(make_emulator, out_dir):
    server = make_emulator("v12")
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST) as client:
        startup = client._require_api().model_dropdown_choices()[0]
        result = client.generate(prompt="no switch needed", frames=5, steps=1, model=startup)
    started = [e for e in server.events() if e["event"] == "started"]
    assert result.settings.model == startup and started[-1]["detail"].startswith(f"{startup}:")
