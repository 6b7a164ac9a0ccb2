"""The Wan2GP backend: drive a WanGP (Wan2GP) web UI through its Gradio API.

Works with WanGP 6.x and 12.x alike: endpoint names, parameters and the generation chain are read from the
server itself. Example::

    from blender_movie_director.backend.wan2gp import Wan2GPClient

    with Wan2GPClient("http://127.0.0.1:7860") as client:
        result = client.generate(prompt="a red fox running through snow", frames=33, steps=8)
        print(result.video_path)
"""

from .client import (
    Wan2GPClient,
    generate_high_quality_video,
    generate_quick_video,
    get_wan2gp_client,
)
from .config import ClientSettings, Retries, Timeouts
from .enums import JobStatus, ModelCategory, Wan2GPModel
from .errors import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    ServerRestartedError,
    UnsupportedServerError,
    Wan2GPConnectionError,
    Wan2GPError,
    Wan2GPServerError,
    Wan2GPTimeoutError,
    Wan2GPValidationError,
)
from .jobs import JobPhase, JobRecord, StopReason, Wan2GPJob
from .schemas import (
    GenerationResult,
    GenerationSettings,
    JobProgress,
    ModelInfo,
    QueueItem,
    Resolution,
    ServerStatus,
)

__all__ = [
    "ClientSettings",
    "GenerationResult",
    "GenerationSettings",
    "JobCancelledError",
    "JobFailedError",
    "JobLostError",
    "JobPhase",
    "JobProgress",
    "JobRecord",
    "JobStatus",
    "ModelCategory",
    "ModelInfo",
    "QueueItem",
    "Resolution",
    "Retries",
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
