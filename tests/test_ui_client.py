"""The web UI through `gradio_client`: each tab's generate endpoint called by name against a real server (the
demo tiny models), returning images of the asked size with the infotext and the real seed. Sizes are tiny and
steps few."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from backends.dialects import stability_v2 as v2
from live import start_live_server
from webui.tabs.common import REQUEST_CHUNK

SEED_RE = re.compile(r"Seed: (\d+)")


# v2beta sizes come from aspect ratios (1-1.5 MP); scaled down so the tiny demo models answer in a second.
V2_SETTINGS = {"stability_v2": {"size_scale": 0.125, "steps": 4, "turbo_steps": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("ui_client"), raw=V2_SETTINGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    c = Client(server.url, verbose=False)
    yield c
    c.close()


def gallery_paths(value) -> list[str]:
    return [item["image"] if isinstance(item, dict) else item for item in value]


def seed_of(infotext: str) -> int:
    m = SEED_RE.search(infotext)
    assert m, infotext
    return int(m.group(1))


def test_every_tab_has_a_named_endpoint(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/a1111_txt2img", "/a1111_img2img", "/stability_v1", "/stability_v2beta", "/modelslab",
                 "/png_info"):
        assert name in named, sorted(named)
    params = [p["parameter_name"] for p in named["/a1111_txt2img"]["parameters"]]
    # keyword inputs: callers use the A1111 request's own field names
    for field in ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "width", "height",
                  "seed", "n_iter", "batch_size", "enable_hr", "styles", "model", "backend"):
        assert field in params


def test_a1111_txt2img(client, server):
    progress, gallery, info, files = client.predict(
        prompt="a lighthouse", negative_prompt="fog", steps=2, width=64, height=96, seed=-1,
        api_name="/a1111_txt2img")
    paths = gallery_paths(gallery)
    assert len(paths) == 1 and "1 image" in progress
    seed = seed_of(info)
    assert info.startswith("a lighthouse\nNegative prompt: fog\nSteps: 2, ")
    with Image.open(paths[0]) as image:
        assert image.size == (64, 96)
        assert image.format == "PNG" and image.info["parameters"] == info  # the infotext survives the UI
    with Image.open(files[0]) as download:
        assert download.info["parameters"] == info
    # saved like A1111's UI saves: outputs/txt2img-images/<date>/NNNNN-<seed>.png
    saved = list((server.outputs / "txt2img-images").glob(f"*/*-{seed}.png"))
    assert len(saved) == 1


def test_a1111_txt2img_batch_and_fixed_seed(client):
    _, gallery, info, files = client.predict(
        prompt="two", steps=1, width=64, height=64, seed=1234, batch_size=2, api_name="/a1111_txt2img")
    assert len(gallery_paths(gallery)) == 3  # the grid first, then both images, as A1111 returns them
    assert seed_of(info) == 1234
    assert [Path(f).name.split("-", 1)[1] for f in files] == ["1234.png", "1235.png"]


def test_a1111_img2img(client, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (80, 80), (200, 40, 40)).save(init)
    _, gallery, info, _ = client.predict(
        init_images=handle_file(str(init)), prompt="red", steps=2, width=64, height=64, denoising_strength=0.5,
        api_name="/a1111_img2img")
    with Image.open(gallery_paths(gallery)[0]) as image:
        assert image.size == (64, 64)
    assert "Denoising strength: 0.5" in info and seed_of(info) > 0


def stored_request(path: str) -> dict:
    with Image.open(path) as image:
        return json.loads(image.info[REQUEST_CHUNK])


def test_stability_v1(client, server):
    _, gallery, info, files = client.predict(
        prompt_1="a harbour", weight_1=1.2, prompt_2="people", weight_2=-1, engine_id="stable-diffusion-v1-6",
        width=320, height=384, steps=10, samples=2, seed=99, sampler="K_EULER", style_preset="(none)",
        api_name="/stability_v1")
    paths = gallery_paths(gallery)
    assert len(paths) == 2
    for path, seed in zip(paths, (99, 100)):
        with Image.open(path) as image:
            assert image.size == (320, 384) and seed_of(image.info["parameters"]) == seed
    assert info.startswith("(a harbour:1.2)\nNegative prompt: people\nSteps: 10, ")
    assert "Stability engine: stable-diffusion-v1-6" in info and seed_of(info) == 99
    # saved for History with the tab's fields, so "send to tab" can restore every one of them
    saved = sorted((server.outputs / "stability_v1-images").glob("*/*.png"))
    assert [p.name.split("-", 1)[1] for p in saved[-2:]] == ["99.png", "100.png"]
    request = stored_request(saved[-1])
    assert request["tab"] == "stability_v1" and request["fields"]["sampler"] == "K_EULER"


def test_stability_v1_size_rule_is_the_dialects(client):
    with pytest.raises(AppError) as caught:
        client.predict(prompt_1="x", engine_id="stable-diffusion-xl-1024-v1-0", width=512, height=512, steps=10,
                       api_name="/stability_v1")
    assert "allowed dimensions are 1024x1024, 1152x896" in str(caught.value)


@pytest.mark.parametrize("endpoint, extra", [("core", {}), ("sd3", {"model": "sd3.5-large-turbo", "cfg_scale": 3})])
def test_stability_v2beta(client, endpoint, extra):
    _, gallery, info, _ = client.predict(prompt="a desert", negative_prompt="water", endpoint=endpoint,
                                         aspect_ratio="16:9", seed=5, api_name="/stability_v2beta", **extra)
    (path,) = gallery_paths(gallery)
    with Image.open(path) as image:
        assert image.size == v2.output_size(endpoint, "16:9", "sdxl", V2_SETTINGS["stability_v2"]["size_scale"])
    assert info.startswith("a desert\nNegative prompt: water\n") and seed_of(info) == 5
    assert f"Stability endpoint: {endpoint}" in info
    if extra:
        assert "CFG scale: 3.0" in info and "Steps: 2," in info


def test_modelslab(client, server):
    progress, gallery, info, _ = client.predict(
        model_id="tiny-sd1", prompt="a forest", negative_prompt="city", width=256, height=320, samples=2,
        num_inference_steps=3, guidance_scale=6, scheduler="EulerDiscreteScheduler", seed=11, clip_skip=1,
        tomesd=False, safety_checker=False, enhance_prompt=False, api_name="/modelslab")
    paths = gallery_paths(gallery)
    assert len(paths) == 2
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (256, 320)
    assert info.startswith("a forest\nNegative prompt: city\nSteps: 3, Sampler: EulerDiscreteScheduler")
    assert seed_of(info) == 11 and "not applied" not in progress
    progress, gallery, info, _ = client.predict(
        model_id="tiny-sd1", prompt="x", width=256, height=256, num_inference_steps=1, tomesd=True,
        upscale="yes", panorama=True, safety_checker=False, enhance_prompt=True, api_name="/modelslab")
    with Image.open(gallery_paths(gallery)[0]) as image:
        assert image.size == (2048, 512)  # panorama: 4 × the height, then the 2× second pass
    assert "ToMe ratio: 0.5" in info and "Hires upscaler: Latent" in info
    assert "prompt used: x, " in progress and "not applied" not in progress  # the enhanced prompt is shown
    with pytest.raises(AppError) as caught:  # the dialect's own check, in ModelsLab's words
        client.predict(model_id="", prompt=" ", api_name="/modelslab")
    assert "prompt is required" in str(caught.value) and "model_id is required" in str(caught.value)


def test_errors_are_readable_messages(client):
    # refused by the dialect before queueing: the hires pass would be 8192 px wide
    with pytest.raises(AppError) as caught:
        client.predict(prompt="x", steps=1, width=2048, height=64, enable_hr=True, hr_scale=4,
                       api_name="/a1111_txt2img")
    message = str(caught.value)
    assert "8192" in message and "Traceback" not in message
    with pytest.raises(AppError) as caught:
        client.predict(prompt="x", steps=1, api_name="/a1111_img2img")
    assert "img2img needs an image" in str(caught.value)


def test_png_info_reads_the_infotext(client, server):
    _, gallery, info, _ = client.predict(prompt="read me back", steps=1, width=64, height=64,
                                         api_name="/a1111_txt2img")
    text, parsed, _ = client.predict(handle_file(gallery_paths(gallery)[0]), api_name="/png_info")
    assert text == info
    assert parsed["Prompt"] == "read me back" and parsed["Seed"] == str(seed_of(info))


def test_queue_position_and_a_closed_request_stops_its_own_job(server):
    """A second caller sees its place in the queue; cancelling the first caller's event (a closed page)
    interrupts that caller's job only."""
    first, second = Client(server.url, verbose=False), Client(server.url, verbose=False)
    long_job = first.submit(prompt="long", steps=150, width=128, height=128, api_name="/a1111_txt2img")
    queue = server.service.queue
    deadline = time.time() + 30
    while queue.current is None or queue.current.progress.step < 1:
        assert time.time() < deadline, "the first job did not start"
        time.sleep(0.05)
    running = queue.current
    short_job = second.submit(prompt="short", steps=2, width=64, height=64, api_name="/a1111_txt2img")
    deadline = time.time() + 30
    while not any("Waiting in the queue: 1 job ahead" in out[0] for out in short_job.outputs()):
        assert time.time() < deadline and not short_job.done(), short_job.outputs()
        time.sleep(0.1)
    long_job.cancel()
    deadline = time.time() + 30
    while not running.done():
        assert time.time() < deadline, "the cancelled job kept running"
        time.sleep(0.05)
    assert running.interrupted and running.progress.step < 150
    progress, gallery, info, _ = short_job.result(timeout=60)
    assert "interrupted" not in progress and "Steps: 2" in info
    first.close()
    second.close()
