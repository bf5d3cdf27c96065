"""The A1111 `/sdapi/v1/*` routes, and the same routes under the reseller-gateway prefix `/v1/sdapi/v1/*`.

Thin on purpose: every handler awaits one method of the A1111 dialect (backends/dialects/a1111/); txt2img and
img2img go through `parse` + `run`, the same entry points as the A1111 tabs. Handlers are async so that
progress, interrupt and options answer while a generation runs on the queue's worker thread.

Auth is the dialect's (`authorize`: `--api-auth` HTTP Basic; a bearer key on the gateway prefix), checked by
a dependency on every route before anything else.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError

from backends.dialects import a1111 as d
from backends.dialects import registry
from backends.job import Style

from . import dispatch, make_call, styled_errors


def route_class(dialect: d.A1111Dialect) -> type:
    """Failures in A1111's `{error, detail, body, errors}` shape (422 validation errors of the bodies FastAPI
    reads keep FastAPI's `{"detail": [...]}`, as in A1111), and A1111's X-Process-Time header on every answer."""

    class A1111Route(styled_errors(dialect, passthrough=(RequestValidationError,))):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def route(request: Request):
                started = time.perf_counter()
                response = await handler(request)
                response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
                return response

            return route

    return A1111Route


def _json_body_doc(model) -> dict[str, Any]:
    """OpenAPI requestBody for a body the handler reads itself (so /docs still shows the fields)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _routes(dialect: d.A1111Dialect, tag: str) -> APIRouter:
    # The bodies FastAPI reads: strict_content_type off, as A1111's FastAPI parsed JSON whatever the Content-Type.
    r = APIRouter(route_class=route_class(dialect), strict_content_type=False, tags=[tag])

    def generation(operation: str):
        async def handler(request: Request):
            body = await request.body()
            call = make_call(request, dialect)
            req = dialect.parse(operation, body, call)  # a body A1111 would refuse is refused here, forwarded or not
            return await dispatch(request, dialect, lambda call: dialect.run(operation, req, call), body=body,
                                  call=call)

        return handler

    r.add_api_route("/txt2img", generation("txt2img"), methods=["POST"], name="text2imgapi",
                    response_model=d.TextToImageResponse, openapi_extra=_json_body_doc(d.Txt2ImgRequest))
    r.add_api_route("/img2img", generation("img2img"), methods=["POST"], name="img2imgapi",
                    response_model=d.ImageToImageResponse, openapi_extra=_json_body_doc(d.Img2ImgRequest))

    def routed(get: Callable[[], Any]):
        """A list the gateway answers when the style is forwarded there."""

        async def handler(request: Request):
            return await dispatch(request, dialect, lambda call: get())

        return handler

    r.add_api_route("/samplers", routed(dialect.samplers), methods=["GET"], name="get_samplers",
                    response_model=list[d.SamplerItem])
    r.add_api_route("/schedulers", routed(dialect.schedulers), methods=["GET"], name="get_schedulers",
                    response_model=list[d.SchedulerItem])
    r.add_api_route("/sd-models", routed(dialect.sd_models), methods=["GET"], name="get_sd_models",
                    response_model=list[d.SDModelItem])

    @r.post("/extra-single-image", response_model=d.ExtrasSingleImageResponse)
    async def extras_single_image_api(req: d.ExtrasSingleImageRequest):
        return await dialect.extra_single_image(req)

    @r.post("/extra-batch-images", response_model=d.ExtrasBatchImagesResponse)
    async def extras_batch_images_api(req: d.ExtrasBatchImagesRequest):
        return await dialect.extra_batch_images(req)

    @r.post("/png-info", response_model=d.PNGInfoResponse)
    async def pnginfoapi(req: d.PNGInfoRequest):
        return await dialect.png_info(req)

    @r.get("/progress", response_model=d.ProgressResponse)
    async def progressapi(request: Request, skip_current_image: bool = False):
        return dialect.progress(make_call(request, dialect), skip_current_image)

    @r.post("/interrupt")
    async def interruptapi(request: Request) -> dict:
        return dialect.interrupt(make_call(request, dialect))

    @r.post("/skip")
    async def skip(request: Request) -> None:
        return dialect.skip(make_call(request, dialect))

    @r.get("/options")
    async def get_config() -> dict[str, Any]:
        return await dialect.get_options()

    @r.post("/options")
    async def set_config(req: dict[str, Any] = Body(...)) -> None:
        return await dialect.set_options(req)

    @r.get("/cmd-flags")
    async def get_cmd_flags() -> dict[str, Any]:
        return dialect.cmd_flags()

    @r.get("/upscalers", response_model=list[d.UpscalerItem])
    async def get_upscalers():
        return dialect.upscalers()

    @r.get("/latent-upscale-modes", response_model=list[d.LatentUpscalerModeItem])
    async def get_latent_upscale_modes():
        return dialect.latent_upscale_modes()

    @r.get("/sd-vae", response_model=list[d.SDVaeItem])
    async def get_sd_vaes():
        return await dialect.sd_vae()

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
        return dialect.prompt_styles()

    @r.get("/embeddings", response_model=d.EmbeddingsResponse)
    async def get_embeddings():
        return await dialect.embeddings()

    @r.get("/loras", response_model=list[d.LoraItem])
    async def get_loras():
        return dialect.loras()

    @r.post("/refresh-checkpoints")
    async def refresh_checkpoints() -> None:
        return await dialect.refresh_checkpoints()

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
        return await dialect.unload_checkpoint()

    @r.post("/reload-checkpoint")
    async def reloadapi() -> dict:
        return await dialect.reload_checkpoint()

    @r.get("/memory", response_model=d.MemoryResponse)
    async def get_memory():
        return await dialect.memory()

    @r.get("/scripts", response_model=d.ScriptsList)
    async def get_scripts_list():
        return dialect.scripts()

    @r.get("/script-info", response_model=list[d.ScriptInfo])
    async def get_script_info():
        return dialect.script_info()

    @r.get("/extensions", response_model=list[d.ExtensionItem])
    async def get_extensions_list():
        return []

    return r


def create_router(service) -> APIRouter:
    """Both prefixes over the service's one A1111 dialect (one options store, one styles file)."""
    dialect = registry.dialect(service, Style.A1111)

    async def authorized(request: Request) -> None:
        dialect.authorize(make_call(request, dialect))

    checks = [Depends(authorized)]
    router = APIRouter()
    router.include_router(_routes(dialect, "A1111 API"), prefix=d.PREFIX, dependencies=checks)
    router.include_router(_routes(dialect, "A1111 API (gateway prefix)"), prefix=d.GATEWAY_PREFIX,
                          dependencies=checks)
    router.include_router(_internal(dialect), prefix="/internal", dependencies=checks)
    return router


def _internal(dialect: d.A1111Dialect) -> APIRouter:
    """A1111's Gradio-side task routes, which pair with `force_task_id` (A1111 1.10)."""
    r = APIRouter(route_class=route_class(dialect), tags=["A1111 API"])

    @r.get("/pending-tasks", response_model=d.PendingTasksResponse)
    async def pending_tasks(request: Request):
        return dialect.pending_tasks(make_call(request, dialect))

    @r.post("/progress", response_model=d.InternalProgressResponse)
    async def internal_progress(request: Request, req: d.InternalProgressRequest):
        return dialect.internal_progress(make_call(request, dialect), req.id_task, req.id_live_preview,
                                         req.live_preview)

    return r
