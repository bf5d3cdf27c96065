"""`[limits] max_body_bytes`: an ASGI middleware that refuses a request body past the limit with 413, in the error
shape of the API style that owns the path (the style's `Dialect.render_error`, as `styled_errors` answers), plain
JSON elsewhere (the UI, /health).

A declared Content-Length over the limit is refused before any of the body is read; a body without one (chunked)
is counted as the app reads it and cut off at the limit: the app's own answer to the cut body is dropped and the
413 goes instead. A little of the rest is drained first so that a client still sending reads the 413 rather than a
reset connection."""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.dialects import a1111 as a1111_style
from backends.dialects import modelslab as ml
from backends.dialects import openai as oa
from backends.dialects import registry
from backends.job import PayloadTooLarge, Style
from backends.service import Service

from .routes import make_call, to_response
from .routes import openai as openai_routes
from .routes import stability_v1 as v1_routes
from .routes import stability_v2 as v2_routes

log = logging.getLogger(__name__)

DRAIN_MAX = 4 * 1024 * 1024  # past the limit, read (and drop) at most this much more before answering


def _style_prefixes() -> list[tuple[str, Style]]:
    """(path prefix, style), longest first: the routers' own prefixes (webui/routes/*.py)."""
    pairs = [(a1111_style.PREFIX, Style.A1111), (a1111_style.GATEWAY_PREFIX, Style.A1111)]
    pairs += [(f"{p}/{part}", Style.STABILITY_V1) for p in v1_routes.PREFIXES for part in ("generation", "engines",
                                                                                            "user")]
    pairs += [(p, Style.STABILITY_V2) for p in (*v2_routes.PREFIXES, "/v2beta", "/sd/v2beta")]
    pairs += [(p, Style.MODELSLAB) for family in ml.FAMILIES for p in (*family.generate, *family.fetch)]
    pairs += [(p, Style.MODELSLAB) for p in ("/api", ml.ENTERPRISE, ml.SYSTEM_LOAD, ml.GENERATIONS)]
    pairs += [(f"{p}/{part}", Style.OPENAI) for p in openai_routes.PREFIXES for part in ("images", "models")]
    pairs += [(oa.FILES, Style.OPENAI)]
    return sorted(set(pairs), key=lambda pair: len(pair[0]), reverse=True)


PREFIXES = _style_prefixes()


def style_for_path(path: str) -> Style | None:
    """The API style whose routes serve `path`, or None (the UI, /health, anything else)."""
    for prefix, style in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return style
    return None


class BodyLimit:
    """Refuses a request body over `service.config.limits.max_body_bytes` with the owning style's 413."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(self.service.config.limits.max_body_bytes)
        headers = Headers(scope=scope)
        declared = (headers.get("content-length") or "").strip()
        if declared.isdigit() and int(declared) > limit:
            # a client waiting for "100 Continue" has sent nothing: answer without asking for the body
            if "100-continue" not in (headers.get("expect") or "").lower():
                await _drain(receive, DRAIN_MAX)
            await self.refuse(scope, receive, send, limit)
            return

        received, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_MAX)
                    raise PayloadTooLarge(_message(limit), details={"max_bytes": limit})
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a body cut short: the 413 below goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self.refuse(scope, receive, send, limit)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        exc = PayloadTooLarge(_message(limit), details={"max_bytes": limit})
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        style = style_for_path(path)
        response = None
        if style is not None:
            try:
                dialect = registry.dialect(self.service, style)
                response = to_response(dialect.render_error(exc, make_call(Request(scope), dialect)))
            except Exception:  # the 413 still goes out, in the plain shape
                log.exception("rendering the 413 for %s in the %s shape failed", path, style.value)
        if response is None:
            response = JSONResponse({"detail": exc.message, "error": exc.code}, status_code=413)
        log.info("%s %s -> 413 (body over %d bytes)", scope.get("method", ""), path, limit)
        await response(scope, receive, send)


def _message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes ([limits] max_body_bytes)"


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop what is left of the body, up to `budget` bytes."""
    read = 0
    while read <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
