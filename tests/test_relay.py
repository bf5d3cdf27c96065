"""The relay end to end: a second instance of this server (--demo) is the upstream gateway, on loopback.

- `relay_same` routes every style to a gateway that speaks it: the same request with the same seed gives the same
  image through the relay as directly, for each of the four styles;
- `relay_cross` routes every style to a gateway that speaks another one (A1111 → a v1-only gateway, v1 → A1111,
  v2beta → ModelsLab, ModelsLab → v2beta): valid answers in the caller's style, and the dropped fields said;
- keys: upstream accepts only the gateway key, callers hold another; a recorder in front of the upstream sees
  only the gateway key, and no key shows up in any answer or log line.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import shutil
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from backends.config import ConfigError
from backends.remote.config import parse_relay_config
from live import start_live_server

GW_KEY = "gw-secret-0123456789"  # what the upstream accepts (and only the relay knows)
CALLER_KEY = "caller-secret-9876543210"  # what callers of the relay hold
KEYS = (GW_KEY, CALLER_KEY)
PNG = b"\x89PNG\r\n\x1a\n"
V1_ENGINE = "stable-diffusion-v1-6"  # tiny-sd1 in --demo; sides 320..1536


class Recorder:
    """ASGI wrapper in front of the upstream: remembers each request's path, Authorization and body `key`."""

    def __init__(self, app):
        self.app = app
        self.seen: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def recording_receive():
            message = await receive()
            chunks.append(message.get("body", b""))
            return message

        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        await self.app(scope, recording_receive, send)
        key = None
        if headers.get("content-type", "").startswith("application/json"):
            try:
                key = json.loads(b"".join(chunks) or b"{}").get("key")
            except (ValueError, AttributeError):
                pass
        self.seen.append({"path": scope["path"], "authorization": headers.get("authorization"), "key": key})


def _server(tmp, name: str, raw: dict, wrap=None):
    srv = start_live_server(tmp, outputs_dir=tmp / f"out-{name}", raw=raw, wrap=Recorder if wrap else None)
    srv.recorder = srv.app if wrap else None
    return srv


@pytest.fixture(scope="module")
def servers(tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("relay")
    monkeypatch_module.setenv("SDGATE_TEST_GW_KEY", GW_KEY)
    upstream = _server(tmp, "upstream", {
        "keys": {"stability": [GW_KEY], "modelslab": [GW_KEY]},
        "a1111": {"gateway_keys": [GW_KEY]},
        "modelslab": {"sync_wait": 0},  # always `processing` first: the relay must poll
        "stability_v2": {"steps": 2, "size_scale": 0.0625},
    }, wrap=True)
    fast = {"retries": 1, "backoff": 0.05, "deadline": 60, "poll_interval": 0.1, "key_env": "SDGATE_TEST_GW_KEY"}
    gateways = [
        # A1111 through the gateway prefix /v1/sdapi/v1, which takes a bearer key
        {"name": "gw-a1111", "base_url": upstream.url, "path_prefix": "/v1", "styles": ["a1111"], **fast},
        # Stability through the resellers' /sd prefix
        {"name": "gw-stab", "base_url": upstream.url, "path_prefix": "/sd", "styles": ["stability_v1", "stability_v2"],
         "headers": {"Stability-Client-ID": "sdgate-tests"}, **fast},
        {"name": "gw-ml", "base_url": upstream.url, "styles": ["modelslab"], "auth": "body_key", **fast},
        {"name": "v1only", "base_url": upstream.url, "styles": ["stability_v1"], **fast},
        {"name": "v2only", "base_url": upstream.url, "styles": ["stability_v2"], **fast},
    ]
    caller_keys = {"stability": [CALLER_KEY], "modelslab": [CALLER_KEY]}
    same = _server(tmp, "same", {"keys": caller_keys, "gateways": gateways, "routing": {
        "a1111": "gw-a1111", "stability_v1": "gw-stab", "stability_v2": "gw-stab", "modelslab": "gw-ml"}})
    cross = _server(tmp, "cross", {
        "keys": caller_keys, "gateways": gateways,
        "routing": {"a1111": "v1only", "stability_v1": "gw-a1111", "stability_v2": "gw-ml", "modelslab": "v2only"},
        "stability_v2": {"steps": 2, "size_scale": 0.25},
    })
    yield upstream, same, cross
    for srv in (same, cross, upstream):
        srv.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def answers():
    """Every answer the relay servers gave in this module: checked for keys at the end."""
    return []


@pytest.fixture()
def http(answers):
    class Client(httpx.Client):
        def send(self, request, **kw):
            response = super().send(request, **kw)
            answers.append(response)
            return response

    with Client(timeout=120) as client:
        yield client


def png_of(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(PNG)
    return Image.open(io.BytesIO(data))


def pixels(b64: str) -> bytes:
    """An image's pixels (A1111 answers re-encode PNGs with their infotext: compare what they show)."""
    return png_of(b64).convert("RGB").tobytes()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def modelslab_direct(http, base: str, body: dict) -> dict:
    """What a ModelsLab client does against the upstream: post, then fetch until success."""
    reply = http.post(base + "/api/v6/images/text2img", json=body).json()
    deadline = time.time() + 60
    while reply["status"] == "processing":
        assert time.time() < deadline
        time.sleep(0.1)
        reply = http.post(reply["fetch_result"], json={"key": body["key"]}).json()
    assert reply["status"] == "success", reply
    return reply


# ------------------------------------------------------------------------------ same style: same image


def test_a1111_same_seed_same_image_through_the_relay(servers, http):
    upstream, same, _ = servers
    body = {"prompt": "a lighthouse", "seed": 42, "steps": 2, "width": 64, "height": 64, "batch_size": 2}
    direct = http.post(upstream.url + "/v1/sdapi/v1/txt2img", json=body, headers=bearer(GW_KEY))
    relayed = http.post(same.url + "/sdapi/v1/txt2img", json=body)
    assert direct.status_code == relayed.status_code == 200
    assert relayed.headers["x-sdgate-backend"] == "gw-a1111"
    assert relayed.json()["images"] == direct.json()["images"]
    assert json.loads(relayed.json()["info"])["all_seeds"] == [42, 43]
    # a cheap route takes the same way
    samplers = http.get(same.url + "/sdapi/v1/samplers")
    assert samplers.headers["x-sdgate-backend"] == "gw-a1111"
    assert samplers.json() == http.get(upstream.url + "/sdapi/v1/samplers").json()


def test_stability_v1_same_seed_same_image_through_the_relay(servers, http):
    upstream, same, _ = servers
    body = {"text_prompts": [{"text": "a fox"}, {"text": "blurry", "weight": -1}], "seed": 7, "steps": 10,
            "width": 320, "height": 320}
    path = f"/v1/generation/{V1_ENGINE}/text-to-image"
    png = {"Accept": "image/png"}
    direct = http.post(upstream.url + path, json=body, headers={**bearer(GW_KEY), **png})
    relayed = http.post(same.url + "/sd" + path, json=body, headers={**bearer(CALLER_KEY), **png})
    assert direct.status_code == relayed.status_code == 200, relayed.text
    assert relayed.content == direct.content and relayed.content.startswith(PNG)
    assert relayed.headers["content-type"] == "image/png"
    assert relayed.headers["finish-reason"] == "SUCCESS" and relayed.headers["seed"] == "7"
    as_json = http.post(same.url + path, json=body, headers=bearer(CALLER_KEY)).json()
    assert base64.b64decode(as_json["artifacts"][0]["base64"]) == direct.content
    # an upstream error that already has v1's shape comes back as it is
    bad = http.post(same.url + path, json={**body, "width": 500}, headers=bearer(CALLER_KEY))
    assert bad.status_code == 400 and bad.json()["name"] == "invalid_height_or_width"


def test_stability_v2_same_seed_same_image_through_the_relay(servers, http):
    upstream, same, _ = servers
    form = {"prompt": (None, "a boat"), "seed": (None, "11"), "output_format": (None, "png")}
    path = "/v2beta/stable-image/generate/core"
    direct = http.post(upstream.url + path, files=form, headers={**bearer(GW_KEY), "accept": "image/*"})
    relayed = http.post(same.url + path, files=form, headers={**bearer(CALLER_KEY), "accept": "image/*"})
    assert direct.status_code == relayed.status_code == 200, relayed.text
    assert relayed.content == direct.content and relayed.content.startswith(PNG)
    assert relayed.headers["finish-reason"] == "SUCCESS" and relayed.headers["seed"] == "11"
    assert relayed.headers.get("x-request-id")
    missing = http.post(same.url + path, files={"none": ("none", b"")}, headers=bearer(CALLER_KEY))
    assert missing.status_code == 400 and missing.json()["name"] == "bad_request"
    assert set(missing.json()) == {"id", "name", "errors"}


def test_modelslab_same_seed_same_image_through_the_relay(servers, http):
    upstream, same, _ = servers
    body = {"model_id": "sd15", "prompt": "a tree", "width": "256", "height": "256", "samples": "1",
            "num_inference_steps": "2", "seed": 99}
    direct = modelslab_direct(http, upstream.url, {**body, "key": GW_KEY})  # upstream answers `processing`
    relayed = http.post(same.url + "/api/v6/images/text2img", json={**body, "key": CALLER_KEY})
    assert relayed.status_code == 200, relayed.text
    reply = relayed.json()
    assert reply["status"] == "success" and reply["meta"]["seed"] == 99  # the relay polled to the end
    url = reply["output"][0]
    assert url.startswith(same.url + "/generations/")  # downloaded and served by the relay
    assert http.get(url).content == http.get(direct["output"][0]).content


# ------------------------------------------------------------------------------ across styles


def test_a1111_request_to_a_v1_only_gateway(servers, http):
    upstream, _, cross = servers
    body = {"prompt": "a castle", "seed": 11, "steps": 10, "width": 320, "height": 320, "batch_size": 2,
            "override_settings": {"CLIP_stop_at_last_layers": 2}}
    reply = http.post(cross.url + "/sdapi/v1/txt2img", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-sdgate-backend"] == "v1only"
    assert reply.headers["x-sdgate-dropped-fields"] == "clip_skip"  # v1 has no clip skip
    data = reply.json()
    assert set(data) == {"images", "parameters", "info"}
    info = json.loads(data["info"])
    assert info["all_seeds"] == [11, 12] and info["seed"] == 11
    assert [png_of(b).size for b in data["images"]] == [(320, 320), (320, 320)]
    assert len(info["infotexts"]) == 2 and "Seed: 11" in info["infotexts"][0]
    # the same image a v1 client gets from the upstream for the same seed (clip skip aside, which v1 ignores)
    direct = http.post(upstream.url + f"/v1/generation/{V1_ENGINE}/text-to-image", headers=bearer(GW_KEY), json={
        "text_prompts": [{"text": "a castle"}], "seed": 11, "steps": 10, "width": 320, "height": 320,
        "samples": 2, "sampler": "K_EULER", "cfg_scale": 7})  # the A1111 API default: Euler
    artifacts = direct.json()["artifacts"]
    assert [a["seed"] for a in artifacts] == [11, 12]
    assert [pixels(a["base64"]) for a in artifacts] == [pixels(b) for b in data["images"]]


def test_v1_request_to_an_a1111_only_gateway(servers, http):
    _, _, cross = servers
    body = {"text_prompts": [{"text": "a river"}], "seed": 5, "steps": 10, "width": 320, "height": 384,
            "samples": 1}
    reply = http.post(cross.url + f"/v1/generation/{V1_ENGINE}/text-to-image", json=body,
                      headers=bearer(CALLER_KEY))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-sdgate-backend"] == "gw-a1111"
    (artifact,) = reply.json()["artifacts"]
    assert artifact["seed"] == 5 and artifact["finishReason"] == "SUCCESS"
    assert png_of(artifact["base64"]).size == (320, 384)


def test_v2_request_to_a_modelslab_only_gateway(servers, http):
    upstream, _, cross = servers
    before = len(upstream.recorder.seen)
    reply = http.post(cross.url + "/v2beta/stable-image/generate/core", headers={**bearer(CALLER_KEY),
                      "accept": "application/json"}, files={"prompt": (None, "a hill"), "seed": (None, "21")})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-sdgate-backend"] == "gw-ml"
    data = reply.json()
    assert data["seed"] == 21 and data["finish_reason"] == "SUCCESS"
    assert Image.open(io.BytesIO(base64.b64decode(data["image"]))).size == (304, 304)
    paths = [s["path"] for s in upstream.recorder.seen[before:]]
    assert paths[0] == "/api/v6/images/text2img" and any("/fetch" in p for p in paths)  # polled
    assert any(p.startswith("/generations/") for p in paths)  # and downloaded


def test_modelslab_request_to_a_v2_only_gateway(servers, http):
    _, _, cross = servers
    reply = http.post(cross.url + "/api/v6/images/text2img", json={
        "key": CALLER_KEY, "model_id": "core", "prompt": "a meadow", "width": 512, "height": 512, "seed": 3,
        "num_inference_steps": 2, "lora_model": None})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["status"] == "success" and data["meta"]["seed"] == 3
    assert "steps" in reply.headers["x-sdgate-dropped-fields"]  # v2beta has no steps field
    image = Image.open(io.BytesIO(http.get(data["output"][0]).content))
    assert image.format == "PNG"


def test_a_job_naming_a_gateway_skips_the_local_queue(servers):
    """What the UI and other Python callers do: Job.backend (or a Backend choice) instead of a route."""
    from backends.job import Job, SdgateError

    _, same, _ = servers
    service = same.service
    result = service.run(Job(prompt="a moon", seed=3, steps=2, width=64, height=64, backend="gw-a1111"),
                        timeout=60)
    assert result.seeds == [3] and result.images[0].size == (64, 64) and result.job.backend == "gw-a1111"
    assert service.queue.pending() == [] and service.relay.choices("a1111") == ["gw-a1111"]
    assert service.relay.choices("stability_v2beta") == ["gw-stab", "v2only"]
    with pytest.raises(SdgateError, match="no gateway named 'nope'"):
        service.run(Job(prompt="x", backend="nope"))

    async def through_the_dialect():
        from backends.dialects import registry
        from backends.dialects.base import Call
        from backends.job import Route, Style

        dialect = registry.dialect(service, Style.A1111)
        call = Call(route=Route("v1only"))
        request = dialect.parse("txt2img", {"prompt": "a dune", "seed": 8, "steps": 10, "width": 320, "height": 320},
                                call)
        return await dialect.run("txt2img", request, call)

    reply = asyncio.run(through_the_dialect())
    assert json.loads(reply.body["info"])["all_seeds"] == [8] and reply.headers["X-Sdgate-Backend"] == "v1only"
    rows = {row[0]: row for row in service.relay.status_rows()}
    assert rows["v1only"][3].startswith("ok") and rows["gw-ml"][2] == "modelslab"
    assert not any(key in json.dumps(rows) for key in KEYS)


def test_ui_tab_backend_choice_runs_on_the_gateway(servers, http):
    """A browser user picks a gateway in a tab's Backend dropdown: the image comes from the upstream."""
    from gradio_client import Client

    upstream, _, cross = servers
    client = Client(cross.url + "/", verbose=False)
    fields = dict(prompt_1="a lighthouse", engine_id=V1_ENGINE, width=320, height=320, steps=10, seed=21,
                  sampler="K_EULER", style_preset="(none)")
    _, gallery, info, _ = client.predict(**fields, backend="v1only", api_name="/stability_v1")
    direct = http.post(upstream.url + f"/v1/generation/{V1_ENGINE}/text-to-image", headers=bearer(GW_KEY),
                       json={"text_prompts": [{"text": "a lighthouse"}], "width": 320, "height": 320, "steps": 10,
                             "seed": 21, "sampler": "K_EULER"})
    with Image.open(gallery[0]["image"] if isinstance(gallery[0], dict) else gallery[0][0]) as shown:
        relayed_pixels = shown.convert("RGB").tobytes()
    assert relayed_pixels == png_of(direct.json()["artifacts"][0]["base64"]).convert("RGB").tobytes()
    assert "Seed: 21" in info
    # the dropdown offers only gateways that speak the tab's style
    with pytest.raises(Exception, match="gw-ml is not in the list of choices"):
        client.predict(**fields, backend="gw-ml", api_name="/stability_v1")


# ------------------------------------------------------------------------------ a LoRA only the gateway has


def test_modelslab_lora_only_the_gateway_has(servers, tmp_path, http):
    """A ModelsLab request naming a LoRA this server lacks: refused when it runs here, sent on when its job runs
    on a gateway (a `gateway:` model, or the style routed to a gateway), whose server finds it or names it missing."""
    from backends.dialects import modelslab as ml

    shared = Path(servers[0].service.config.models_dir)
    # the gateway's models folder: the module's tiny models, and one LoRA that only it has
    own = tmp_path / "gateway-models"
    (own / "Lora").mkdir(parents=True)
    (own / "Stable-diffusion").symlink_to(shared / "Stable-diffusion", target_is_directory=True)
    for lora in (shared / "Lora").iterdir():
        (own / "Lora" / lora.name).symlink_to(lora)
    shutil.copyfile(shared / "Lora" / "tiny-sd1-lora.safetensors", own / "Lora" / "gateway-only-lora.safetensors")
    gateway = start_live_server(tmp_path / "gateway", models_dir=own)
    fast = {"auth": "none", "retries": 1, "backoff": 0.05, "deadline": 60, "poll_interval": 0.1}
    relay = start_live_server(tmp_path / "relay", models_dir=shared, raw={
        "modelslab": {"sync_wait": 60},
        "gateways": [{"name": "gw-ml", "base_url": gateway.url, "styles": ["modelslab"], **fast},
                     {"name": "gw-a1111", "base_url": gateway.url, "styles": ["a1111"], **fast}]})
    try:
        assert not (shared / "Lora" / "gateway-only-lora.safetensors").exists()
        body = {"prompt": "a lamp", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 5,
                "lora_model": "gateway-only-lora", "lora_strength": "0.8"}
        here = http.post(relay.url + "/api/v6/images/text2img", json={**body, "model_id": "tiny-sd1"})
        assert here.status_code == 404 and here.json()["message"] == "lora not found: gateway-only-lora"

        there = http.post(relay.url + "/api/v6/images/text2img", json={**body, "model_id": "gateway:gw-ml/tiny-sd1"})
        assert there.status_code == 200, there.text
        assert there.json()["status"] == "success" and there.headers["x-sdgate-backend"] == "gw-ml"
        assert "lora" not in there.headers.get("x-sdgate-dropped-fields", "")
        # the gateway's server is the one that checks: a LoRA it lacks too is named in its refusal
        nowhere = http.post(relay.url + "/api/v6/images/text2img",
                            json={**body, "model_id": "gateway:gw-ml/tiny-sd1", "lora_model": "nowhere-lora"})
        assert nowhere.status_code != 200 and "nowhere-lora" in nowhere.json()["message"]

        # a gateway route (the style routed to a gateway, or the UI's Backend choice) skips the local check too
        from backends.dialects import registry
        from backends.dialects.base import Call
        from backends.job import LoraNotFound, Route, Style

        dialect = registry.dialect(relay.service, Style.MODELSLAB)
        request = ml.Text2ImgRequest(**body)
        plan = asyncio.run(dialect.plan(request, Call(route=Route("gw-a1111"))))
        assert [lora.name for lora in plan.job.loras] == ["gateway-only-lora"]
        with pytest.raises(LoraNotFound, match="gateway-only-lora"):
            asyncio.run(dialect.plan(request, Call()))
    finally:
        relay.stop()
        gateway.stop()


# ------------------------------------------------------------------------------ keys


def test_wrong_caller_key_is_refused_before_anything_is_forwarded(servers, http):
    upstream, same, _ = servers
    before = len(upstream.recorder.seen)
    v1 = http.post(same.url + f"/v1/generation/{V1_ENGINE}/text-to-image", headers=bearer("nope"),
                   json={"text_prompts": [{"text": "x"}]})
    assert v1.status_code == 401 and v1.json()["name"] == "unauthorized"
    ml = http.post(same.url + "/api/v6/images/text2img", json={"key": "nope", "model_id": "sd15", "prompt": "x"})
    assert ml.status_code == 401 and ml.json()["status"] == "error"
    assert len(upstream.recorder.seen) == before


def test_the_gateway_gets_its_key_and_no_key_leaks(servers, answers, caplog):
    """Runs last in this module: every request the upstream saw came from the relay with the gateway key (or
    from this test's direct calls with the same key), no answer of the relay carries a key, and no log line
    does (the relay logs at DEBUG while a generation goes through)."""
    upstream, same, _ = servers
    with caplog.at_level(logging.DEBUG):
        reply = httpx.post(same.url + "/api/v6/images/text2img", timeout=60, json={
            "key": CALLER_KEY, "model_id": "sd15", "prompt": "a key", "width": 256, "height": 256,
            "num_inference_steps": 1, "seed": 1})
        assert reply.status_code == 200
    answers.append(reply)
    seen = upstream.recorder.seen
    assert seen
    for request in seen:
        assert CALLER_KEY not in json.dumps(request)
        if request["path"].startswith(("/sd/", "/v1/sdapi/", "/v2beta", "/v1/generation")):
            assert request["authorization"] == f"Bearer {GW_KEY}", request
        if request["path"].startswith("/api/"):
            assert request["key"] == GW_KEY and request["authorization"] is None, request
    relayed = [a for a in answers if not str(a.request.url).startswith(upstream.url)]
    assert len(relayed) >= 10
    for answer in relayed:
        text = answer.content.decode("latin-1") + json.dumps(dict(answer.headers))
        assert not any(key in text for key in KEYS), answer.request.url
    assert any(r.name.startswith("backends.remote") for r in caplog.records)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(key in logged for key in KEYS)


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("gateway, problem", [
    ({"base_url": "ftp://x", "styles": ["a1111"], "auth": "none"}, "base_url"),
    ({"base_url": "http://x", "styles": ["klingon"], "auth": "none"}, "unknown style"),
    ({"base_url": "http://x", "styles": ["a1111"], "auth": "oauth"}, "auth must be one of"),
    ({"base_url": "http://x", "styles": ["a1111"], "key_env": "SDGATE_SURELY_UNSET"}, "SDGATE_SURELY_UNSET"),
    ({"base_url": "http://x", "styles": ["a1111"], "path_prefix": "sd/", "auth": "none"}, "path_prefix"),
    ({"base_url": "http://x", "styles": ["a1111"], "auth": "none", "retries": -1}, "retries"),
    ({"base_url": "http://x", "styles": ["a1111"], "auth": "none", "timeuot": 3}, "unknown field"),
])
def test_bad_gateway_config_is_one_line(gateway, problem):
    with pytest.raises(ConfigError) as e:
        parse_relay_config({"gateways": [{"name": "g", **gateway}]}, environ={})
    assert problem in str(e.value) and "\n" not in str(e.value)


def test_routing_and_aliases_must_name_a_gateway_and_inline_keys_warn():
    ok = {"name": "g", "base_url": "http://x", "styles": ["stability_v2beta"], "key": "inline-secret-xyz"}
    cfg = parse_relay_config({"gateways": [ok], "routing": {"stability_v2beta": "g"}}, environ={})
    assert cfg.routing == {"stability_v2": "g"} and cfg.gateways["g"].styles == ("stability_v2",)
    assert any("prefer key_env" in w for w in cfg.warnings) and "inline-secret-xyz" not in repr(cfg)
    with pytest.raises(ConfigError, match="no such gateway"):
        parse_relay_config({"gateways": [ok], "routing": {"a1111": "nope"}}, environ={})
    with pytest.raises(ConfigError, match="no such gateway 'nope'"):
        parse_relay_config({"gateways": [ok], "models": {"aliases": {"m": "gateway:nope/x"}}}, environ={})
