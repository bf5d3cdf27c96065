"""A real sdgate server for the end-to-end tests: the demo service and `create_app` (the same app `launch.py`
serves) under uvicorn in a thread, on a free 127.0.0.1 port (webui/server.py `serve_in_thread`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backends.config import Config
from backends.assembly import create_service
from webui.app import create_app
from webui.server import LoopbackServer, serve_in_thread


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    port: int
    service: Any
    outputs: Path
    app: Any  # what is served: the app, or `wrap(app)`
    loopback: LoopbackServer

    def stop(self) -> None:
        """Stop serving, then close the service (its queue, relay and model manager)."""
        try:
            self.loopback.stop()
        finally:
            self.service.close()


def start_live_server(root: Path, *, models_dir: Path | None = None, outputs_dir: Path | None = None,
                      raw: dict | None = None, wrap: Callable[[Any], Any] | None = None, **config) -> LiveServer:
    """A --demo server with its models in `models_dir` (default root/models) and outputs in `outputs_dir`
    (default root/outputs); `raw` is the TOML settings, `config` any other Config field; `wrap` puts an ASGI
    wrapper in front of the app. Precision is fp32 (exact, the same on every CPU) unless `dtype=` says otherwise."""
    config.setdefault("dtype", "fp32")
    outputs = outputs_dir or root / "outputs"
    service = create_service(Config(demo=True, models_dir=models_dir or root / "models", outputs_dir=outputs,
                                    raw=raw or {}, **config))
    try:
        app = create_app(service)
        if wrap is not None:
            app = wrap(app)
        loopback = serve_in_thread(app)
    except BaseException:
        service.close()
        raise
    return LiveServer(loopback.url, loopback.port, service, outputs, app, loopback)
