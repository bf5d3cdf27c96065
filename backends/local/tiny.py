"""Tiny random-weight SD1 / SDXL pipelines for offline tests and `--demo`.

They have the real architecture (VAE with four levels, so latents are 1/8 of the image as in real models) and the
real CLIP tokenizer, so they go through exactly the code paths a user's checkpoint takes: `save_pretrained`,
`from_pretrained`, a single A1111-style `.safetensors` and `from_single_file`. Weights are seeded, so every build
is identical. Images are noise. See docs/reference/diffusers_offline.md §1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import partial
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TOKENIZER_DIR = Path(__file__).parent / "skeletons" / "clip-tokenizer"
TINY_FAMILIES = ("sd1", "sdxl")
SEED = 0

_SD_NOISE_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _tokenizer(**kwargs) -> CLIPTokenizer:
    # Not CLIPTokenizer(vocab_file=...): transformers 5 silently ignores the files and yields a 2-token vocab.
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77, **kwargs)


def _text_config(tokenizer: CLIPTokenizer, hidden: int, intermediate: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        # projection_dim == hidden_size: the single-file loader splits OpenCLIP's in_proj by text_projection's size
        projection_dim=hidden,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vae() -> AutoencoderKL:
    # Four levels: vae_scale_factor 8 as in real models (the two-level test VAEs make 512² cost minutes).
    return AutoencoderKL(
        block_out_channels=[8, 16, 32, 32],
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        sample_size=512,
    )


def _build_sd1() -> StableDiffusionPipeline:
    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=64,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    scheduler = DDIMScheduler(**_SD_NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        unet=unet,
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer, hidden=32, intermediate=37)),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def _build_sdxl() -> StableDiffusionXLPipeline:
    tokenizer = _tokenizer()
    tokenizer_2 = _tokenizer(pad_token="!")
    # text_encoder_2 must be wider than text_encoder: the single-file loader tells CLIP-L from OpenCLIP-bigG by
    # width, and equal widths load te1's weights into te2 (every image NaN).
    te1_width, te2_width = 32, 64
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=64,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        # 6 time ids × addition_time_embed_dim + te2's pooled embedding
        projection_class_embeddings_input_dim=6 * 8 + te2_width,
        cross_attention_dim=te1_width + te2_width,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(**_SD_NOISE_SCHEDULE, steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer, hidden=te1_width, intermediate=37)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer_2, hidden=te2_width, intermediate=128)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
    )


_BUILDERS = {"sd1": _build_sd1, "sdxl": _build_sdxl}


def build_tiny_pipeline(family: str) -> DiffusionPipeline:
    """A fresh tiny pipeline of `family` ("sd1" or "sdxl"), identical weights on every call."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {', '.join(_BUILDERS)}")
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's global RNG
        torch.manual_seed(SEED)
        pipe = _BUILDERS[family]()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------- on disk


def tiny_model_name(family: str) -> str:
    return f"tiny-{family}"


def write_tiny_models(models_dir: Path) -> dict[str, Path]:
    """Write each tiny model as a diffusers folder and as an A1111 single file under models_dir/Stable-diffusion.

    Also writes a random LoRA for each under models_dir/Lora (tiny-sd1-lora.safetensors, ...).
    Returns {"tiny-sd1": folder, "tiny-sd1.safetensors": file, "tiny-sd1-lora.safetensors": lora, ...}. Models already there from the same recipe are
    kept; each one is written under a temporary name and renamed into place, so an interrupted build is never used.
    """
    from .ldm_export import export_single_file
    from .loras import write_tiny_lora
    from .models import quiet_progress

    target_dir = Path(models_dir) / "Stable-diffusion"
    target_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for family in TINY_FAMILIES:
        name, stamp = tiny_model_name(family), _recipe_stamp(family)
        folder, single_file = target_dir / name, target_dir / f"{name}.safetensors"
        lora_file = Path(models_dir) / "Lora" / f"{name}-lora.safetensors"
        folder_ok, file_ok = _folder_stamp(folder) == stamp, _file_stamp(single_file) == stamp
        # the LoRA's shapes follow the recipe: rebuild it whenever the model is rebuilt
        lora_ok = folder_ok and file_ok and lora_file.is_file()
        if not lora_ok:
            pipe = build_tiny_pipeline(family)
            with quiet_progress():
                if not folder_ok:
                    _write_atomically(folder, partial(_save_folder, pipe, stamp))
                if not file_ok:
                    _write_atomically(single_file, partial(export_single_file, pipe, metadata={STAMP_KEY: stamp}))
                lora_file.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(lora_file, partial(write_tiny_lora, pipe))
        written[name] = folder
        written[single_file.name] = single_file
        written[lora_file.name] = lora_file
    return written


# A tiny model on disk carries a digest of the recipe it was built from (its shipped skeleton configs, which the
# tests hold equal to the builders), so models left by an older recipe are rebuilt rather than half-matching.
STAMP_KEY = "sdgate_tiny_recipe"


def _recipe_stamp(family: str) -> str:
    skeleton = TOKENIZER_DIR.parent / tiny_model_name(family)
    digest = hashlib.sha256()
    for path in sorted(skeleton.rglob("*.json")):
        digest.update(path.relative_to(skeleton).as_posix().encode() + path.read_bytes())
    return f"{SEED}-{digest.hexdigest()[:16]}"


def _save_folder(pipe: DiffusionPipeline, stamp: str, folder: Path) -> None:
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / f".{STAMP_KEY}").write_text(stamp)


def _folder_stamp(folder: Path) -> str | None:
    try:
        return (folder / f".{STAMP_KEY}").read_text() if (folder / "model_index.json").is_file() else None
    except OSError:
        return None


def _file_stamp(path: Path) -> str | None:
    try:
        with safe_open(path, framework="pt") as f:
            return json.loads((f.metadata() or {}).get("sdgate", "{}")).get(STAMP_KEY)
    except Exception:  # missing, truncated, not safetensors
        return None


def _write_atomically(final: Path, write) -> None:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        write(tmp)
        _remove(final)  # an invalid leftover
        os.replace(tmp, final)
    except OSError:
        # Another process renamed its copy into place first: keep theirs.
        if not final.exists():
            raise
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
