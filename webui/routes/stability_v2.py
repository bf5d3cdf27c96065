"""The Stability v2beta Stable Image routes: `POST /v2beta/stable-image/generate/{core,ultra,sd3}`, and the same under
the reseller-gateway prefix `/sd/v2beta/...`.

Thin on purpose: the handler checks the caller (`dialect.authorize`), reads the body with the 10 MiB cap and the
multipart form, then calls the dialect's `parse` and `run` (backends/dialects/stability_v2/), as the UI tab does.
Every failure on these routes is answered in the v2beta `{id, name, errors}` shape with an `x-request-id` header.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from backends.dialects import registry
from backends.dialects import stability_v2 as v2
from backends.dialects.base import Call
from backends.job import Style
from backends.service import Service

from . import FormError, NotMultipart, dispatch, make_call, multipart_items, styled_errors

log = logging.getLogger(__name__)

PREFIXES = ("/v2beta/stable-image/generate", "/sd/v2beta/stable-image/generate")
# Past this much over the cap we stop draining and let the connection close (a client still sending gets a reset).
DRAIN_FACTOR = 4


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, or payload_too_large once it passes `limit`. The rest of an oversized body is drained (up to a
    bound) so that the client, still sending, reads our 413 instead of a reset connection."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit * DRAIN_FACTOR:
        raise v2.payload_too_large()
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > limit * DRAIN_FACTOR:
                break
    except ClientDisconnect:
        raise v2.bad_request("body: the client disconnected before sending the whole body") from None
    if size > limit:
        raise v2.payload_too_large()
    return b"".join(chunks)


async def read_form(headers: Mapping[str, str], body: bytes, max_part_size: int = v2.MAX_BODY) -> dict[str, Any]:
    """A multipart body → {name: str for fields, bytes for files (the last part of a name wins)}."""
    try:
        return dict(await multipart_items(headers, body, max_part_size=max_part_size))
    except NotMultipart:
        raise v2.bad_request("content-type: must be multipart/form-data") from None
    except FormError as e:
        raise v2.bad_request(f"body: {e.reason}" if e.reason else
                             f"body: malformed multipart/form-data ({e.kind})") from None


def _openapi(endpoint: str) -> dict:
    schema = v2.REQUEST_MODELS[endpoint].model_json_schema()
    if "image" in schema.get("properties", {}):
        schema["properties"]["image"] = {"type": "string", "format": "binary", "description": "png, jpeg or webp"}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}},
        "parameters": [{"name": "accept", "in": "header", "required": False,
                        "schema": {"type": "string", "enum": ["image/*", "application/json"], "default": "image/*"}}],
    }


def _routes(dialect: v2.StabilityV2Dialect, tag: str) -> APIRouter:
    r = APIRouter(route_class=styled_errors(dialect), tags=[tag])

    def make(endpoint: str):
        async def generate(request: Request) -> Response:
            call = make_call(request, dialect)
            dialect.authorize(call)
            body = await read_capped(request, dialect.settings.max_body)

            async def run(call: Call):
                fields = await read_form(request.headers, body, dialect.service.config.limits.max_upload_bytes)
                return await dialect.run(endpoint, dialect.parse(endpoint, fields, call), call)

            return await dispatch(request, dialect, run, body=body, call=call)

        generate.__name__ = f"stability_v2_{endpoint}"
        return generate

    for endpoint in v2.ENDPOINTS:
        r.add_api_route(f"/{endpoint}", make(endpoint), methods=["POST"], response_class=Response,
                        summary=f"Stable Image {endpoint}", openapi_extra=_openapi(endpoint))

    @r.post("/{endpoint}", include_in_schema=False)
    async def unknown(endpoint: str, request: Request) -> Response:
        raise v2.not_found(endpoint)

    # Without this a GET would fall through to the UI mounted at "/" and answer in its shape.
    @r.api_route("/{endpoint}", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def wrong_method(endpoint: str, request: Request) -> Response:
        raise v2.method_not_allowed(request.method)

    return r


def create_router(service: Service) -> APIRouter:
    dialect = registry.dialect(service, Style.STABILITY_V2)
    router = APIRouter()
    router.include_router(_routes(dialect, "Stability v2beta"), prefix=PREFIXES[0])
    router.include_router(_routes(dialect, "Stability v2beta (gateway prefix)"), prefix=PREFIXES[1])
    return router
