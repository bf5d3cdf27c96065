"""The one FastAPI app: API routes first, then the Gradio UI mounted at "/" (a mount shadows later routes)."""

from __future__ import annotations

from fastapi import FastAPI

from backends.service import Service

from .routes.a1111 import create_router as a1111_router
from .routes.modelslab import create_router as modelslab_router
from .routes.openai import create_router as openai_router
from .routes.stability_v1 import create_router as stability_v1_router
from .routes.stability_v2 import create_router as stability_v2_router
from .ui import mount_ui


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="sdgate",
                  description="Text-to-image server speaking the A1111, Stability, ModelsLab and OpenAI Images APIs")
    app.state.service = service

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

    app.include_router(a1111_router(service))
    app.include_router(modelslab_router(service))
    app.include_router(stability_v1_router(service))
    app.include_router(stability_v2_router(service))
    app.include_router(openai_router(service))
    return mount_ui(app, service)
