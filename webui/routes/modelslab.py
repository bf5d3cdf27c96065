"""The ModelsLab / stablediffusionapi.com routes (every family of reference/hosted_apis.md C.1) and the
`/generations/<file>` route that serves the output URLs.

Thin on purpose: each handler hands the raw body to one `ModelslabApi` method (backends/dialects/modelslab.py).
Bodies are read raw, not through FastAPI's models, so that no FastAPI 422 ever reaches a ModelsLab client: every
failure, validation included, comes back as `{status: "error", message, messege}` from the route class below.
Auth is the body's `key`, checked by the dialect through `service.keys`.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute

from backends.dialects import modelslab as d
from backends.remote.http import relay_or_run

from . import client_host, styled_errors

log = logging.getLogger(__name__)


def _route_class(api: d.ModelslabApi) -> type[APIRoute]:
    def render(request: Request, e: Exception) -> JSONResponse:
        status, body = d.error_response(e, api.settings.always_200)
        return JSONResponse(body, status_code=status)

    return styled_errors(render)


def create_router(service) -> APIRouter:
    api = d.ModelslabApi.for_service(service)
    r = APIRouter(route_class=_route_class(api), tags=["ModelsLab API"])

    def generate(family: d.Family):
        async def text2img(request: Request) -> JSONResponse:
            body = await request.body()
            return await relay_or_run(request, "modelslab", lambda: api.text2img(
                body, family, str(request.base_url), client_host(request)), then=JSONResponse, body=body,
                check=lambda: api.authorize(d.parse_body(body), client_host(request)))

        text2img.__name__ = f"text2img_{family.name.replace('-', '_')}"
        return text2img

    async def fetch(request: Request) -> JSONResponse:
        body = await request.body()
        return await relay_or_run(request, "modelslab", lambda: api.fetch(
            body, None, str(request.base_url), client_host(request)), then=JSONResponse, body=body,
            check=lambda: api.authorize(d.parse_body(body), client_host(request)))

    async def fetch_by_id(request: Request, request_id: str) -> JSONResponse:
        body = await request.body()
        return await relay_or_run(request, "modelslab", lambda: api.fetch(
            body, request_id, str(request.base_url), client_host(request)), then=JSONResponse, body=body,
            check=lambda: api.authorize(d.parse_body(body), client_host(request)))

    for family in d.FAMILIES:
        for path in family.generate:
            r.add_api_route(path, generate(family), methods=["POST"], summary=f"text2img ({family.name})")
        for path in family.fetch:
            r.add_api_route(path, fetch, methods=["POST"], summary=f"fetch {{key, request_id}} ({family.name})")
            r.add_api_route(path + "/{request_id}", fetch_by_id, methods=["POST"], summary=f"fetch ({family.name})")

    management = {
        "system_details": api.system_details,
        "schedulers_list": api.schedulers_list,
        "get_all_models": api.get_all_models,
    }
    def manage(name: str, method):
        async def call(request: Request) -> JSONResponse:
            return JSONResponse(await method(await request.body(), client_host(request)))

        call.__name__ = name
        return call

    for name, method in management.items():
        r.add_api_route(f"{d.ENTERPRISE}/{name}", manage(name, method), methods=["POST"], summary=f"enterprise {name}")

    @r.post(d.SYSTEM_LOAD, summary="queue length and time (legacy)")
    async def system_load(request: Request) -> JSONResponse:
        return JSONResponse(await api.system_load(await request.body(), client_host(request)))

    @r.api_route(d.GENERATIONS + "/{name}", methods=["GET", "HEAD"], summary="a generated image (expires)")
    async def generation(name: str):
        path = api.generation_file(name)
        if path is None:
            return JSONResponse(d.error_body("not found: the image is not ready, has expired or never existed"),
                                status_code=404)
        return FileResponse(path, media_type="image/png")

    return r
