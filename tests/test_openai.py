"""The OpenAI Images routes against a real server on loopback, driven by the official `openai` package (what
LiteLLM, chat front-ends and scripts use): generate (both response formats, n images with seeds s, s+1, the same
seed giving the same bytes), edit with a mask, variations, the model list, and the SDK's error classes raised
from our errors (docs/reference/openai_images.md §4, §8)."""

from __future__ import annotations

import base64
import io
import re
import time

import httpx
import openai
import pytest
from PIL import Image

from backends.job import Job
from live import start_live_server
from parity import counting

KEY = "sk-test-0123456789abcdef"
SEED_RE = re.compile(r"\bSeed: (\d+)")
FAST = {"quality": {"auto": 3, "low": 2, "hd": 4}}  # steps per quality: tiny models, quick tests


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("openai"), raw={"keys": {"openai": [KEY]}, "openai": FAST})
    yield srv
    srv.stop()


@pytest.fixture()
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


def image_of(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def seed_of(image: Image.Image) -> int:
    return int(SEED_RE.search(image.info["parameters"]).group(1))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_b64_two_images_take_consecutive_seeds(client):
    reply = client.images.generate(prompt="a lighthouse", model="dall-e-2", size="64x96", n=2,
                                   response_format="b64_json", extra_body={"seed": 1234})
    assert isinstance(reply.created, int) and len(reply.data) == 2
    images = [image_of(base64.b64decode(item.b64_json)) for item in reply.data]
    assert [image.format for image in images] == ["PNG", "PNG"]
    assert [image.size for image in images] == [(64, 96), (64, 96)] and reply.size == "64x96"
    assert [seed_of(image) for image in images] == [1234, 1235]
    assert all(item.url is None for item in reply.data)
    info = images[0].info["parameters"]
    assert info.startswith("a lighthouse\n") and "Model: tiny-sd1" in info and "OpenAI model: dall-e-2" in info
    assert reply.usage is not None and reply.usage.total_tokens == 0


def test_generate_url_answer_is_a_file_we_serve(client, server):
    reply = client.images.generate(prompt="a fox", model="dall-e-3", size="72x64", response_format="url",
                                   extra_body={"seed": 9})
    (item,) = reply.data
    assert item.b64_json is None and item.url.startswith(server.url + "/generations/openai/")
    assert item.revised_prompt == "a fox"
    fetched = httpx.get(item.url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    image = image_of(fetched.content)
    assert image.size == (72, 64) and seed_of(image) == 9 and "Model: tiny-sdxl" in image.info["parameters"]
    assert httpx.get(server.url + "/generations/openai/" + "0" * 32 + "-0.png").status_code == 404


def test_same_seed_same_bytes_and_sizes_round_to_the_grid(client):
    def once():
        reply = client.images.generate(prompt="a boat", size="70x77", response_format="b64_json",
                                       extra_body={"seed": 77})
        return reply, base64.b64decode(reply.data[0].b64_json)

    (first, a), (_, b) = once(), once()
    assert a == b
    assert first.size == "72x80" and image_of(a).size == (72, 80)  # rounded to multiples of 8, and said


def test_quality_style_and_jpeg_output(client):
    reply = client.images.generate(prompt="a tree", size="64x64", quality="hd", style="vivid", output_format="jpeg",
                                   output_compression=80, extra_body={"seed": 3})
    data = base64.b64decode(reply.data[0].b64_json)
    assert data[:3] == b"\xff\xd8\xff" and reply.output_format == "jpeg" and reply.quality == "hd"
    # style vivid runs styles.json's "enhance" template: the prompt run is the answer's revised_prompt
    assert reply.data[0].revised_prompt.startswith("breathtaking a tree")


def test_edit_with_a_mask(client, server, monkeypatch):
    jobs = counting(monkeypatch, server.service.queue, "submit")
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent = repaint
    reply = client.images.edit(image=("in.png", png(source), "image/png"), mask=("mask.png", png(mask), "image/png"),
                               prompt="a blue square", n=1, size="64x64", response_format="b64_json",
                               extra_body={"seed": 5})
    image = image_of(base64.b64decode(reply.data[0].b64_json))
    assert image.size == (64, 64) and seed_of(image) == 5
    assert "OpenAI operation: edits" in image.info["parameters"]
    (job,) = [args[0] for args in jobs]
    assert job.init_image.size == (64, 64) and job.mask is not None
    assert job.mask.getpixel((32, 32)) == 255 and job.mask.getpixel((2, 2)) == 0  # ours: white = repaint


def test_edit_accepts_image_list_and_rejects_a_mismatched_mask(client):
    source = png(Image.new("RGB", (64, 64), (10, 120, 10)))
    reply = client.images.edit(image=[("a.png", source, "image/png"), ("b.png", source, "image/png")],
                               prompt="moss", size="64x64", extra_body={"seed": 1})
    assert len(reply.data) == 1 and reply.data[0].b64_json
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("a.png", source, "image/png"), prompt="moss",
                           mask=("m.png", png(Image.new("RGBA", (32, 32))), "image/png"))
    assert caught.value.body["param"] == "mask"


def test_create_variation(client):
    source = png(Image.new("RGB", (64, 64), (30, 30, 200)))
    reply = client.images.create_variation(image=("in.png", source, "image/png"), n=2, size="64x64",
                                           response_format="b64_json", extra_body={"seed": 40})
    images = [image_of(base64.b64decode(item.b64_json)) for item in reply.data]
    assert [seed_of(image) for image in images] == [40, 41] and images[0].size == (64, 64)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list().data]
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "tiny-sd1"} <= set(ids)
    assert client.models.retrieve("dall-e-3").owned_by == "sdgate"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


# ------------------------------------------------------------------------------------------- errors


def test_bad_size_is_a_bad_request_naming_size(client):
    for size in ("huge", "8x8", "99999x64"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(prompt="x", size=size)
        assert caught.value.body["param"] == "size" and caught.value.body["code"] == "invalid_size"
        assert caught.value.request_id


def test_bad_fields_are_400_with_param_never_422(client, server):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="x", n=11)
    assert caught.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="x", quality="ultra")
    assert caught.value.body["param"] == "quality" and caught.value.body["code"] == "invalid_value"
    r = httpx.post(server.url + "/v1/images/generations", json={"n": 1}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.json()["error"]["code"] == "missing_required_parameter"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="x", model="no-such-model")


def test_wrong_key_is_an_authentication_error(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.images.generate(prompt="x", size="64x64")
    assert caught.value.body["code"] == "invalid_api_key"
    r = httpx.post(server.url + "/v1/images/generations", json={"prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_routes_answer_without_v1_too(server):
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as c:
        reply = c.images.generate(prompt="x", size="64x64", extra_body={"seed": 2})
    assert len(reply.data) == 1


def test_a_full_queue_is_a_rate_limit_error(tmp_path):
    """The queue holds one job and a long one occupies the worker: the next request gets 429 with Retry-After."""
    srv = start_live_server(tmp_path, max_pending=1, raw={"openai": FAST})
    try:
        queue = srv.service.queue
        # a long job occupies the worker (released by interrupting it)
        running = srv.service.submit(Job(prompt="long", width=512, height=512, steps=150, seed=1))
        deadline = time.time() + 30
        while queue.current is None:  # the worker has taken it: the queue's one place is free again
            assert time.time() < deadline
            time.sleep(0.01)
        waiting = srv.service.submit(Job(prompt="next", width=64, height=64, steps=2, seed=2))
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="any", max_retries=0) as c:
            with pytest.raises(openai.RateLimitError) as caught:
                c.images.generate(prompt="x", size="64x64")
        assert caught.value.body["code"] == "rate_limit_exceeded"
        assert 0 < int(caught.value.response.headers["retry-after"]) <= 120
        running.interrupt()
        running.result(60), waiting.result(60)
    finally:
        srv.stop()
