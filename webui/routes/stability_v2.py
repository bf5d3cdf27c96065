"""The Stability v2beta Stable Image routes: `POST /v2beta/stable-image/generate/{core,ultra,sd3}`, and the same under
the reseller-gateway prefix `/sd/v2beta/...`.

Thin on purpose: the handler checks the caller, reads the body with the 10 MiB cap and awaits
`StabilityV2Api.generate` (backends/dialects/stability_v2.py). Every failure on these routes, FastAPI's own
included, is answered in the v2beta `{id, name, errors}` shape with an `x-request-id` header.
"""

from __future__ import annotations

import logging
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from backends.dialects import stability_v2 as d
from backends.remote.http import relay_or_run

from . import client_host, styled_errors

log = logging.getLogger(__name__)

PREFIXES = ("/v2beta/stable-image/generate", "/sd/v2beta/stable-image/generate")
# Past this much over the cap we stop draining and let the connection close (a client still sending gets a reset).
DRAIN_FACTOR = 4


def _send(reply: d.Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


class V2Route(styled_errors(lambda request, e: _send(d.error_reply(e, request.state.request_id)))):
    """Gives each request an id (in every answer, errors included) and renders failures as v2beta errors."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            request.state.request_id = d.new_request_id()
            return await handler(request)

        return route


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, or payload_too_large once it passes `limit`. The rest of an oversized body is drained (up to a
    bound) so that the client, still sending, reads our 413 instead of a reset connection."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit * DRAIN_FACTOR:
        raise d.payload_too_large()
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > limit * DRAIN_FACTOR:
                break
    except ClientDisconnect:
        raise d.bad_request("body: the client disconnected before sending the whole body") from None
    if size > limit:
        raise d.payload_too_large()
    return b"".join(chunks)


def _openapi(endpoint: str) -> dict:
    schema = d.REQUEST_MODELS[endpoint].model_json_schema()
    if "image" in schema.get("properties", {}):
        schema["properties"]["image"] = {"type": "string", "format": "binary", "description": "png, jpeg or webp"}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}},
        "parameters": [{"name": "accept", "in": "header", "required": False,
                        "schema": {"type": "string", "enum": ["image/*", "application/json"], "default": "image/*"}}],
    }


def _routes(api: d.StabilityV2Api, tag: str) -> APIRouter:
    r = APIRouter(route_class=V2Route, tags=[tag])

    def make(endpoint: str):
        async def generate(request: Request) -> Response:
            api.check_caller(request.headers, client_host(request))
            body = await read_capped(request, api.settings.max_body)
            return await relay_or_run(request, "stability_v2", lambda: api.generate(
                endpoint, request.headers, body, request.state.request_id), then=_send, body=body)

        generate.__name__ = f"stability_v2_{endpoint}"
        return generate

    for endpoint in d.ENDPOINTS:
        r.add_api_route(f"/{endpoint}", make(endpoint), methods=["POST"], response_class=Response,
                        summary=f"Stable Image {endpoint}", openapi_extra=_openapi(endpoint))

    @r.post("/{endpoint}", include_in_schema=False)
    async def unknown(endpoint: str, request: Request) -> Response:
        raise d.not_found(endpoint)

    # Without this a GET would fall through to the UI mounted at "/" and answer in its shape.
    @r.api_route("/{endpoint}", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def wrong_method(endpoint: str, request: Request) -> Response:
        raise d.V2Error(405, "method_not_allowed", [f"{request.method}: use POST with multipart/form-data"])

    return r


def create_router(service) -> APIRouter:
    api = d.StabilityV2Api.for_service(service)
    router = APIRouter()
    router.include_router(_routes(api, "Stability v2beta"), prefix=PREFIXES[0])
    router.include_router(_routes(api, "Stability v2beta (gateway prefix)"), prefix=PREFIXES[1])
    return router
