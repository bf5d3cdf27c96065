"""Model building, single-file export and loading, offline, on the tiny models (and real configs on the meta device)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backends.job import ModelNotFound, ModelUnavailable
from backends.local.models import SKELETONS_DIR, ModelManager, architecture_of, detect_architecture, family_of
from backends.local.tiny import build_tiny_pipeline, write_tiny_models

HUB_REPO = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture(scope="module")
def manager(tiny_models_dir):
    return ModelManager(
        tiny_models_dir,
        aliases={"stable-diffusion-xl-1024-v1-0": "tiny-sdxl.safetensors", "hub": HUB_REPO},
        cache_size=4,
    )


def generate(pipe) -> np.ndarray:
    out = pipe(
        "a photo of a cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="np",
    )
    return out.images[0]


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_folder_and_single_file_give_the_same_image(manager, family):
    folder = manager.get(f"tiny-{family}")
    single = manager.get(f"tiny-{family}.safetensors")
    assert (folder.info.kind, single.info.kind) == ("folder", "single_file")
    assert folder.family == single.family == family_of(single.pipe) == family
    image = generate(folder.pipe)
    assert np.isfinite(image).all() and image.std() > 0
    np.testing.assert_array_equal(image, generate(single.pipe))


def test_ckpt_loads_like_the_safetensors(tiny_models_dir, tmp_path):
    checkpoints = tmp_path / "Stable-diffusion"
    checkpoints.mkdir()
    state = load_file(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors")
    torch.save({"state_dict": state}, checkpoints / "old.ckpt")
    shutil.copy(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors", checkpoints)
    models = ModelManager(tmp_path)
    assert detect_architecture(checkpoints / "old.ckpt").skeleton == "tiny-sd1"
    assert models.resolve("old").family is None  # a .ckpt is not opened just to list it
    loaded = models.get("old")
    assert loaded.family == "sd1" and models.resolve("old").family == "sd1"
    np.testing.assert_array_equal(generate(loaded.pipe), generate(models.get("tiny-sd1").pipe))


def test_yaml_beside_a_single_file_sets_v_prediction(tiny_models_dir, tmp_path):
    checkpoints = tmp_path / "Stable-diffusion"
    checkpoints.mkdir()
    shutil.copy(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors", checkpoints / "v.safetensors")
    (checkpoints / "v.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    pipe = ModelManager(tmp_path).get("v").pipe
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_architecture_detection(tiny_models_dir):
    checkpoints = tiny_models_dir / "Stable-diffusion"
    sd1 = detect_architecture(checkpoints / "tiny-sd1.safetensors")
    sdxl = detect_architecture(checkpoints / "tiny-sdxl.safetensors")
    assert (sd1.family, sd1.skeleton) == ("sd1", "tiny-sd1")
    assert (sdxl.family, sdxl.skeleton) == ("sdxl", "tiny-sdxl")
    with pytest.raises(ModelUnavailable, match="input channels"):
        architecture_of({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)})
    with pytest.raises(ModelUnavailable, match="supported"):
        architecture_of({"something.else": (1,)})


def test_hub_repo_offline_is_unavailable_with_a_hint(manager):
    with pytest.raises(ModelUnavailable) as caught:
        manager.get("hub")
    message = caught.value.message
    assert HUB_REPO in message and "Stable-diffusion" in message and "--model" in message
    assert "\n" not in message and "Traceback" not in message
    assert caught.value.status == 503


def test_a_broken_file_is_unavailable_not_a_traceback(tmp_path):
    checkpoints = tmp_path / "Stable-diffusion"
    checkpoints.mkdir()
    (checkpoints / "broken.safetensors").write_bytes(b"not a safetensors file")
    models = ModelManager(tmp_path)
    assert models.resolve("broken").family is None
    with pytest.raises(ModelUnavailable, match="broken.safetensors"):
        models.get("broken")


# ------------------------------------------------------------------------------------------ names


def test_listing_follows_a1111_conventions(manager, tiny_models_dir):
    models = {m.title.split(" [")[0]: m for m in manager.list()}
    assert list(models) == ["tiny-sd1", "tiny-sd1.safetensors", "tiny-sdxl", "tiny-sdxl.safetensors", HUB_REPO]
    single = models["tiny-sd1.safetensors"]
    sha256 = hashlib.sha256(single_path(tiny_models_dir, "tiny-sd1.safetensors").read_bytes()).hexdigest()
    assert (single.name, single.sha256, single.hash) == ("tiny-sd1", sha256, sha256[:10])
    assert single.title == f"tiny-sd1.safetensors [{sha256[:10]}]"
    assert single.demo and single.family == "sd1" and models["tiny-sdxl"].family == "sdxl"
    hub = models[HUB_REPO]
    assert (hub.kind, hub.hash, hub.title, hub.demo) == ("repo", None, HUB_REPO, False)
    cached = json.loads((tiny_models_dir / ".sdgate-hashes.json").read_text())
    assert sha256 in [entry["sha256"] for entry in cached.values()]


def test_resolve_accepts_every_a1111_form(manager, tiny_models_dir):
    file = manager.resolve("tiny-sdxl.safetensors")
    forms = [
        file.title,
        "tiny-sdxl.safetensors",
        file.hash,
        file.sha256,
        f"{file.name} [{file.hash}]",
        "tiny-sdxl.safetensors [0123456789]",  # a stale hash falls back to the name
        "TINY-SDXL.SAFETENSORS",
        "stable-diffusion-xl-1024-v1-0",  # an alias
        str(single_path(tiny_models_dir, "tiny-sdxl.safetensors")),
    ]
    for form in forms:
        assert manager.resolve(form) == file, form
    folder = manager.resolve("tiny-sdxl")  # name and basename: the folder is listed first
    assert folder.kind == "folder" and manager.resolve(folder.title) == folder
    assert manager.resolve(None) == manager.list()[0]
    assert ModelManager(tiny_models_dir, default="tiny-sdxl.safetensors").resolve(None) == file


def test_unknown_model_lists_what_there_is(manager):
    with pytest.raises(ModelNotFound) as caught:
        manager.resolve("no-such-model")
    assert "no-such-model" in caught.value.message
    assert "tiny-sd1.safetensors [" in caught.value.message
    assert caught.value.details["available"] == [m.title for m in manager.list()]


def test_a_file_dropped_in_later_is_found(tiny_models_dir, tmp_path):
    (tmp_path / "Stable-diffusion" / "sub").mkdir(parents=True)
    models = ModelManager(tmp_path)
    assert models.list() == []
    shutil.copy(
        single_path(tiny_models_dir, "tiny-sd1.safetensors"), tmp_path / "Stable-diffusion" / "sub" / "a.safetensors"
    )
    found = models.resolve("a")
    assert (found.title.split(" [")[0], found.name, found.demo) == ("sub/a.safetensors", "sub_a", False)


# ------------------------------------------------------------------------------------------ cache


def test_cache_keeps_pipelines_and_evicts_the_least_recently_used(tiny_models_dir):
    models = ModelManager(tiny_models_dir, cache_size=1)
    first = models.get("tiny-sd1")
    assert models.get("tiny-sd1").pipe is first.pipe
    models.get("tiny-sdxl")
    assert models.loaded() == [models.resolve("tiny-sdxl").title]
    assert models.get("tiny-sd1").pipe is not first.pipe
    models.unload()
    assert models.loaded() == []


def test_switching_back_to_a_cached_model_is_free(manager):
    manager.get("tiny-sd1")
    manager.get("tiny-sdxl")
    start = time.perf_counter()
    manager.get("tiny-sd1")
    assert time.perf_counter() - start < 0.05


# ------------------------------------------------------------------------------------------ building


def test_write_tiny_models_is_idempotent(tiny_models_dir):
    paths = write_tiny_models(tiny_models_dir)
    assert set(paths) == {
        "tiny-sd1", "tiny-sd1.safetensors", "tiny-sd1-lora.safetensors",
        "tiny-sdxl", "tiny-sdxl.safetensors", "tiny-sdxl-lora.safetensors",
    }
    mtimes = {name: os.stat(path).st_mtime_ns for name, path in paths.items()}
    start = time.perf_counter()
    write_tiny_models(tiny_models_dir)
    assert time.perf_counter() - start < 0.5
    assert {name: os.stat(path).st_mtime_ns for name, path in paths.items()} == mtimes


def test_write_tiny_models_replaces_leftovers(tmp_path, tiny_models_dir):
    checkpoints = tmp_path / "Stable-diffusion"
    (checkpoints / "tiny-sd1").mkdir(parents=True)
    (checkpoints / "tiny-sd1" / "model_index.json").write_text("{}")  # an older recipe's, or half written
    (checkpoints / "tiny-sd1.safetensors").write_bytes(b"truncated")
    write_tiny_models(tmp_path)
    for name in ("tiny-sd1", "tiny-sd1.safetensors"):
        assert ModelManager(tmp_path).resolve(name).sha256 == ModelManager(tiny_models_dir).resolve(name).sha256
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_tiny_builds_are_reproducible_and_match_their_skeleton(family):
    pipe, again = build_tiny_pipeline(family), build_tiny_pipeline(family)
    for a, b in zip(pipe.unet.state_dict().values(), again.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.vae_scale_factor == 8
    skeleton = SKELETONS_DIR / f"tiny-{family}"
    for component, config_file in [
        ("unet", "config.json"),
        ("vae", "config.json"),
        ("scheduler", "scheduler_config.json"),
    ]:
        shipped = json.loads((skeleton / component / config_file).read_text())
        built = json.loads(json.dumps(dict(getattr(pipe, component).config)))  # tuples as lists
        assert {k: v for k, v in shipped.items() if not k.startswith("_")} == {
            k: v for k, v in built.items() if not k.startswith("_")
        }, component


# ------------------------------------------------------------------------------------------ real layouts


# Tensor counts of the published checkpoints (v1-5-pruned-emaonly, sd_xl_base_1.0), without position_ids/logit_scale.
REAL_LAYOUTS = {
    "sd15": ("v1", {"model.diffusion_model.": 686, "first_stage_model.": 248, "cond_stage_model.": 196}),
    "sdxl": ("xl_base", {"model.diffusion_model.": 1680, "first_stage_model.": 248, "conditioner.embedders.": 585}),
}


@pytest.mark.parametrize("skeleton", ["sd15", "sdxl"])
def test_real_skeletons_export_to_the_real_single_file_layout(skeleton, tmp_path):
    """Real-size models on the meta device: the exporter's keys are the published files', and diffusers agrees."""
    from accelerate import init_empty_weights
    from diffusers.loaders import single_file_utils

    from backends.local import ldm_export

    config_dir = ModelManager(tmp_path)._config_dir(skeleton)
    with init_empty_weights():
        pipe = _pipeline_from_configs(config_dir)
    state = ldm_export.ldm_state_dict(pipe)
    model_type, counts = REAL_LAYOUTS[skeleton]
    assert {prefix: sum(k.startswith(prefix) for k in state) for prefix in counts} == counts
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert single_file_utils.infer_diffusers_model_type(state) == model_type
    assert architecture_of(shapes).skeleton == skeleton
    back = single_file_utils.convert_ldm_unet_checkpoint(state, dict(pipe.unet.config))
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v.shape) for k, v in pipe.unet.state_dict().items()
    }


def test_sd21_skeleton_is_found_by_its_text_encoder():
    shapes = {"cond_stage_model.model.token_embedding.weight": (49408, 1024)}
    assert architecture_of(shapes).skeleton == "sd21"
    config = json.loads((SKELETONS_DIR / "sd21" / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"


def _pipeline_from_configs(config_dir):
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    index = json.loads((config_dir / "model_index.json").read_text())
    te2 = config_dir / "text_encoder_2"
    return SimpleNamespace(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder")),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(te2))
        if "text_encoder_2" in index
        else None,
    )


def single_path(models_dir, name):
    return models_dir / "Stable-diffusion" / name
