"""The relay against gateways that fail: a deliberately broken upstream on loopback (slow, rate-limited, flaky,
garbage) and a closed port, reached from a real relay server through `gateway:` model aliases; then respx for what
a real server cannot do on demand (a connection dropped mid-answer, every D.3 error envelope, a key echoed back).

Each fault ends in a retry that succeeds or a clear error in the caller's style within the gateway's deadline
(elapsed time asserted), and the relay server keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections import Counter

import httpx
import pytest
import respx
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.remote.client import Deadline, GatewayClient
from backends.remote.config import GatewayConfig
from backends.remote.errors import UpstreamError
from live import start_live_server
from webui.server import free_port, serve_in_thread

KEY = "gw-fault-key-0123456789"
SLACK = 1.5  # seconds allowed past a deadline for thread hops and a loaded 2-core machine


def png_b64(seed: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (seed % 256, 0, 0)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def a1111_answer(body: dict) -> dict:
    seed = body.get("seed", 1)
    n = body.get("batch_size", 1) * body.get("n_iter", 1)
    info = {"seed": seed, "all_seeds": [seed + i for i in range(n)], "index_of_first_image": 0,
            "sampler_name": body.get("sampler_name", "Euler"), "sd_model_name": "broken"}
    return {"images": [png_b64(seed + i) for i in range(n)], "parameters": body, "info": json.dumps(info)}


def broken_upstream() -> tuple[Starlette, Counter]:
    """`/<scenario>/sdapi/v1/txt2img` fails the way the scenario says (A1111 answers when it lets one through)."""
    calls: Counter = Counter()

    async def txt2img(request: Request):
        scenario = request.path_params["scenario"]
        calls[scenario] += 1
        n = calls[scenario]
        body = json.loads(await request.body())
        if scenario == "slow":
            await asyncio.sleep(20)
        if scenario == "ratelimited" and n == 1:
            return JSONResponse({"error": {"message": "too many requests", "type": "new_api_error"}},
                                status_code=429, headers={"Retry-After": "1"})
        if scenario.startswith("flaky") and n == 1:
            return JSONResponse({"error": {"message": "upstream hiccup (request id: abc123)",
                                           "type": "one_api_error"}}, status_code=500)
        if scenario == "garbage":
            return Response(b"<html><body>It works! \x00\xff", media_type="text/html")
        if scenario == "badgateway":
            return Response(b"<html><h1>502 Bad Gateway</h1></html>", status_code=502, media_type="text/html")
        return JSONResponse(a1111_answer(body))

    async def modelslab(request: Request):
        scenario = request.path_params["scenario"]
        calls[scenario] += 1
        if calls[scenario] == 1:  # ModelsLab's queue-full answer: retry_after in the body, no header
            return JSONResponse({"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests "
                                 "allowed.", "retry_after": 1}, status_code=429)
        body = json.loads(await request.body())
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"status": "success", "id": 7, "output": [f"{base}/files/out.png"],
                             "meta": {"seed": body.get("seed") or 1}})

    async def file(request: Request):
        return Response(base64.b64decode(png_b64(9)), media_type="image/png")

    app = Starlette(routes=[
        Route("/{scenario}/sdapi/v1/txt2img", txt2img, methods=["POST"]),
        Route("/{scenario}/api/v6/images/text2img", modelslab, methods=["POST"]),
        Route("/files/out.png", file),
    ])
    return app, calls


def gateway(name: str, url: str, **kw) -> dict:
    return {"name": name, "base_url": url, "path_prefix": f"/{name}", "styles": ["a1111"], "key_env": "SDGATE_FAULT_KEY",
            "retries": 2, "backoff": 0.05, "deadline": 6, "read_timeout": 10, "connect_timeout": 1, **kw}


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    mp = pytest.MonkeyPatch()
    mp.setenv("SDGATE_FAULT_KEY", KEY)
    app, calls = broken_upstream()
    upstream = serve_in_thread(app)
    closed = f"http://127.0.0.1:{free_port()}"
    gateways = [
        gateway("slow", upstream.url, read_timeout=0.5, deadline=3),
        gateway("slowdeadline", upstream.url, path_prefix="/slow", read_timeout=30, deadline=1.5),
        gateway("ratelimited", upstream.url),
        gateway("flaky", upstream.url, retry_post_on_500=True),
        gateway("flakynoretry", upstream.url),
        gateway("garbage", upstream.url),
        gateway("badgateway", upstream.url, deadline=4),
        gateway("refused", closed, path_prefix="", deadline=3),
        gateway("mlratelimited", upstream.url, styles=["modelslab"], auth="body_key"),
        gateway("fine", upstream.url),
    ]
    aliases = {g["name"]: f"gateway:{g['name']}" for g in gateways}
    aliases.update({"garbage-engine": "gateway:garbage", "garbage-model": "gateway:garbage"})
    server = start_live_server(tmp, outputs_dir=tmp / "out", model_aliases=aliases,
                               raw={"gateways": gateways, "models": {"aliases": aliases}})
    yield server, calls
    server.stop()
    upstream.stop()
    mp.undo()


def txt2img(server, model: str, **extra) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                       json={"prompt": "x", "seed": 5, "steps": 2, "width": 64, "height": 64, "model": model, **extra})
    return reply, time.monotonic() - started


def assert_a1111_error(reply: httpx.Response, status: int, *words: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error", "detail", "body", "errors"}, body
    for word in words:
        assert word in body["detail"], body["detail"]
    assert KEY not in reply.text


def still_serving(server) -> None:
    reply, _ = txt2img(server, "fine")
    assert reply.status_code == 200 and json.loads(reply.json()["info"])["all_seeds"] == [5]


def test_read_timeout_is_a_clear_504_without_retrying_a_post(relay):
    server, calls = relay
    reply, took = txt2img(server, "slow")
    assert_a1111_error(reply, 504, "gateway slow", "no answer within 0.5 s")
    assert took < 3 + SLACK and calls["slow"] == 1  # a billed POST that may be running is not sent twice
    still_serving(server)


def test_the_deadline_bounds_a_read_timeout_longer_than_it(relay):
    server, _ = relay
    reply, took = txt2img(server, "slowdeadline")
    assert_a1111_error(reply, 504, "deadline of 1.5 s")
    assert 1.4 < took < 1.5 + SLACK


def test_429_with_retry_after_is_honoured_then_succeeds(relay):
    server, calls = relay
    reply, took = txt2img(server, "ratelimited")
    assert reply.status_code == 200, reply.text
    assert calls["ratelimited"] == 2 and 1.0 <= took < 6 + SLACK  # waited the Retry-After second
    assert reply.headers["x-sdgate-backend"] == "ratelimited"


def test_modelslab_429_with_body_retry_after_then_success(relay):
    server, calls = relay
    reply, took = txt2img(server, "mlratelimited")
    assert reply.status_code == 200, reply.text
    assert calls["mlratelimited"] == 2 and 1.0 <= took < 6 + SLACK
    info = json.loads(reply.json()["info"])
    assert info["all_seeds"] == [5]


def test_500_then_success_when_posts_may_be_retried(relay):
    server, calls = relay
    reply, took = txt2img(server, "flaky")
    assert reply.status_code == 200 and calls["flaky"] == 2 and took < 6 + SLACK


def test_500_is_not_retried_by_default(relay):
    server, calls = relay
    reply, _ = txt2img(server, "flakynoretry")
    assert_a1111_error(reply, 502, "HTTP 500", "upstream hiccup", "abc123")
    assert calls["flakynoretry"] == 1


def test_a_garbage_body_is_a_clear_error(relay):
    server, calls = relay
    reply, took = txt2img(server, "garbage")
    assert_a1111_error(reply, 502, "gateway garbage", "not an A1111 response")
    assert calls["garbage"] == 1 and took < 6 + SLACK
    still_serving(server)


def test_502_html_is_retried_then_reported(relay):
    server, calls = relay
    reply, took = txt2img(server, "badgateway")
    assert_a1111_error(reply, 502, "HTTP 502", "502 Bad Gateway", "after 3 attempts")
    assert calls["badgateway"] == 3 and took < 4 + SLACK


def test_connection_refused_is_retried_then_reported(relay):
    server, _ = relay
    reply, took = txt2img(server, "refused")
    assert_a1111_error(reply, 502, "cannot connect", "after 3 attempts")
    assert took < 3 + SLACK
    still_serving(server)


def test_interrupt_cancels_a_relayed_job(relay):
    from backends.job import Job
    from backends.remote.errors import RelayInterrupted

    server, _ = relay
    ticket = server.service.submit(Job(prompt="x", steps=2, width=64, height=64, backend="slow"))
    time.sleep(0.2)
    started = time.monotonic()
    ticket.interrupt()
    with pytest.raises(RelayInterrupted):
        ticket.result(timeout=5)
    assert time.monotonic() - started < 1


def test_errors_come_back_in_each_callers_style(relay):
    server, _ = relay
    v1 = httpx.post(server.url + "/v1/generation/garbage-engine/text-to-image", timeout=30,
                    headers={"Authorization": "Bearer local"},
                    json={"text_prompts": [{"text": "x"}], "steps": 10, "width": 512, "height": 512})
    assert v1.status_code >= 500 and set(v1.json()) == {"id", "name", "message"}
    assert "gateway garbage" in v1.json()["message"]
    ml = httpx.post(server.url + "/api/v6/images/text2img", timeout=30, json={
        "key": "k", "model_id": "garbage-model", "prompt": "x", "width": 256, "height": 256,
        "num_inference_steps": 1})
    assert ml.json()["status"] == "error" and "gateway garbage" in ml.json()["message"], ml.text
    still_serving(server)


# --------------------------------------------------------------------- respx: what a real server cannot do


def client(**kw) -> GatewayClient:
    settings = {"name": "mock", "base_url": "https://gw.test", "path_prefix": "/sd", "styles": ("stability_v1",),
                "auth": "bearer", "key": KEY, "retries": 2, "backoff": 0.01, "deadline": 5, **kw}
    return GatewayClient(GatewayConfig(**settings))


def send(gw: GatewayClient, method: str = "POST", path: str = "/v1/generation/e/text-to-image", **kw):
    async def go():
        try:
            return await gw.request(method, path, deadline=Deadline(gw.gateway.deadline), json={"a": 1}, **kw)
        finally:
            await gw.aclose()

    return asyncio.run(go())


D3_SHAPES = [
    (400, {"id": "e1", "name": "invalid_sdxl_v1_dimensions", "message": "bad size"},
     "stability_v1", "invalid_sdxl_v1_dimensions", "bad size", "e1"),
    (400, {"id": "e2", "name": "bad_request", "errors": ["prompt: is required"]},
     "stability_v2", "bad_request", "prompt: is required", "e2"),
    (401, {"status": "error", "messege": "Invalid API key"}, "modelslab", "error", "Invalid API key", None),
    (403, {"error": {"message": "model not allowed (request id: 2024abc)", "type": "new_api_error", "code": "x"}},
     "openai", "x", "model not allowed", "2024abc"),
    (400, {"code": 4, "description": "prompt rejected", "type": "new_api_error"}, "mj", "4", "prompt rejected", None),
    (400, {"success": False, "message": "quota exhausted"}, "dashboard", None, "quota exhausted", None),
]


@pytest.mark.parametrize("status, body, shape, code, message, request_id", D3_SHAPES)
def test_every_gateway_error_shape_is_normalised(status, body, shape, code, message, request_id):
    with respx.mock(assert_all_called=True) as mock:
        mock.post("https://gw.test/sd/v1/generation/e/text-to-image").respond(status, json=body)
        with pytest.raises(UpstreamError) as e:
            send(client())
        assert mock.calls.call_count == 1  # no retry on 4xx
    err = e.value
    assert (err.http_status, err.shape, err.provider_code, err.request_id, err.retryable) == (
        status, shape, code, request_id, False)
    assert message in err.message and err.gateway == "mock"
    assert err.status == (502 if status in (401, 403) and shape != "stability_v2" else status)


def test_an_echoed_key_is_redacted_and_the_request_carries_the_gateways_key():
    with respx.mock() as mock:
        route = mock.post("https://gw.test/sd/v1/generation/e/text-to-image").respond(
            401, json={"error": {"message": f"invalid token {KEY}", "type": "one_api_error"}})
        with pytest.raises(UpstreamError) as e:
            send(client(), headers={"Authorization": "Bearer caller-key"})
    assert KEY not in str(e.value) and "<redacted>" in str(e.value) and KEY.encode() not in e.value.raw[2]
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"


def test_a_connection_dropped_mid_answer_is_retried_only_when_safe():
    with respx.mock() as mock:
        route = mock.get("https://gw.test/sd/v1/engines/list")
        route.side_effect = [httpx.RemoteProtocolError("peer closed connection"), httpx.Response(200, json=[])]
        answer = asyncio.run(_get_engines())
        assert answer.status_code == 200 and route.call_count == 2  # GET: repeated
        post = mock.post("https://gw.test/sd/v1/generation/e/text-to-image")
        post.side_effect = httpx.RemoteProtocolError("peer closed connection")
        with pytest.raises(UpstreamError, match="connection failed"):
            send(client())
        assert post.call_count == 1  # a generation may have started: not sent again


async def _get_engines():
    gw = client()
    try:
        return await gw.request("GET", "/v1/engines/list", deadline=Deadline(5))
    finally:
        await gw.aclose()


def test_retry_after_past_the_deadline_fails_at_once_and_http_dates_are_read():
    with respx.mock() as mock:
        route = mock.post("https://gw.test/sd/v1/generation/e/text-to-image")
        route.respond(429, json={"id": "r", "name": "rate_limit_exceeded", "message": "slow down"})
        started = time.monotonic()
        with pytest.raises(UpstreamError) as e:
            send(client(deadline=2))  # Stability's documented 60 s time-out: no point waiting
        assert time.monotonic() - started < 1 and route.call_count == 1
        assert e.value.status == 429 and "would pass the deadline" in e.value.message
        when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 1))
        route.side_effect = [httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200, json={})]
        assert send(client()).status_code == 200


def test_a_200_with_an_error_body_is_a_failure():
    with respx.mock() as mock:
        mock.post("https://gw.test/sd/v1/generation/e/text-to-image").respond(
            200, json={"status": "error", "message": "Model not found: x"})
        with pytest.raises(UpstreamError) as e:
            send(client())
    assert e.value.shape == "modelslab" and e.value.status == 502 and "Model not found" in e.value.message
