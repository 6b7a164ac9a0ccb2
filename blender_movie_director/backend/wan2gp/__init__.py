"""The Wan2GP backend: drive a WanGP (Wan2GP) server through its web UI's Gradio API or its MCP server.

Works with WanGP 6.x to 12.x web UIs alike (endpoint names, parameters and the generation chain are read from the
server itself), and with the MCP server of 12.x (API v1) and 13.x (API v2). Every module of this package is
private; what this ``__init__`` exports (``__all__``) is the public surface. Example::

    from blender_movie_director.backend.wan2gp import Wan2GPClient

    with Wan2GPClient("http://127.0.0.1:7860") as client:
        result = client.generate(prompt="a red fox running through snow", frames=33, steps=8)
        print(result.video_path)
"""

from ._cache import ApiCache
from ._client import (
    Wan2GPClient,
    generate_high_quality_video,
    generate_quick_video,
    get_wan2gp_client,
)
from ._config import ClientSettings, Retries, Timeouts
from ._enums import JobStatus, ModelCategory, Wan2GPModel
from ._errors import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    ServerBusyError,
    ServerRestartedError,
    UnsupportedServerError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
)
from ._jobs import JobPhase, JobRecord, StopReason, Wan2GPJob
from ._register import JobRegister
from ._schemas import (
    GenerationResult,
    GenerationSettings,
    JobProgress,
    ModelInfo,
    QueueItem,
    Resolution,
    ServerStatus,
)

__all__ = [
    "ApiCache",
    "ClientSettings",
    "GenerationResult",
    "GenerationSettings",
    "JobCancelledError",
    "JobFailedError",
    "JobLostError",
    "JobPhase",
    "JobProgress",
    "JobRecord",
    "JobRegister",
    "JobStatus",
    "ModelCategory",
    "ModelInfo",
    "QueueItem",
    "Resolution",
    "Retries",
    "ServerBusyError",
    "ServerRestartedError",
    "ServerStatus",
    "StopReason",
    "Timeouts",
    "UnsupportedServerError",
    "Wan2GPClient",
    "Wan2GPConnectionError",
    "Wan2GPError",
    "Wan2GPJob",
    "Wan2GPModel",
    "Wan2GPServerError",
    "Wan2GPTimeoutError",
    "Wan2GPValidationError",
    "generate_high_quality_video",
    "generate_quick_video",
    "get_wan2gp_client",
]
