"""The OpenAI Images API style (docs/reference/openai_images.md), as a package:

- `options.py`: the tables (operations, model names, sizes, quality → steps/guidance, style → prompt style, seed
  range) and the `[openai]` config table;
- `models.py`: the request models and `parse_request`; `errors.py`: the `{"error": {...}}` shape;
- `plan.py`: request → Job (size, mask, seeds, owner); `replies.py`: Result → answer; `files.py`: the `url` files;
- `upstream.py`: the relay's reverse pair and the `ForwardSpec`;
- `api.py`: `OpenAIDialect`, the contract (backends/dialects/base.py) the routes and the tab call.

Decisions where OpenAI cannot be matched locally: any OpenAI model name runs what `[models.aliases]` maps it to
(else the server's default model); the service is lenient (any model takes any size, quality, style, format)
unless `[openai] strict = true`; sizes are rounded to multiples of 8 and the size made is reported; transparency
is not made (`background: "opaque"` in every answer); streaming is refused with a 400.
"""

from __future__ import annotations

from .api import OpenAIDialect
from .errors import OpenAIError, bad_request, error_body, error_reply, invalid_size, method_not_allowed, not_found_path
from .files import ImageFiles
from .models import REQUEST_MODELS, EditRequest, GenerateRequest, ImageRequest, VariationRequest, parse_request
from .options import (
    FILES, MAX_BODY, MAX_N, MAX_PROMPT, MAX_SEED, MODEL_NAMES, OPERATIONS, OUTPUT_FORMATS, QUALITIES, QUALITY,
    RANDOM_SEEDS, STYLE_PRESETS, Settings,
)
from .plan import pick_size, repaint_mask, to_job
from .replies import result_to_reply
from .upstream import FORWARD_SPEC, Sent, answers_to_result, openai_mask, plan_upstream

__all__ = [
    "FILES", "FORWARD_SPEC", "MAX_BODY", "MAX_N", "MAX_PROMPT", "MAX_SEED", "MODEL_NAMES", "OPERATIONS",
    "OUTPUT_FORMATS", "QUALITIES", "QUALITY", "RANDOM_SEEDS", "REQUEST_MODELS", "STYLE_PRESETS", "EditRequest",
    "GenerateRequest", "ImageFiles", "ImageRequest", "OpenAIDialect", "OpenAIError", "Sent", "Settings",
    "VariationRequest", "answers_to_result", "bad_request", "error_body", "error_reply", "invalid_size",
    "method_not_allowed", "not_found_path", "openai_mask", "parse_request", "pick_size", "plan_upstream",
    "repaint_mask", "result_to_reply", "to_job",
]
