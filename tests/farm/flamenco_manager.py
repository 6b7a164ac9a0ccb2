"""A stand-in of a Flamenco 3 Manager's REST API, as far as Movie Director's "Submit to Flamenco" uses it.

Flamenco cannot be installed here. This is a real HTTP server on 127.0.0.1 that answers the two operations the
add-on calls, as the Manager documents them (``flamenco-openapi-trimmed.yaml``, trimmed from Flamenco's own
``pkg/api/flamenco-openapi.yaml``):

- ``GET /api/v3/jobs/type/{typeName}``: the job type a script in the Manager's ``scripts/`` folder defines, named
  after its file (``movie_director_shots.js`` -> ``movie-director-shots``, as Flamenco's ``filenameToJobType``),
  with an etag of its definition; 404 for any other name.
- ``POST /api/v3/jobs``: the body is checked against the ``SubmittedJob`` schema (400 with what is wrong, as the
  Manager's request validation answers), its ``type_etag`` against the job type's (412), and the job is compiled
  by the job type's own script, run by Node against ``flamenco_standin.js`` (a thrown string: 400 with it, as the
  Manager answers a failed compile). The answer is a ``Job``, itself checked against the schema.

Every request body and compiled job is kept (``jobs``), so a test can look at what was sent and run the tasks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
SPEC = HERE / "flamenco-openapi-trimmed.yaml"
STANDIN = HERE / "flamenco_standin.js"
_TYPES = {"object": dict, "string": str, "array": list, "boolean": bool}


def schemas() -> dict[str, Any]:
    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))["components"]["schemas"]


def check(value: Any, schema: dict[str, Any], where: str = "body", *, defs: dict[str, Any] | None = None) -> list[str]:
    """What in ``value`` breaks ``schema`` (the OpenAPI 3.0 subset Flamenco's schemas use); empty when it is valid."""
    defs = defs if defs is not None else schemas()
    if "$ref" in schema:
        return check(value, defs[schema["$ref"].rsplit("/", 1)[-1]], where, defs=defs)
    problems = [p for part in schema.get("allOf", []) for p in check(value, part, where, defs=defs)]
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [*problems, f"{where}: expected an integer, got {value!r}"]
    elif kind == "number":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return [*problems, f"{where}: expected a number, got {value!r}"]
    elif kind in _TYPES and not isinstance(value, _TYPES[kind]):
        return [*problems, f"{where}: expected {kind}, got {type(value).__name__} {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"{where}: {name} is required" for name in schema.get("required", []) if name not in value]
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                problems += check(item, properties[name], f"{where}.{name}", defs=defs)
            elif extra is False:
                problems.append(f"{where}: unknown property {name}")
            elif isinstance(extra, dict):
                problems += check(item, extra, f"{where}.{name}", defs=defs)
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            problems += check(item, schema["items"], f"{where}[{n}]", defs=defs)
    return problems


class StandInManager:
    """The stand-in Manager with one job type script installed; ``with StandInManager(script) as m: m.url``."""

    def __init__(self, script: Path) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the stand-in Manager compiles jobs with Node, which is not installed")
        self.node, self.script = node, script
        self.type_name = script.stem.replace("_", "-")  # Flamenco's filenameToJobType
        self.job_type = json.loads(self._node("--job-type"))
        self.etag = hashlib.sha1(json.dumps(self.job_type, sort_keys=True).encode()).hexdigest()
        self.jobs: list[dict[str, Any]] = []  # {"submitted": body, "compiled": authored job, "job": answer}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInManager:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _node(self, argument: str) -> str:
        run = subprocess.run([self.node, str(STANDIN), str(self.script), argument], capture_output=True, text=True,
                             timeout=60, check=True)
        return run.stdout

    def available_job_type(self) -> dict[str, Any]:
        answer = {"name": self.type_name, "label": self.job_type["label"],
                  "description": self.job_type.get("description", ""), "settings": self.job_type["settings"],
                  "etag": self.etag}
        problems = check(answer, {"$ref": "#/components/schemas/AvailableJobType"})
        assert not problems, problems  # the stand-in's own answer follows the schema too
        return answer

    def submit(self, body: Any) -> tuple[int, dict[str, Any]]:
        problems = check(body, {"$ref": "#/components/schemas/SubmittedJob"})
        if problems:
            return 400, {"code": 400, "message": "; ".join(problems)}
        if body["type"] != self.type_name:
            return 400, {"code": 400, "message": f"job type {body['type']!r} is unknown"}
        if body.get("type_etag") and body["type_etag"] != self.etag:
            return 412, {"code": 412, "message": "rejecting job because its settings are outdated, refresh the job "
                                                 "type"}
        compiled = json.loads(self._node(json.dumps(body.get("settings") or {})))
        if "error" in compiled:
            return 400, {"code": 400, "message": compiled["error"]}
        now = datetime.now(UTC).isoformat()
        job = {**body, "id": str(uuid.uuid4()), "created": now, "updated": now,
               "status": body.get("initial_status") or "queued", "activity": "", "steps_completed": 0,
               "steps_total": len(compiled["tasks"])}
        problems = check(job, {"$ref": "#/components/schemas/Job"})
        assert not problems, problems
        self.jobs.append({"submitted": body, "compiled": compiled, "job": job})
        return 200, job

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        manager = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, data: dict[str, Any]) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                manager.requests.append(("GET", self.path))
                prefix = "/api/v3/jobs/type/"
                if self.path == prefix + manager.type_name:
                    self._answer(200, manager.available_job_type())
                else:
                    self._answer(404, {"code": 404, "message": f"no such job type: {self.path[len(prefix):]}"})

            def do_POST(self) -> None:  # noqa: N802
                manager.requests.append(("POST", self.path))
                if self.path != "/api/v3/jobs":
                    self._answer(404, {"code": 404, "message": "not found"})
                    return
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    self._answer(400, {"code": 400, "message": "invalid format"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                except ValueError:
                    self._answer(400, {"code": 400, "message": "invalid format"})
                    return
                self._answer(*manager.submit(body))

        return Handler
