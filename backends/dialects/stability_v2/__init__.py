"""The Stability AI v2beta Stable Image style (docs/reference/hosted_apis.md §B), as a package:

- `options.py`: the tables (endpoints, limits, enums, aspect-ratio sizes, seed range) and `output_size`;
- `settings.py`: the `[stability_v2]` config table; `models.py`: the request models and `parse_request`;
- `errors.py`: the `{id, name, errors}` shape; `guards.py`: the rate limit and moderation rules;
- `plan.py`: request → Job; `replies.py`: Result → answer; `upstream.py`: the relay's reverse pair;
- `api.py`: `StabilityV2Dialect`, the contract (backends/dialects/base.py) the route and the tab call.
"""

from __future__ import annotations

from .api import StabilityV2Dialect
from .errors import V2Error, bad_request, error_body, error_reply, method_not_allowed, not_found, payload_too_large
from .guards import RateLimiter
from .models import REQUEST_MODELS, CoreRequest, SD3Model, SD3Request, UltraRequest, V2Request, parse_request
from .options import (
    ASPECT_RATIOS, ENDPOINTS, MAX_BODY, MAX_PROMPT, MAX_SEED, OUTPUT_FORMATS, SIZES_1_5MP, SIZES_1MP, STYLE_PRESETS,
    nearest_aspect_ratio, output_size,
)
from .replies import finish_reason, result_to_reply, wants_json
from .settings import Settings
from .upstream import FORWARD_SPEC, Sent, UpstreamImage, answers_to_result, images_to_result, plan_upstream, read_answer

__all__ = [
    "ASPECT_RATIOS", "ENDPOINTS", "FORWARD_SPEC", "MAX_BODY", "MAX_PROMPT", "MAX_SEED", "OUTPUT_FORMATS",
    "REQUEST_MODELS", "SIZES_1MP", "SIZES_1_5MP", "STYLE_PRESETS", "CoreRequest", "RateLimiter", "SD3Model",
    "SD3Request", "Sent", "Settings", "StabilityV2Dialect", "UltraRequest", "UpstreamImage", "V2Error", "V2Request",
    "answers_to_result", "bad_request", "error_body", "error_reply", "finish_reason", "images_to_result",
    "method_not_allowed", "nearest_aspect_ratio", "not_found", "output_size", "parse_request", "payload_too_large",
    "plan_upstream", "read_answer", "result_to_reply", "wants_json",
]
