"""The A1111 request fields issue 10 adds, end to end through /sdapi/v1/txt2img on a real demo server (tiny
random-weight models): variation seeds, seed resize, tiling, `sd_vae`, embeddings, hires fix in latent space,
the SDXL refiner, `restore_faces` (said to be not applied), the VAE and embedding listings, and the infotext of
each read back (PNG Info → request fields → the same image). Each test also checks the next plain request is
unaffected."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image
from safetensors.torch import save_file

from backends.dialects.a1111.infotext_fields import fields_from_infotext
from backends.local.ldm_export import _vae_to_ldm
from live import start_live_server
from tiny_vae_embeddings import other_vae, write_embeddings

FAST = {"steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "prompt": "a red fox", "seed": 5}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111_features")
    srv = start_live_server(root, threads=1)  # --demo writes the tiny models into root/models
    models = root / "models"
    (models / "VAE").mkdir(parents=True, exist_ok=True)
    ldm = {k: v.detach().clone().contiguous() for k, v in _vae_to_ldm(other_vae(7)).items()}
    save_file(ldm, str(models / "VAE" / "tiny-other.safetensors"))
    write_embeddings(models)
    # another SDXL checkpoint (other UNet weights) to refine with: the base's own weights would hand over exactly
    other = StableDiffusionXLPipeline.from_pretrained(models / "Stable-diffusion" / "tiny-sdxl")
    with torch.no_grad():
        for weight in other.unet.parameters():
            weight.mul_(1.1)
    other.save_pretrained(models / "Stable-diffusion" / "tiny-sdxl-other")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url + "/sdapi/v1", timeout=300) as client:
        yield client


def generate(http, **body) -> tuple[list[np.ndarray], dict, list[str]]:
    r = http.post("/txt2img", json={**FAST, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    arrays = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"), dtype=np.int16)
              for b in data["images"]]
    return arrays, json.loads(data["info"]), data["images"]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1  # batched products round within 1/255


@pytest.fixture(scope="module")
def plain(http):
    return generate(http)[0][0]


# --------------------------------------------------------------------------------------- variation seeds


def test_variation_strength_0_is_the_seed_1_is_the_subseed_and_between_differs(http, plain):
    zero, info, _ = generate(http, subseed=77, subseed_strength=0)
    assert same(zero[0], plain) and "Variation seed" not in info["infotexts"][0]
    full, info, _ = generate(http, subseed=77, subseed_strength=1)
    assert same(full[0], generate(http, seed=77)[0][0])  # Euler: the start noise is all there is
    half, info, _ = generate(http, subseed=77, subseed_strength=0.5)
    assert not same(half[0], plain) and not same(half[0], full[0])
    assert "Variation seed: 77, Variation seed strength: 0.5" in info["infotexts"][0]
    assert info["subseed"] == 77 and info["subseed_strength"] == 0.5 and info["all_subseeds"] == [77]
    assert same(generate(http)[0][0], plain)


def test_a_batch_gives_subseed_plus_i(http):
    _, info, _ = generate(http, subseed=100, subseed_strength=0.3, batch_size=2)
    assert info["all_subseeds"] == [100, 101]
    assert "Variation seed: 101" in info["infotexts"][1]


def test_seed_resize_from_changes_the_noise_and_is_written(http, plain):
    resized, info, _ = generate(http, seed_resize_from_w=32, seed_resize_from_h=32)
    assert not same(resized[0], plain)
    assert "Seed resize from: 32x32" in info["infotexts"][0]
    assert info["seed_resize_from_w"] == 32 and info["seed_resize_from_h"] == 32
    unchanged, info, _ = generate(http, seed_resize_from_w=32, seed_resize_from_h=-1)  # both > 0 or off
    assert same(unchanged[0], plain) and "Seed resize from" not in info["infotexts"][0]


# ---------------------------------------------------------------------------------------------- tiling


def test_tiling_changes_the_image_and_the_option_is_its_default(http, plain):
    tiled, info, _ = generate(http, tiling=True)
    assert not same(tiled[0], plain) and "Tiling: True" in info["infotexts"][0]
    assert same(generate(http, tiling=None, override_settings={"tiling": True})[0][0], tiled[0])
    assert same(generate(http, tiling=False)[0][0], plain)


# -------------------------------------------------------------------------------------- VAE and embeddings


def test_sd_vae_lists_the_files_and_override_settings_switches_it(http, plain):
    listed = {row["model_name"]: row["filename"] for row in http.get("/sd-vae").json()}
    assert listed["tiny-other.safetensors"].endswith("/VAE/tiny-other.safetensors")
    other, info, _ = generate(http, override_settings={"sd_vae": "tiny-other.safetensors"})
    assert not same(other[0], plain)
    assert "VAE: tiny-other.safetensors" in info["infotexts"][0] and info["sd_vae_name"] == "tiny-other.safetensors"
    back, info, _ = generate(http, override_settings={"sd_vae": "None"})
    assert same(back[0], plain) and "VAE:" not in info["infotexts"][0]
    assert same(generate(http)[0][0], plain)
    assert http.post("/refresh-vae").json() is None
    r = http.post("/txt2img", json={**FAST, "override_settings": {"sd_vae": "no-such-vae.pt"}})
    assert r.status_code == 400 and "no-such-vae.pt" in r.text


def test_embeddings_are_listed_for_the_current_model_and_used_by_name(http, plain):
    listing = http.get("/embeddings").json()
    assert {"tinyone", "tinymulti", "TinyDiff"} <= set(listing["loaded"])
    assert {"tinywrong", "tinyxl"} <= set(listing["skipped"])  # widths of no tiny-sd1 encoder
    assert listing["loaded"]["tinyone"]["vectors"] == 1 and listing["loaded"]["tinymulti"]["vectors"] == 3
    with_embedding, _, _ = generate(http, prompt="a red fox tinyone")
    without, _, _ = generate(http, prompt="a red fox")
    assert not same(with_embedding[0], without[0])
    assert http.post("/refresh-embeddings").json() is None


# ----------------------------------------------------------------------------------------------- hires


def test_hires_latent_runs_in_latent_space_and_pixel_modes_stay(http):
    base = {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.6, "hr_second_pass_steps": 2}
    latent, info, _ = generate(http, hr_upscaler="Latent", **base)
    assert latent[0].shape == (128, 128, 3) and info["width"] == 64 and info["height"] == 64
    text = info["infotexts"][0]
    assert "Size: 64x64" in text and "Denoising strength: 0.6" in text
    assert text.index("Hires upscale: 2") < text.index("Hires steps: 2") < text.index("Hires upscaler: Latent")
    nearest, _, _ = generate(http, hr_upscaler="Latent (nearest)", **base)
    pixel, info, _ = generate(http, hr_upscaler="Lanczos", **base)
    assert pixel[0].shape == (128, 128, 3) and "Hires upscaler: Lanczos" in info["infotexts"][0]
    assert not same(latent[0], pixel[0]) and not same(latent[0], nearest[0])
    resized, info, _ = generate(http, hr_upscaler="Latent", hr_resize_x=96, hr_resize_y=0, **base)
    assert resized[0].shape == (96, 96, 3) and "Hires resize: 96x0" in info["infotexts"][0]
    # both sides given, another aspect: scaled to cover (128×128), then centre-cropped to 128×64, as A1111
    cropped, info, _ = generate(http, hr_upscaler="Latent", hr_resize_x=128, hr_resize_y=64, **base)
    assert cropped[0].shape == (64, 128, 3) and "Hires resize: 128x64" in info["infotexts"][0]
    from backends.dialects.a1111.plan import hires_cover
    from backends.job import Job

    assert hires_cover(Job(width=64, height=64), 128, 64) == (128, 128)
    assert hires_cover(Job(width=64, height=32), 128, 64) is None  # same aspect: no crop
    assert hires_cover(Job(width=96, height=64), 96, 96) == (144, 96)
    r = http.post("/txt2img", json={**FAST, **base, "hr_upscaler": "ESRGAN 9x"})
    assert r.status_code == 400 and "could not find upscaler named ESRGAN 9x" in r.text


# ------------------------------------------------------------------------------------ refiner and faces


def test_the_refiner_finishes_an_sdxl_image(http):
    sdxl = {"override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}
    base, _, _ = generate(http, **sdxl)
    refined, info, _ = generate(http, refiner_checkpoint="tiny-sdxl-other", refiner_switch_at=0.5, **sdxl)
    assert not same(refined[0], base[0])
    assert "Refiner: tiny-sdxl-other [" in info["infotexts"][0] and "Refiner switch at: 0.5" in info["infotexts"][0]
    assert same(generate(http, **sdxl)[0][0], base[0])
    off, info, _ = generate(http, refiner_checkpoint="None", refiner_switch_at=0.5, **sdxl)
    assert same(off[0], base[0]) and "Refiner" not in info["infotexts"][0]


def test_restore_faces_says_it_was_not_applied(http, plain):
    image, info, _ = generate(http, restore_faces=True)
    assert same(image[0], plain)
    assert info["restore_faces"] is True and info["face_restoration_model"] is None
    assert any("restore_faces" in note and "not restored" in note for note in info["notes"])
    assert "Face restoration: not applied" in info["infotexts"][0]
    _, info, _ = generate(http)
    assert "Face restoration" not in info["infotexts"][0] and not info.get("notes")


# -------------------------------------------------------------------------------------- infotext round trip


ROUND_TRIPS = {
    "variation": {"subseed": 123, "subseed_strength": 0.4, "seed_resize_from_w": 48, "seed_resize_from_h": 48},
    "tiling": {"tiling": True},
    "vae": {"override_settings": {"sd_vae": "tiny-other.safetensors"}},
    "hires": {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic)", "denoising_strength": 0.5,
              "hr_second_pass_steps": 2},
    "refiner": {"override_settings": {"sd_model_checkpoint": "tiny-sdxl"}, "refiner_checkpoint": "tiny-sdxl-other",
                "refiner_switch_at": 0.6},
}


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_png_info_fields_give_the_same_image(http, server, name):
    first, info, encoded = generate(http, **ROUND_TRIPS[name])
    text = http.post("/png-info", json={"image": encoded[0]}).json()["info"]
    assert text == info["infotexts"][0]
    # the UI's "send to txt2img": the fields read from the infotext, posted as a request
    fields = fields_from_infotext(text, "txt2img", lambda n: server.service.models.resolve(n).title)
    model = fields.pop("model", None)
    settings = {**fields.pop("override_settings", {}), **({"sd_model_checkpoint": model} if model else {})}
    again, info_again, _ = generate(http, **{**fields, "override_settings": settings})
    assert same(again[0], first[0]), name
    assert info_again["infotexts"][0] == text
    # the request's own `infotext` field fills the same fields
    by_infotext, _, _ = generate(http, infotext=text)
    assert same(by_infotext[0], first[0]), name


# ------------------------------------------------------------------------------------------- prompt comments


def test_prompt_comments_are_left_out(http):
    from backends.dialects.a1111.plan import strip_comments

    assert strip_comments("a fox # not this\n# nor this line\nin snow") == "a fox\nin snow"
    assert strip_comments("no comment") == "no comment"
    plain, _, _ = generate(http, prompt="a red fox\nin the snow")
    commented, info, _ = generate(http, prompt="a red fox # a note to self\n# a whole line\nin the snow")
    assert same(plain[0], commented[0]) and "note to self" not in info["infotexts"][0]
    kept, _, _ = generate(http, prompt="a red fox # a note to self\nin the snow",
                          override_settings={"enable_prompt_comments": False})
    assert not same(plain[0], kept[0])
