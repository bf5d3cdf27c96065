"""The Stability AI REST v1 style (docs/reference/hosted_apis.md §A; the resellers' copies of its documentation:
docs/reference/seeds/000_9daa22ba4189ec4a.txt, 001_002dc88313dc43f0.txt): one package, one file per concern.

- `api.py`: `StabilityV1Dialect`, the contract (parse → run, authorize, render_error) and the other v1 routes;
- `models.py`: the request/response schemas and how JSON and multipart bodies reach them;
- `plan.py`: a request → its Job (prompt weights, seeds, steps, images and masks);
- `replies.py`: a Result → JSON artifacts or a PNG with Finish-Reason/Seed;
- `engines.py`, `options.py`: the engines and their size rules, the enums, defaults and limits, as data;
- `errors.py`: v1's `{id, name, message}` shape;
- `upstream.py`: the reverse pair the relay uses to speak v1 to a gateway, and the forwarding spec.
"""

from __future__ import annotations

from .replies import encode_pngs, finish_reasons, to_reply
from .api import IMAGE_TO_IMAGE, MASKING, TEXT_TO_IMAGE, StabilityV1Dialect
from .engines import (
    DEFAULT_SD_ENGINE,
    DEFAULT_SDXL_ENGINE,
    ENGINES,
    SDXL_V1_SIZES,
    Engine,
    SizeRule,
    check_size,
    default_size,
    rule_for,
)
from .errors import (
    STATUS_NAMES,
    V1Error,
    bad_request,
    engine_not_found,
    render_error,
    validation_error,
)
from .models import (
    EngineItem,
    ErrorResponse,
    GenerationParams,
    GenerationResponse,
    ImageToImageRequest,
    MaskingRequest,
    TextPrompt,
    TextToImageRequest,
    form_fields,
    parse_json,
)
from .options import (
    CLIP_GUIDANCE_PRESETS,
    DEFAULT_CFG,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_SEED,
    RANDOM_SEEDS,
    SAMPLERS,
    STEPS_LENIENT,
    STEPS_STRICT,
    STYLE_PRESETS,
    stability_samplers,
)
from .plan import (
    Planned,
    mask_from,
    prompts_to_text,
    read_image,
    resolve_seed,
    resolve_steps,
    wants_png,
)
from .upstream import FORWARD_SPEC, Sent, from_upstream, pick_engine, to_upstream

__all__ = [
    "CLIP_GUIDANCE_PRESETS",
    "DEFAULT_CFG",
    "DEFAULT_SAMPLER",
    "DEFAULT_SDXL_ENGINE",
    "DEFAULT_SD_ENGINE",
    "DEFAULT_STEPS",
    "ENGINES",
    "FORWARD_SPEC",
    "IMAGE_TO_IMAGE",
    "MASKING",
    "MAX_SEED",
    "RANDOM_SEEDS",
    "SAMPLERS",
    "SDXL_V1_SIZES",
    "STATUS_NAMES",
    "STEPS_LENIENT",
    "STEPS_STRICT",
    "STYLE_PRESETS",
    "TEXT_TO_IMAGE",
    "Engine",
    "EngineItem",
    "ErrorResponse",
    "GenerationParams",
    "GenerationResponse",
    "ImageToImageRequest",
    "MaskingRequest",
    "Planned",
    "Sent",
    "SizeRule",
    "StabilityV1Dialect",
    "TextPrompt",
    "TextToImageRequest",
    "V1Error",
    "bad_request",
    "check_size",
    "default_size",
    "encode_pngs",
    "engine_not_found",
    "finish_reasons",
    "form_fields",
    "from_upstream",
    "mask_from",
    "parse_json",
    "pick_engine",
    "prompts_to_text",
    "read_image",
    "render_error",
    "resolve_seed",
    "resolve_steps",
    "rule_for",
    "stability_samplers",
    "to_reply",
    "to_upstream",
    "validation_error",
    "wants_png",
]
