"""OpenAI Images: the UI tab and the HTTP route are one code path (docs/architecture.md).

- For the same request on the local backend, the tab (through `gradio_client`) and `POST /v1/images/{operation}`
  give byte-identical pixels and the same infotext.
- With a gateway chosen in the tab's Backend (a second server on loopback, speaking `openai`), the first server's
  local engine is never touched: no job in its queue, no engine check; the gateway's queue does the work.
"""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from gradio_client import handle_file
from PIL import Image

from parity import counting, gallery_paths, gateway_pair, shown, ui_client

SETTINGS = {"openai": {"quality": {"auto": 3, "hd": 4}}}
GATEWAY = "gw-openai"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, gateway_pair(
            tmp_path_factory.mktemp("parity_openai"), mp, upstream_raw=SETTINGS, front_raw=SETTINGS,
            gateway={"name": GATEWAY, "styles": ["openai"], "auth": "none", "retries": 1, "backoff": 0.05,
                     "deadline": 60}) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(servers):
    with ui_client(servers[0]) as c:
        yield c


def tab(client, **fields) -> list[tuple[bytes, str]]:
    _, gallery, _, _ = client.predict(api_name="/openai_images", **fields)
    return [shown(path) for path in gallery_paths(gallery)]


def route(url: str, operation: str, body: dict, files=None) -> list[tuple[bytes, str]]:
    if files is None:
        r = httpx.post(f"{url}/v1/images/{operation}", json=body, timeout=120)
    else:
        r = httpx.post(f"{url}/v1/images/{operation}", data={k: str(v) for k, v in body.items()}, files=files,
                       timeout=120)
    assert r.status_code == 200, r.text
    out = []
    for item in r.json()["data"]:
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as image:
            out.append((image.convert("RGB").tobytes(), image.info["parameters"]))
    return out


@pytest.mark.parametrize("extra", [
    {"model": "dall-e-2", "size": "64x96", "n": 2},
    {"model": "dall-e-3", "size": "72x64", "quality": "hd", "style": "vivid"},
])
def test_tab_and_route_give_the_same_images_and_infotext(servers, client, extra):
    first, _ = servers
    fields = {"prompt": "a lighthouse at dusk", "negative_prompt": "fog", "seed": 1234, **extra}
    from_tab = tab(client, operation="generations", backend="local", output_format="png", **fields)
    from_route = route(first.url, "generations", {**fields, "response_format": "b64_json"})
    assert from_tab == from_route and len(from_tab) == extra.get("n", 1)
    assert "Seed: 1234" in from_tab[0][1]


def test_tab_and_route_edit_alike(servers, client, tmp_path):
    first, _ = servers
    source = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(source)
    fields = {"prompt": "a blue door", "seed": 8, "size": "64x64", "model": "dall-e-2"}
    from_tab = tab(client, operation="edits", backend="local", image=handle_file(str(source)), **fields)
    from_route = route(first.url, "edits", {**fields, "response_format": "b64_json"},
                       files=[("image", ("in.png", source.read_bytes(), "image/png"))])
    assert from_tab == from_route and "Denoising strength" in from_tab[0][1]


def test_tab_and_route_refuse_alike(servers, client):
    from gradio_client.exceptions import AppError

    first, _ = servers
    r = httpx.post(f"{first.url}/v1/images/generations", json={"prompt": "x", "size": "huge"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "size"
    with pytest.raises(AppError) as caught:
        client.predict(prompt="x", size="huge", operation="generations", backend="local", api_name="/openai_images")
    assert r.json()["error"]["message"] in str(caught.value)


def test_a_gateway_backend_never_touches_the_local_engine(servers, client, monkeypatch):
    first, upstream = servers
    local_jobs = counting(monkeypatch, first.service.queue, "submit")
    local_checks = counting(monkeypatch, first.service.engine, "validate")
    upstream_jobs = counting(monkeypatch, upstream.service.queue, "submit")

    fields = {"prompt": "a red fox", "seed": 77, "size": "64x64", "model": "dall-e-3", "operation": "generations"}
    relayed = tab(client, backend=GATEWAY, **fields)
    assert (len(local_jobs), len(local_checks)) == (0, 0)
    assert len(upstream_jobs) == 1
    assert "Seed: 77" in relayed[0][1]
    # the gateway made the same picture the local engine makes for the same request
    local = tab(client, backend="local", **fields)
    assert len(local_jobs) == 1 and len(local_checks) >= 1
    assert local[0][0] == relayed[0][0]
