"""Serving: uvicorn in the main thread (so SIGINT/SIGTERM stop it cleanly), the URL printed when ready,
and the optional public share link."""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time

import uvicorn

log = logging.getLogger("sdgate")


def local_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}/"


def open_share_link(host: str, port: int) -> str | None:
    """Ask Gradio's share server for a tunnel. Offline this fails fast; the local server keeps serving."""
    from gradio import networking

    try:
        return networking.setup_tunnel("127.0.0.1" if host == "0.0.0.0" else host, port, secrets.token_urlsafe(32), None, None)
    except Exception as e:  # no network, blocked tunnel, missing frpc binary...
        log.debug("share link failed", exc_info=True)
        print(f"Share link unavailable ({type(e).__name__}: {e}); the local URL keeps working.", flush=True)
        return None


def _announce(server: uvicorn.Server, service) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    cfg = service.config
    print(f"Running on local URL:  {local_url(cfg.host, cfg.port)}", flush=True)
    if cfg.host == "0.0.0.0":
        print(f"Listening on all interfaces, port {cfg.port} (reach it from the LAN by this machine's address)", flush=True)
    for warning in service.keys.startup_warnings(cfg.host):
        print(f"Warning: {warning}", flush=True)
    if service.demo:
        print("Demo mode: demo model: random weights, images are noise", flush=True)
    if cfg.share:
        url = open_share_link(cfg.host, cfg.port)
        if url:
            print(f"Running on public URL: {url}", flush=True)


class _Server(uvicorn.Server):
    """On SIGINT/SIGTERM, first let the running job finish early (interrupted, with its partial images) and
    answer queued ones, so no request is still waiting when uvicorn's graceful-shutdown timeout cancels it."""

    def __init__(self, config: uvicorn.Config, service):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig, frame) -> None:
        self.service.queue.stop_accepting()
        super().handle_exit(sig, frame)


def serve(app, service) -> None:
    cfg = service.config
    server = _Server(
        uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5),
        service,
    )
    threading.Thread(target=_announce, args=(server, service), daemon=True).start()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the handler that was
    # there before; a quiet handler makes that a clean exit (code 0) instead of a death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()
    print("Stopped.", flush=True)
