"""Every way a gateway can fail, normalised (docs/reference/hosted_apis.md D.4 item 9) into one `UpstreamError`.

Gateways answer errors in the upstream style they relay (Stability v1 `{id,name,message}`, v2beta
`{id,name,errors[]}`, ModelsLab `{status,message|messege}`), in their own envelope (one-api/new-api
`{error:{message,type,code}}`, MJ `{code,description}`, dashboard `{success:false,message}`), or in no shape at
all (an HTML error page from a proxy). `parse_error_body` reads each of them; the dialects then render the
UpstreamError in the caller's own style.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..job import SdgateError

# What the caller is told, by what the gateway said. A gateway rejecting *our* key is our configuration's fault,
# not the caller's: it must not look like the caller's key was wrong, so 401/403 become 502.
CALLER_STATUS = {400: 400, 402: 402, 404: 404, 408: 504, 409: 409, 413: 413, 422: 422, 429: 429}
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-oneapi-request-id", "cf-ray")
_REQUEST_ID_IN_TEXT = re.compile(r"\(request id: ([^)]+)\)")


@dataclass
class ParsedError:
    shape: str  # which D.3 shape the body had ("stability_v1", "openai", ... "text")
    code: str | None  # the provider's own error code / name
    message: str
    request_id: str | None = None
    retry_after: float | None = None  # ModelsLab's body `retry_after`


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _stability_v2(b: dict) -> ParsedError | None:
    if isinstance(b.get("errors"), list) and "name" in b:
        return ParsedError("stability_v2", _str(b["name"]), "; ".join(map(str, b["errors"])) or str(b["name"]),
                           _str(b.get("id")))
    return None


def _stability_v1(b: dict) -> ParsedError | None:
    if "name" in b and "message" in b and "status" not in b:
        return ParsedError("stability_v1", _str(b["name"]), str(b["message"]), _str(b.get("id")))
    return None


def _modelslab(b: dict) -> ParsedError | None:
    if b.get("status") in ("error", "failed"):
        message = b.get("message") or b.get("messege") or b.get("msg") or f"status {b['status']}"
        if isinstance(message, (dict, list)):
            message = json.dumps(message)
        return ParsedError("modelslab", _str(b["status"]), str(message), _str(b.get("id")),
                           _float(b.get("retry_after")))
    return None


def _openai(b: dict) -> ParsedError | None:
    err = b.get("error")
    if isinstance(err, dict) and ("message" in err or "type" in err):
        message = str(err.get("message") or err.get("type"))
        rid = _REQUEST_ID_IN_TEXT.search(message)
        return ParsedError("openai", _str(err.get("code")) or _str(err.get("type")), message,
                           rid.group(1) if rid else None)
    return None


def _midjourney(b: dict) -> ParsedError | None:
    if "description" in b and "code" in b:
        return ParsedError("mj", _str(b["code"]), str(b["description"]))
    return None


def _dashboard(b: dict) -> ParsedError | None:
    if b.get("success") is False:
        return ParsedError("dashboard", None, str(b.get("message") or "request failed"))
    return None


def _a1111(b: dict) -> ParsedError | None:
    # A1111 `{error, detail, body, errors}` and FastAPI's `{"detail": ...}` (422 lists of problems)
    if "detail" in b:
        detail = b["detail"]
        if isinstance(detail, list):
            detail = "; ".join(
                f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                for d in detail
            )
        message = str(detail or b.get("errors") or b.get("error") or "request failed")
        return ParsedError("a1111", _str(b.get("error")), message)
    if isinstance(b.get("error"), str):
        return ParsedError("a1111", None, str(b.get("message") or b["error"]))
    return None


# Most specific first: a v2beta body also has `name`, a ModelsLab body may also have `message`.
SHAPES: tuple[Callable[[dict], ParsedError | None], ...] = (
    _stability_v2, _modelslab, _openai, _midjourney, _stability_v1, _dashboard, _a1111,
)


def parse_error_body(content: bytes, content_type: str = "") -> ParsedError:
    """Any gateway error body → ParsedError. Never raises: garbage becomes a 'text' error quoting its start."""
    body: Any = None
    try:
        body = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        for shape in SHAPES:
            parsed = shape(body)
            if parsed is not None:
                parsed.message = parsed.message.strip() or "request failed"
                return parsed
        return ParsedError("json", None, json.dumps(body)[:300])
    if content_type.split(";")[0].strip().startswith("image/"):
        return ParsedError("binary", None, f"an image body ({len(content)} bytes) where an error was expected")
    text = content.decode("utf-8", "replace") if content else ""
    text = re.sub(r"<[^>]+>", " ", text)  # proxies answer HTML error pages
    text = " ".join(text.split())
    return ParsedError("text", None, text[:300] or "empty body")


def error_in_success(content: bytes) -> ParsedError | None:
    """D.4 item 8: a 2xx whose body says it failed (ModelsLab `status:error`, MJ `code != 1`)."""
    if not content or content[:1] not in (b"{", b" ", b"\n"):
        return None
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    if body.get("status") in ("error", "failed"):
        return _modelslab(body)
    if isinstance(body.get("code"), int) and "description" in body and body["code"] not in (1, 21, 22):
        return _midjourney(body)  # MJ: 1 submitted, 21 already exists, 22 queued
    if body.get("success") is False:
        return _dashboard(body)
    return None


class UpstreamError(SdgateError):
    """A gateway failure: D.4's (http_status, provider_code, message, retryable, request_id), plus the gateway,
    the body's shape, and the raw answer (status, headers, body) so that a same-style relay can pass an error
    that already has the caller's shape through unchanged."""

    code = "upstream_error"

    def __init__(self, gateway: str, message: str, *, http_status: int | None = None,
                 provider_code: str | None = None, retryable: bool = False, request_id: str | None = None,
                 shape: str | None = None, status: int | None = None, retry_after: float | None = None,
                 raw: tuple[int, Mapping[str, str], bytes] | None = None):
        text = f"gateway {gateway}: {message}"
        if request_id and request_id not in text:
            text += f" (request id {request_id})"
        super().__init__(text, details={"gateway": gateway, "upstream_status": http_status,
                                        "provider_code": provider_code, "request_id": request_id,
                                        "retryable": retryable})
        self.gateway = gateway
        self.http_status = http_status
        self.provider_code = provider_code
        self.retryable = retryable
        self.request_id = request_id
        self.shape = shape
        self.retry_after = retry_after
        self.raw = raw
        self.status = status or (CALLER_STATUS.get(http_status, 502) if http_status else 502)
        if provider_code:
            self.code = provider_code

    def __str__(self) -> str:
        return self.message  # kept current: the client appends "(after 3 attempts)" and the like

    @classmethod
    def from_response(cls, gateway: str, status: int, headers: Mapping[str, str], content: bytes, *,
                      retryable: bool, parsed: ParsedError | None = None,
                      retry_after: float | None = None) -> "UpstreamError":
        parsed = parsed or parse_error_body(content, headers.get("content-type", ""))
        request_id = next((headers[h] for h in REQUEST_ID_HEADERS if h in headers), None) or parsed.request_id
        message = parsed.message
        if status in (401, 403) and parsed.shape != "stability_v2":  # v2beta 403 is content moderation
            message = f"rejected sdgate's key for this gateway ({status}): {message}"
        elif not 200 <= status < 300:
            message = f"HTTP {status}: {message}"
        return cls(gateway, message, http_status=status, provider_code=parsed.code, retryable=retryable,
                   request_id=request_id, shape=parsed.shape,
                   retry_after=retry_after if retry_after is not None else parsed.retry_after,
                   raw=(status, dict(headers), content),
                   # a 200 saying "rate limited, retry after N" (ModelsLab) is a 429 to the caller
                   status=429 if 200 <= status < 300 and parsed.retry_after else None)


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, gateway: str, message: str, **kw):
        super().__init__(gateway, message, status=504, **kw)
        self.code = "upstream_timeout"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"

    def __init__(self, gateway: str, message: str, **kw):
        super().__init__(gateway, message, status=502, **kw)
        self.code = "upstream_unreachable"


class RelayInterrupted(SdgateError):
    status = 503
    code = "interrupted"
