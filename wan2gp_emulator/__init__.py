"""WanGP emulator: a real Gradio 5.29 server that answers WanGP's web-UI API (WanGP 6.31, 8.11, 9.81, 11.66, 12.60).

The one public name is :class:`EmulatorServer`::

    from wan2gp_emulator import EmulatorServer

    with EmulatorServer("v12", step_seconds=0.1) as server:
        print(server.url)  # http://127.0.0.1:PORT/

    with EmulatorServer("v13", mcp=True, mcp_api_version=2) as server:  # WanGP's MCP server (wgp.py --mcp)
        print(server.url)  # http://127.0.0.1:PORT/mcp

The MCP server is described in ``README.md`` ("The MCP server") and ``_mcp.py``.

Status text and progress, as a client sees them
================================================

Both follow WanGP's ``wgp.py`` (``process_tasks``, ``get_latest_status``, ``merge_status_context``,
``build_callback``, ``format_time``).

``refresh_status_async`` (a generator; it returns at once unless ``activate_status`` ran in the session) yields
the session's status text each time it changes (polled every 0.5 s, or every ``step_seconds`` when shorter, at
least 20 ms; a status replaced between two polls is not seen), in this order:

* ``"Generating..."`` on 11.66 and 12.60 (12.60 sets it again for each task); ``"Generating Video"`` on 6.31, 8.11
  and 9.81;
* ``"Loading model <model name>..."`` when the task's model is not the one loaded on the server
  (e.g. ``"Loading model Wan2.1 Text2video 1.3B..."``), then ``"Model loaded"``;
* after ``abort_generation`` while running: ``"Processing Request to abort Current Generation"``, then
  ``"Video Generation Aborted"``;
* at the end: ``"Total Generation Time: <time>"``, or ``"Video generation was aborted. Total Generation Time:
  <time>"`` (up to 9.81, when the last task was aborted). ``<time>`` is ``"0.4s"`` / ``"1m 05s"`` / ``"1h 02m 03s"``
  from 8.11 on and ``"0.4s"`` (one decimal, seconds) on 6.31.

``gr.Progress`` (SSE ``progress`` messages; gradio_client ``job.status().progress_data``), for each sample:

* ``progress=0`` with ``desc="<context>Encoding Prompt"`` (``"Generating Audio"`` for audio models);
* then ``index=<step>, length=<total steps>, unit="steps"`` for step 0, 1, ..., total, with
  ``desc="<context><phase> | <elapsed>"`` from 8.11 on, where on 12.60 ``<elapsed>`` becomes
  ``"<elapsed> / <estimated total>"`` from step 1 on (both in the ``<time>`` format above), and
  ``desc="<context><phase>"`` on 6.31. ``<phase>`` is
  ``"Denoising"``, ``"VAE Decoding"`` at the last step, ``"Aborting"`` while an abort is pending;
* while paused: ``progress=0``, ``desc="Generation on Pause, click Resume to Restart Generation"``.

``<context>`` is empty for one prompt and one sample; otherwise ``"Prompt <i>/<n> - "``, ``"Sample <j>/<m> - "`` or
``"Prompt <i>/<n>, Sample <j>/<m> - "`` (``n`` = tasks added since the last run, ``m`` = repeat_generation).
Examples: ``"Denoising | 0.4s / 1.6s"``, ``"Prompt 2/3 - VAE Decoding | 2.1s / 2.1s"``, ``"Denoising | 0.4s"``
(8.11-11.66), ``"Denoising"`` (6.31).

Failures (``missing_weights``, the ``[[fail]]`` prompt marker): ``process_tasks`` sends the gr.Info
``"Error Queue autosaved successfully to error_queue.zip"``, clears the session queue and raises ``gr.Error`` (the
client's ``AppError``) with the message; validation problems in ``process_prompt_and_add_tasks`` are gr.Info toasts
only (SSE ``log`` messages), and nothing is queued. See ``README.md`` for the rest.
"""

from __future__ import annotations

from .server import EmulatorServer

__all__ = ["EmulatorServer"]
