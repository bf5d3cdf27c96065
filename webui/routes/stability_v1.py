"""The Stability v1 routes, under `/v1` and under the reseller-gateway prefix `/sd/v1` (seeds 000, 001).

Thin on purpose: each handler checks the key and awaits one `StabilityV1Api` method
(backends/dialects/stability_v1.py). Bodies are read by the dialect, not by FastAPI, so that the order of the
answers is v1's (401 before 404 before 400) and no FastAPI 422 ever leaves these routes: every failure is v1's
`{id, name, message}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from backends.dialects import stability_v1 as d
from backends.remote.http import relay_or_run

from . import client_host, styled_errors

log = logging.getLogger(__name__)

PREFIXES = ("/v1", "/sd/v1")

_ERRORS = {
    status: {"model": d.ErrorResponse, "description": name}
    for status, name in d.STATUS_NAMES.items()
}


def _render_error(request: Request, e: Exception) -> JSONResponse:
    status, body, headers = d.error_body(e)
    return JSONResponse(body, status_code=status, headers=headers)


StabilityV1Route = styled_errors(_render_error)


def _json_body_doc(model) -> dict[str, Any]:
    """OpenAPI requestBody for a body the handler reads itself (so /docs still shows the fields)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    for name, sub in defs.items():  # TextPrompt is the only nested model: inline it
        text = text.replace(json.dumps({"$ref": f"#/$defs/{name}"}), json.dumps(sub))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": json.loads(text)}}}}


async def _form_items(request: Request) -> list[tuple[str, Any]]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise d.bad_request("image-to-image takes a multipart/form-data body (init_image as a file part)")
    try:
        form = await request.form()
    except Exception as e:  # a broken multipart body is the client's mistake, not a 500
        raise d.bad_request(f"cannot read the multipart body ({e})") from None
    items = []
    for key, value in form.multi_items():
        items.append((key, await value.read() if isinstance(value, UploadFile) else value))
    return items


def _respond(reply: d.Reply) -> Response:
    if reply.media_type == "application/json":
        return JSONResponse(reply.content, headers=reply.headers)
    return Response(reply.content, media_type=reply.media_type, headers=reply.headers)


def _routes(api: d.StabilityV1Api, tag: str) -> APIRouter:
    r = APIRouter(route_class=StabilityV1Route, tags=[tag], responses=_ERRORS)

    def authorize(request: Request) -> None:
        api.authorize(request.headers.get("authorization"), client_host(request))

    png_doc = {200: {"model": d.GenerationResponse,
                     "content": {"image/png": {}},
                     "description": "JSON artifacts, or with Accept: image/png the PNG with Finish-Reason and Seed"}}

    @r.post("/generation/{engine_id}/text-to-image", responses=png_doc,
            openapi_extra=_json_body_doc(d.TextToImageRequest))
    async def text_to_image(engine_id: str, request: Request):
        authorize(request)
        body = await request.body()
        return await relay_or_run(request, "stability_v1", lambda: api.text_to_image(
            engine_id, body, request.headers.get("accept")), then=_respond, body=body)

    @r.post("/generation/{engine_id}/image-to-image", responses=png_doc)
    async def image_to_image(engine_id: str, request: Request):
        authorize(request)

        async def here():
            await asyncio.to_thread(api.resolve_engine, engine_id)  # 404 before reading a large upload
            items = await _form_items(request)
            return _respond(await api.image_to_image(engine_id, items, request.headers.get("accept")))

        return await relay_or_run(request, "stability_v1", here)

    @r.post("/generation/{engine_id}/image-to-image/masking", responses=png_doc)
    async def masking(engine_id: str, request: Request):
        authorize(request)

        async def here():
            await asyncio.to_thread(api.resolve_engine, engine_id)
            items = await _form_items(request)
            return _respond(await api.image_to_image(engine_id, items, request.headers.get("accept"), masking=True))

        return await relay_or_run(request, "stability_v1", here)

    @r.post("/generation/{engine_id}/image-to-image/upscale")
    async def upscale(engine_id: str, request: Request):
        authorize(request)

        def here():
            raise d.engine_not_found(engine_id)  # no upscaler engines are served here (a gateway may have some)

        return await relay_or_run(request, "stability_v1", here)

    @r.get("/engines/list", response_model=list[d.EngineItem])
    async def engines(request: Request):
        authorize(request)
        return await relay_or_run(request, "stability_v1", api.engines)

    @r.get("/user/account")
    async def account(request: Request) -> dict:
        authorize(request)
        return api.account()

    @r.get("/user/balance")
    async def balance(request: Request) -> dict:
        authorize(request)
        return api.balance()

    return r


def create_router(service) -> APIRouter:
    api = d.StabilityV1Api.for_service(service)
    router = APIRouter()
    for prefix in PREFIXES:
        router.include_router(_routes(api, f"Stability v1 ({prefix})"), prefix=prefix)
    return router
