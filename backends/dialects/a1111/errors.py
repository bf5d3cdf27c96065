"""A1111's error shapes: `{error, detail, body, errors}` for every failure (A1111's `api_middleware`), and
FastAPI's `{"detail": [...]}` for a body that does not validate (422), as A1111 answers both."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from ...job import InvalidRequest, QueueFull, SdgateError


class ScriptNotFound(SdgateError):
    status = 422
    code = "script_not_found"


class InitImageNotFound(SdgateError):
    status = 404
    code = "init_image_not_found"


class UnknownOption(InvalidRequest):
    code = "unknown_option"


class HttpError(SdgateError):
    """A plain HTTP failure (A1111 raises FastAPI's HTTPException for these): rendered as `HTTPException`,
    with its own headers (`WWW-Authenticate` on a 401)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


class Unauthorized(HttpError):
    code = "unauthorized"

    def __init__(self, message: str, scheme: str):
        super().__init__(401, message, {"WWW-Authenticate": scheme})


class RequestInvalid(SdgateError):
    """A request body that is not JSON or does not fit the request model: 422 with FastAPI's error list,
    each `loc` starting at "body" (what A1111's own FastAPI answers)."""

    status = 422
    code = "validation_error"

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(_summary(errors))
        self.errors = errors

    @classmethod
    def from_validation(cls, exc: ValidationError) -> "RequestInvalid":
        return cls([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])

    @classmethod
    def from_json(cls, exc: json.JSONDecodeError) -> "RequestInvalid":
        return cls([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {},
                     "ctx": {"error": exc.msg}}])

    @classmethod
    def missing(cls) -> "RequestInvalid":
        return cls([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])


def _summary(errors: list[dict[str, Any]]) -> str:
    """One line per field, for the UI: "steps: Input should be a valid integer"."""
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def error_body(exc: BaseException) -> tuple[int, Any, dict[str, str]]:
    """(status, body, headers) in A1111's shape `{error, detail, body, errors}` for any exception.

    HTTP errors (auth, FastAPI's HTTPException) keep their status and headers; our errors carry theirs;
    anything else is a 500 with the exception's message, never its traceback (the server log has that)."""
    if isinstance(exc, RequestInvalid):
        return exc.status, {"detail": exc.errors}, {}
    if isinstance(exc, HttpError):
        return exc.status, _http_body(exc.message), dict(exc.headers)
    status_code, detail = getattr(exc, "status_code", None), getattr(exc, "detail", None)
    if isinstance(status_code, int) and not isinstance(exc, SdgateError):  # a web framework's HTTPException
        return status_code, _http_body(detail), dict(getattr(exc, "headers", None) or {})
    if isinstance(exc, SdgateError):
        # busy: 503 with Retry-After, so webuiapi scripts and proxies know when to come back
        headers = ({"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull)
                   else {"Retry-After": "5"} if exc.status == 503 else {})  # a replica lost, a model not loadable now
        return exc.status, {"error": type(exc).__name__, "detail": exc.message, "body": "", "errors": str(exc)}, headers
    return 500, {"error": type(exc).__name__, "detail": "", "body": "", "errors": str(exc)}, {}


def _http_body(detail: Any) -> dict[str, Any]:
    return {"error": "HTTPException", "detail": detail or "", "body": "", "errors": ""}
