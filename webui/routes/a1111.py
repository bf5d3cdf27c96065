"""The A1111 `/sdapi/v1/*` routes, and the same routes under the reseller-gateway prefix `/v1/sdapi/v1/*`.

Thin on purpose: every handler awaits one `A1111Api` method (backends/dialects/a1111.py). Handlers are async so
that progress, interrupt and options answer while a generation runs on the queue's worker thread.

Auth: `--api-auth user:pass` puts HTTP Basic on every route here. The gateway prefix takes a bearer key
(`[a1111] gateway_keys` / SDGATE_GATEWAY_KEYS) when keys are configured, and otherwise the same Basic auth,
so the second prefix is never a way around the first.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from backends.dialects import a1111 as d
from backends.remote.http import relay_or_run

from . import styled_errors

log = logging.getLogger(__name__)

PREFIX = "/sdapi/v1"
GATEWAY_PREFIX = "/v1/sdapi/v1"


def _render_error(request: Request, e: Exception) -> JSONResponse:
    status, body, headers = d.error_body(e)
    return JSONResponse(body, status_code=status, headers=headers)


class A1111Route(styled_errors(_render_error, passthrough=(RequestValidationError,))):
    """Failures in A1111's `{error, detail, body, errors}` shape (422 validation errors keep FastAPI's
    `{"detail": [...]}`, as in A1111), and A1111's X-Process-Time header on every answer."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request):
            started = time.perf_counter()
            response = await handler(request)
            response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
            return response

        return route


def _digest_equal(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def basic_auth(credentials: list[tuple[str, str]]):
    """A dependency checking HTTP Basic against `credentials` (every pair compared, in constant time)."""
    scheme = HTTPBasic(auto_error=False, description="--api-auth user:pass")

    async def check(creds: HTTPBasicCredentials | None = Depends(scheme)) -> None:
        if creds is None:
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Basic"})
        ok = False
        for user, password in credentials:
            ok |= _digest_equal(creds.username, user) & _digest_equal(creds.password, password)
        if not ok:
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check


def bearer_auth(keys: list[str]):
    scheme = HTTPBearer(auto_error=False, description="gateway key: Authorization: Bearer <key>")

    async def check(creds: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if creds is None:
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
        ok = False
        for key in keys:
            ok |= _digest_equal(creds.credentials, key)
        if not ok:
            raise HTTPException(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})

    return check


def _routes(api: d.A1111Api, tag: str) -> APIRouter:
    # strict_content_type off: A1111's FastAPI parsed a JSON body whatever its Content-Type said.
    r = APIRouter(route_class=A1111Route, strict_content_type=False, tags=[tag])

    @r.post("/txt2img", response_model=d.TextToImageResponse)
    async def text2imgapi(req: d.Txt2ImgRequest, request: Request):
        return await relay_or_run(request, "a1111", lambda: api.txt2img(req))

    @r.post("/img2img", response_model=d.ImageToImageResponse)
    async def img2imgapi(req: d.Img2ImgRequest, request: Request):
        return await relay_or_run(request, "a1111", lambda: api.img2img(req))

    @r.post("/extra-single-image", response_model=d.ExtrasSingleImageResponse)
    async def extras_single_image_api(req: d.ExtrasSingleImageRequest):
        return await api.extra_single_image(req)

    @r.post("/extra-batch-images", response_model=d.ExtrasBatchImagesResponse)
    async def extras_batch_images_api(req: d.ExtrasBatchImagesRequest):
        return await api.extra_batch_images(req)

    @r.post("/png-info", response_model=d.PNGInfoResponse)
    async def pnginfoapi(req: d.PNGInfoRequest):
        return await api.png_info(req)

    @r.get("/progress", response_model=d.ProgressResponse)
    async def progressapi(skip_current_image: bool = False):
        return api.progress(skip_current_image)

    @r.post("/interrupt")
    async def interruptapi() -> dict:
        return api.interrupt()

    @r.post("/skip")
    async def skip() -> None:
        return api.skip()

    @r.get("/options")
    async def get_config() -> dict[str, Any]:
        return await api.get_options()

    @r.post("/options")
    async def set_config(req: dict[str, Any] = Body(...)) -> None:
        return await api.set_options(req)

    @r.get("/cmd-flags")
    async def get_cmd_flags() -> dict[str, Any]:
        return api.cmd_flags()

    @r.get("/samplers", response_model=list[d.SamplerItem])
    async def get_samplers(request: Request):
        return await relay_or_run(request, "a1111", api.samplers)

    @r.get("/schedulers", response_model=list[d.SchedulerItem])
    async def get_schedulers(request: Request):
        return await relay_or_run(request, "a1111", api.schedulers)

    @r.get("/upscalers", response_model=list[d.UpscalerItem])
    async def get_upscalers():
        return api.upscalers()

    @r.get("/latent-upscale-modes", response_model=list[d.LatentUpscalerModeItem])
    async def get_latent_upscale_modes():
        return api.latent_upscale_modes()

    @r.get("/sd-models", response_model=list[d.SDModelItem])
    async def get_sd_models(request: Request):
        return await relay_or_run(request, "a1111", api.sd_models)

    @r.get("/sd-vae", response_model=list[d.SDVaeItem])
    async def get_sd_vaes():
        return api.sd_vae()

    @r.get("/hypernetworks", response_model=list[d.HypernetworkItem])
    async def get_hypernetworks():
        return []

    @r.get("/face-restorers", response_model=list[d.FaceRestorerItem])
    async def get_face_restorers():
        return []

    @r.get("/realesrgan-models", response_model=list[d.RealesrganItem])
    async def get_realesrgan_models():
        return []

    @r.get("/prompt-styles", response_model=list[d.PromptStyleItem])
    async def get_prompt_styles():
        return api.prompt_styles()

    @r.get("/embeddings", response_model=d.EmbeddingsResponse)
    async def get_embeddings():
        return api.embeddings()

    @r.get("/loras", response_model=list[d.LoraItem])
    async def get_loras():
        return api.loras()

    @r.post("/refresh-checkpoints")
    async def refresh_checkpoints() -> None:
        return await api.refresh_checkpoints()

    @r.post("/refresh-loras")
    async def refresh_loras() -> None:
        return None  # listed from disk on every GET /loras

    @r.post("/refresh-vae")
    async def refresh_vae() -> None:
        return None

    @r.post("/refresh-embeddings")
    async def refresh_embeddings() -> None:
        return None

    @r.post("/unload-checkpoint")
    async def unloadapi() -> dict:
        return await api.unload_checkpoint()

    @r.post("/reload-checkpoint")
    async def reloadapi() -> dict:
        return await api.reload_checkpoint()

    @r.get("/memory", response_model=d.MemoryResponse)
    async def get_memory():
        return await api.memory()

    @r.get("/scripts", response_model=d.ScriptsList)
    async def get_scripts_list():
        return {"txt2img": [], "img2img": []}

    @r.get("/script-info", response_model=list[d.ScriptInfo])
    async def get_script_info():
        return []

    @r.get("/extensions", response_model=list[d.ExtensionItem])
    async def get_extensions_list():
        return []

    return r


def create_router(service) -> APIRouter:
    """Both prefixes over one A1111Api (one options store, one styles file)."""
    api = d.A1111Api.for_service(service)
    basic = [Depends(basic_auth(service.config.api_auth))] if service.config.api_auth else []
    keys = d.gateway_keys(service.config)
    gateway = [Depends(bearer_auth(keys))] if keys else basic
    router = APIRouter()
    router.include_router(_routes(api, "A1111 API"), prefix=PREFIX, dependencies=basic)
    router.include_router(_routes(api, "A1111 API (gateway prefix)"), prefix=GATEWAY_PREFIX, dependencies=gateway)
    return router
