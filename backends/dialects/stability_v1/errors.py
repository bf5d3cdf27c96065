"""v1's error shape: every failure answers `{id, name, message}` with v1's status names (docs/reference/
hosted_apis.md §A.5). Our own errors keep their message; anything else is a 500 with upstream's generic message
(the server log has the traceback). A full queue answers 429 `rate_limit_exceeded` with Retry-After (v1's "busy":
our decision, v1's spec has none)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from ...job import QueueFull, SdgateError
from ..base import Reply

# HTTP status → v1's generic error `name`. 429 is our decision (v1's spec has none).
STATUS_NAMES = {
    400: "bad_request", 401: "unauthorized", 403: "permission_denied", 404: "not_found",
    413: "payload_too_large", 429: "rate_limit_exceeded", 500: "server_error",
}
SERVER_ERROR_MESSAGE = "An unexpected server error occurred, please try again."


class V1Error(SdgateError):
    """An error with its v1 `name` and status (a size rule, a missing image...)."""

    def __init__(self, status: int, name: str, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message, details=details)
        self.status = status
        self.code = name


def bad_request(message: str, name: str = "bad_request") -> V1Error:
    return V1Error(400, name, message)


def unauthorized(message: str) -> V1Error:
    return V1Error(401, "unauthorized", message)


def engine_not_found(engine_id: str) -> V1Error:
    return V1Error(404, "not_found", f"The specified engine (ID {engine_id}) was not found.")


def render_error(exc: BaseException) -> Reply:
    """Any exception → v1's `{id, name, message}` answer (status, body, headers)."""
    headers: dict[str, str] = {}
    if isinstance(exc, V1Error):
        status, name, message = exc.status, exc.code, exc.message
    elif isinstance(exc, QueueFull):
        status, name, message = 429, "rate_limit_exceeded", exc.message
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, SdgateError):
        status = exc.status
        name = STATUS_NAMES.get(status) or ("server_error" if status >= 500 else "bad_request")
        message = exc.message
    else:
        status, name, message = 500, "server_error", SERVER_ERROR_MESSAGE
    return Reply({"id": uuid.uuid4().hex, "name": name, "message": message}, status, headers=headers)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_error(e: ValidationError) -> V1Error:
    """pydantic's errors → one 400 `bad_request` whose message names each field."""
    problems = [f"{_loc(err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)]
    return V1Error(400, "bad_request", "; ".join(problems), details={"problems": problems})
