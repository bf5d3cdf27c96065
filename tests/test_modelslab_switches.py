"""ModelsLab's switches for real (issue 11), end to end: a real server on 127.0.0.1 whose models folder holds a VAE,
embeddings, a tiny safety checker that flags everything and a tiny translator, all built offline and loaded through
the real loading code; raw httpx as ModelsLab scripts send. Each switch changes the image (or the prompt) the
documented way, and the plain request after it is byte-identical to the one before it."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from backends.config import Features
from live import start_live_server
from tiny_safety import write_tiny_checker
from tiny_translator import write_tiny_translator
from tiny_vae_embeddings import write_embeddings, write_vaes

PLAIN = {"model_id": "tiny-sd1", "prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "width": 256,
         "height": 256, "num_inference_steps": 2, "seed": 77, "scheduler": "EulerDiscreteScheduler",
         "tomesd": "no", "enhance_prompt": "no", "safety_checker": "no", "base64": "yes"}
PATH = "/api/v6/images/text2img"

# The seed document's example request, as written there (docs/reference/seeds/004_*.txt), model id and all.
SEED_EXAMPLE = {
    "key": "enterprise_api_key",
    "model_id": "model_id",
    "prompt": "ultra realistic close up portrait ((beautiful pale cyberpunk female with heavy black eyeliner)), "
              "blue eyes, shaved side haircut, hyper detail, cinematic lighting, magic neon, dark red city, Canon "
              "EOS R3, nikon, f/1.4, ISO 200, 1/160s, 8K, RAW, unedited, symmetrical balance, in-frame, 8K",
    "negative_prompt": "painting, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, deformed, ugly, "
                       "blurry, bad anatomy, bad proportions, extra limbs, cloned face, skinny, glitchy, double "
                       "torso, extra arms, extra hands, mangled fingers, missing lips, ugly face, distorted face, "
                       "extra legs, anime",
    "width": "512",
    "height": "512",
    "samples": "1",
    "num_inference_steps": "20",
    "safety_checker": "no",
    "enhance_prompt": "yes",
    "seed": None,
    "guidance_scale": 7.5,
    "multi_lingual": "no",
    "panorama": "no",
    "self_attention": "no",
    "upscale": "no",
    "embeddings_model": None,
    "lora_model": None,
    "clip_skip": "2",
    "tomesd": "yes",
    "use_karras_sigmas": "yes",
    "vae": None,
    "lora_strength": None,
    "scheduler": "UniPCMultistepScheduler",
    "webhook": None,
    "track_id": None,
}


def models_with_extras(root: Path, tiny_models_dir: Path) -> Path:
    """The tiny checkpoints (linked) plus a VAE, embeddings, a safety checker and a translator of their own."""
    models = root / "models"
    models.mkdir()
    (models / "Stable-diffusion").symlink_to(tiny_models_dir / "Stable-diffusion", target_is_directory=True)
    write_vaes(models)
    write_embeddings(models)
    write_tiny_checker(models / "safety-checker")  # found by its default place: no config needed
    write_tiny_translator(models / "translator")
    return models


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models_dir):
    root = tmp_path_factory.mktemp("ml-switches")
    srv = start_live_server(root, models_dir=models_with_extras(root, tiny_models_dir), threads=1,
                            raw={"modelslab": {"sync_wait": 120}})
    srv.http = httpx.Client(base_url=srv.url, timeout=300)
    yield srv
    srv.http.close()
    srv.stop()


@pytest.fixture(scope="module")
def bare(tmp_path_factory, tiny_models_dir):
    """No safety checker, no translator."""
    root = tmp_path_factory.mktemp("ml-bare")
    srv = start_live_server(root, models_dir=tiny_models_dir, threads=1, features=Features(),
                            raw={"modelslab": {"sync_wait": 120}})
    srv.http = httpx.Client(base_url=srv.url, timeout=300)
    yield srv
    srv.http.close()
    srv.stop()


def generate(srv, status: int = 200, **changes) -> dict:
    r = srv.http.post(PATH, json={**PLAIN, **changes})
    assert r.status_code == status, r.text
    data = r.json()
    if status == 200:
        assert data["status"] == "success", data
    return data


def image(data: dict, i: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data["output"][i])))


def raw(data: dict, i: int = 0) -> bytes:
    return base64.b64decode(data["output"][i])


def pixels(png: bytes) -> bytes:
    """The decoded pixels (a PNG's bytes also hold its infotext, which names the switches)."""
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


@pytest.fixture(scope="module")
def plain(server) -> bytes:
    return raw(generate(server))


def assert_plain_unchanged(server, plain: bytes) -> None:
    assert raw(generate(server)) == plain  # the switch left nothing behind


def test_the_seed_documents_example_runs_with_every_switch_it_sets(server):
    r = server.http.post("/api/v1/enterprise/text2img", json={**SEED_EXAMPLE, "num_inference_steps": "2",
                                                               "width": "256", "height": "256", "base64": "yes"})
    data = r.json()
    assert r.status_code == 200 and data["status"] == "success", data
    meta = data["meta"]
    assert meta["not_applied"] == {}  # enhance_prompt and tomesd ran
    assert meta["tomesd"] == meta["enhance_prompt"] == "yes"
    assert meta["original_prompt"] == SEED_EXAMPLE["prompt"] and meta["prompt"].startswith(SEED_EXAMPLE["prompt"])
    assert meta["prompt"] != SEED_EXAMPLE["prompt"] and "((extra fingers))" in meta["negative_prompt"]
    assert data["nsfw_content_detected"] is False  # the example says safety_checker "no"
    with Image.open(io.BytesIO(base64.b64decode(data["output"][0]))) as im:
        assert im.size == (256, 256)
        assert "ToMe ratio: 0.5" in im.info["parameters"]


def test_the_seed_documents_example_verbatim_on_demo(server):
    """Byte for byte as the document writes it (512², 20 steps): the demo maps `model_id` to a tiny model."""
    r = server.http.post("/api/v1/enterprise/text2img", json=SEED_EXAMPLE)
    data = r.json()
    assert r.status_code == 200 and data["status"] == "success", data
    assert data["meta"]["not_applied"] == {} and len(data["output"]) == 1


def test_panorama_is_four_times_as_wide_as_high(server, plain):
    data = generate(server, panorama="yes")
    assert image(data).size == (1024, 256) and data["meta"]["panorama"] == "yes"
    assert data["meta"]["width"] == data["meta"]["W"] == 1024 and data["meta"]["height"] == 256
    assert raw(generate(server, panorama="yes")) == raw(data)
    assert_plain_unchanged(server, plain)


@pytest.mark.parametrize("switch", [{"self_attention": "yes", "scheduler": "UniPCMultistepScheduler"},
                                    {"tomesd": "yes"}, {"vae": "tiny-other"}, {"embeddings_model": "tinyone"}])
def test_a_switch_changes_the_pixels_and_keeps_the_size(server, plain, switch):
    data = generate(server, **switch)
    assert image(data).size == (256, 256)
    reference = plain if "scheduler" not in switch else raw(generate(server, scheduler=switch["scheduler"]))
    assert pixels(raw(data)) != pixels(reference), switch
    assert data["meta"]["not_applied"] == {}
    assert_plain_unchanged(server, plain)


def test_an_embedding_not_in_the_prompt_is_appended(server):
    meta = generate(server, embeddings_model="tinyone")["meta"]
    assert meta["prompt"] == PLAIN["prompt"] + ", tinyone" and meta["embeddings"] == "tinyone"


def test_self_attention_on_sdxl_says_it_did_not_run(server):
    meta = generate(server, model_id="tiny-sdxl", self_attention="yes")["meta"]
    assert set(meta["not_applied"]) == {"self_attention"}


@pytest.mark.parametrize("value, side", [("yes", 512), ("3", 768)])
def test_upscale_is_a_second_pass_at_that_factor(server, plain, value, side):
    data = generate(server, upscale=value)
    img = image(data)
    assert img.size == (side, side) and data["meta"]["output_width"] == side
    small = np.asarray(Image.open(io.BytesIO(plain)).resize((side, side), Image.LANCZOS), dtype=np.int16)
    assert np.abs(np.asarray(img, dtype=np.int16) - small).mean() > 1  # denoised again, not only resized
    assert "Hires upscaler: Latent" in img.info["parameters"]
    assert_plain_unchanged(server, plain)


def test_unknown_vae_or_embedding_is_a_modelslab_error(server):
    for field, name in (("vae", "no-such-vae"), ("embeddings_model", "no-such-embedding")):
        data = generate(server, 400, **{field: name})
        assert data["status"] == "error" and name in data["message"]


def test_the_safety_checker_blanks_a_flagged_image(server, plain):
    data = generate(server, safety_checker="yes", samples=2)
    assert data["nsfw_content_detected"] is True and data["meta"]["nsfw_content_detected"] == [True, True]
    for i in range(2):
        assert not np.asarray(image(data, i)).any()  # blank
    assert_plain_unchanged(server, plain)


def test_multi_lingual_translates_before_encoding(server, plain):
    data = generate(server, multi_lingual="yes", prompt="un phare sur une falaise")
    meta = data["meta"]
    assert meta["original_prompt"] == "un phare sur une falaise" and meta["prompt"] != meta["original_prompt"]
    again = generate(server, multi_lingual="yes", prompt="un phare sur une falaise")
    assert again["meta"]["prompt"] == meta["prompt"] and raw(again) == raw(data)
    untranslated = generate(server, prompt="un phare sur une falaise")
    assert pixels(raw(untranslated)) != pixels(raw(data))
    assert_plain_unchanged(server, plain)


def test_enhance_prompt_is_deterministic(server):
    a, b = (generate(server, enhance_prompt="yes")["meta"] for _ in range(2))
    assert a["prompt"] == b["prompt"] != PLAIN["prompt"] and a["prompt"].startswith(PLAIN["prompt"])
    assert a["original_prompt"] == PLAIN["prompt"]


def test_without_the_models_each_switch_says_so(bare):
    data = generate(bare, 400, multi_lingual="yes", prompt="un phare")
    assert data["status"] == "error" and "models/translator" in data["message"]
    data = generate(bare, safety_checker="yes")
    assert data["nsfw_content_detected"] is None  # not a silent "safe"
    assert re.search(r"safety", data["meta"]["not_applied"]["safety_checker"], re.I)
