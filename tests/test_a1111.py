"""The A1111 API end to end: a real server on 127.0.0.1 (uvicorn in a thread, the demo tiny models), driven by
the real `webuiapi` client and by raw httpx. Sizes and steps are small; `steps` is always sent because the
A1111 default is 50."""

from __future__ import annotations

import base64
import datetime
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image, ImageDraw

from live import start_live_server

SIZE = 64
FAST = {"steps": 2, "width": SIZE, "height": SIZE}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("a1111"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url + "/sdapi/v1", timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def txt2img(http, **body) -> tuple[dict, dict]:
    r = http.post("/txt2img", json={**FAST, "sampler_name": "Euler", **body})
    assert r.status_code == 200, r.text
    data = r.json()
    return data, json.loads(data["info"])


def test_info_string_has_every_a1111_key_in_order(http):
    data, info = txt2img(http, prompt="a cat", seed=11)
    assert isinstance(data["info"], str)
    assert list(info) == [
        "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
        "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
        "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
        "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
        "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
        "is_using_inpainting_conditioning", "version",
    ]
    assert info["sd_model_name"] == "tiny-sd1" and len(info["sd_model_hash"]) == 10
    assert info["version"].startswith("sdgate-") and len(info["job_timestamp"]) == 14
    # the echo is the request as parsed, defaults filled, nothing resolved
    params = data["parameters"]
    assert params["sampler_index"] == "Euler" and params["scheduler"] is None and params["styles"] is None
    assert params["steps"] == 2 and params["cfg_scale"] == 7.0 and params["denoising_strength"] is None
    assert data["images"][0] and not data["images"][0].startswith("data:")


# ------------------------------------------------------------------------------------------- webuiapi


def test_webuiapi_txt2img_single(api):
    result = api.txt2img(prompt="a red fox", seed=123, steps=2, width=SIZE, height=96)
    assert len(result.images) == 1 and result.image.size == (SIZE, 96)
    assert result.info["all_seeds"] == [123] and result.info["seed"] == 123
    assert result.info["sampler_name"] == "Euler a"  # webuiapi's default, with scheduler "automatic"
    assert "Schedule type: Automatic" in result.info["infotexts"][0]
    assert result.parameters["seed"] == 123 and result.parameters["sampler_name"] == "Euler a"


def test_webuiapi_batch_size_times_n_iter(api):
    result = api.txt2img(prompt="a red fox", seed=1000, steps=2, width=SIZE, height=SIZE, batch_size=2, n_iter=2)
    assert len(result.images) == 4 and all(im.size == (SIZE, SIZE) for im in result.images)
    assert result.info["all_seeds"] == [1000, 1001, 1002, 1003]
    assert result.info["batch_size"] == 2 and len(result.info["all_prompts"]) == 4
    assert [f"Seed: {s}," in t for s, t in zip(range(1000, 1004), result.info["infotexts"])] == [True] * 4


def test_webuiapi_styles(api):
    result = api.txt2img(prompt="a fox", styles=["anime", "sharp focus"], seed=5, steps=2, width=SIZE, height=SIZE)
    prompt = result.info["prompt"]
    assert prompt.startswith("anime artwork of a fox,") and prompt.endswith(", sharp focus, intricate details, high resolution")
    assert result.info["negative_prompt"].startswith("photo, deformed")
    assert result.info["styles"] == ["anime", "sharp focus"]
    assert result.parameters["prompt"] == "a fox"  # the echo keeps the request's own prompt


def test_webuiapi_prompt_with_emphasis(api):
    weighted = api.txt2img(prompt="a ((red)) (fox:1.5) [snow]", seed=9, steps=2, width=SIZE, height=SIZE)
    plain = api.txt2img(prompt="a red fox snow", seed=9, steps=2, width=SIZE, height=SIZE)
    assert weighted.info["prompt"] == "a ((red)) (fox:1.5) [snow]"
    assert weighted.info["infotexts"][0].startswith("a ((red)) (fox:1.5) [snow]\nSteps: 2")
    assert np.asarray(weighted.image).tobytes() != np.asarray(plain.image).tobytes()


def _picture(size=SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), (30, 90, 200))
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(240, 200, 40))
    return image


def test_webuiapi_img2img(api):
    result = api.img2img(images=[_picture(80)], prompt="a sun", denoising_strength=0.5, seed=77, steps=4,
                         width=SIZE, height=SIZE)
    assert len(result.images) == 1 and result.image.size == (SIZE, SIZE)
    assert result.info["denoising_strength"] == 0.5 and result.info["all_seeds"] == [77]
    assert "Denoising strength: 0.5" in result.info["infotexts"][0]
    assert result.parameters["init_images"] is None  # include_init_images is false


def test_webuiapi_img2img_with_mask_keeps_the_unmasked_area(api):
    size = 128
    picture = _picture(size)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, size // 2 - 1, size), fill=255)  # repaint the left half
    result = api.img2img(images=[picture], mask_image=mask, prompt="grass", denoising_strength=0.9, seed=3,
                         steps=4, width=size, height=size, inpainting_fill=1)
    out = np.asarray(result.image.convert("RGB")).astype(int)
    original = np.asarray(picture).astype(int)
    assert result.image.size == (size, size)
    assert (out[:, size - 20 :] == original[:, size - 20 :]).all()  # far from the mask edge: untouched
    assert np.abs(out[:, :20] - original[:, :20]).mean() > 5  # inside the mask: repainted
    assert "Mask blur: 4" in result.info["infotexts"][0]


def test_webuiapi_extra_single_image(api):
    result = api.extra_single_image(_picture(40), upscaler_1="Lanczos", upscaling_resize=2)
    assert result.image.size == (80, 80) and "Lanczos" in result.info
    result = api.extra_single_image(_picture(40), upscaler_1="Nearest", resize_mode=1, upscaling_resize_w=100,
                                    upscaling_resize_h=60)
    assert result.image.size == (100, 60)


def test_webuiapi_getters(api):
    samplers = api.util_get_sampler_names()
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM"} <= set(samplers)
    assert all(isinstance(v, str) for s in api.get_samplers() for v in s["options"].values())
    assert {"automatic", "karras", "exponential"} <= set(api.util_get_scheduler_names())
    titles = api.util_get_model_names()
    assert any(t.startswith("tiny-sd1") for t in titles) and any(t.startswith("tiny-sdxl") for t in titles)
    options = api.get_options()
    assert options["sd_model_checkpoint"] in titles and api.util_get_current_model() in titles
    assert options["samples_format"] == "png" and options["CLIP_stop_at_last_layers"] == 1
    assert "x/y/z plot" in api.get_scripts()["txt2img"]  # tests/test_a1111_scripts.py covers the scripts
    assert [u["name"] for u in api.get_upscalers()] == ["None", "Lanczos", "Nearest"]
    assert api.get_latent_upscale_modes()[0] == {"name": "Latent"}
    assert any(s["name"] == "cinematic" for s in api.get_prompt_styles())
    for getter in (api.get_sd_vae, api.get_loras, api.get_hypernetworks, api.get_face_restorers,
                   api.get_realesrgan_models, api.get_embeddings, api.get_memory, api.get_cmd_flags):
        assert getter() is not None
    assert api.get_cmd_flags()["api"] is True
    assert api.refresh_checkpoints() is None


def test_webuiapi_set_options_persists(api, server):
    assert api.set_options({"send_seed": False, "jpeg_quality": "90"}) is None
    options = api.get_options()
    assert options["send_seed"] is False and options["jpeg_quality"] == 90
    saved = json.loads((server.outputs / "a1111-options.json").read_text())
    assert saved["send_seed"] is False
    api.set_options({"send_seed": True, "jpeg_quality": 80})


def test_webuiapi_set_model_switches_the_default(api, http):
    sdxl = next(t for t in api.util_get_model_names() if t.startswith("tiny-sdxl"))
    try:
        api.util_set_model(sdxl, find_closest=False)
        assert api.util_get_current_model() == sdxl
        assert txt2img(http, prompt="x", seed=1)[1]["sd_model_name"] == "tiny-sdxl"
    finally:
        api.set_options({"sd_model_checkpoint": "tiny-sd1"})
    assert api.util_get_current_model().startswith("tiny-sd1")


def test_override_kept_when_not_restored_and_send_images_false(http):
    body = {**FAST, "seed": 1, "send_images": False, "override_settings": {"send_seed": False},
            "override_settings_restore_afterwards": False}
    r = http.post("/txt2img", json=body)
    assert r.status_code == 200 and r.json()["images"] == [] and json.loads(r.json()["info"])["all_seeds"] == [1]
    assert float(r.headers["X-Process-Time"]) > 0
    assert http.get("/options").json()["send_seed"] is False
    http.post("/options", json={"send_seed": True})


def test_webuiapi_progress_idle_and_wait_for_ready(api):
    progress = api.get_progress()
    assert progress["progress"] == 0 and progress["eta_relative"] == 0 and progress["state"]["job_count"] == 0
    assert progress["current_image"] is None
    started = time.time()
    api.util_wait_for_ready(check_interval=0.1)
    assert time.time() - started < 1
    assert api.interrupt() == {} and api.skip() is None


# ------------------------------------------------------------------------------------------- raw httpx


def test_png_chunk_equals_infotext_and_seed_is_real(http):
    data, info = txt2img(http, prompt="a house", negative_prompt="fog", seed=-1, batch_size=2)
    assert data["parameters"]["seed"] == -1
    seeds = info["all_seeds"]
    assert seeds[1] == seeds[0] + 1 and 0 <= seeds[0] < 4294967294
    for b64, text, seed in zip(data["images"], info["infotexts"], seeds):
        image = decode(b64)
        assert image.format == "PNG" and image.info["parameters"] == text
        assert f", Seed: {seed}," in text and "\nNegative prompt: fog\n" in text
    png = http.post("/png-info", json={"image": "data:image/png;base64," + data["images"][0]}).json()
    assert png["info"] == info["infotexts"][0]
    assert png["parameters"]["Seed"] == str(seeds[0]) and png["parameters"]["Size-1"] == str(SIZE)


def test_same_seed_same_bytes_random_seed_differs(http):
    first, _ = txt2img(http, prompt="a boat", seed=4242)
    again, _ = txt2img(http, prompt="a boat", seed=4242)
    assert base64.b64decode(first["images"][0]) == base64.b64decode(again["images"][0])
    seeds = {txt2img(http, prompt="a boat", seed=-1)[1]["seed"] for _ in range(3)}
    assert len(seeds) == 3


def test_override_checkpoint_applies_to_one_request(http):
    _, info = txt2img(http, prompt="x", seed=1, override_settings={"sd_model_checkpoint": "tiny-sdxl"})
    assert info["sd_model_name"] == "tiny-sdxl" and "Model: tiny-sdxl" in info["infotexts"][0]
    _, after = txt2img(http, prompt="x", seed=1)
    assert after["sd_model_name"] == "tiny-sd1"
    assert http.get("/options").json()["sd_model_checkpoint"].startswith("tiny-sd1")


def test_override_settings_clip_skip_and_format(http):
    data, info = txt2img(http, prompt="x", seed=2, override_settings={
        "CLIP_stop_at_last_layers": 2, "samples_format": "jpg", "sd_vae": "Automatic"})
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    image = decode(data["images"][0])
    assert image.format == "JPEG"
    assert http.post("/png-info", json={"image": data["images"][0]}).json()["info"] == info["infotexts"][0]
    options = http.get("/options").json()  # restored afterwards
    assert options["CLIP_stop_at_last_layers"] == 1 and options["samples_format"] == "png"


def test_validation_errors_and_unknown_keys(http):
    r = http.post("/txt2img", json={"steps": "many"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "steps"]
    assert http.post("/txt2img", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    data, _ = txt2img(http, prompt="x", seed=1, steps="2", no_such_field={"a": 1}, hr_whatever=3)
    assert len(data["images"]) == 1 and "no_such_field" not in data["parameters"]


@pytest.mark.parametrize(
    "path, body, status, detail",
    [
        ("/txt2img", {**FAST, "sampler_name": "Euler z"}, 400, "unknown sampler"),
        ("/txt2img", {**FAST, "override_settings": {"sd_model_checkpoint": "nope"}}, 404, "not found"),
        ("/txt2img", {**FAST, "width": 4096}, 400, "width"),
        ("/txt2img", {**FAST, "script_name": "no such script"}, 422, "Script 'no such script' not found"),
        ("/img2img", {**FAST}, 404, "Init image not found"),
        ("/img2img", {**FAST, "init_images": ["bm90IGFuIGltYWdl"]}, 400, "init_images[0]"),
        ("/options", {"no_such_option": 1}, 400, "unknown option"),
        ("/options", {"sd_model_checkpoint": "nope"}, 404, "not found"),
        ("/extra-single-image", {"image": "", "upscaler_1": "Lanczos"}, 400, "image"),
        ("/extra-single-image", {"image": "x", "upscaler_1": "ESRGAN_4x"}, 400, "could not find upscaler"),
    ],
)
def test_errors_have_a1111_shape(http, path, body, status, detail):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    data = r.json()
    assert set(data) == {"error", "detail", "body", "errors"} and detail in data["detail"]
    assert "Traceback" not in r.text


def test_defaults_and_request_infotext(http):
    r = http.post("/txt2img", json={"width": SIZE, "height": SIZE, "steps": 2, "seed": 4})
    assert json.loads(r.json()["info"])["sampler_name"] == "Euler"  # sampler_index's default
    text = ("a dog\nNegative prompt: cat\n"
            "Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 99, Size: 64x64")
    r = http.post("/txt2img", json={"infotext": text, "steps": 2})  # an explicit null would count as set
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["cfg_scale"]) == ("a dog", "cat", 99, 5.0)
    assert info["steps"] == 2 and info["sampler_name"] == "DPM++ 2M"  # fields the request set win
    assert "Schedule type: Karras" in info["infotexts"][0]


def test_img2img_spreads_init_images_over_the_batch(http, api):
    images = [api_b64(_picture(SIZE)), api_b64(_picture(SIZE).transpose(Image.Transpose.FLIP_TOP_BOTTOM))]
    r = http.post("/img2img", json={**FAST, "init_images": images, "batch_size": 2, "seed": 50,
                                    "denoising_strength": 0.5, "resize_mode": 1, "include_init_images": True})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["all_seeds"] == [50, 51] and len(r.json()["images"]) == 2
    assert r.json()["parameters"]["init_images"] == images
    batch = api.extra_batch_images([_picture(20), _picture(30)], upscaler_1="Lanczos", upscaling_resize=2)
    assert [im.size for im in batch.images] == [(40, 40), (60, 60)]


def api_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_save_images_writes_numbered_files_with_infotext(http, server):
    data, info = txt2img(http, prompt="saved", seed=321, batch_size=2, save_images=True)
    folder = server.outputs / "txt2img-images" / datetime.date.today().isoformat()
    names = sorted(p.name for p in folder.iterdir())
    assert names[-2:] == [f"{names[-2][:5]}-321.png", f"{int(names[-2][:5]) + 1:05d}-322.png"]
    # A1111 returns the grid first when images are saved; infotexts follow the returned images
    assert len(data["images"]) == 3 and info["index_of_first_image"] == 1 and len(info["infotexts"]) == 3
    assert Image.open(folder / names[-1]).info["parameters"] == info["infotexts"][2]
    assert info["all_seeds"] == [321, 322]
    assert decode(data["images"][0]).size == (2 * SIZE, SIZE)
    assert not any(p.name.startswith(".tmp") for p in folder.iterdir())


def test_hires_fix_returns_the_upscaled_size(http):
    data, info = txt2img(http, prompt="x", seed=8, enable_hr=True, hr_scale=2, hr_upscaler="Latent",
                         hr_second_pass_steps=2, denoising_strength=0.5)
    assert decode(data["images"][0]).size == (2 * SIZE, 2 * SIZE)
    assert (info["width"], info["height"]) == (SIZE, SIZE) and info["denoising_strength"] == 0.5
    assert "Hires upscale: 2.0, Hires steps: 2, Hires upscaler: Latent" in info["infotexts"][0]


def test_gateway_prefix_and_model_field(server):
    body = {"model": "tiny-sdxl", "sampler_name": "DPM++ 2M SDE Karras", "prompt": "p", "negative_prompt": "n",
            "steps": 2, "cfg_scale": 7, "width": SIZE, "height": SIZE}
    r = httpx.post(server.url + "/v1/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sd_model_name"] == "tiny-sdxl" and "model" not in r.json()["parameters"]
    assert info["sampler_name"] == "DPM++ 2M SDE" and "Schedule type: Karras" in info["infotexts"][0]


def test_progress_and_interrupt_while_another_client_waits(server, http, api, monkeypatch):
    results = []
    run_async = server.service.run_async

    async def recording_run(job):
        result = await run_async(job)
        results.append(result)
        return result

    monkeypatch.setattr(server.service, "run_async", recording_run)
    long_body = {"prompt": "long", "seed": 1, "steps": 150, "width": 256, "height": 256, "sampler_name": "Euler",
                 "override_settings": {"show_progress_every_n_steps": 1}}
    responses: dict[str, httpx.Response] = {}

    def post(name, body):
        with httpx.Client(timeout=300) as client:
            responses[name] = client.post(server.url + "/sdapi/v1/txt2img", json=body)

    long_run = threading.Thread(target=post, args=("long", long_body))
    long_run.start()
    deadline = time.time() + 60
    seen = None
    while time.time() < deadline:
        p = http.get("/progress").json()
        if p["state"]["sampling_step"] >= 2 and p["current_image"]:
            seen = p
            break
        time.sleep(0.01)
    assert seen is not None, "no progress with a preview was reported"
    waiting = threading.Thread(target=post, args=("short", {**FAST, "prompt": "short", "seed": 2}))
    waiting.start()
    while not server.service.queue.pending() and time.time() < deadline:
        time.sleep(0.01)
    assert server.service.queue.pending(), "the second request never queued"

    assert seen["state"]["sampling_steps"] == 150 and seen["state"]["job"] == "scripts_txt2img"
    assert seen["state"]["job_count"] == 1 and 0 < seen["progress"] < 1 and seen["eta_relative"] > 0
    preview = decode(seen["current_image"])
    assert preview.format == "PNG" and preview.size == (32, 32)
    now = http.get("/progress", params={"skip_current_image": True}).json()
    assert now["current_image"] is None and 2 <= now["state"]["sampling_step"] < 150

    assert api.interrupt() == {}
    long_run.join(60)
    waiting.join(60)
    long = responses["long"]
    assert long.status_code == 200, long.text
    assert len(long.json()["images"]) == 1 and decode(long.json()["images"][0]).size == (256, 256)
    assert json.loads(long.json()["info"])["all_seeds"] == [1]
    interrupted = next(r for r in results if r.job.prompt == "long")
    assert interrupted.interrupted and len(interrupted.images) == 1
    short = responses["short"]  # the interrupt stopped only the running job
    assert short.status_code == 200 and len(short.json()["images"]) == 1
    assert not next(r for r in results if r.job.prompt == "short").interrupted
    api.util_wait_for_ready(check_interval=0.05)


# ------------------------------------------------------------------------------------------------- auth


def test_api_auth_and_gateway_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGATE_GATEWAY_KEYS", "key-one, key-two")
    srv = start_live_server(tmp_path, api_auth=[("alice", "s3cret")])
    try:
        base = srv.url + "/sdapi/v1"
        r = httpx.get(base + "/options")
        assert r.status_code == 401
        assert r.json() == {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""}
        assert httpx.get(base + "/options", auth=("alice", "wrong")).status_code == 401
        assert httpx.post(base + "/txt2img", json=FAST).status_code == 401
        ok = httpx.get(base + "/options", auth=("alice", "s3cret"))
        assert ok.status_code == 200 and "s3cret" not in ok.text
        flags = httpx.get(base + "/cmd-flags", auth=("alice", "s3cret")).json()
        assert flags["api_auth"] == "<redacted>"
        client = webuiapi.WebUIApi(host="127.0.0.1", port=srv.port, username="alice", password="s3cret")
        assert client.get_progress()["state"]["job_count"] == 0

        gateway = srv.url + "/v1/sdapi/v1"
        assert httpx.get(gateway + "/sd-models").status_code == 401
        assert httpx.get(gateway + "/sd-models", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = httpx.get(gateway + "/sd-models", headers={"Authorization": "Bearer key-two"})
        assert r.status_code == 200 and r.json()
        assert "/sdapi/v1/txt2img" in httpx.get(srv.url + "/openapi.json").json()["paths"]
    finally:
        srv.stop()
