"""The one call a dialect's HTTP route makes into the relay, after it has checked the caller.

    return await relay_or_run(request, "stability_v1", lambda: api.text_to_image(...), then=_respond, body=body)

- no gateway configured, or the style not routed: runs `run_locally()` (its Jobs may still go to a gateway
  through a `gateway:` model alias; the answer then names it and what could not be carried, in headers);
- the style routed to a gateway that speaks it: forwards the caller's request and answers with the gateway's;
- the style routed to a gateway that speaks another style: runs `run_locally()` with its Jobs sent there.

Failures raise SdgateError (UpstreamError): the route renders them in its own style, as any other error.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable

from fastapi.encoders import jsonable_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import routing, styles
from .relay import BACKEND_HEADER, DROPPED_HEADER


async def relay_or_run(request: Request, style: str, run_locally: Callable[[], Awaitable[Any] | Any], *,
                       then: Callable[[Any], Any] | None = None, body: bytes | None = None,
                       check: Callable[[], Any] | None = None) -> Any:
    """`then`: applied to what `run_locally()` gives (e.g. the route's own reply → Response); `body`: the raw
    body when the route has read it already; `check`: the caller check the route would otherwise do inside
    `run_locally` (ModelsLab's body key), run before forwarding."""
    service = request.app.state.service
    relay = getattr(service, "relay", None)
    if relay is None:
        return await _run(run_locally, then)
    gw = relay.routed(style)
    if gw is not None and gw.serves(style):
        if check is not None:
            check()
        if body is None:
            body = await request.body()
        store = styles.modelslab_store(service, str(request.base_url)) if style == "modelslab" else None
        answer = await relay.forward(gw.name, style, request.method, request.url.path, request.url.query,
                                     dict(request.headers), body, store_output=store)
        return Response(answer.content, answer.status, headers={**answer.headers, BACKEND_HEADER: gw.name})
    with routing.routed_to(gw.name if gw else None, style) as ctx:
        result = await _run(run_locally, then)
    headers = {}
    if ctx.backends:
        headers[BACKEND_HEADER] = ", ".join(ctx.backends)
    if ctx.dropped:
        headers[DROPPED_HEADER] = ", ".join(ctx.dropped)
    if not headers:
        return result
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    return JSONResponse(jsonable_encoder(result), headers=headers)


async def _run(run_locally: Callable[[], Awaitable[Any] | Any], then: Callable[[Any], Any] | None) -> Any:
    result = run_locally()
    if inspect.isawaitable(result):
        result = await result
    return then(result) if then is not None else result
