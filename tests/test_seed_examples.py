"""The seed documents' own example requests (docs/reference/seeds/, the gateways' API pages), sent verbatim to a
--demo server: what a newcomer copies first. The bodies below are copied from the documents as they are (path,
headers and body); only the host is the test server's. In --demo, a model or engine name that is not installed
runs the tiny model of its family, with a note.

Two examples contradict the pages they are on, and get the 400 Stability itself gives them (the Stability
dialects' documented behaviour, which the demo keeps):
* AI-YIAPI's v1 example sends 512x512 to the SDXL engine whose allowed sizes the same page lists (1024x1024, ...):
  400 `invalid_sdxl_v1_dimensions`. The same body on `stable-diffusion-v1-6` (GPTNB's page) is a 200.
* The v2beta page's only example is its API tool's blank curl snippet (`--form 'prompt=""'`, which curl sends as
  an empty prompt): 400 "prompt: cannot be empty".
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from live import start_live_server

# 000_9daa22ba4189ec4a.txt (AI-YIAPI, Stability v1 through the /sd prefix)
AIYIAPI_V1_PATH = "/sd/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
AIYIAPI_V1_BODY = """{
    "cfg_scale": 7,
    "height": 512,
    "width": 512,
    "sampler": "K_DPM_2_ANCESTRAL",
    "samples": 1,
    "steps": 30,
    "text_prompts": [
        {
            "text": "A lighthouse on a cliff",
            "weight": 1
        }
    ]
}"""

# 001_002dc88313dc43f0.txt (GPTNB, Stability v1: the curl example; the page's body example is the same JSON)
GPTNB_V1_PATH = "/sd/v1/generation/stable-diffusion-v1-6/text-to-image"
GPTNB_V1_BODY = """{
    "cfg_scale": 7,
    "height": 512,
    "width": 512,
    "sampler": "K_DPM_2_ANCESTRAL",
    "samples": 1,
    "steps": 30,
    "text_prompts": [
        {
            "text": "A lighthouse on a cliff",
            "weight": 1
        }
    ]
}"""

# 002_55db42df34d1e548.txt (ai-gateway, A1111 txt2img under /v1/sdapi/v1)
AIGATEWAY_A1111_PATH = "/v1/sdapi/v1/txt2img"
AIGATEWAY_A1111_BODY = """{
    "model": "majicmixRealistic_v7",
    "sampler_name": "DPM++ 2M SDE Karras",
    "prompt": "((dark theme)), (best quality:1.2), High quality texture, intricate details, detailed texture, High quality shadow, perspective, ((ultra-detailed)), distinct_image, (lustrous skin) ((black skirt)), high heel shoes, black pantyhose, street, brown eye pupil, 20s, blush, glossy lips, perfect body, lean body, (narrow waist:1.3), large breast, solo focus, ((brown hair)), (streaked hair), ((long hair)), (big eyes:1.2) (masterpiece), (highly detailed CG illustration), perspective, depth of field",
    "negative_prompt": "(((stocking, hat, glove, choker, collar, nail polish, necklace))), ,paintings, sketches, (worst quality:2), (low quality:2), (normal quality:2), lowres, normal quality, ((monochrome)), ((grayscale)), skin spots, acnes, skin blemishes, age spot,extra fingers,fewer fingers",
    "steps": 40,
    "cfg_scale": 7,
    "width": 720,
    "height": 960
}"""  # noqa: E501

# 003_78188e85d293496c.txt (AI-YIAPI, Stability v2beta core): the curl snippet, blank values as in the document
AIYIAPI_V2_PATH = "/sd/v2beta/stable-image/generate/core"
AIYIAPI_V2_FORM = {"prompt": ""}  # --form 'prompt=""': curl strips the quotes

# 004_48e4500ad6959eba.txt (ModelsLab / stablediffusionapi.com enterprise text2img)
MODELSLAB_PATH = "/api/v1/enterprise/text2img"
MODELSLAB_BODY = """{
"key": "enterprise_api_key",
"model_id": "model_id",
"prompt": "ultra realistic close up portrait ((beautiful pale cyberpunk female with heavy black eyeliner)), blue eyes, shaved side haircut, hyper detail, cinematic lighting, magic neon, dark red city, Canon EOS R3, nikon, f/1.4, ISO 200, 1/160s, 8K, RAW, unedited, symmetrical balance, in-frame, 8K",
"negative_prompt": "painting, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, deformed, ugly, blurry, bad anatomy, bad proportions, extra limbs, cloned face, skinny, glitchy, double torso, extra arms, extra hands, mangled fingers, missing lips, ugly face, distorted face, extra legs, anime",
"width": "512",
"height": "512",
"samples": "1",
"num_inference_steps": "20",
"safety_checker": "no",
"enhance_prompt": "yes",
"seed": null,
"guidance_scale": 7.5,
"multi_lingual": "no",
"panorama": "no",
"self_attention": "no",
"upscale": "no",
"embeddings_model": null,
"lora_model": null,
"clip_skip": "2",
"tomesd": "yes",
"use_karras_sigmas": "yes",
"vae": null,
"lora_strength": null,
"scheduler": "UniPCMultistepScheduler",
"webhook": null,
"track_id": null
}"""  # noqa: E501

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models_dir):
    srv = start_live_server(tmp_path_factory.mktemp("seeds"), models_dir=tiny_models_dir, threads=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=600) as client:
        yield client


def image_of(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def test_gptnb_stability_v1_example(http):
    r = http.post(GPTNB_V1_PATH, content=GPTNB_V1_BODY, headers={**JSON, "Authorization": "Bearer <token>"})
    assert r.status_code == 200, r.text
    artifacts = r.json()["artifacts"]
    assert len(artifacts) == 1 and artifacts[0]["finishReason"] == "SUCCESS"
    assert image_of(artifacts[0]["base64"]).size == (512, 512)


def test_aiyiapi_stability_v1_example_gets_the_sdxl_size_rule_of_its_own_page(http):
    r = http.post(AIYIAPI_V1_PATH, content=AIYIAPI_V1_BODY, headers={**JSON, "Authorization": "Bearer <token>"})
    assert r.status_code == 400, r.text
    assert r.json()["name"] == "invalid_sdxl_v1_dimensions" and "1024x1024" in r.json()["message"]


def test_ai_gateway_a1111_example_runs_on_the_demo_with_a_note(http):
    r = http.post(AIGATEWAY_A1111_PATH, content=AIGATEWAY_A1111_BODY, headers={**JSON, "Authorization": "Bearer x"})
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 1 and image_of(data["images"][0]).size == (720, 960)
    assert info["sd_model_name"] == "tiny-sd1" and info["sampler_name"] == "DPM++ 2M SDE"
    assert any("majicmixRealistic_v7" in note and "tiny-sd1" in note for note in info["notes"])
    assert data["parameters"]["steps"] == 40 and data["parameters"]["sampler_name"] == "DPM++ 2M SDE Karras"


def test_stability_v2beta_blank_example_is_refused_as_upstream_does(http):
    r = http.post(AIYIAPI_V2_PATH, files={k: (None, v) for k, v in AIYIAPI_V2_FORM.items()},
                  headers={"authorization": "", "accept": ""})
    assert r.status_code == 400, r.text
    assert "prompt" in r.text and "empty" in r.text


def test_modelslab_enterprise_example(http):
    r = http.post(MODELSLAB_PATH, content=MODELSLAB_BODY, headers=JSON)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["status"] == "success", data
    assert len(data["output"]) == 1
    image = http.get(httpx.URL(data["output"][0]).path)
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (512, 512)


def test_outside_demo_an_unknown_a1111_model_is_a_clear_404(tmp_path, tiny_models_dir):
    from backends.assembly import create_service
    from backends.config import Config
    from webui.app import create_app
    from fastapi.testclient import TestClient

    service = create_service(Config(demo=False, models_dir=tiny_models_dir, outputs_dir=tmp_path, dtype="fp32",
                                    model="tiny-sd1"))
    try:
        with TestClient(create_app(service)) as client:
            r = client.post(AIGATEWAY_A1111_PATH, content=AIGATEWAY_A1111_BODY, headers=JSON)
        assert r.status_code == 404, r.text
        assert "majicmixRealistic_v7" in r.text
    finally:
        service.close()
