"""HTTP routers, one per API dialect. Each is thin: it binds paths to the dialect's methods and adds auth."""

from __future__ import annotations

import logging
from typing import Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute

from backends.job import SdgateError

log = logging.getLogger(__name__)


def client_host(request: Request) -> str | None:
    """The caller's address, for the loopback-only rule when a style has no keys."""
    return request.client.host if request.client else None


def styled_errors(render: Callable[[Request, Exception], Response], *, passthrough: tuple = ()) -> type[APIRoute]:
    """An APIRoute class whose failures come back in one API style's own error shape (`render`), on that style's
    routes only: each style has its own shape, so no app-wide handler can serve them all. A failure that is not
    an SdgateError is a bug: it is logged with its traceback, and the client still gets the style's 500."""

    class StyledErrorRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except passthrough:
                    raise
                except Exception as e:  # noqa: BLE001 - the client gets its style's shape, never a traceback
                    response = render(request, e)
                    if response.status_code >= 500 and not isinstance(e, SdgateError):
                        log.exception("%s %s failed", request.method, request.url.path)
                    else:
                        log.info("%s %s -> %s %s", request.method, request.url.path, response.status_code,
                                 bytes(response.body[:200]).decode("utf-8", "replace"))
                    return response

            return route

    return StyledErrorRoute
