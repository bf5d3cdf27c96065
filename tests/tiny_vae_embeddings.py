"""Tiny seeded VAEs and textual-inversion embeddings for the tiny models, in the layouts users drop into
models/VAE/ and models/embeddings/ (backends/local/features/vae.py, embeddings.py). Offline, identical every build."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from backends.local.ldm_export import _vae_to_ldm
from backends.local.tiny import TOKENIZER_DIR

SD1_WIDTH = 32  # the tiny SD1 text encoder (and the tiny SDXL's first)
SDXL_WIDTHS = (32, 64)  # the tiny SDXL's clip_l- and clip_g-like encoders
WRONG_WIDTH = 48  # fits neither


def other_vae(seed: int) -> AutoencoderKL:
    """The tiny-sd1 VAE architecture with other seeded weights."""
    config = AutoencoderKL.load_config(TOKENIZER_DIR.parent / "tiny-sd1" / "vae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL.from_config(config)


def write_vaes(models_dir: Path) -> dict[str, Path]:
    """models/VAE/: one VAE as an LDM `.safetensors` (bare encoder.*/decoder.* keys, as A1111 VAE files), the same
    as a `.pt` holding a whole-checkpoint-style `{"state_dict": {"first_stage_model.*": ...}}` and as a diffusers
    folder; plus another one named for tiny-sd1's "Automatic" choice."""
    folder = Path(models_dir) / "VAE"
    folder.mkdir(parents=True, exist_ok=True)
    vae = other_vae(7)
    ldm = {k: v.detach().clone().contiguous() for k, v in _vae_to_ldm(vae).items()}
    paths = {
        "file": folder / "tiny-other.safetensors",
        "pt": folder / "tiny-other-ckpt.pt",
        "folder": folder / "tiny-other-folder",
        "automatic": folder / "tiny-sd1.vae.pt",
    }
    save_file(ldm, str(paths["file"]))
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in ldm.items()}, "global_step": 1},
               paths["pt"])
    vae.save_pretrained(paths["folder"], safe_serialization=True)
    auto = {k: v.detach().clone().contiguous() for k, v in _vae_to_ldm(other_vae(8)).items()}
    torch.save(auto, paths["automatic"])
    return paths


def write_embeddings(models_dir: Path) -> dict[str, Path]:
    """models/embeddings/ in every layout: A1111 `.pt` (1 vector), `.safetensors` emb_params (3 vectors), a
    diffusers `{token: (dim,)}` `.bin` in a subfolder with a mixed-case name, an SDXL clip_l/clip_g pair (2 vectors),
    and one of a width no tiny model has."""
    folder = Path(models_dir) / "embeddings"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(11)

    def vectors(n: int, width: int) -> torch.Tensor:
        return torch.randn(n, width, generator=g)

    paths = {
        "tinyone": folder / "tinyone.pt",
        "tinymulti": folder / "tinymulti.safetensors",
        "TinyDiff": folder / "sub" / "TinyDiff.bin",
        "tinyxl": folder / "tinyxl.safetensors",
        "tinywrong": folder / "tinywrong.pt",
    }
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(1, SD1_WIDTH)}, "name": "tinyone",
                "step": 500, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny-sd1"}, paths["tinyone"])
    save_file({"emb_params": vectors(3, SD1_WIDTH)}, str(paths["tinymulti"]))
    torch.save({"<tiny-diff>": vectors(1, SD1_WIDTH)[0]}, paths["TinyDiff"])
    save_file({"clip_l": vectors(2, SDXL_WIDTHS[0]), "clip_g": vectors(2, SDXL_WIDTHS[1])}, str(paths["tinyxl"]))
    torch.save({"string_to_param": {"*": vectors(1, WRONG_WIDTH)}, "name": "tinywrong"}, paths["tinywrong"])
    return paths
