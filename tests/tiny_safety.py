"""A tiny random-weight safety checker for offline tests of `backends/local/features/safety.py`.

Laid out as the diffusers repos hold one (CompVis/stable-diffusion-safety-checker inside a pipeline folder):
`<dir>/safety_checker/` (a `StableDiffusionSafetyChecker`, `save_pretrained`) and `<dir>/feature_extractor/` (a
`CLIPImageProcessor` whose crop matches the tiny vision tower), so the feature loads it through the same
`from_pretrained` calls as the real one. Weights are seeded: every build is identical.

The checker flags an image when the cosine similarity of its embedding with a concept embedding exceeds that
concept's threshold (`concept_embeds_weights`). A cosine lies in [-1, 1]: thresholds of -2 flag every image, +2 none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

SEED = 0
IMAGE_SIZE = 32  # the vision tower's input: the processor crops to this
FLAG_ALL = -2.0
FLAG_NONE = 2.0


def build_tiny_checker(threshold: float = FLAG_ALL) -> StableDiffusionSafetyChecker:
    config = CLIPConfig(
        text_config={"vocab_size": 99, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"image_size": IMAGE_SIZE, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=8,
    )
    torch.manual_seed(SEED)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        # the special-care concepts only shift the others' scores by 0.01: kept out of the verdict
        checker.special_care_embeds_weights.fill_(FLAG_NONE)
    return checker


def write_tiny_checker(folder: Path, *, flag_all: bool = True) -> Path:
    """The checker and its feature extractor saved into `folder` (what `[features] safety_checker` names)."""
    folder = Path(folder)
    build_tiny_checker(FLAG_ALL if flag_all else FLAG_NONE).save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder / "feature_extractor")
    return folder
