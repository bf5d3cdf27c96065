"""Stability v1's tables as data (docs/reference/hosted_apis.md §A): the enums a request may name, the defaults
and limits the dialect applies, the seed range, and the wire-format listing of v1's `sampler` enum."""

from __future__ import annotations

from typing import Literal

from ...sampler_table import STABILITY_SAMPLERS
from ...seeds import SeedRange

MAX_SEED = 4294967295  # uint32: the accepted `seed` range is 0..MAX_SEED (0: random)
# `seed` 0 or absent draws in 1..MAX_SEED, so that 0 never reaches the client; sample i uses seed + i.
RANDOM_SEEDS = SeedRange(1, MAX_SEED)

STEPS_STRICT = (10, 50)  # the current upstream
STEPS_LENIENT = (10, 150)  # `[stability_v1] lenient = true`: the old range, clamped instead of rejected
DEFAULT_STEPS = 30
DEFAULT_CFG = 7.0
DEFAULT_SAMPLER = "K_DPMPP_2M"  # "server picks" upstream
DEFAULT_IMAGE_STRENGTH = 0.35
DEFAULT_STEP_SCHEDULE_START = 0.65
MAX_SAMPLES = 10
CFG_RANGE = (0.0, 35.0)
LOCAL_CREDITS = 1_000_000.0  # local generation costs nothing; clients that check for credits > 0 go ahead

# v1's `sampler` enum: the keys of the sampler table's Stability rows (backends/samplers.py), in v1's order.
SAMPLERS = Literal[tuple(STABILITY_SAMPLERS)]  # type: ignore[valid-type]
STYLE_PRESETS = Literal[
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic", "pixel-art",
    "tile-texture",
]
CLIP_GUIDANCE_PRESETS = Literal["FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"]
FINISH_REASONS = ("SUCCESS", "ERROR", "CONTENT_FILTERED")


def stability_samplers() -> list[str]:
    """The Stability v1 `sampler` enum (each maps to a row of the sampler table, backends/samplers.py)."""
    return list(STABILITY_SAMPLERS)
