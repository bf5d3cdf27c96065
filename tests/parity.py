"""What the `test_parity_<style>.py` modules share: a front server with a gateway that is a second live
server, a gradio client on the front, reading images from the tab and from the route, and counting calls."""

from __future__ import annotations

import base64
import contextlib
import io
from typing import Any, Iterator

from gradio_client import Client
from live import LiveServer, start_live_server
from PIL import Image


@contextlib.contextmanager
def gateway_pair(tmp, monkeypatch, *, gateway: dict[str, Any], upstream_raw: dict | None = None,
                 front_raw: dict | None = None, key_env: str | None = None,
                 key: str | None = None) -> Iterator[tuple[LiveServer, LiveServer]]:
    """(front, upstream): the front's `[[gateways]]` holds `gateway` pointed at the upstream (its `key_env` set to
    `key` while both run)."""
    if key_env:
        monkeypatch.setenv(key_env, key)
        gateway = {**gateway, "key_env": key_env}
    upstream = start_live_server(tmp / "upstream", raw=upstream_raw or {})
    try:
        front = start_live_server(tmp / "front", raw={**(front_raw or {}),
                                                      "gateways": [{**gateway, "base_url": upstream.url}]})
    except BaseException:
        upstream.stop()
        raise
    try:
        yield front, upstream
    finally:
        front.stop()
        upstream.stop()


@contextlib.contextmanager
def ui_client(server: LiveServer) -> Iterator[Client]:
    client = Client(server.url, verbose=False)
    try:
        yield client
    finally:
        client.close()


def gallery_paths(value) -> list[str]:
    return [item["image"] if isinstance(item, dict) else item for item in value]


def shown(path: str) -> tuple[bytes, str]:
    """(RGB pixels, infotext) of an image file the tab shows."""
    with Image.open(path) as image:
        return image.convert("RGB").tobytes(), image.info["parameters"]


def answered(b64: str) -> tuple[bytes, str]:
    """(RGB pixels, infotext) of a base64 image a route answered."""
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.convert("RGB").tobytes(), image.info["parameters"]


def counting(monkeypatch, obj, name: str) -> list:
    """Wrap `obj.name` so that each call is recorded (and still made)."""
    calls: list = []
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls
