"""The v2beta error shape (docs/reference/hosted_apis.md §B.4): every failure is `{id, name, errors[]}` as
application/json, with the same id in the `x-request-id` header."""

from __future__ import annotations

import json
import uuid
from typing import Any

from ...job import QueueFull, SdgateError
from ..base import Reply

INTERNAL_MESSAGE = "An unexpected server error has occurred, please try again later."
MODERATION_MESSAGE = (
    "Your request was flagged by our content moderation system, as a result your request was denied and you "
    "were not charged."
)
LANGUAGE_MESSAGE = "English is the only supported language for this service."
NAME_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "payload_too_large",
    422: "invalid_request", 429: "rate_limit_exceeded", 500: "internal_error", 503: "service_unavailable",
}
RETRY_AFTER_BUSY = "5"  # seconds, on a 503 (a model that cannot load now)


class V2Error(SdgateError):
    """An error already in v2beta terms: a status, a `name` and the `errors` strings."""

    def __init__(self, status: int, name: str, errors: list[str]):
        super().__init__("; ".join(errors), details={"name": name, "errors": list(errors)})
        self.status = status
        self.code = name
        self.name = name
        self.errors = list(errors) or [name]


def bad_request(*errors: str) -> V2Error:
    return V2Error(400, "bad_request", list(errors))


def payload_too_large() -> V2Error:
    return V2Error(413, "payload_too_large", ["body: payloads cannot be larger than 10MiB in size"])


def not_found(path: str) -> V2Error:
    return V2Error(404, "not_found", [f"{path}: no such endpoint; use core, ultra or sd3"])


def method_not_allowed(method: str) -> V2Error:
    return V2Error(405, "method_not_allowed", [f"{method}: use POST with multipart/form-data"])


def new_request_id() -> str:
    return uuid.uuid4().hex


def error_body(exc: BaseException, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, `{id, name, errors}`) for any exception. Our own errors keep their message; anything else is a
    500 with the documented generic text (the server log has the traceback)."""
    if isinstance(exc, V2Error):
        return exc.status, {"id": request_id, "name": exc.name, "errors": exc.errors}
    if isinstance(exc, QueueFull):  # busy, as Stability's platform answers it: 429 rate_limit_exceeded
        return 429, {"id": request_id, "name": "rate_limit_exceeded", "errors": [exc.message]}
    if isinstance(exc, SdgateError):
        status = int(exc.status)
        return status, {"id": request_id, "name": NAME_BY_STATUS.get(status, "internal_error"),
                        "errors": [exc.message or INTERNAL_MESSAGE]}
    return 500, {"id": request_id, "name": "internal_error", "errors": [INTERNAL_MESSAGE]}


def error_reply(exc: BaseException, request_id: str | None = None) -> Reply:
    """Any failure as the v2beta answer: the body, its id in `x-request-id`, and `retry-after` on a 503."""
    request_id = request_id or new_request_id()
    status, body = error_body(exc, request_id)
    headers = {"x-request-id": request_id}
    if isinstance(exc, QueueFull):
        headers["retry-after"] = str(exc.retry_after)
    elif status == 503:
        headers["retry-after"] = RETRY_AFTER_BUSY
    return Reply(json.dumps(body).encode(), status, "application/json", headers)
