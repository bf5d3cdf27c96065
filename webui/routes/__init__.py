"""HTTP routers, one per API style. Each is thin: a handler reads the body, builds the `Call` (the route decided
once, here), and calls the same dialect entry points as the style's UI tab (backends/dialects/base.py):

    return await dispatch(request, dialect, lambda call: run(call))

`dispatch` forwards the caller's request as it is when `[routing]` sends the style to a gateway that speaks it;
otherwise it runs the dialect on the Route (local, or a gateway the Jobs are translated to) and turns the Reply
into a response. Failures come back in the style's own error shape through `styled_errors`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Mapping

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from backends.dialects.base import BACKEND_HEADER, Call, Dialect, Reply
from backends.job import SdgateError
from backends.keys import request_owner
from backends.upstream import ForwardRequest

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its caller is still there


def client_host(request: Request) -> str | None:
    """The caller's address, for the loopback-only rule when a style has no keys."""
    return request.client.host if request.client else None


def make_call(request: Request, dialect: Dialect, **params: str) -> Call:
    """The Call for an HTTP request: its Route is decided here, once, from `[routing]`."""
    service = request.app.state.service
    headers = {k.lower(): v for k, v in request.headers.items()}
    return Call(
        route=service.route_for(dialect.style),
        client_host=client_host(request),
        owner=request_owner(headers, client_host(request), request.query_params.get("key"),
                            service.config.api_auth),
        headers=headers,
        params={k: v for k, v in params.items() if v is not None},
        path=request.url.path,
        base_url=str(request.base_url),
    )


def to_response(reply: Reply | Any) -> Response:
    """A dialect's Reply → a Starlette response (data that is not a Reply is sent as JSON)."""
    if isinstance(reply, Response):
        return reply
    if not isinstance(reply, Reply):
        return JSONResponse(jsonable_encoder(reply))
    if reply.media_type == "application/json" and not isinstance(reply.body, (bytes, bytearray)):
        return JSONResponse(jsonable_encoder(reply.body), status_code=reply.status, headers=reply.headers)
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


async def forward(request: Request, dialect: Dialect, call: Call, body: bytes | None = None) -> Response:
    """The caller's request, sent as it is to the gateway its Route names; the gateway's answer, as it is."""
    service = request.app.state.service
    if body is None:
        body = await request.body()
    answer = await service.forward(call.route, dialect.style, ForwardRequest(
        request.method, request.url.path, request.url.query, dict(request.headers), body, str(request.base_url)))
    return Response(answer.content, answer.status, headers={**answer.headers, BACKEND_HEADER: call.route.gateway})


async def dispatch(request: Request, dialect: Dialect, run: Callable[[Call], Awaitable[Any] | Any], *,
                   body: bytes | None = None, call: Call | None = None) -> Response:
    """Forward when the Route says so, else `run(call)` here (its Jobs may still go to a gateway: translated).
    `body`: the raw body when the handler has read it already.

    While `run` waits for its jobs, the connection is watched: a caller that goes away has its jobs dropped
    (a waiting one never reaches the pipeline; a running one stops unless it shares a batch with others)."""
    call = call or make_call(request, dialect)
    if call.route.forward:
        return await forward(request, dialect, call, body)
    service = request.app.state.service
    tickets: list = []

    async def running() -> Any:
        reply = run(call)
        return await reply if inspect.isawaitable(reply) else reply

    with service.watch(tickets.append):
        task = asyncio.ensure_future(running())  # the task copies the context: it reports its own tickets
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and tickets and await request.is_disconnected():
                log.info("%s %s: the caller went away; dropping its %d job(s)", request.method, request.url.path,
                         len(tickets))
                for ticket in tickets:
                    service.drop(ticket)
                task.cancel()
                return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
    except asyncio.CancelledError:  # the server itself cancelled the handler (shutdown): so do its jobs
        for ticket in tickets:
            service.drop(ticket)
        task.cancel()
        raise
    return to_response(task.result())


def styled_errors(dialect: Dialect, *, passthrough: tuple = ()) -> type[APIRoute]:
    """An APIRoute class whose failures come back in one API style's own error shape (`dialect.render_error`),
    on that style's routes only: each style has its own shape, so no app-wide handler can serve them all. A
    failure that is not an SdgateError is a bug: it is logged with its traceback, and the client still gets
    the style's 500."""

    class StyledErrorRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except passthrough:
                    raise
                except Exception as e:  # noqa: BLE001 - the client gets its style's shape, never a traceback
                    response = to_response(dialect.render_error(e, make_call(request, dialect)))
                    if response.status_code >= 500 and not isinstance(e, SdgateError):
                        log.exception("%s %s failed", request.method, request.url.path)
                    else:
                        log.info("%s %s -> %s %s", request.method, request.url.path, response.status_code,
                                 bytes(response.body[:200]).decode("utf-8", "replace"))
                    return response

            return route

    return StyledErrorRoute


class FormError(ValueError):
    """A body that is not the multipart form a route needs. `reason` is the parser's own words (None when it
    failed some other way: `kind` names how); each route words the error in its style's shape."""

    def __init__(self, reason: str | None = None, kind: str = ""):
        super().__init__(reason or kind)
        self.reason = reason
        self.kind = kind


class NotMultipart(FormError):
    """The Content-Type is not multipart/form-data."""


async def multipart_items(headers: Mapping[str, str], body: bytes, *, max_part_size: int,
                          max_files: int = 1000) -> list[tuple[str, str | bytes]]:
    """An already-read multipart body → its (name, value) parts in order: str for fields, bytes for files.
    Raises NotMultipart or FormError (a malformed body is the client's mistake, never a 500)."""
    content_type, _ = parse_options_header(headers.get("content-type") or "")
    if content_type != b"multipart/form-data":
        raise NotMultipart()

    async def stream():
        yield body
        yield b""

    hdrs = headers if isinstance(headers, Headers) else Headers(headers=dict(headers))
    try:
        form = await MultiPartParser(hdrs, stream(), max_files=max_files, max_part_size=max_part_size).parse()
    except MultiPartException as e:
        raise FormError(e.message) from None
    except Exception as e:  # noqa: BLE001 - whatever the parser trips on, the body was bad
        raise FormError(None, type(e).__name__) from None
    try:
        return [(name, await value.read() if isinstance(value, UploadFile) else value)
                for name, value in form.multi_items()]
    finally:
        await form.close()
