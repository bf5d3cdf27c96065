"""The ModelsLab / stablediffusionapi.com dialect (docs/reference/hosted_apis.md §C;
docs/reference/seeds/004_48e4500ad6959eba.txt): text2img on every route family (v6, enterprise, legacy v3/v4
dreambooth, realtime), fetch, the enterprise stubs and system_load.

- options.py: the route families, schedulers, defaults, limits, seed range and the `[modelslab]` settings;
- models.py: the request body with ModelsLab's typing quirks (numbers as strings, flags as "yes"/"no", booleans,
  "true" or 1, null meaning absent), its required fields and limits, in its own messages;
- errors.py: the error shape `{status, message, messege}`;
- plan.py: request → Job and `meta`, the infotext; replies.py: `processing` / `failed` / webhook bodies;
- jobs.py: the results store behind fetch, the ETA, webhooks; files.py: the `/generations/` files;
- api.py: `ModelslabDialect` (parse/run/authorize/render_error and the other routes' methods);
- upstream.py: the reverse pair for the relay (Job → ModelsLab request, polling, answer → Result) and the end of
  a forwarded request (`finish_forward`).

Decisions where ModelsLab is vague or cannot be matched locally (each also visible in the response's `meta`):
* `num_inference_steps` 1..50 is accepted and capped at `[modelslab] max_steps` (a note says so).
* The switches run through the engine's features: `panorama` (width = 4 × the requested height, within
  `[limits] max_width`), `self_attention` (SAG, SD1/SD2), `tomesd`, `upscale` (a latent second pass at 2×, or
  "3"/"4"), `vae`, `embeddings_model` (a name not in the prompt is appended to it), `safety_checker` (a flagged
  image comes back black, `nsfw_content_detected` true), `multi_lingual` (translated to English first; the
  translated prompt is `meta.prompt`, the original `meta.original_prompt`), `enhance_prompt` (quality phrases,
  deterministic). A switch that needs a model that is not installed is a 400 naming what to install, except the
  safety checker: the image is returned, `nsfw_content_detected` is null and `meta.not_applied` says no check ran.
* Options with no local effect (hires fix, IP-adapter, load balancer, `algorithm_type`) and what a switch could
  not do for one job (SAG on SDXL) are listed in `meta.not_applied` with the reason; nothing pretends to have run.
* Scheduler names run through the shared sampler table; the three that cannot run SD text-to-image
  (KarrasVe, ScoreSdeVe, DDIMInverse) run their nearest equivalent, and `meta.scheduler` is the class that ran.
* `base64: "yes"` puts raw base64 PNG data (no `data:` prefix) in `output`; the URLs stay in `proxy_links`.
* A webhook to a host not in `[modelslab] webhook_hosts` (default: none) is refused with a 400 error before any
  work starts, rather than generating and silently not calling back.
* Errors use the documented HTTP codes (400, 401, 404, 429, 500, 503); `[modelslab] always_200 = true` answers
  every error with HTTP 200 for clients written against the historical API.
"""

from __future__ import annotations

from .api import ModelslabDialect
from .errors import InvalidKey, RateLimited, RequestNotFound, error_body, error_response
from .files import GenerationFiles
from .jobs import JobStore, Record, key_owner, webhook_problem
from .models import (
    FetchRequest,
    Text2ImgRequest,
    check,
    parse_body,
    parse_flag,
    parse_loras,
    parse_number,
    parse_request,
    yes_no,
)
from .options import (
    DEFAULTS,
    ENTERPRISE,
    FAMILIES,
    FAMILY,
    GENERATIONS,
    LORA_STRENGTH,
    MAX_SEED,
    RANDOM_SEEDS,
    RANGES,
    SCHEDULERS,
    SYSTEM_LOAD,
    Family,
    Settings,
)
from .plan import Plan, build_plan, infotext, nsfw_detected, result_meta
from .replies import failed_body, processing_body, webhook_payload
from .upstream import (
    Finished,
    Pending,
    decode_output,
    fetch_request,
    job_to_request,
    parse_response,
    result_from_response,
)

__all__ = [
    "DEFAULTS", "ENTERPRISE", "FAMILIES", "FAMILY", "GENERATIONS", "LORA_STRENGTH", "MAX_SEED", "RANDOM_SEEDS",
    "RANGES", "SCHEDULERS", "SYSTEM_LOAD", "FetchRequest", "Family", "Finished", "GenerationFiles", "InvalidKey",
    "JobStore", "ModelslabDialect", "Pending", "Plan", "RateLimited", "Record", "RequestNotFound", "Settings",
    "Text2ImgRequest", "build_plan", "check", "decode_output", "error_body", "error_response", "failed_body",
    "fetch_request", "infotext", "job_to_request", "key_owner", "nsfw_detected", "result_meta", "parse_body", "parse_flag",
    "parse_loras", "parse_number", "parse_request", "parse_response", "processing_body", "result_from_response",
    "webhook_payload", "webhook_problem", "yes_no",
]
