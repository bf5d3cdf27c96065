"""The relay and the OpenAI Images style, both ways, end to end: a second instance of this server (--demo) is the
upstream gateway, on loopback.

- an A1111 txt2img routed to an `openai`-style gateway is translated into an Images call and comes back as a valid
  A1111 answer (seeds read back from the upstream's infotext, the fields OpenAI cannot carry said);
- an OpenAI request routed to an A1111-style gateway is translated the other way and comes back as a valid Images
  answer with the same image a direct local call makes for the same seed;
- an OpenAI request routed to an `openai` gateway is forwarded as it is (the caller's key replaced by the
  gateway's), errors in OpenAI's shape included.
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image

from live import start_live_server

GW_KEY = "gw-openai-secret-0123456789"
CALLER_KEY = "caller-openai-secret-9876543210"
FAST = {"quality": {"auto": 3}}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("relay_openai")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDGATE_TEST_OPENAI_GW_KEY", GW_KEY)
        upstream = start_live_server(tmp / "upstream", raw={"keys": {"openai": [GW_KEY]}, "openai": FAST})
        fast = {"retries": 1, "backoff": 0.05, "deadline": 60, "base_url": upstream.url}
        gateways = [
            {"name": "gw-openai", "styles": ["openai"], "key_env": "SDGATE_TEST_OPENAI_GW_KEY", **fast},
            {"name": "gw-a1111", "styles": ["a1111"], "auth": "none", **fast},
        ]
        keys = {"openai": [CALLER_KEY]}
        cross = start_live_server(tmp / "cross", raw={"keys": keys, "gateways": gateways, "openai": FAST,
                                                      "routing": {"a1111": "gw-openai", "openai": "gw-a1111"}})
        same = start_live_server(tmp / "same", raw={"keys": keys, "gateways": gateways, "openai": FAST,
                                                    "routing": {"openai": "gw-openai"}})
        try:
            yield upstream, cross, same
        finally:
            for srv in (same, cross, upstream):
                srv.stop()


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def pixels(b64: str) -> bytes:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.convert("RGB").tobytes()


def test_a1111_txt2img_through_an_openai_gateway(servers):
    _, cross, _ = servers
    body = {"prompt": "a castle", "negative_prompt": "fog", "seed": 42, "steps": 2, "width": 64, "height": 96,
            "batch_size": 2}
    reply = httpx.post(cross.url + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-sdgate-backend"] == "gw-openai"
    dropped = reply.headers["x-sdgate-dropped-fields"].split(", ")
    assert {"negative_prompt", "steps"} <= set(dropped)
    data = reply.json()
    assert set(data) == {"images", "parameters", "info"}
    info = json.loads(data["info"])
    assert info["all_seeds"] == [42, 43] and info["seed"] == 42
    for b64 in data["images"]:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
            assert image.format == "PNG" and image.size == (64, 96)


def test_openai_request_through_an_a1111_gateway_is_the_local_image(servers):
    upstream, cross, _ = servers
    args = {"prompt": "a lighthouse", "model": "dall-e-2", "size": "64x64", "n": 2, "response_format": "b64_json",
            "extra_body": {"seed": 1234}}
    with sdk(cross.url, CALLER_KEY) as c:
        raw = c.images.with_raw_response.generate(**args)
    relayed = raw.parse()
    assert raw.headers["x-sdgate-backend"] == "gw-a1111"
    with sdk(upstream.url, GW_KEY) as c:
        direct = c.images.generate(**args)
    assert len(relayed.data) == 2 and relayed.size == "64x64"
    assert [pixels(d.b64_json) for d in relayed.data] == [pixels(d.b64_json) for d in direct.data]
    with Image.open(io.BytesIO(base64.b64decode(relayed.data[1].b64_json))) as image:
        assert "Seed: 1235" in image.info["parameters"]


def test_openai_request_forwarded_to_an_openai_gateway(servers):
    upstream, _, same = servers
    args = {"prompt": "a boat", "size": "64x64", "response_format": "b64_json", "extra_body": {"seed": 11}}
    with sdk(same.url, CALLER_KEY) as c:
        raw = c.images.with_raw_response.generate(**args)
        assert raw.headers["x-sdgate-backend"] == "gw-openai"
        relayed = raw.parse()
        with pytest.raises(openai.BadRequestError) as caught:  # the upstream's own error, as it is
            c.images.generate(prompt="x", size="huge")
        assert caught.value.body["param"] == "size"
        assert [m.id for m in c.models.list().data][:2] == ["dall-e-2", "dall-e-3"]
    with sdk(upstream.url, GW_KEY) as c:
        direct = c.images.generate(**args)
    assert pixels(relayed.data[0].b64_json) == pixels(direct.data[0].b64_json)
    with sdk(same.url, "sk-wrong") as c, pytest.raises(openai.AuthenticationError):
        c.images.generate(**args)
