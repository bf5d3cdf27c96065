"""Serving: uvicorn in the main thread (so SIGINT/SIGTERM stop it cleanly), the URL printed when ready,
and the optional public share link; and `serve_in_thread`, an ASGI app on a free 127.0.0.1 port by uvicorn in a
thread, for the tests (tests/live.py) and bench/relay.py, which run real servers in their own process."""

from __future__ import annotations

import logging
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from .security import open_surfaces

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
    for warning in open_surfaces(cfg, service.keys):  # one loud line per surface left open
        print(f"WARNING: {warning}", flush=True)
    if service.demo:
        print("Demo mode: demo model: random weights, images are noise", flush=True)
    if cfg.dtype == "auto" and getattr(service, "device", None) == "cpu" and str(service.dtype) == "torch.bfloat16":
        print("Precision: bf16 (this CPU computes bf16 natively; --dtype fp32 for exact fp32)", flush=True)
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


# ------------------------------------------------------------------------------ on loopback, in a thread


@dataclass
class LoopbackServer:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def free_port() -> int:
    """A port nothing listens on (for 'connection refused')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(app: Any, timeout: float = 60.0) -> LoopbackServer:
    """Serve `app` on a free 127.0.0.1 port in a daemon thread; returns once uvicorn has started."""
    # proto IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"loopback-{port}")
    thread.start()
    deadline = time.time() + timeout
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError("loopback server did not start")
        time.sleep(0.02)
    return LoopbackServer(f"http://127.0.0.1:{port}", port, server, thread, sock)
