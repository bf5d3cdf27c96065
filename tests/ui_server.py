"""A real sdgate server for the web-UI tests: the demo service and `create_app` under uvicorn in a thread, on a
free 127.0.0.1 port (the same app `launch.py` serves)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import uvicorn

from backends.config import Config
from backends.service import create_service
from webui.app import create_app


def start_server(root: Path, **config) -> SimpleNamespace:
    service = create_service(Config(demo=True, models_dir=root / "models", outputs_dir=root / "outputs", **config))
    app = create_app(service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(10)
        service.close()
        sock.close()

    return SimpleNamespace(url=f"http://127.0.0.1:{port}/", service=service, outputs=root / "outputs", stop=stop)
