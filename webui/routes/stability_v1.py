"""The Stability v1 routes, under `/v1` and under the reseller-gateway prefix `/sd/v1` (docs/reference/
hosted_apis.md §A).

Thin on purpose: each handler checks the key (`dialect.authorize`), then `dispatch`es the dialect's `parse` and
`run` (backends/dialects/stability_v1/), the same entry points as the UI tab. Bodies are read here, not by
FastAPI's models, so that the order of the answers is v1's (401 before 404 before 400, and the engine's 404
before a large upload is read) and no FastAPI 422 ever leaves these routes: every failure is v1's
`{id, name, message}`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from backends.dialects import registry
from backends.dialects import stability_v1 as v1
from backends.dialects.base import Call
from backends.job import Style

from . import dispatch, make_call, styled_errors

PREFIXES = ("/v1", "/sd/v1")

_ERRORS = {status: {"model": v1.ErrorResponse, "description": name} for status, name in v1.STATUS_NAMES.items()}
_PNG_DOC = {200: {"model": v1.GenerationResponse, "content": {"image/png": {}},
                  "description": "JSON artifacts, or with Accept: image/png the PNG with Finish-Reason and Seed"}}


def _json_body_doc(model) -> dict[str, Any]:
    """OpenAPI requestBody for a body the handler reads itself (so /docs still shows the fields)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    for name, sub in defs.items():  # TextPrompt is the only nested model: inline it
        text = text.replace(json.dumps({"$ref": f"#/$defs/{name}"}), json.dumps(sub))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": json.loads(text)}}}}


async def _form_items(request: Request, max_upload_bytes: int) -> list[tuple[str, Any]]:
    """A multipart body → its (name, value) items, file parts as bytes. A text part may hold a base64 image, so
    one may be as long as `[limits] max_upload_bytes` in base64."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise v1.bad_request("image-to-image takes a multipart/form-data body (init_image as a file part)")
    try:
        form = await request.form(max_part_size=max_upload_bytes * 4 // 3 + 1024)
    except Exception as e:  # a broken multipart body is the client's mistake, not a 500
        raise v1.bad_request(f"cannot read the multipart body ({e})") from None
    items = []
    for key, value in form.multi_items():
        items.append((key, await value.read() if isinstance(value, UploadFile) else value))
    return items


def _routes(dialect: v1.StabilityV1Dialect, tag: str) -> APIRouter:
    r = APIRouter(route_class=styled_errors(dialect), tags=[tag], responses=_ERRORS)

    def authorized(request: Request, **params: str) -> Call:
        call = make_call(request, dialect, **params)
        dialect.authorize(call)
        return call

    async def generate(operation: str, call: Call, body: Any):
        planned = await asyncio.to_thread(dialect.parse, operation, body, call)
        return await dialect.run(operation, planned, call)

    def form_route(operation: str):
        async def handler(engine_id: str, request: Request):
            call = authorized(request, engine_id=engine_id)

            async def here(call: Call):
                await asyncio.to_thread(dialect.resolve_engine, engine_id, call)  # 404 before reading the upload
                items = await _form_items(request, dialect.service.config.limits.max_upload_bytes)
                return await generate(operation, call, items)

            return await dispatch(request, dialect, here, call=call)

        return handler

    @r.post("/generation/{engine_id}/text-to-image", responses=_PNG_DOC,
            openapi_extra=_json_body_doc(v1.TextToImageRequest))
    async def text_to_image(engine_id: str, request: Request):
        call = authorized(request, engine_id=engine_id)
        body = await request.body()
        return await dispatch(request, dialect, lambda call: generate(v1.TEXT_TO_IMAGE, call, body),
                              body=body, call=call)

    r.add_api_route("/generation/{engine_id}/image-to-image", form_route(v1.IMAGE_TO_IMAGE), methods=["POST"],
                    responses=_PNG_DOC, name="image_to_image")
    r.add_api_route("/generation/{engine_id}/image-to-image/masking", form_route(v1.MASKING), methods=["POST"],
                    responses=_PNG_DOC, name="masking")

    @r.post("/generation/{engine_id}/image-to-image/upscale")
    async def upscale(engine_id: str, request: Request):
        return await dispatch(request, dialect, dialect.upscale, call=authorized(request, engine_id=engine_id))

    @r.get("/engines/list", response_model=list[v1.EngineItem])
    async def engines(request: Request):
        return await dispatch(request, dialect, dialect.engines, call=authorized(request))

    @r.get("/user/account")
    async def account(request: Request) -> dict:
        authorized(request)
        return dialect.account()

    @r.get("/user/balance")
    async def balance(request: Request) -> dict:
        authorized(request)
        return dialect.balance()

    return r


def create_router(service) -> APIRouter:
    dialect = registry.dialect(service, Style.STABILITY_V1)
    router = APIRouter()
    for prefix in PREFIXES:
        router.include_router(_routes(dialect, f"Stability v1 ({prefix})"), prefix=prefix)
    return router
