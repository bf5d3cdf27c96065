"""`--cpu-engine openvino` (backends/local/openvino.py) on the tiny models: the UNet and VAE converted once in the
background (jobs run on torch meanwhile and say so), then run on OpenVINO with images matching torch's; LoRA jobs
fall back and say so; a restart on the same models dir reuses the converted IR; img2img and batches of 2.

Measured here (2-core CPU, f32, tiny-sd1 at 128² unless said): conversion (UNet, VAE decoder and encoder) 7-12 s,
tiny-sdxl 9 s; each compile 0.1-0.6 s. OpenVINO's images differ from torch's by at most 1/255 per channel (hence
TOLERANCE). Static vs batch-dynamic shapes: backends/local/openvino.py's docstring.
"""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from backends.config import Config, ConfigError
from backends.job import Job
from tests.live import start_live_server
from tests.test_launch import run_launch

TOLERANCE = 3  # per channel, of 255: measured 1 (f32 OpenVINO vs f32 torch)
REQUEST = {"prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "seed": 4321, "steps": 4, "width": 128,
           "height": 128, "sampler_name": "Euler", "cfg_scale": 7}
CONVERT_TIMEOUT = 300


def post(server, path: str, body: dict) -> tuple[list[np.ndarray], dict]:
    response = httpx.post(f"{server.url}/sdapi/v1/{path}", json=body, timeout=300)
    assert response.status_code == 200, response.text
    data = response.json()
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"), dtype=np.int16)
              for b in data["images"]]
    return images, json.loads(data["info"])


def ran_on_openvino(info: dict) -> bool:
    return "OpenVINO" in info.get("notes", [])


def check_image(image: np.ndarray) -> None:
    assert np.isfinite(image).all() and image.std() > 5, "blank image"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ov-models")


@pytest.fixture(scope="module")
def cold(models_dir, tmp_path_factory):
    """A server on an empty OpenVINO cache: its first job runs on torch while the model converts."""
    t0 = time.perf_counter()
    server = start_live_server(tmp_path_factory.mktemp("ov-cold"), models_dir=models_dir, cpu_engine="openvino")
    try:
        torch_images, torch_info = post(server, "txt2img", REQUEST)
        assert server.service.engine.openvino.wait(CONVERT_TIMEOUT)
        ov_images, ov_info = post(server, "txt2img", REQUEST)
        server.first_openvino_s = time.perf_counter() - t0
        server.first = (torch_images, torch_info, ov_images, ov_info)
        yield server
    finally:
        server.stop()


def test_txt2img_runs_on_openvino_once_converted_and_matches_torch(cold):
    torch_images, torch_info, ov_images, ov_info = cold.first
    assert not ran_on_openvino(torch_info)
    assert any(n.startswith("torch (OpenVINO: converting tiny-sd1") for n in torch_info["notes"]), torch_info
    assert ov_info["notes"][0] == "OpenVINO", ov_info
    assert any("was converted in" in n for n in ov_info["notes"])  # the conversion time reaches the client
    check_image(ov_images[0])
    diff = np.abs(ov_images[0] - torch_images[0])
    assert diff.max() <= TOLERANCE, diff.max()
    assert cold.service.engine.openvino.conversions == 1
    assert ov_info["all_seeds"] == torch_info["all_seeds"] == [4321]


def test_the_cache_sits_beside_the_models(cold, models_dir):
    [folder] = (models_dir / ".openvino-cache").iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{part}-f32.{ext}" for part in ("unet", "vae_decoder", "vae_encoder")
                           for ext in ("xml", "bin"))


def test_a_lora_job_runs_on_torch_and_says_so(cold):
    images, info = post(cold, "txt2img", {**REQUEST, "prompt": REQUEST["prompt"] + " <lora:tiny-sd1-lora:0.8>"})
    assert not ran_on_openvino(info)
    assert any(n.startswith("torch (OpenVINO: LoRA tiny-sd1-lora active") for n in info["notes"]), info
    check_image(images[0])
    _, after = post(cold, "txt2img", REQUEST)  # the next plain job is back on OpenVINO
    assert ran_on_openvino(after)


def test_a_batch_of_two_runs_on_openvino(cold):
    torch_images = cold.first[0]
    images, info = post(cold, "txt2img", {**REQUEST, "batch_size": 2})
    assert ran_on_openvino(info) and info["all_seeds"] == [4321, 4322]
    grid_offset = info["index_of_first_image"]
    check_image(images[grid_offset + 1])
    # image 0 of the batch is the lone job's image (batched GEMMs round differently: within the tolerance)
    assert np.abs(images[grid_offset] - torch_images[0]).max() <= TOLERANCE


def test_img2img_runs_on_openvino(cold):
    start = base64.b64encode(_png(cold.first[2][0])).decode()
    body = {**REQUEST, "init_images": [start], "denoising_strength": 0.5}
    images, info = post(cold, "img2img", body)
    assert ran_on_openvino(info), info
    check_image(images[0])


def test_a_restart_reuses_the_converted_model(cold, models_dir, tmp_path):
    # a second server on the same models dir, with its own engine and OpenVINO runner: what a restart finds
    t0 = time.perf_counter()
    warm = start_live_server(tmp_path, models_dir=models_dir, cpu_engine="openvino")
    try:
        images, info = post(warm, "txt2img", REQUEST)
        first_openvino_s = time.perf_counter() - t0
        assert info["notes"][0] == "OpenVINO", info  # the very first job: nothing to convert
        assert warm.service.engine.openvino.conversions == 0
        assert not any("was converted in" in n for n in info["notes"])
        assert np.abs(images[0] - cold.first[2][0]).max() == 0  # the same IR and shapes: the same image
        assert first_openvino_s < cold.first_openvino_s, (first_openvino_s, cold.first_openvino_s)
    finally:
        warm.stop()


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- the engine directly


@pytest.fixture(scope="module")
def ov_engine(model_manager):
    """An OpenVINO engine over the session's models (the same loaded pipelines the torch `engine` uses)."""
    from backends.local.engine import LocalEngine

    return LocalEngine(model_manager, cpu_engine="openvino")


def job(**kw) -> Job:
    return Job(**{**dict(model="tiny-sdxl", prompt="a red fox in the snow", width=128, height=128, steps=4,
                         seed=99, sampler="Euler"), **kw})


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_sdxl_and_two_jobs_sharing_a_call(ov_engine, engine, model_manager):
    ov_engine.generate(job())  # starts the conversion
    assert ov_engine.openvino.wait(CONVERT_TIMEOUT)
    runs = [ov_engine.start(job(seed=s)) for s in (99, 100)]
    ov_engine.run_batch([(run, _Control()) for run in runs])  # as the queue batches two jobs: UNet batch 4
    for run in runs:
        result = run.result()
        assert result.notes[0] == "OpenVINO" and result.batched == 2, result.notes
        alone = engine.generate(job(seed=run.seeds[0]))  # the torch engine, on the same loaded pipeline
        assert alone.notes == [] and np.abs(pixels(result.images[0]) - pixels(alone.images[0])).max() <= TOLERANCE
    pipe = model_manager.get("tiny-sdxl").pipe
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.vae).__name__ == "AutoencoderKL"


def test_a_part_that_fails_to_compile_runs_on_torch_and_says_so(ov_engine, engine, monkeypatch):
    ov_engine.generate(job(model="tiny-sd1"))
    assert ov_engine.openvino.wait(CONVERT_TIMEOUT)

    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(ov_engine.openvino, "compiled", refuse)
    result = ov_engine.generate(job(model="tiny-sd1"))
    assert result.notes[0].startswith("torch (OpenVINO: unet: no kernel for this shape"), result.notes
    assert pixels(result.images[0]).tolist() == pixels(engine.generate(job(model="tiny-sd1")).images[0]).tolist()


class _Control:
    interrupted = False
    skipped = False

    def report(self, *args, **kwargs):
        pass


# ---------------------------------------------------------------------------------------- configuration


def test_an_unknown_cpu_engine_is_a_config_error(tmp_path):
    from backends.assembly import create_service

    with pytest.raises(ConfigError, match="cpu_engine 'tensorrt'"):
        create_service(Config(models_dir=tmp_path, cpu_engine="tensorrt"))
    (tmp_path / "bad.toml").write_text('[server]\ncpu_engine = "tensorrt"\n')
    for args in (["--config", "bad.toml"], ["--cpu-engine", "tensorrt"]):
        proc = run_launch(*args, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("launch.py: error:"), proc.stderr
