"""The one FastAPI app: API routes first, then the Gradio UI mounted at "/" (a mount shadows later routes)."""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from backends.service import Service

from .routes.a1111 import create_router as a1111_router
from .ui import build_ui


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="sdgate", description="Text-to-image server speaking the A1111, Stability and ModelsLab APIs")
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
    blocks = build_ui(service)
    return gr.mount_gradio_app(app, blocks, path="/", auth=service.config.auth or None)
