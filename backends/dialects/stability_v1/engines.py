"""The v1 engines and their size rules (docs/reference/hosted_apis.md §A.3), as data, and the one check that
answers a size a rule refuses with the engine's own v1 error name.

An engine id that is not one of Stability's but names a local model (e.g. `tiny-sd1`) is served too, with the
generic rule (multiples of 64, 128 px up to the server's limits). Omitted width/height take the engine's default
(1024x1024 on the SDXL 1.0/0.9 engines, 768x768 on the 768 engine, 512x512 otherwise), so that an omitted size
never fails the engine's own rule."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import bad_request

SDXL_V1_SIZES = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344), (1536, 640),
    (640, 1536),
)


@dataclass(frozen=True)
class SizeRule:
    """What sizes an engine takes, and the error `name` a violation answers with."""

    error: str
    pairs: tuple[tuple[int, int], ...] = ()  # an exact whitelist of (width, height)
    side: tuple[int, int] | None = None  # each side within [min, max]
    pixels: tuple[int, int] | None = None  # width × height within [min, max]
    one_side_over: int | None = None  # at most one side may exceed this


@dataclass(frozen=True)
class Engine:
    id: str
    name: str
    description: str
    rule: SizeRule
    default_size: tuple[int, int]


SDXL_V1_RULE = SizeRule("invalid_sdxl_v1_dimensions", pairs=SDXL_V1_SIZES)
SD16_RULE = SizeRule("invalid_height_or_width", side=(320, 1536))
BETA_RULE = SizeRule("invalid_sdxl_v222_dimensions", side=(128, 896), one_side_over=512)
PIXELS_512_RULE = SizeRule("invalid_pixel_count", pixels=(262_144, 1_048_576))
PIXELS_768_RULE = SizeRule("invalid_pixel_count", pixels=(589_824, 1_048_576))

ENGINES: dict[str, Engine] = {
    e.id: e
    for e in (
        Engine("stable-diffusion-xl-1024-v1-0", "Stable Diffusion XL v1.0",
               "Stability-AI Stable Diffusion XL v1.0", SDXL_V1_RULE, (1024, 1024)),
        Engine("stable-diffusion-xl-1024-v0-9", "Stable Diffusion XL v0.9",
               "Stability-AI Stable Diffusion XL v0.9", SDXL_V1_RULE, (1024, 1024)),
        Engine("stable-diffusion-v1-6", "Stable Diffusion v1.6",
               "Stability-AI Stable Diffusion v1.6", SD16_RULE, (512, 512)),
        Engine("stable-diffusion-xl-beta-v2-2-2", "Stable Diffusion XL Beta v2.2.2",
               "Stability-AI Stable Diffusion XL Beta v2.2.2", BETA_RULE, (512, 512)),
        Engine("stable-diffusion-512-v2-1", "Stable Diffusion v2.1-base",
               "Stability-AI Stable Diffusion v2.1-base (512)", PIXELS_512_RULE, (512, 512)),
        Engine("stable-diffusion-768-v2-1", "Stable Diffusion v2.1",
               "Stability-AI Stable Diffusion v2.1 (768)", PIXELS_768_RULE, (768, 768)),
        Engine("stable-diffusion-v1-5", "Stable Diffusion v1.5",
               "Stability-AI Stable Diffusion v1.5", PIXELS_512_RULE, (512, 512)),
    )
}
# Relay default when a Job names no v1 engine: SDXL when its size is one of SDXL's, else SD 1.6.
DEFAULT_SDXL_ENGINE = "stable-diffusion-xl-1024-v1-0"
DEFAULT_SD_ENGINE = "stable-diffusion-v1-6"


def rule_for(engine_id: str, max_side: int = 2048) -> SizeRule:
    engine = ENGINES.get(engine_id)
    return engine.rule if engine else SizeRule("invalid_height_or_width", side=(128, max_side))


def check_size(engine_id: str, width: int, height: int, *, max_side: int = 2048, what: str = "") -> None:
    """Raise the engine's v1 error when width×height breaks its rule (every engine wants multiples of 64)."""
    got = f"{width}x{height}"
    prefix = f"{what}: " if what else ""
    if width % 64 or height % 64 or width < 64 or height < 64:
        raise bad_request(f"{prefix}height and width must be multiples of 64 (received {got})",
                          "invalid_height_or_width")
    rule = rule_for(engine_id, max_side)
    if rule.pairs and (width, height) not in rule.pairs:
        engines = " and ".join(sorted(e.id for e in ENGINES.values() if e.rule is rule)) or engine_id
        allowed = ", ".join(f"{w}x{h}" for w, h in rule.pairs)
        raise bad_request(
            f"{prefix}for the engines {engines}, the allowed dimensions are {allowed}, but we received {got}",
            rule.error,
        )
    if rule.side:
        lo, hi = rule.side
        if not (lo <= width <= hi and lo <= height <= hi):
            raise bad_request(
                f"{prefix}for the engine {engine_id}, each side must be between {lo} and {hi} pixels, "
                f"but we received {got}",
                rule.error,
            )
    if rule.one_side_over and width > rule.one_side_over and height > rule.one_side_over:
        raise bad_request(
            f"{prefix}for the engine {engine_id}, only one side may be larger than {rule.one_side_over} pixels "
            f"(at most 512x896 or 896x512), but we received {got}",
            rule.error,
        )
    if rule.pixels:
        lo, hi = rule.pixels
        if not lo <= width * height <= hi:
            raise bad_request(
                f"{prefix}for the engine {engine_id}, width × height must be between {lo} and {hi} pixels, "
                f"but we received {got} ({width * height})",
                rule.error,
            )


def default_size(engine_id: str, family: str | None = None) -> tuple[int, int]:
    engine = ENGINES.get(engine_id)
    if engine:
        return engine.default_size
    return (1024, 1024) if family == "sdxl" else (512, 512)


def engine_listing() -> list[dict[str, str]]:
    """GET /v1/engines/list rows for every v1 engine (the caller keeps those this server can serve)."""
    return [{"id": e.id, "name": e.name, "description": e.description, "type": "PICTURE"} for e in ENGINES.values()]
