"""ModelsLab end to end (docs/reference/hosted_apis.md C.5, item by item): a real server on 127.0.0.1 (uvicorn in a
thread, the demo tiny models) driven with raw httpx, as ModelsLab scripts and the official SDK drive modelslab.com.

Two servers: `sync` answers within its synchronous wait; `later` has `sync_wait = 0`, so every request answers
`processing` and is fetched. Sizes are ModelsLab's smallest (256) and steps 1-2; the tiny models run that in ~0.2 s.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from backends.dialects import modelslab as d
from backends.dialects import registry
from backends.job import Style
from live import start_live_server

KEY = "ml-test-key-1"
OTHER_KEY = "ml-test-key-2"
FAST = {"width": 256, "height": 256, "num_inference_steps": 2}
STATUSES = {"success", "processing", "error", "failed"}


def start_server(tmp_path, models_dir, modelslab: dict) -> SimpleNamespace:
    raw = {"keys": {"modelslab": [KEY, OTHER_KEY]}, "modelslab": modelslab}
    srv = start_live_server(tmp_path, models_dir=models_dir, raw=raw, threads=1)
    client = httpx.Client(base_url=srv.url, timeout=120)
    return SimpleNamespace(url=srv.url, service=srv.service, stop=srv.stop, http=client,
                           api=registry.dialect(srv.service, Style.MODELSLAB))


@pytest.fixture(scope="module")
def sync(tmp_path_factory, tiny_models_dir):
    srv = start_server(tmp_path_factory.mktemp("ml-sync"), tiny_models_dir,
                       {"sync_wait": 60, "max_steps": 4, "webhook_hosts": ["127.0.0.1"]})
    yield srv
    srv.http.close()
    srv.stop()


@pytest.fixture(scope="module")
def later(tmp_path_factory, tiny_models_dir):
    srv = start_server(tmp_path_factory.mktemp("ml-later"), tiny_models_dir,
                       {"sync_wait": 0, "max_queued": 5, "webhook_hosts": ["127.0.0.1"]})
    yield srv
    srv.http.close()
    srv.stop()


def post(srv, path: str, body: dict | None = None, *, status: int = 200, **kwargs) -> dict:
    """POST and check what every ModelsLab answer must be (item 19): JSON, a known status, the expected code."""
    r = srv.http.post(path, json=body, **kwargs) if body is not None else srv.http.post(path, **kwargs)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    data = r.json()
    assert r.status_code == status, (r.status_code, data)
    if "status" in data and path != d.SYSTEM_LOAD:
        assert data["status"] in STATUSES
    if data.get("status") == "error":
        assert data["message"] == data["messege"] and data["message"]
    return data


def generate(srv, path="/api/v6/images/text2img", **fields) -> dict:
    body = {"key": KEY, "model_id": "sd15", "prompt": "a cat", **FAST, **fields}
    return post(srv, path, {k: v for k, v in body.items() if v is not ...})


def error(srv, status: int, path="/api/v6/images/text2img", **fields) -> str:
    body = {"key": KEY, "model_id": "sd15", "prompt": "a cat", **FAST, **fields}
    data = post(srv, path, {k: v for k, v in body.items() if v is not ...}, status=status)
    assert data["status"] == "error"
    return data["message"]


def download(srv, url: str) -> bytes:
    assert url.startswith(srv.url + "/generations/")
    r = srv.http.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return r.content


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def poll(srv, url: str, key: str = KEY, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while True:
        data = post(srv, url.removeprefix(srv.url), {"key": key})
        if data["status"] != "processing" or time.time() > deadline:
            return data
        time.sleep(0.1)


@contextmanager
def worker_held(srv):
    """Hold the queue's worker at its next job (it waits for the model loader's lock), so that jobs stay queued
    for as long as a test needs them to."""
    lock = srv.service.models._load_lock
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------- 1, 2: success


def test_1_v6_string_values_give_a_success_with_a_512_png_url(sync):
    data = generate(sync, width="512", height="512", samples="1", num_inference_steps="2")
    assert data["status"] == "success" and isinstance(data["id"], int)
    assert len(data["output"]) == 1 and data["proxy_links"] == data["output"]
    assert png(download(sync, data["output"][0])).size == (512, 512)
    meta = data["meta"]
    assert meta["model_id"] == "sd15" and meta["W"] == meta["H"] == 512 and meta["n_samples"] == 1
    assert isinstance(meta["seed"], int) and "key" not in meta and KEY not in json.dumps(data)
    assert isinstance(data["generationTime"], float)
    assert data["nsfw_content_detected"] is None and "safety_checker" in meta["not_applied"]  # the default: no checker here


def test_2_sdk_style_numbers_give_two_images_with_consecutive_seeds(sync):
    data = generate(sync, width=256, height=256, samples=2, seed=123, num_inference_steps=20, clip_skip=2,
                    guidance_scale=7.5)
    assert data["status"] == "success" and len(data["output"]) == 2
    assert data["meta"]["seeds"] == [123, 124] and data["meta"]["seed"] == 123
    # steps above the configured maximum (4 on this server) are capped, and meta says so
    assert data["meta"]["steps"] == 4 and any("capped at 4" in n for n in data["meta"]["notes"])
    images = [png(download(sync, url)) for url in data["output"]]
    assert all(im.size == (256, 256) for im in images) and images[0].tobytes() != images[1].tobytes()


# ------------------------------------------------------------------------------------------ 3-6: errors


def test_3_samples_above_4_is_a_400(sync):
    assert error(sync, 400, samples=5) == "samples must be between 1 and 4"


def test_4_width_and_height_limits(sync):
    assert error(sync, 400, width=1100) == "width must be between 256 and 1024"
    assert error(sync, 400, height=500) == "height must be divisible by 8"
    assert "width must be between 256 and 1024" in error(sync, 400, width="128")
    assert error(sync, 400, guidance_scale=25) == "guidance_scale must be between 1 and 20"
    assert error(sync, 400, clip_skip=9) == "clip_skip must be between 1 and 8"
    assert error(sync, 400, num_inference_steps=51) == "num_inference_steps must be between 1 and 50"
    assert error(sync, 400, width="wide") == "width must be a number"


@pytest.mark.parametrize("key", [..., None, "", "wrong"])
def test_5_missing_or_unknown_key_is_401(sync, key):
    assert error(sync, 401, key=key) == "Invalid API key"
    assert post(sync, "/api/v6/images/fetch/1", {"key": key} if key is not ... else {}, status=401)
    assert post(sync, d.SYSTEM_LOAD, {"key": key} if key is not ... else {}, status=401)


def test_6_missing_prompt_and_model_id(sync):
    assert error(sync, 400, prompt=...) == "prompt is required"
    assert error(sync, 400, prompt="  ") == "prompt is required"
    assert error(sync, 400, model_id=...) == "model_id is required"


def test_bad_bodies_get_the_modelslab_error_shape_not_fastapi_422(sync):
    assert post(sync, "/api/v6/images/text2img", content=b"{not json", status=400)["message"] == (
        "the request body must be JSON"
    )
    assert post(sync, "/api/v6/images/text2img", [1, 2], status=400)["status"] == "error"
    assert "scheduler 'NoSuchScheduler' is not supported" in error(sync, 400, scheduler="NoSuchScheduler")
    assert error(sync, 400, upscale="maybe") == "upscale must be yes, no, 2, 3 or 4"
    r = sync.http.get(f"{sync.url}/generations/00000000-0000-0000-0000-000000000000-0.png")
    assert r.status_code == 404 and r.json()["status"] == "error"


def test_always_200_compatibility_flag(sync):
    sync.api.settings.always_200 = True
    try:
        assert error(sync, 200, samples=9) == "samples must be between 1 and 4"
        assert error(sync, 200, key="wrong") == "Invalid API key"
    finally:
        sync.api.settings.always_200 = False


# ----------------------------------------------------------------------------- 7-10: processing and fetch


def test_7_to_9_processing_then_fetch_gives_the_future_links(later):
    with worker_held(later):
        first = generate(later, seed=5)
        assert first["status"] == "processing" and isinstance(first["id"], int)
        assert isinstance(first["eta"], (int, float)) and first["eta"] > 0
        assert first["message"] == first["messege"] and first["message"]
        assert first["fetch_result"] == f"{later.url}/api/v6/images/fetch/{first['id']}"
        assert first["output"] == [] and len(first["future_links"]) == 1 and first["meta"]["seed"] == 5
        # the future link is not there yet; fetch keeps answering processing
        assert later.http.get(first["future_links"][0]).status_code == 404
        assert post(later, first["fetch_result"].removeprefix(later.url), {"key": KEY})["status"] == "processing"
    done = poll(later, first["fetch_result"])
    assert done["status"] == "success" and done["output"] == first["future_links"] and done["id"] == first["id"]
    assert png(download(later, done["output"][0])).size == (256, 256)
    # 9: the body form of fetch gives the same answer
    assert post(later, "/api/v6/images/fetch", {"key": KEY, "request_id": str(first["id"])}) == done
    assert post(later, "/api/v6/images/fetch", {"key": KEY, "request_id": first["id"]}) == done
    # another account's key does not see it
    assert post(later, "/api/v6/images/fetch", {"key": OTHER_KEY, "request_id": first["id"]}, status=404)


def test_10_unknown_ids_are_errors(later):
    assert post(later, "/api/v6/images/fetch/12345", {"key": KEY}, status=404)["status"] == "error"
    assert post(later, "/api/v6/images/fetch/not-a-number", {"key": KEY}, status=404)["status"] == "error"
    assert post(later, "/api/v6/images/fetch", {"key": KEY}, status=400)["message"] == "request_id is required"


def test_instant_response_answers_processing_even_with_time_to_wait(sync):
    first = generate(sync, instant_response=True)
    assert first["status"] == "processing"
    assert poll(sync, first["fetch_result"])["output"] == first["future_links"]


# ---------------------------------------------------------------------------------------------- 11: webhook


class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    arrived = threading.Event()

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received, _Receiver.arrived = [], threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}/hook", handler=_Receiver)
    httpd.shutdown()
    httpd.server_close()


def test_11_webhook_gets_the_success_payload_with_track_id(later, receiver):
    first = generate(later, webhook=receiver.url, track_id="track-7")
    assert first["status"] == "processing"
    assert receiver.handler.arrived.wait(60), "no webhook call"
    hook = receiver.handler.received[0]
    assert hook["status"] == "success" and hook["id"] == first["id"] and hook["track_id"] == "track-7"
    assert hook["output"] == first["future_links"] and hook["meta"]["seed"] == first["meta"]["seed"]
    deadline = time.time() + 10
    while (done := poll(later, first["fetch_result"]))["webhook_status"] != "sent" and time.time() < deadline:
        time.sleep(0.05)
    assert done["webhook_status"] == "sent"


def test_a_job_that_fails_is_failed_on_fetch_and_in_the_webhook(later, sync, receiver, tiny_models_dir):
    if not (tiny_models_dir / "Lora" / "tiny-sdxl-lora.safetensors").is_file():
        pytest.skip("this engine build ships no tiny LoRA")
    wrong = {"model_id": "tiny-sd1", "lora_model": "tiny-sdxl-lora"}  # exists, but fails on an SD1 model
    first = generate(later, webhook=receiver.url, track_id=9, **wrong)
    assert first["status"] == "processing"
    assert receiver.handler.arrived.wait(60), "no webhook call"
    hook = receiver.handler.received[0]
    assert hook["status"] == "failed" and hook["id"] == first["id"] and hook["track_id"] == 9 and hook["message"]
    done = poll(later, first["fetch_result"])
    assert done["status"] == "failed" and done["message"] == hook["message"] == done["messege"]
    # answered synchronously, the same failure is an error with its HTTP status
    assert error(sync, 400, **wrong) == hook["message"]


def test_webhook_to_a_host_not_allowed_is_refused_before_any_work(sync):
    message = error(sync, 400, webhook="http://example.com/hook", track_id=1)
    assert "webhook host 'example.com' is not allowed" in message
    assert "must be an http(s) URL" in error(sync, 400, webhook="ftp://127.0.0.1/x")


# ------------------------------------------------------------------------------------- 12-15: the fields


@pytest.mark.parametrize("on", ["yes", "YES", True, "true", 1])
def test_12_flag_forms_that_switch_on(sync, on):
    data = generate(sync, upscale=on, num_inference_steps=1)
    assert data["meta"]["upscale"] == "yes" and png(download(sync, data["output"][0])).size == (512, 512)


@pytest.mark.parametrize("off", ["no", "No", False, "false", 0, None])
def test_12_flag_forms_that_switch_off(sync, off):
    data = generate(sync, upscale=off, num_inference_steps=1)
    assert data["meta"]["upscale"] == "no" and png(download(sync, data["output"][0])).size == (256, 256)


def test_13_null_seed_is_random_and_reported_and_reproducible(sync):
    first = generate(sync, seed=None)
    seed = first["meta"]["seed"]
    assert isinstance(seed, int) and seed >= 0
    again = generate(sync, seed=seed)
    other = generate(sync, seed=seed + 1000)
    assert download(sync, again["output"][0]) == download(sync, first["output"][0])
    assert download(sync, other["output"][0]) != download(sync, first["output"][0])


SUBSTITUTED = {"DDIMInverseScheduler": "DDIMScheduler", "KarrasVeScheduler": "HeunDiscreteScheduler",
               "ScoreSdeVeScheduler": "EulerAncestralDiscreteScheduler"}


def test_14_every_scheduler_name_works_and_meta_says_what_ran(sync):
    for name in d.SCHEDULERS:
        data = generate(sync, scheduler=name, seed=3, num_inference_steps=2)
        assert data["status"] == "success", name
        assert data["meta"]["scheduler"] == SUBSTITUTED.get(name, name)
        if name in SUBSTITUTED:
            assert data["meta"]["scheduler_requested"] == name
            assert any(name in note for note in data["meta"]["notes"])
    assert len(d.SCHEDULERS) == 18


def test_parameters_change_the_image(sync):
    base = {"seed": 9, "scheduler": "EulerDiscreteScheduler"}
    reference = download(sync, generate(sync, **base)["output"][0])
    for change in ({"guidance_scale": 2}, {"use_karras_sigmas": "no"}, {"clip_skip": 1},
                   {"negative_prompt": "dog"}, {"scheduler": "DDIMScheduler"}):
        assert download(sync, generate(sync, **{**base, **change})["output"][0]) != reference, change


def test_15_lora_strength_count_mismatch_and_missing_loras(sync):
    assert "one value per lora_model" in error(sync, 400, lora_model="a,b", lora_strength="0.6")
    assert error(sync, 404, lora_model="a,b", lora_strength="0.6,0.8") == "lora not found: a, b"
    assert "lora_strength must be between" in error(sync, 400, lora_model="a", lora_strength=3)


def test_15_an_existing_lora_is_applied(sync, tiny_models_dir):
    if not (tiny_models_dir / "Lora" / "tiny-sd1-lora.safetensors").is_file():
        pytest.skip("this engine build ships no tiny LoRA")
    plain = generate(sync, seed=4, model_id="tiny-sd1")
    lora = generate(sync, seed=4, model_id="tiny-sd1", lora_model="tiny-sd1-lora", lora_strength="0.8")
    assert lora["meta"]["lora"] == "tiny-sd1-lora" and lora["meta"]["lora_strength"] == "0.8"
    assert download(sync, lora["output"][0]) != download(sync, plain["output"][0])


def test_options_without_a_local_effect_are_reported_not_pretended(sync):
    data = generate(sync, highres_fix="yes", tomesd="yes", safety_checker="yes", enhance_prompt="no",
                    unknown_field=1)
    meta = data["meta"]
    assert set(meta["not_applied"]) == {"highres_fix", "safety_checker"}  # no checker installed on this server
    assert data["nsfw_content_detected"] is None  # asked for, and it could not run: not a silent "safe"
    assert meta["ignored_fields"] == ["unknown_field"]


def test_demo_maps_every_model_id_to_a_tiny_model(sync):
    assert generate(sync, model_id="sdxl-juggernaut", num_inference_steps=1)["meta"]["model"].startswith("tiny-sdxl")
    assert generate(sync, model_id="midjourney", num_inference_steps=1)["meta"]["model"].startswith("tiny-sd1")


# ------------------------------------------------------------------------------ 16, 17: the other families


def test_16_enterprise_routes_behave_like_v6(sync):
    outputs = [generate(sync, path, seed=77)["output"][0] for path in
               ("/api/v6/images/text2img", "/api/v1/enterprise/text2img", "/api/v1/enterprise/images/text2img")]
    images = [download(sync, url) for url in outputs]
    assert images[0] == images[1] == images[2]
    first = generate(sync, "/api/v1/enterprise/text2img", instant_response="yes")
    assert first["fetch_result"].endswith(f"/api/v1/enterprise/fetch/{first['id']}")
    done = poll(sync, first["fetch_result"])
    assert post(sync, "/api/v1/enterprise/fetch", {"key": KEY, "request_id": first["id"]}) == done
    assert post(sync, f"/api/v1/enterprise/images/fetch/{first['id']}", {"key": KEY}) == done
    assert post(sync, "/api/v1/enterprise/system_details", {"key": KEY})["status"] == "success"
    schedulers = post(sync, "/api/v1/enterprise/schedulers_list", {"key": KEY})
    assert set(d.SCHEDULERS) <= set(schedulers["schedulers"])
    models = post(sync, "/api/v1/enterprise/get_all_models", {"key": KEY})
    assert {"tiny-sd1", "tiny-sdxl"} <= {m["model_id"] for m in models["models"]}


def test_17_legacy_aliases(sync):
    v3 = generate(sync, "/api/v3/text2img", model_id=..., instant_response=True)  # v3 has no model_id
    assert v3["fetch_result"].endswith(f"/api/v3/fetch/{v3['id']}")
    assert poll(sync, v3["fetch_result"])["status"] == "success"
    for path, fetch in (("/api/v3/dreambooth", "/api/v3/dreambooth/fetch"),
                        ("/api/v4/dreambooth", "/api/v4/dreambooth/fetch"),
                        ("/api/v6/realtime/text2img", "/api/v6/realtime/fetch")):
        first = generate(sync, path, instant_response=True)
        assert first["fetch_result"].endswith(f"{fetch}/{first['id']}")
        assert poll(sync, first["fetch_result"])["status"] == "success"
    load = post(sync, d.SYSTEM_LOAD, {"key": KEY})
    assert load["status"] == "ok" and isinstance(load["queue_num"], int)
    assert isinstance(load["queue_time"], (int, float))


# ---------------------------------------------------------------------------------------- 18: queue cap


def test_18_a_sixth_queued_request_gets_429_with_retry_after(later):
    with worker_held(later):
        queued = [generate(later, num_inference_steps=1) for _ in range(5)]
        assert all(q["status"] == "processing" for q in queued)
        assert post(later, d.SYSTEM_LOAD, {"key": KEY})["queue_num"] == 5
        body = {"key": KEY, "model_id": "sd15", "prompt": "a cat", **FAST}
        refused = post(later, "/api/v6/images/text2img", body, status=429)
        assert refused["message"] == "Rate limit exceeded. Maximum 5 queued requests allowed."
        assert isinstance(refused["retry_after"], int) and refused["retry_after"] >= 1
    assert all(poll(later, q["fetch_result"])["status"] == "success" for q in queued)
    assert generate(later)["status"] == "processing"  # room again


# -------------------------------------------------------------------------------------------- 20: base64


def test_20_base64_output_is_png_data(sync):
    data = generate(sync, base64="yes", samples=2, num_inference_steps=1, seed=21)
    assert len(data["output"]) == 2 and data["meta"]["base64"] == "yes"
    for entry, link in zip(data["output"], data["proxy_links"]):
        raw = base64.b64decode(entry, validate=True)
        assert png(raw).size == (256, 256) and raw == download(sync, link)
