"""WanGP's MCP server as a transport: a synchronous connection over the official ``mcp`` SDK (private).

:class:`McpConnection` speaks API v1 (12.x, and 13+ with ``--mcp-api-version 1``) and API v2 (13.01 on),
told apart from ``tools/list``. The client drives it through its transport seam (``transport.py``: ``McpTransport``).
"""

from ._connection import DEFAULT_MCP_URL, REQUEST_DEADLINE, McpConnection
from ._contract import Contract, ModelRecord, ModelSchema, ToolInfo, detect_contract, media_roles, names_of
from ._snapshot import JobSnapshot, McpJobError, McpOutput, McpProgress

__all__ = [
    "DEFAULT_MCP_URL",
    "REQUEST_DEADLINE",
    "Contract",
    "JobSnapshot",
    "McpConnection",
    "McpJobError",
    "McpOutput",
    "McpProgress",
    "ModelRecord",
    "ModelSchema",
    "ToolInfo",
    "detect_contract",
    "media_roles",
    "names_of",
]
