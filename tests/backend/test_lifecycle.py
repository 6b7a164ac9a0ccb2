"""Programs that end: a script exits at once after its client block, and even with a shared client it never
closed and a job still running (the job is detached and stays in the register, to be collected later)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from blender_movie_director.backend.wan2gp._register import JobRegister

# The exploring sequence of issue 16 (submit, a short result() wait, cancel, generate_quick, get_model_info),
# then one more shot left running on the shared client, which the program never closes.
_EXPLORER = """
import json, sys, time
from blender_movie_director.backend.wan2gp import Wan2GPClient, Wan2GPError, get_wan2gp_client
from blender_movie_director.backend.wan2gp._client import generate_quick_video
url, out = sys.argv[1], sys.argv[2]
with Wan2GPClient(url, output_dir=out) as client:
    job = client.submit(prompt="explore", frames=9, steps=10)
    try:
        job.result(timeout=0.5)
    except Wan2GPError:
        pass
    job.cancel()
    generate_quick_video("quick one", frames=5, steps=2)
    client.get_model_info("t2v_1.3B")
left = get_wan2gp_client().submit(prompt="left running [[slow]]", frames=9, steps=40)
while left.status().value != "running":
    time.sleep(0.02)
print(json.dumps({"left": left.id}), flush=True)
print("END", time.time(), flush=True)
"""


def test_a_script_exits_at_once_whatever_its_jobs_do(make_emulator, out_dir):
    # A private server: the job left running leaves its session's status loop behind when the program exits
    # (a program that comes back with `movie-director collect`, or the next shot, releases it).
    emulator_v12 = make_emulator("v12")
    env = {**os.environ, "WAN2GP_URL": emulator_v12.url, "WAN2GP_OUTPUT_DIR": str(out_dir)}
    program = subprocess.Popen([sys.executable, "-c", _EXPLORER, emulator_v12.url, str(out_dir)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    left = json.loads(program.stdout.readline())["left"]
    end = float(program.stdout.readline().split()[1])
    program.wait(60)
    exited = time.time()
    assert program.returncode == 0, program.stderr.read()
    assert exited - end <= 1.0, exited - end  # the exit waited for nothing of ours
    entry = JobRegister(Path(os.environ["WAN2GP_STATE_DIR"])).find(left)
    assert entry["state"] == "detached"  # it goes on on the server; `movie-director collect` gets it
    aborted = [e for e in emulator_v12.events() if e["event"] == "aborted" and e["session"] == entry["session_hash"]]
    assert not aborted
