"""OpenAI's error shape (docs/reference/openai_images.md §4): every failure is
`{"error": {"message", "type", "param", "code"}}` (all four keys, `param`/`code` may be null), with the status
codes the SDK maps to its exception classes, an `x-request-id` header, `Retry-After` on a full queue, and
`x-should-retry: false` on failures a retry would only repeat (the SDK retries every 5xx twice)."""

from __future__ import annotations

import uuid
from typing import Any

from ...job import InvalidRequest, ModelNotFound, QueueFull, SdgateError
from ..base import Reply
from .options import RETRY_AFTER_BUSY

INTERNAL_MESSAGE = "The server had an error while processing your request. Sorry about that!"
INVALID = "invalid_request_error"


class OpenAIError(SdgateError):
    """An error already in OpenAI's terms."""

    def __init__(self, status: int, message: str, *, type: str = INVALID, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message, details={"type": type, "param": param, "code": code})
        self.status = status
        self.code = code or type
        self.type = type
        self.param = param
        self.error_code = code
        self.headers = dict(headers or {})


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def missing(param: str) -> OpenAIError:
    return OpenAIError(400, f"Missing required parameter: '{param}'.", param=param,
                       code="missing_required_parameter")


def invalid_size(message: str = "The size is not supported by this model.") -> OpenAIError:
    return OpenAIError(400, message, param="size", code="invalid_size")


def invalid_key(message: str) -> OpenAIError:
    return OpenAIError(401, message, param=None, code="invalid_api_key")


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(404, f"The model '{name}' does not exist or you do not have access to it.", param="model",
                       code="model_not_found")


def not_found_path(method: str, path: str) -> OpenAIError:
    return OpenAIError(404, f"Invalid URL ({method} {path})")


def method_not_allowed(method: str, path: str) -> OpenAIError:
    return OpenAIError(405, f"Method not allowed ({method} {path}): use POST")


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def _param_of(exc: SdgateError) -> str | None:
    field = exc.details.get("field") if isinstance(exc.details, dict) else None
    return str(field) if field else None


def error_body(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, extra headers) for any exception."""
    headers: dict[str, str] = {}
    if isinstance(exc, OpenAIError):
        status, message, kind, param, code = exc.status, exc.message, exc.type, exc.param, exc.error_code
        headers.update(exc.headers)
    elif isinstance(exc, QueueFull):
        status, message, kind, param, code = 429, exc.message, "requests", None, "rate_limit_exceeded"
        headers["retry-after"] = str(max(1, min(120, exc.retry_after)))
    elif isinstance(exc, ModelNotFound):
        status, message, kind, param, code = 404, exc.message, INVALID, "model", "model_not_found"
    elif isinstance(exc, SdgateError):
        status = int(exc.status)
        message = exc.message or INTERNAL_MESSAGE
        kind = INVALID if status < 500 else "server_error"
        param = _param_of(exc)
        code = "invalid_value" if isinstance(exc, InvalidRequest) and status == 400 else (
            exc.code if status < 500 else None)
        retry_after = getattr(exc, "retry_after", None)
        if status == 429:
            kind, code = "requests", "rate_limit_exceeded"
            headers["retry-after"] = str(max(1, min(120, int(retry_after or RETRY_AFTER_BUSY))))
    else:
        status, message, kind, param, code = 500, INTERNAL_MESSAGE, "server_error", None, None
    if status >= 500:
        headers.setdefault("x-should-retry", "false")  # a generation that failed fails again: don't rerun it
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers


def error_reply(exc: BaseException, request_id: str | None = None) -> Reply:
    status, body, headers = error_body(exc)
    return Reply(body, status, "application/json", {"x-request-id": request_id or new_request_id(), **headers})
