"""ModelsLab: the UI tab and the HTTP route are one code path (`ModelslabDialect.parse` then `run`).

- the same request through the tab (gradio_client, keyword fields) and through POST /api/v6/images/text2img
  (httpx) gives byte-identical pixels and the same infotext (local engine, fixed seed);
- with a gateway chosen in the tab's Backend (a second --demo server, configured as a ModelsLab gateway that
  answers `processing` first, so the relay polls), the image comes from the gateway and the first server's local
  engine is never called: no job reaches its queue and the engine's checks never run, while the gateway's queue
  gets the job.
"""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

from parity import counting, gallery_paths, gateway_pair, shown, ui_client

KEY = "ml-parity-caller"
GW_KEY = "ml-parity-gateway"
GW_KEY_ENV = "SDGATE_TEST_PARITY_ML_GW_KEY"

# One request, in the tab's field names and as the JSON body a ModelsLab client sends (the tab's flags as the
# tab sends them: its checkboxes' defaults). A comma in the prompt: the infotext must still read back.
TAB_FIELDS = dict(model_id="tiny-sd1", prompt="a harbour, at dusk", negative_prompt="people", width=256, height=256,
                  samples=2, num_inference_steps=3, guidance_scale=6.5, scheduler="EulerDiscreteScheduler", seed=99,
                  clip_skip=1, tomesd=False, safety_checker=False, enhance_prompt=False)
ROUTE_BODY = {"model_id": "tiny-sd1", "prompt": "a harbour, at dusk", "negative_prompt": "people", "width": 256,
              "height": 256, "samples": 2, "num_inference_steps": 3, "guidance_scale": 6.5,
              "scheduler": "EulerDiscreteScheduler", "seed": 99, "clip_skip": 1, "use_karras_sigmas": "yes",
              "tomesd": "no", "safety_checker": "no", "enhance_prompt": "no", "base64": "yes"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, gateway_pair(
            tmp_path_factory.mktemp("parity_ml"), mp, key_env=GW_KEY_ENV, key=GW_KEY,
            upstream_raw={"keys": {"modelslab": [GW_KEY]}, "modelslab": {"sync_wait": 0}},
            front_raw={"keys": {"modelslab": [KEY]}},
            gateway={"name": "up", "styles": ["modelslab"], "auth": "body_key", "retries": 1, "backoff": 0.05,
                     "deadline": 120, "poll_interval": 0.1}) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(servers):
    with ui_client(servers[0]) as c:
        yield c


def decoded(data: bytes) -> tuple[bytes, str]:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes(), image.info["parameters"]


def route_outputs(url: str, key: str) -> tuple[dict, list[bytes]]:
    """POST the request to text2img (polling fetch while it answers `processing`): the answer and its images."""
    with httpx.Client(timeout=300) as http:
        data = http.post(f"{url}/api/v6/images/text2img", json={**ROUTE_BODY, "key": key}).json()
        deadline = time.time() + 120
        while data["status"] == "processing" and time.time() < deadline:
            time.sleep(0.1)
            data = http.post(data["fetch_result"], json={"key": key}).json()
    assert data["status"] == "success", data
    return data, [base64.b64decode(entry) for entry in data["output"]]


def test_tab_and_route_give_the_same_images_and_infotext(servers, client):
    front, _ = servers
    answer, images = route_outputs(front.url, KEY)
    assert answer["meta"]["seeds"] == [99, 100]
    _, gallery, info, _ = client.predict(**TAB_FIELDS, backend="local", api_name="/modelslab")
    paths = gallery_paths(gallery)
    assert len(paths) == len(images) == 2
    for path, data in zip(paths, images):
        tab_pixels, tab_info = shown(path)
        route_pixels, route_info = decoded(data)
        assert tab_pixels == route_pixels
        assert tab_info == route_info
    assert info == decoded(images[0])[1]
    assert info.startswith("a harbour, at dusk\nNegative prompt: people\nSteps: 3, Sampler: EulerDiscreteScheduler")
    assert "Seed: 99" in info


def test_tab_on_a_gateway_never_calls_the_local_engine(servers, client, monkeypatch):
    front, upstream = servers
    local_jobs = counting(monkeypatch, front.service.queue, "submit")
    local_checks = counting(monkeypatch, front.service.engine, "validate")
    upstream_jobs = counting(monkeypatch, upstream.service.queue, "submit")
    _, gallery, info, _ = client.predict(**TAB_FIELDS, backend="up", api_name="/modelslab")
    assert local_jobs == [] and local_checks == []
    assert len(upstream_jobs) == 1  # the gateway made both samples in one job
    upstream_jobs.clear()
    _, direct = route_outputs(upstream.url, GW_KEY)  # what a ModelsLab client of the gateway gets for it
    assert len(upstream_jobs) == 1 and local_jobs == []
    paths = gallery_paths(gallery)
    assert len(paths) == 2
    for path, data in zip(paths, direct):
        assert shown(path)[0] == decoded(data)[0]
    assert "Seed: 99" in info
    # the counters see the local engine when the tab's Backend is local (so their zeros above mean something)
    client.predict(**{**TAB_FIELDS, "samples": 1}, backend="local", api_name="/modelslab")
    assert len(local_jobs) == 1 and len(local_checks) >= 1  # the dialect's check, then the engine's own
