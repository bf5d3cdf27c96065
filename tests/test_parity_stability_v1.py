"""Stability v1: the UI tab and the HTTP route are one code path (`StabilityV1Dialect.parse` then `run`).

- the same request through the tab (gradio_client, keyword fields) and through POST /v1/generation/{engine}/
  text-to-image (httpx) gives byte-identical pixels and the same infotext (local engine, fixed seed);
- with a gateway chosen in the tab's Backend (a second --demo server, configured as a v1 gateway), the image comes
  from the gateway and the first server's local engine is never called: no job reaches its queue and the engine's
  checks never run, while the gateway's queue gets the job.
"""

from __future__ import annotations

import httpx
import pytest
from parity import answered, counting, gallery_paths, gateway_pair, shown, ui_client

KEY = "sk-parity-caller"
GW_KEY = "sk-parity-gateway"
GW_KEY_ENV = "SDGATE_TEST_PARITY_V1_GW_KEY"
BETA = "stable-diffusion-xl-beta-v2-2-2"  # tiny-sd1 in --demo; 128x128 passes its rule

# One request, in the tab's field names and as the JSON body a v1 client sends.
TAB_FIELDS = dict(prompt_1="a harbour", weight_1=1.2, prompt_2="people", weight_2=-1, engine_id=BETA, width=128,
                  height=128, steps=10, cfg_scale=6.5, samples=2, seed=99, sampler="K_EULER",
                  clip_guidance_preset="NONE", style_preset="(none)")
ROUTE_BODY = {"text_prompts": [{"text": "a harbour", "weight": 1.2}, {"text": "people", "weight": -1}],
              "width": 128, "height": 128, "steps": 10, "cfg_scale": 6.5, "samples": 2, "seed": 99,
              "sampler": "K_EULER", "clip_guidance_preset": "NONE"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, gateway_pair(
            tmp_path_factory.mktemp("parity_v1"), mp, key_env=GW_KEY_ENV, key=GW_KEY,
            upstream_raw={"keys": {"stability": [GW_KEY]}}, front_raw={"keys": {"stability": [KEY]}},
            gateway={"name": "up", "styles": ["stability_v1"], "retries": 1, "backoff": 0.05,
                     "deadline": 120}) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(servers):
    with ui_client(servers[0]) as c:
        yield c


def route_artifacts(url: str, key: str, engine: str = BETA) -> list[dict]:
    r = httpx.post(f"{url}/v1/generation/{engine}/text-to-image", json=ROUTE_BODY, timeout=300,
                   headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()["artifacts"]


def test_tab_and_route_give_the_same_images_and_infotext(servers, client):
    front, _ = servers
    artifacts = route_artifacts(front.url, KEY)
    _, gallery, info, _ = client.predict(**TAB_FIELDS, backend="local", api_name="/stability_v1")
    paths = gallery_paths(gallery)
    assert len(paths) == len(artifacts) == 2
    assert [a["seed"] for a in artifacts] == [99, 100]
    for path, artifact in zip(paths, artifacts):
        tab_pixels, tab_info = shown(path)
        route_pixels, route_info = answered(artifact["base64"])
        assert tab_pixels == route_pixels
        assert tab_info == route_info
    assert info == answered(artifacts[0]["base64"])[1]
    assert info.startswith("(a harbour:1.2)\nNegative prompt: people\nSteps: 10, ")


def test_tab_on_a_gateway_never_calls_the_local_engine(servers, client, monkeypatch):
    front, upstream = servers
    local_jobs = counting(monkeypatch, front.service.queue, "submit")
    local_checks = counting(monkeypatch, front.service.engine, "validate")
    upstream_jobs = counting(monkeypatch, upstream.service.queue, "submit")
    _, gallery, info, _ = client.predict(**TAB_FIELDS, backend="up", api_name="/stability_v1")
    assert local_jobs == [] and local_checks == []
    assert len(upstream_jobs) == 1  # the gateway made both samples in one job
    upstream_jobs.clear()
    direct = route_artifacts(upstream.url, GW_KEY)  # what a v1 client of the gateway gets for the same request
    assert len(upstream_jobs) == 1 and local_jobs == []
    paths = gallery_paths(gallery)
    assert len(paths) == 2
    for path, artifact in zip(paths, direct):
        assert shown(path)[0] == answered(artifact["base64"])[0]
    assert "Seed: 99" in info
    # the counters see the local engine when the tab's Backend is local (so their zeros above mean something)
    client.predict(**{**TAB_FIELDS, "samples": 1}, backend="local", api_name="/stability_v1")
    assert len(local_jobs) == 1 and len(local_checks) >= 1  # the dialect checks, and the engine again as it runs
