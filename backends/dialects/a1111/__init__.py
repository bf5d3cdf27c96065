"""The AUTOMATIC1111 `/sdapi/v1` style (docs/reference/a1111_api.md), one concern per module:

- `api.py`: `A1111Dialect`, the contract (parse/run/authorize/render_error/the reverse pair) and the other
  /sdapi/v1 routes' methods (options, progress, lists, extras, png-info);
- `models.py`: the request and response schemas; `errors.py`: A1111's error shapes; `auth.py`: who may call;
- `options.py`: the options table and store; `listings.py`: the list routes' payloads;
- `plan.py`: a request → Jobs (hires fix, img2img, inpainting); `replies.py`: Results → A1111's answer;
- `imaging.py`: resize modes, fill, grids, upscalers; `extras.py`: /extra-* and /png-info;
- `infotext_fields.py`: infotext → request fields (the request's `infotext` and the UI's "send to");
- `upstream.py`: the relay's reverse pair and forwarding data.
"""

from __future__ import annotations

from .api import A1111Dialect
from .auth import GATEWAY_PREFIX, PREFIX, gateway_keys
from .errors import (
    HttpError,
    InitImageNotFound,
    RequestInvalid,
    ScriptNotFound,
    Unauthorized,
    UnknownOption,
    error_body,
)
from .imaging import LATENT_UPSCALE_MODES, UPSCALERS, fill_masked, make_grid, resize_image
from .infotext_fields import INFOTEXT_FIELDS, INFOTEXT_HIRES_FIELDS, INFOTEXT_SETTINGS, fields_from_infotext
from .listings import a1111_samplers, a1111_schedulers
from .models import (
    ECHO_ORDER,
    EmbeddingsResponse,
    ExtensionItem,
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    FaceRestorerItem,
    HypernetworkItem,
    ImageToImageResponse,
    Img2ImgRequest,
    LatentUpscalerModeItem,
    LoraItem,
    MemoryResponse,
    PNGInfoRequest,
    PNGInfoResponse,
    InternalProgressRequest,
    InternalProgressResponse,
    PendingTasksResponse,
    ProgressResponse,
    PromptStyleItem,
    RealesrganItem,
    SamplerItem,
    SchedulerItem,
    ScriptInfo,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    TextToImageResponse,
    Txt2ImgRequest,
    UpscalerItem,
)
from .options import OPTION_DEFAULTS, OptionsStore, coerce_option
from .plan import DEFAULT_SAMPLER, HIRES_DEFAULT_DENOISING, RANDOM_SEEDS
from .upstream import FORWARD_SPEC, from_upstream, to_upstream

__all__ = [
    "A1111Dialect", "PREFIX", "GATEWAY_PREFIX", "gateway_keys", "HttpError", "InitImageNotFound", "RequestInvalid",
    "ScriptNotFound", "Unauthorized", "UnknownOption", "error_body", "LATENT_UPSCALE_MODES", "UPSCALERS",
    "fill_masked", "make_grid", "resize_image", "INFOTEXT_FIELDS", "INFOTEXT_HIRES_FIELDS", "INFOTEXT_SETTINGS",
    "fields_from_infotext", "a1111_samplers", "a1111_schedulers", "ECHO_ORDER", "EmbeddingsResponse",
    "ExtensionItem", "ExtrasBatchImagesRequest", "ExtrasBatchImagesResponse", "ExtrasSingleImageRequest",
    "ExtrasSingleImageResponse", "FaceRestorerItem", "HypernetworkItem", "ImageToImageResponse", "Img2ImgRequest",
    "LatentUpscalerModeItem", "LoraItem", "MemoryResponse", "PNGInfoRequest", "PNGInfoResponse",
    "InternalProgressRequest", "InternalProgressResponse", "PendingTasksResponse",
    "ProgressResponse", "PromptStyleItem", "RealesrganItem", "SamplerItem", "SchedulerItem", "ScriptInfo",
    "ScriptsList", "SDModelItem", "SDVaeItem", "TextToImageResponse", "Txt2ImgRequest", "UpscalerItem",
    "OPTION_DEFAULTS", "OptionsStore", "coerce_option", "DEFAULT_SAMPLER", "HIRES_DEFAULT_DENOISING",
    "RANDOM_SEEDS", "FORWARD_SPEC", "from_upstream", "to_upstream",
]
