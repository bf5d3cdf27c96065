"""The v2beta tables, as data (docs/reference/hosted_apis.md §B): endpoints, field limits and enums, the
aspect-ratio → size tables and the seed range. Nothing here does I/O."""

from __future__ import annotations

import math

from ...seeds import SeedRange

ENDPOINTS = ("core", "ultra", "sd3")
PATH = "/v2beta/stable-image/generate/{endpoint}"
MAX_SEED = 4294967294  # the accepted `seed` range is 0..MAX_SEED (0: random)
RANDOM_SEEDS = SeedRange(1, MAX_SEED)  # a drawn seed is never 0: upstream reports the seed it drew
MAX_PROMPT = 10000
MAX_BODY = 10 * 1024 * 1024  # "payloads cannot be larger than 10MiB in size"
MAX_CLIENT_HEADER = 256
CLIENT_HEADERS = ("stability-client-id", "stability-client-user-id", "stability-client-version")

ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
# docs/reference/hosted_apis.md §B.5 (our proposal; the docs give only megapixels). ultra/sd3: the SDXL buckets
# (~1 MP); core: multiples of 64 nearest 1.5 MP.
SIZES_1MP = {
    "21:9": (1536, 640), "16:9": (1344, 768), "3:2": (1216, 832), "5:4": (1152, 896), "1:1": (1024, 1024),
    "4:5": (896, 1152), "2:3": (832, 1216), "9:16": (768, 1344), "9:21": (640, 1536),
}
SIZES_1_5MP = {
    "21:9": (1792, 768), "16:9": (1600, 896), "3:2": (1536, 1024), "5:4": (1344, 1088), "1:1": (1216, 1216),
    "4:5": (1088, 1344), "2:3": (1024, 1536), "9:16": (896, 1600), "9:21": (768, 1792),
}
ENDPOINT_SIZES = {"core": SIZES_1_5MP, "ultra": SIZES_1MP, "sd3": SIZES_1MP}
# Models trained at a smaller native size get the same shapes scaled down (side factor): an SD 1.x model asked
# for 1.5 MP repeats its subject; families not listed (SDXL, unknown hub repos) get the documented sizes.
FAMILY_SIDE_SCALE = {"sd1": 0.5, "sd2": 0.75}

OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
INPUT_FORMATS = {"PNG", "JPEG", "WEBP"}

# The 17 Stability presets (same enum as v1). The prompt templates come from styles.json, by the same name.
STYLE_PRESETS = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
    "pixel-art", "tile-texture",
)

SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")
# Rerouted upstream to the 3.5 models since 2025-04-17; still accepted.
SD3_LEGACY = {"sd3-large": "sd3.5-large", "sd3-large-turbo": "sd3.5-large-turbo", "sd3-medium": "sd3.5-medium"}
SD3_FAST = ("sd3.5-large-turbo", "sd3.5-flash")  # distilled: default cfg 1 and the config's turbo_steps
SD3_DEFAULT_CFG = {"sd3.5-large": 4.0, "sd3.5-medium": 4.0, "sd3.5-large-turbo": 1.0, "sd3.5-flash": 1.0}


def _round_to(value: float, step: int) -> int:
    return max(step, int(round(value / step)) * step)


def output_size(endpoint: str, aspect_ratio: str, family: str | None = None, scale: float = 1.0) -> tuple[int, int]:
    """The pixel size for an endpoint and aspect ratio on a model of `family`: the §B.5 table, scaled down for
    smaller-native families and by the configured `size_scale` (rounded to multiples of 8, ratio kept)."""
    w, h = ENDPOINT_SIZES[endpoint][aspect_ratio]
    factor = scale * FAMILY_SIDE_SCALE.get(family or "", 1.0)
    if factor == 1.0:
        return w, h
    return _round_to(w * factor, 8), _round_to(h * factor, 8)


def _ratio(aspect_ratio: str) -> float:
    a, b = aspect_ratio.split(":")
    return int(a) / int(b)


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The enum value closest to width:height (on a log scale, so 2:1 and 1:2 are equally far from 1:1)."""
    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda ar: abs(math.log(_ratio(ar)) - target))
