"""Stability v2beta: the UI tab and the HTTP route are one code path (docs/architecture.md).

- For the same request on the local backend, the tab (through `gradio_client`) and `POST
  /v2beta/stable-image/generate/{endpoint}` (httpx) give byte-identical pixels and the same infotext.
- With a gateway chosen in the tab's Backend (a second server on loopback), the first server's local engine is
  never touched: no job in its queue, no engine check; the gateway's queue does the work.
"""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from backends.dialects import stability_v2 as v2
from parity import counting, gateway_pair, ui_client

GEN = "/v2beta/stable-image/generate"
SETTINGS = {"stability_v2": {"size_scale": 0.125, "steps": 3, "turbo_steps": 2, "sampler": "Euler",
                             "schedule": None}}
GATEWAY = "gw-v2"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, gateway_pair(
            tmp_path_factory.mktemp("parity_v2"), mp, upstream_raw=SETTINGS, front_raw=SETTINGS,
            gateway={"name": GATEWAY, "styles": ["stability_v2"], "auth": "none", "retries": 1, "backoff": 0.05,
                     "deadline": 60}) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(servers):
    with ui_client(servers[0]) as c:
        yield c


def tab(client, **fields) -> tuple[Image.Image, str]:
    """The tab's first image (loaded) and the infotext it shows."""
    _, gallery, info, _ = client.predict(api_name="/stability_v2beta", **fields)
    item = gallery[0]
    with Image.open(item["image"] if isinstance(item, dict) else item) as image:
        image.load()
        return image, info


def route(url: str, endpoint: str, **fields) -> Image.Image:
    parts = [(k, (None, str(v))) for k, v in fields.items()]
    r = httpx.post(f"{url}{GEN}/{endpoint}", files=parts, headers={"accept": "image/*"}, timeout=120)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(r.content))
    image.load()
    return image


@pytest.mark.parametrize("endpoint, extra", [
    ("core", {"aspect_ratio": "16:9", "style_preset": "anime"}),
    ("sd3", {"model": "sd3.5-large-turbo", "cfg_scale": 3, "aspect_ratio": "2:3"}),
    ("ultra", {"aspect_ratio": "9:16"}),
])
def test_tab_and_route_give_the_same_image_and_infotext(servers, client, endpoint, extra):
    first, _ = servers
    fields = {"prompt": "a lighthouse at dusk", "negative_prompt": "fog", "seed": 1234, "output_format": "png",
              **extra}
    shown, info = tab(client, endpoint=endpoint, backend="local", **fields)
    answered = route(first.url, endpoint, **fields)
    assert shown.size == answered.size == v2.output_size(endpoint, extra["aspect_ratio"], "sdxl", 0.125)
    assert shown.convert("RGB").tobytes() == answered.convert("RGB").tobytes()
    assert info == shown.info["parameters"] == answered.info["parameters"]
    assert "Seed: 1234" in info and f"Stability endpoint: {endpoint}" in info


def test_tab_and_route_refuse_alike(servers, client):
    """The tab's validation is the route's: the same v2beta message for the same bad field."""
    from gradio_client.exceptions import AppError

    first, _ = servers
    fields = {"prompt": "a cat", "model": "sd3.5-medium", "mode": "image-to-image"}  # and no image
    r = httpx.post(f"{first.url}{GEN}/sd3", files=[(k, (None, v)) for k, v in fields.items()], timeout=60)
    assert r.status_code == 400 and r.json()["name"] == "bad_request"
    errors = r.json()["errors"]
    assert errors == ["image: is required for image-to-image mode", "strength: is required for image-to-image mode"]
    with pytest.raises(AppError) as caught:
        client.predict(endpoint="sd3", backend="local", api_name="/stability_v2beta", **fields)
    assert "; ".join(errors) in str(caught.value)


def test_a_gateway_backend_never_touches_the_local_engine(servers, client, monkeypatch):
    first, upstream = servers
    local_jobs = counting(monkeypatch, first.service.queue, "submit")
    local_checks = counting(monkeypatch, first.service.engine, "validate")
    upstream_jobs = counting(monkeypatch, upstream.service.queue, "submit")

    shown, info = tab(client, prompt="a red fox", endpoint="core", seed=77, aspect_ratio="1:1",
                      backend=GATEWAY)
    assert (len(local_jobs), len(local_checks)) == (0, 0)
    assert len(upstream_jobs) == 1
    assert "Seed: 77" in info and shown.size == v2.output_size("core", "1:1", None, 0.125)
    # the gateway made the same picture the local engine makes for the same request
    local, _ = tab(client, prompt="a red fox", endpoint="core", seed=77, aspect_ratio="1:1", backend="local")
    assert len(local_jobs) == 1 and len(local_checks) >= 1  # the counters do see the local engine's work
    assert local.convert("RGB").tobytes() == shown.convert("RGB").tobytes()
