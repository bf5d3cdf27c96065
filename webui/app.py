"""The one FastAPI app: API routes first, then the Gradio UI mounted at "/" (a mount shadows later routes)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from backends.keys import basic_user
from backends.service import Service

from .body_limit import BodyLimit
from .routes.a1111 import create_router as a1111_router
from .routes.jobs import create_router as jobs_router
from .routes.modelslab import create_router as modelslab_router
from .routes.openai import create_router as openai_router
from .routes.stability_v1 import create_router as stability_v1_router
from .routes.stability_v2 import create_router as stability_v2_router
from .security import Guard, add_cors, private_dirs
from .ui import mount_ui


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="sdgate",
                  description="Text-to-image server speaking the A1111, Stability, ModelsLab and OpenAI Images APIs")
    app.state.service = service
    app.add_middleware(BodyLimit, service=service)  # [limits] max_body_bytes: 413 in the path's style
    # a public link or the LAN (webui/security.py): proxied callers are not local, outputs not served by path,
    # CORS closed unless origins are listed (outermost, so every answer, even a refusal, goes through it)
    app.add_middleware(Guard, private_dirs=private_dirs(app, service.config), ui_login=bool(service.config.auth))
    add_cors(app, service.config.security.cors_allow_origins)

    @app.get("/health", tags=["server"])
    def health() -> dict:
        current = service.queue.current
        return {
            "status": "ok",
            "demo": service.demo,
            "device": service.device,
            "busy": current is not None,
            "queued": len(service.queue.pending()),
        }

    @app.get("/ready", tags=["server"])
    def ready() -> JSONResponse:
        """Readiness (for a load balancer): 503 with Retry-After while the queue is full or shutting down;
        /health stays the liveness answer."""
        queue = service.queue
        depth = queue.depth()
        body = {"waiting": depth["waiting"], "running": depth["running"]}
        closing = queue.closed
        if not closing and depth["waiting"] < service.config.max_pending:
            return JSONResponse({"ready": True, **body})
        retry = 30 if closing else queue.retry_after()
        return JSONResponse({"ready": False, **body, "reason": "shutting down" if closing else "queue full"},
                            status_code=503, headers={"Retry-After": str(retry)})

    @app.get("/metrics", tags=["server"])
    def metrics(request: Request) -> Response:
        """Prometheus text exposition; behind the same Basic auth as the A1111 routes when --api-auth is set."""
        if service.config.api_auth and not basic_user(request.headers.get("authorization"), service.config.api_auth):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401,
                                headers={"WWW-Authenticate": "Basic"})
        registry = getattr(service, "metrics", None)
        if registry is None:
            return JSONResponse({"detail": "this server keeps no metrics"}, status_code=404)
        body, content_type = registry.render()
        return Response(body, media_type=content_type)

    app.include_router(a1111_router(service))
    app.include_router(modelslab_router(service))
    app.include_router(stability_v1_router(service))
    app.include_router(stability_v2_router(service))
    app.include_router(openai_router(service))
    app.include_router(jobs_router(service))
    return mount_ui(app, service)
