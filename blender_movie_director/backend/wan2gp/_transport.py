"""The seam between the client and a way of talking to WanGP: what a transport must do for ``Wan2GPClient``.

The client (``_client.py``) keeps the settings, its jobs (``_book.JobBook``) and the public API; a transport keeps
the connection to one server and makes the run of each job (a :class:`~.jobs.Runner`). The web UI's transport is
``_webui.transport.WebUiTransport`` with its ``_webui.runner.WebUiRun``; ``tests/backend/scripted.py`` is an
in-memory one for the tests of the job handle and the client. A new transport is a new package beside
``_webui`` with a class of this shape: the job handle, the pool, batches and Blender do not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._enums import ModelCategory
    from ._jobs import JobRecord, Runner, Wan2GPJob
    from ._schemas import GenerationSettings, ModelInfo, ServerStatus


class Transport(Protocol):
    """One WanGP server as the client's jobs use it. Thread-safe."""

    name: str  # "webui", ...: saved in each job's record, so that a record is resumed over the same transport
    poll_interval: float  # seconds between two polls of the server (what is polled is the transport's)

    @property
    def connected(self) -> bool: ...

    def open(self) -> None:
        """Connect (bounded, with the client's retries); raise a ``Wan2GPError`` when the server can't be used."""

    def close(self) -> None:
        """Disconnect; the jobs were stopped or let go first."""

    def let_go(self) -> None:
        """The program is exiting: end every stream of ours at once, so that none holds the exit."""

    def wait_for_stoppers(self, seconds: float) -> None:
        """Wait up to ``seconds`` for stops of cancelled jobs still being sent to the server."""

    def identity(self) -> tuple[str, str | None, str | None] | None:
        """(server process id, WanGP version, web framework version) once connected."""

    def check_settings(self, settings: GenerationSettings) -> None:
        """Refuse at submit time, with ``Wan2GPValidationError``, what the server's known rules refuse."""

    def model_info(self, model: str) -> ModelInfo:
        """One model's rules as the server states them."""

    def list_models(self, *, family: str | None = None,
                    category: ModelCategory | str | None = None) -> list[ModelInfo]: ...

    def new_run(self, job: Wan2GPJob) -> Runner:
        """The run of ``job`` (a new one, or a resumed one: ``job.state.resume``)."""

    def stop_job(self, record: JobRecord) -> bool:
        """Stop a job on the server from its record, whichever program started it; False if it is gone."""

    def ping(self) -> None:
        """One small request, for a status's latency; raises when the server does not answer."""

    def fill_status(self, status: ServerStatus) -> None:
        """Add what the server says of itself (versions, size of its API) to a reachable server's status."""

    def last_form_model(self) -> str | None:
        """The model whose rules were read last, if any (the status's current model when no job says one)."""
