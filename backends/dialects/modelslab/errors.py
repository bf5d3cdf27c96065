"""ModelsLab's error shape `{status: "error", message, messege}` (both spellings: legacy clients read `messege`)
and the errors only this style raises. Every failure of a ModelsLab route, validation included, is rendered here:
never a traceback, never FastAPI's 422."""

from __future__ import annotations

from typing import Any

from ...job import QueueFull, SdgateError


class InvalidKey(SdgateError):
    status = 401
    code = "invalid_key"


class RequestNotFound(SdgateError):
    status = 404
    code = "request_not_found"


class RateLimited(QueueFull):
    """ModelsLab's queue cap: HTTP 429 with `retry_after` seconds in the body."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 30):
        super().__init__(message, retry_after=retry_after)


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """ModelsLab's error shape; both spellings, as legacy clients read `messege`."""
    return {"status": "error", "message": message, "messege": message, **extra}


def error_response(exc: BaseException, always_200: bool = False) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for any exception raised while serving a ModelsLab route. Never a traceback."""
    if isinstance(exc, SdgateError):
        extra = {}
        if isinstance(exc, QueueFull):
            extra["retry_after"] = exc.retry_after
            status = 429
        else:
            status = exc.status
        body = error_body(exc.message, **extra)
    else:
        status, body = 500, error_body(f"internal error ({type(exc).__name__})")
    return (200 if always_200 else status), body
