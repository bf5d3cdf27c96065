"""The ModelsLab / stablediffusionapi.com routes (every family of docs/reference/hosted_apis.md §C.1) and the
`/generations/<file>` route that serves the output URLs.

Thin on purpose: each handler reads the raw body, checks the body's `key` (`dialect.authorize`, before anything is
forwarded), then calls the dialect's `parse` and `run` (backends/dialects/modelslab/), as the UI tab does; the
management routes call one dialect method each. Bodies are read raw, not through FastAPI's models, so that no
FastAPI 422 ever reaches a ModelsLab client: every failure, validation included, comes back as
`{status: "error", message, messege}` through `dialect.render_error`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from backends.dialects import modelslab as ml
from backends.dialects import registry
from backends.dialects.base import Reply
from backends.job import Style

from . import dispatch, make_call, styled_errors, to_response


def create_router(service) -> APIRouter:
    dialect: ml.ModelslabDialect = registry.dialect(service, Style.MODELSLAB)
    r = APIRouter(route_class=styled_errors(dialect), tags=["ModelsLab API"])

    async def handle(request: Request, operation: str, **params: str) -> Response:
        body = await request.body()
        call = make_call(request, dialect, **params)
        dialect.authorize(call, ml.parse_body(body))
        return await dispatch(request, dialect, lambda call: dialect.run(
            operation, dialect.parse(operation, body, call), call), body=body, call=call)

    def generate(family: ml.Family):
        async def text2img(request: Request) -> Response:
            return await handle(request, "text2img", family=family.name)

        text2img.__name__ = f"text2img_{family.name.replace('-', '_')}"
        return text2img

    async def fetch(request: Request) -> Response:
        return await handle(request, "fetch")

    async def fetch_by_id(request: Request, request_id: str) -> Response:
        return await handle(request, "fetch", request_id=request_id)

    for family in ml.FAMILIES:
        for path in family.generate:
            r.add_api_route(path, generate(family), methods=["POST"], summary=f"text2img ({family.name})")
        for path in family.fetch:
            r.add_api_route(path, fetch, methods=["POST"], summary=f"fetch {{key, request_id}} ({family.name})")
            r.add_api_route(path + "/{request_id}", fetch_by_id, methods=["POST"], summary=f"fetch ({family.name})")

    management = {
        "system_details": dialect.system_details,
        "schedulers_list": dialect.schedulers_list,
        "get_all_models": dialect.get_all_models,
    }

    def manage(name: str, method):
        async def call(request: Request) -> Response:
            return to_response(await method(await request.body(), make_call(request, dialect)))

        call.__name__ = name
        return call

    for name, method in management.items():
        r.add_api_route(f"{ml.ENTERPRISE}/{name}", manage(name, method), methods=["POST"], summary=f"enterprise {name}")

    @r.post(ml.SYSTEM_LOAD, summary="queue length and time (legacy)")
    async def system_load(request: Request) -> Response:
        return to_response(await dialect.system_load(await request.body(), make_call(request, dialect)))

    @r.api_route(ml.GENERATIONS + "/{name}", methods=["GET", "HEAD"], summary="a generated image (expires)")
    async def generation(name: str):
        path = dialect.generation_file(name)
        if path is None:
            return to_response(Reply(ml.error_body("not found: the image is not ready, has expired or never existed"),
                                     404))
        return FileResponse(path, media_type="image/png")

    return r
