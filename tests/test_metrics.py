"""GET /metrics (Prometheus, backends/metrics.py) and GET /ready against a real server on loopback: the exposition
parses, counters and histograms move with the jobs run, no label carries a key, an owner or a prompt, /metrics
takes the --api-auth Basic credentials when they are set, and /ready turns 503 (with Retry-After) when the queue
stops accepting."""

from __future__ import annotations

import base64

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.keys import owner_of_key
from live import start_live_server

KEY = "sk-secret-xyz"
PROMPT = "secret prompt"
FAST = {"steps": 2, "width": 64, "height": 64}
OPENAI_FAST = {"quality": {"auto": 2, "low": 2, "hd": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models_dir):
    srv = start_live_server(tmp_path_factory.mktemp("metrics"), models_dir=tiny_models_dir,
                            raw={"keys": {"openai": [KEY]}, "openai": OPENAI_FAST})
    yield srv
    srv.stop()


def scrape(url: str, **kw) -> tuple[str, dict[tuple[str, tuple], float]]:
    """The page and every sample as {(name, sorted labels): value}."""
    r = httpx.get(url + "/metrics", timeout=30, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return r.text, samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_jobs_and_never_name_keys_or_prompts(server):
    text, before = scrape(server.url)
    assert ("sdgate_queue_jobs", (("state", "waiting"),)) in before
    assert ("sdgate_queue_owners_waiting", ()) in before
    assert value(before, "sdgate_device_memory_bytes", kind="process_rss") > 0

    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, timeout=120, headers=auth) as http:
        for seed in (1, 2):
            r = http.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "seed": seed, **FAST})
            assert r.status_code == 200, r.text
            assert len(r.json()["images"]) == 1
        r = http.post("/v1/images/generations", json={"prompt": PROMPT, "model": "dall-e-2", "size": "64x64",
                                                      "n": 1, "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 1

    text, after = scrape(server.url)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sdgate_jobs_total", style="a1111", outcome="done") == 2
    assert moved("sdgate_jobs_total", style="openai", outcome="done") == 1
    assert moved("sdgate_jobs_submitted_total", style="a1111") == 2
    assert moved("sdgate_jobs_submitted_total", style="openai") == 1
    assert moved("sdgate_images_total", style="a1111") == 2
    assert moved("sdgate_images_total", style="openai") == 1
    calls = moved("sdgate_batch_images_count")
    assert calls >= 1 and moved("sdgate_batch_images_sum") == 3  # every image came from one counted call
    assert moved("sdgate_pipeline_call_seconds_count") == calls
    assert moved("sdgate_step_seconds_count") == calls
    assert moved("sdgate_pipeline_call_seconds_sum") > 0
    assert value(after, "sdgate_queue_jobs", state="running") == 0
    assert value(after, "sdgate_queue_jobs", state="waiting") == 0

    # nothing a caller sent, and nothing naming the caller, is ever a label value
    for secret in (KEY, PROMPT, owner_of_key(KEY), owner_of_key(KEY).removeprefix("key:"), "127.0.0.1"):
        assert secret not in text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert set(s.labels) <= {"state", "style", "outcome", "kind", "le"}, s


def test_ready_when_idle(server):
    r = httpx.get(server.url + "/ready", timeout=30)
    assert r.status_code == 200
    assert r.json() == {"ready": True, "waiting": 0, "running": 0}
    assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"


def test_metrics_take_api_auth_and_ready_refuses_when_shutting_down(tmp_path, tiny_models_dir):
    srv = start_live_server(tmp_path, models_dir=tiny_models_dir, api_auth=[("ops", "pa55")])
    try:
        r = httpx.get(srv.url + "/metrics", timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        wrong = "Basic " + base64.b64encode(b"ops:nope").decode()
        assert httpx.get(srv.url + "/metrics", headers={"Authorization": wrong}, timeout=30).status_code == 401
        right = "Basic " + base64.b64encode(b"ops:pa55").decode()
        scrape(srv.url, headers={"Authorization": right})
        assert httpx.get(srv.url + "/ready", timeout=30).status_code == 200  # readiness stays open

        srv.service.queue.stop_accepting()
        r = httpx.get(srv.url + "/ready", timeout=30)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert r.json()["ready"] is False
    finally:
        srv.stop()


def test_ready_refuses_when_the_queue_is_full(tmp_path, tiny_models_dir):
    srv = start_live_server(tmp_path, models_dir=tiny_models_dir, max_pending=0)
    try:
        r = httpx.get(srv.url + "/ready", timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json() == {"ready": False, "waiting": 0, "running": 0, "reason": "queue full"}
    finally:
        srv.stop()
