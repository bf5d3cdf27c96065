"""The OpenAI Images routes: `POST /v1/images/{generations,edits,variations}`, `GET /v1/models[/{id}]`, and the
`url` answers' files under `/generations/openai/<name>`. The same routes answer without the `/v1` too (the SDK
appends `/images/...` to whatever base URL it is given and never adds `/v1`: docs/reference/openai_images.md §0).

Thin on purpose: the handler checks the bearer key (`dialect.authorize`), reads the JSON body (generations) or the
multipart form (edits, variations: `image`, `image[]` repeated, `mask`), then calls the dialect's `parse` and `run`
(backends/dialects/openai/), as the UI tab does. Bodies are read raw, never through FastAPI models, so no FastAPI
422 reaches an OpenAI client: every failure is `{"error": {message, type, param, code}}` with an `x-request-id`.
"""

from __future__ import annotations

from typing import Any, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.requests import ClientDisconnect

from backends.dialects import openai as oa
from backends.dialects import registry
from backends.dialects.base import Call
from backends.job import Style
from backends.service import Service

from . import FormError, NotMultipart, dispatch, make_call, multipart_items, styled_errors

PREFIXES = ("/v1", "")


async def read_capped(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise oa.OpenAIError(413, f"The request body is larger than {limit // (1024 * 1024)} MB.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise oa.bad_request("The client disconnected before sending the whole body.", None, None) from None
    return b"".join(chunks)


async def read_form(headers: Mapping[str, str], body: bytes, max_part_size: int = oa.MAX_BODY) -> dict[str, Any]:
    """A multipart body → {name: str, or bytes for a file; a list when `image`/`image[]` repeats}."""
    try:
        items = await multipart_items(headers, body, max_files=64, max_part_size=max_part_size)
    except NotMultipart:
        raise oa.bad_request("This endpoint takes multipart/form-data (the image as a file part).", None, None) \
            from None
    except FormError as e:
        raise oa.bad_request(f"Malformed multipart body: {e.reason}" if e.reason else
                             f"Malformed multipart body ({e.kind}).", None, None) from None
    fields: dict[str, Any] = {}
    for name, value in items:
        if name in fields and name in ("image", "image[]"):
            previous = fields[name]
            fields[name] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            fields[name] = value
    return fields


def _routes(dialect: oa.OpenAIDialect, tag: str) -> APIRouter:
    r = APIRouter(route_class=styled_errors(dialect), tags=[tag])

    def make(operation: str):
        async def images(request: Request) -> Response:
            call = make_call(request, dialect)
            dialect.authorize(call)
            body = await read_capped(request, oa.MAX_BODY)

            async def run(call: Call):
                fields = body if operation == "generations" else await read_form(
                    request.headers, body, dialect.service.config.limits.max_upload_bytes)
                return await dialect.run(operation, dialect.parse(operation, fields, call), call)

            return await dispatch(request, dialect, run, body=body, call=call)

        images.__name__ = f"openai_images_{operation}"
        return images

    for operation in oa.OPERATIONS:
        r.add_api_route(f"/images/{operation}", make(operation), methods=["POST"], response_class=Response,
                        summary=f"Images {operation}")

    @r.api_route("/images/{operation}", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def wrong_method(operation: str, request: Request) -> Response:
        if operation in oa.OPERATIONS:
            raise oa.method_not_allowed(request.method, request.url.path)
        raise oa.not_found_path(request.method, request.url.path)

    @r.post("/images/{operation}", include_in_schema=False)
    async def unknown(operation: str, request: Request) -> Response:
        raise oa.not_found_path(request.method, request.url.path)

    @r.get("/models", summary="the model names this server answers to")
    async def models(request: Request) -> Response:
        call = make_call(request, dialect)
        dialect.authorize(call)
        return await dispatch(request, dialect, dialect.list_models, call=call)

    @r.get("/models/{model_id:path}", summary="one model")
    async def model(model_id: str, request: Request) -> Response:
        call = make_call(request, dialect)
        dialect.authorize(call)
        return await dispatch(request, dialect, lambda call: dialect.get_model(model_id, call), call=call)

    return r


def create_router(service: Service) -> APIRouter:
    dialect = registry.dialect(service, Style.OPENAI)
    router = APIRouter()
    router.include_router(_routes(dialect, "OpenAI Images"), prefix=PREFIXES[0])
    router.include_router(_routes(dialect, "OpenAI Images (no /v1)"), prefix=PREFIXES[1], include_in_schema=False)

    files = APIRouter(route_class=styled_errors(dialect), tags=["OpenAI Images"])

    @files.api_route(oa.FILES + "/{name}", methods=["GET", "HEAD"], summary="a `url` answer's image (expires)")
    async def image_file(name: str):
        found = dialect.image_file(name)
        if found is None:
            raise oa.OpenAIError(404, "The image is not ready, has expired or never existed.", code="not_found")
        path, media = found
        return FileResponse(path, media_type=media)

    router.include_router(files)
    return router
