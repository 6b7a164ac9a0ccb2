"""Every captured WanGP release, one emulator flavour each: any model the server has is listed, selected,
generated, cancelled and resumed, whatever group the server's model dropdown showed at start-up."""

from __future__ import annotations

import pytest
from quiet import wait_until

from blender_movie_director.backend.wan2gp import JobCancelledError, Wan2GPClient, Wan2GPValidationError
from blender_movie_director.backend.wan2gp._config import Timeouts

FAST = Timeouts(connect=5, call=30, job=120, stall=60, download=30, resume_wait=30)

# flavour -> (a model outside the start-up group of its model dropdown, how many models the server lists)
RELEASES = {
    "v6": ("i2v", 31),  # 6.31's dropdown lists every model
    "v8": ("t2v_2_2", 51),  # 8.11 starts on the Wan2.1 family; Wan2.2 is another family
    "v9": ("t2v_1.3B", 97),  # 9.81 and 11.66 start on the group of t2v (4 variants)
    "v11": ("t2v_1.3B", 176),
    "v12": ("t2v_1.3B", 213),
}


@pytest.fixture(params=sorted(RELEASES))
def release(request, make_emulator):
    return request.param, make_emulator(request.param)


def _seen(server, event: str, job) -> bool:
    return any(e["event"] == event and e["session"] == job.session_hash for e in server.events())


def test_any_model_is_listed_selected_generated_cancelled_and_resumed(release, out_dir):
    flavour, server = release
    model, n_models = RELEASES[flavour]
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST) as client:
        listed = client.list_models()
        assert len(listed) == n_models and all(m.on_server for m in listed)
        assert model in {m.model_type for m in listed}

        # A misspelt model is refused before anything is queued, with a suggestion.
        before = len(server.events())
        with pytest.raises(Wan2GPValidationError, match="did you mean"):
            client.submit(prompt="typo", model=model + "x", frames=5, steps=1)
        assert len(server.events()) == before

        start_image = None
        if "i2v" in model:
            from PIL import Image

            start_image = out_dir.parent / "start.png"
            Image.new("RGB", (832, 480), (30, 120, 200)).save(start_image)
        result = client.generate(prompt="a model from another group", model=model, frames=9, steps=2, seed=5,
                                 image_start=start_image)
        assert result.video_path.is_file() and result.frames == 9 and result.model == model
        started = [e for e in server.events() if e["event"] == "started"]
        assert started[-1]["detail"].startswith(f"{model}: ")

        # Cancel while running: WanGP's abort from the job's own session; nothing is left in its queue.
        job = client.submit(prompt="cancel me [[slow]]", model=model, frames=9, steps=20, image_start=start_image)
        assert wait_until(lambda: _seen(server, "step", job))
        assert job.cancel()
        with pytest.raises(JobCancelledError):
            job.result(timeout=30)
        assert wait_until(lambda: _seen(server, "aborted", job))
        assert not server.sessions()[job.session_hash]["queue"]

        # Resume: detached mid-run (the program closing), collected by another client afterwards.
        job = client.submit(prompt="resume me [[slow]]", model=model, frames=9, steps=6, image_start=start_image)
        assert wait_until(lambda: _seen(server, "step", job))
        record = job.to_record()
        assert job.detach()
    with Wan2GPClient(server.url, output_dir=out_dir, timeouts=FAST) as again:
        resumed = again.resume_job(record)
        assert resumed.result(timeout=60).video_path.is_file()
        # ...and the server is as healthy as before: the next shot shows its steps.
        steps = []
        after = again.submit(prompt="the next shot", model=model, frames=5, steps=4, image_start=start_image)
        after.add_progress_callback(lambda job, p: p.step and steps.append(p.step))
        after.result(timeout=60)
    assert 4 in steps, steps
    runs = [e for e in server.events() if e["event"] == "started" and e["session"] == record["session_hash"]]
    assert len(runs) == 1  # the resumed shot ran once
