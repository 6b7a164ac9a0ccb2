"""The emulator in its own process (``python -m wan2gp_emulator``), for tests that must not share theirs with it.

A crash test kills the server for real; the Blender tests keep bpy's process free of the server's threads (with
bpy 5.0.1, a render on the main thread while the in-process server's threads ran Python crashed the process).
With ``--inspect`` among the arguments, :meth:`events`, :meth:`sessions` (web UI) and :meth:`jobs` (MCP) read
the same records as :class:`~wan2gp_emulator.EmulatorServer`'s, over HTTP from the emulator's inspection routes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

START_SECONDS = 60.0  # a loaded machine: importing gradio alone takes several seconds


class EmulatorProcess:
    """``python -m wan2gp_emulator ARGS --output-dir DIR``, started and ready; :meth:`stop` ends it (SIGTERM,
    then SIGKILL after 10 s). ``process`` is the :class:`subprocess.Popen`.

    Example::

        server = EmulatorProcess("--port", "0", "--step-seconds", "0.05", "--inspect", output_dir=tmp)
        ...  # server.url, server.events()
        server.stop()
    """

    def __init__(self, *args: str, output_dir: str | os.PathLike[str]) -> None:
        env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1"}
        self.output_dir = Path(output_dir)
        self.inspect = "--inspect" in args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wan2gp_emulator", "--output-dir", str(self.output_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.process.stdout is not None
        line = ""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("WAN2GP_EMULATOR_URL=") or not line:
                break
        if not line.startswith("WAN2GP_EMULATOR_URL="):
            self.stop()
            raise RuntimeError(f"the emulator process did not start (arguments {list(args)}, exit code "
                               f"{self.process.returncode})")
        self.url: str = line.strip().split("=", 1)[1]
        self._info: dict[str, str] | None = None

    # -------------------------------------------------------------- introspection (--inspect)
    def _get(self, route: str) -> Any:
        if not self.inspect:
            raise RuntimeError("start the emulator process with --inspect to read its events and sessions")
        origin = urllib.parse.urlsplit(self.url)  # the MCP server's URL ends in /mcp: the routes are at its root
        with urllib.request.urlopen(f"{origin.scheme}://{origin.netloc}{route}", timeout=30) as response:
            return json.loads(response.read())

    @property
    def flavour(self) -> str:
        return self._read_info()["flavour"]

    @property
    def version(self) -> str:
        return self._read_info()["version"]

    def _read_info(self) -> dict[str, str]:
        if self._info is None:
            self._info = self._get("/emulator/info")
        return self._info

    def events(self) -> list[dict]:
        """As :meth:`EmulatorServer.events` (``t`` is the emulator's ``time.monotonic()``, the same clock)."""
        return self._get("/emulator/events")

    def sessions(self) -> dict[str, dict]:
        """As :meth:`EmulatorServer.sessions` (web UI)."""
        return self._get("/emulator/sessions")

    def jobs(self) -> list[dict]:
        """As :meth:`EmulatorServer.jobs` (MCP)."""
        return self._get("/emulator/jobs")

    # -------------------------------------------------------------- life cycle
    def stop(self) -> None:
        """End the process (a graceful SIGTERM first: the server aborts its generations). Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __repr__(self) -> str:
        return f"EmulatorProcess(url={getattr(self, 'url', None)!r}, pid={self.process.pid})"
