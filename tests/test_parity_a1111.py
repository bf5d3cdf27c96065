"""A1111: the UI tabs and the HTTP routes are one code path (`A1111Dialect.parse` then `run`).

- the same request through the txt2img tab (gradio_client, keyword fields) and through POST /sdapi/v1/txt2img
  (httpx) gives byte-identical pixels and the same infotext (local engine, fixed seed); the same for img2img;
- with a gateway chosen in the tab's Backend (a second --demo server, configured as an A1111 gateway behind its
  bearer-keyed /v1/sdapi/v1 prefix), the image comes from the gateway and the first server's local engine is never
  called: no job reaches its queue and the engine never runs or checks one, while the gateway's queue gets it.
"""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from gradio_client import handle_file
from PIL import Image, ImageDraw

from parity import answered, counting, gallery_paths, gateway_pair, shown, ui_client

GW_KEY = "sk-parity-a1111-gateway"
GW_KEY_ENV = "SDGATE_TEST_PARITY_A1111_GW_KEY"

# One request, as the tab's fields and as the JSON body an A1111 client sends.
REQUEST = dict(prompt="a windmill, (tulips:1.2)", negative_prompt="rain", steps=3, width=64, height=96,
               cfg_scale=6.5, seed=4321, sampler_name="Euler a", scheduler="Automatic", batch_size=2, n_iter=1)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, gateway_pair(
            tmp_path_factory.mktemp("parity_a1111"), mp, key_env=GW_KEY_ENV, key=GW_KEY,
            upstream_raw={"a1111": {"gateway_keys": [GW_KEY]}},
            gateway={"name": "up", "path_prefix": "/v1", "styles": ["a1111"], "retries": 1, "backoff": 0.05,
                     "deadline": 120}) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(servers):
    with ui_client(servers[0]) as c:
        yield c


def post(url: str, path: str, body: dict, headers: dict | None = None) -> dict:
    r = httpx.post(url + path, json=body, headers=headers or {}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def picture(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (30, 90, 200))
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(240, 200, 40))
    return image


def test_txt2img_tab_and_route_give_the_same_images_and_infotext(servers, client):
    front, _ = servers
    answer = post(front.url, "/sdapi/v1/txt2img", REQUEST)
    _, gallery, info, _ = client.predict(**REQUEST, backend="local", api_name="/a1111_txt2img")
    paths = gallery_paths(gallery)
    assert len(paths) == 3  # the tab saves its images, as A1111's UI does: the grid comes first
    assert len(answer["images"]) == 2
    for path, b64 in zip(paths[1:], answer["images"]):
        tab_pixels, tab_info = shown(path)
        route_pixels, route_info = answered(b64)
        assert tab_pixels == route_pixels
        assert tab_info == route_info
    assert info == answered(answer["images"][0])[1]
    assert info.startswith("a windmill, (tulips:1.2)\nNegative prompt: rain\nSteps: 3, Sampler: Euler a, ")
    assert "Seed: 4321," in info and "Seed: 4322," in shown(paths[2])[1]


def test_img2img_tab_and_route_give_the_same_images_and_infotext(servers, client, tmp_path):
    front, _ = servers
    init = picture()
    path = tmp_path / "init.png"
    init.save(path)
    buffer = io.BytesIO()
    init.save(buffer, format="PNG")
    fields = dict(REQUEST, batch_size=1, width=64, height=64, denoising_strength=0.6)
    answer = post(front.url, "/sdapi/v1/img2img",
                  {**fields, "init_images": [base64.b64encode(buffer.getvalue()).decode()]})
    _, gallery, info, _ = client.predict(**fields, init_images=handle_file(str(path)), backend="local",
                                         api_name="/a1111_img2img")
    paths = gallery_paths(gallery)
    assert len(paths) == len(answer["images"]) == 1
    assert shown(paths[0]) == answered(answer["images"][0])
    assert "Denoising strength: 0.6" in info


def test_tab_on_a_gateway_never_calls_the_local_engine(servers, client, monkeypatch):
    front, upstream = servers
    local_jobs = counting(monkeypatch, front.service.queue, "submit")
    local_runs = counting(monkeypatch, front.service.engine, "generate")
    local_checks = counting(monkeypatch, front.service.engine, "validate")
    upstream_jobs = counting(monkeypatch, upstream.service.queue, "submit")
    _, gallery, info, _ = client.predict(**REQUEST, backend="up", api_name="/a1111_txt2img")
    assert local_jobs == [] and local_runs == [] and local_checks == []
    assert len(upstream_jobs) == 1  # the gateway made the batch in one job
    upstream_jobs.clear()
    # what an A1111 client of the gateway gets for the same request
    direct = post(upstream.url, "/v1/sdapi/v1/txt2img", REQUEST, {"Authorization": f"Bearer {GW_KEY}"})
    assert len(upstream_jobs) == 1 and local_jobs == [] and local_runs == []
    paths = gallery_paths(gallery)
    assert len(paths) == 3  # grid first
    for path, b64 in zip(paths[1:], direct["images"]):
        assert shown(path)[0] == answered(b64)[0]
    assert "Seed: 4321," in info
    # the dropdown offers only gateways that speak the tab's style (or one the jobs can be translated to)
    with pytest.raises(Exception, match="nope is not in the list of choices"):
        client.predict(**REQUEST, backend="nope", api_name="/a1111_txt2img")
