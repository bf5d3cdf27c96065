"""The AUTOMATIC1111 `/sdapi/v1` dialect (reference/a1111_api.md): request models with A1111 1.10's fields and
defaults, the translation request → Job(s) and Result → response (images with infotext, the `parameters` echo,
the `info` JSON string), infotext writing and parsing, prompt styles, the options store, and A1111's error shape.

Nothing outside this module knows A1111's field names; the HTTP router (webui/routes/a1111.py) only binds
`A1111Api` methods to paths. Behaviour that A1111 leaves undefined or silently drops (unknown samplers, unknown
checkpoints in override_settings, unknown option keys) gets a clear error here instead.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import json
import logging
import os
import random
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from PIL import Image, ImageFilter, ImageOps
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import outputs
from ..config import REPO_ROOT
from ..infotext import VERSION, checkpoint_short_name, create_infotext, parse_generation_parameters, quote
from ..styles import StyleStore
from ..styles import styles_path as configured_styles_path
from ..images import decode_base64_image, encode_base64, read_infotext
from . import PerService
from ..job import InvalidRequest, Job, ModelInfo, Result, SdgateError

log = logging.getLogger(__name__)

MAX_SEED = 4294967294  # A1111 draws random seeds below this
DEFAULT_SAMPLER = "DPM++ 2M"  # A1111 1.9+: samplers[0], used when both sampler_name and sampler_index are null
RNG_SOURCE = "CPU"  # the engine draws every image's noise from its own CPU torch.Generator
MAX_UPSCALE_SIDE = 16384

# ------------------------------------------------------------------------------------------------ tables

# A1111 1.10 option names and defaults: the ones clients read or set (§3.4) and the ones this server honours
# (marked *). POST /options accepts exactly these keys; the values of the others are stored and echoed.
OPTION_DEFAULTS: dict[str, Any] = {
    # saving
    "samples_save": True,
    "samples_format": "png",  # *
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    "grid_save": True,  # *
    "grid_format": "png",
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "n_rows": -1,
    "enable_pnginfo": True,  # *
    "save_txt": False,
    "save_images_before_face_restoration": False,
    "save_images_before_highres_fix": False,
    "save_images_before_color_correction": False,
    "save_mask": False,
    "save_mask_composite": False,
    "jpeg_quality": 80,  # *
    "webp_lossless": False,  # *
    "export_for_4chan": True,
    "img_downscale_threshold": 4.0,
    "target_side_length": 4000.0,
    "img_max_size_mp": 200.0,
    "use_original_name_batch": True,
    "use_upscaler_name_as_suffix": False,
    "save_selected_only": True,
    "save_init_img": False,
    "temp_dir": "",
    "clean_temp_dir_at_start": False,
    "save_incomplete_images": False,
    "outdir_samples": "",
    "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_img2img_samples": "outputs/img2img-images",
    "outdir_extras_samples": "outputs/extras-images",
    "outdir_grids": "",
    "outdir_txt2img_grids": "outputs/txt2img-grids",
    "outdir_img2img_grids": "outputs/img2img-grids",
    "outdir_save": "log/images",
    "outdir_init_images": "outputs/init-images",
    "save_to_dirs": True,
    "grid_save_to_dirs": True,
    "directories_filename_pattern": "[date]",
    "directories_max_prompt_words": 8,
    # upscaling / face restoration
    "ESRGAN_tile": 192,
    "ESRGAN_tile_overlap": 8,
    "realesrgan_enabled_models": ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
    "upscaler_for_img2img": None,
    "face_restoration": False,
    "face_restoration_model": "CodeFormer",
    "code_former_weight": 0.5,
    "face_restoration_unload": False,
    # system / API
    "auto_launch_browser": "Local",
    "show_warnings": False,
    "memmon_poll_rate": 8,
    "samples_log_stdout": False,
    "multiple_tqdm": True,
    "list_hidden_files": True,
    "disable_mmap_load_safetensors": False,
    "api_enable_requests": True,
    "api_forbid_local_requests": True,
    "api_useragent": "",
    # stable diffusion
    "sd_model_checkpoint": None,  # * a title; the live value comes from the model manager
    "sd_checkpoints_limit": 1,
    "sd_checkpoints_keep_in_cpu": True,
    "sd_checkpoint_cache": 0,
    "sd_unet": "Automatic",
    "enable_quantization": False,
    "emphasis": "Original",  # * "None" turns the (x:1.2) syntax off
    "enable_batch_seeds": True,
    "comma_padding_backtrack": 20,
    "sdxl_clip_l_skip": False,
    "CLIP_stop_at_last_layers": 1,  # *
    "upcast_attn": False,
    "randn_source": RNG_SOURCE,
    "tiling": False,
    "hires_fix_refiner_pass": "second pass",
    "enable_prompt_comments": True,
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0,
    "sd_vae_checkpoint_cache": 0,
    "sd_vae": "Automatic",  # accepted and stored; the checkpoint's own VAE is used
    "sd_vae_overrides_per_model_preferences": True,
    "auto_vae_precision_bfloat16": False,
    "auto_vae_precision": True,
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "inpainting_mask_weight": 1.0,
    "initial_noise_multiplier": 1.0,
    "img2img_extra_noise": 0.0,
    "img2img_color_correction": False,
    "img2img_fix_steps": False,
    "img2img_background_color": "#ffffff",
    "return_mask": False,
    "return_mask_composite": False,
    "overlay_inpaint": True,  # * paste the unmasked original back over an inpainted result
    "cross_attention_optimization": "Automatic",
    "s_min_uncond": 0.0,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_img2img": 0.0,
    "token_merging_ratio_hr": 0.0,
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "persistent_cond_cache": True,
    "batch_cond_uncond": True,
    "fp8_storage": "Disable",
    "cache_fp16_weight": False,
    "auto_backcompat": True,
    "use_old_emphasis_implementation": False,
    "use_old_karras_scheduler_sigmas": False,
    "no_dpmpp_sde_batch_determinism": False,
    "use_old_hires_fix_width_height": False,
    "hires_fix_use_firstpass_conds": False,
    "use_old_scheduling": False,
    "use_downcasted_alpha_bar": False,
    "refiner_switch_by_sample_steps": False,
    # extra networks
    "sd_hypernetwork": "None",
    "sd_lora": "None",
    "lora_preferred_name": "Alias from file",
    "lora_add_hashes_to_infotext": True,
    "extra_networks_default_multiplier": 1.0,
    # UI-side switches some clients read or set
    "return_grid": True,  # *
    "do_not_show_images": False,
    "send_seed": True,
    "send_size": True,
    "js_modal_lightbox": True,
    "show_progressbar": True,
    "quicksettings_list": ["sd_model_checkpoint"],
    "hide_samplers": [],
    "localization": "None",
    # infotext
    "add_model_hash_to_info": True,  # *
    "add_model_name_to_info": True,  # *
    "add_user_name_to_info": False,
    "add_version_to_infotext": True,  # *
    "disable_weights_auto_swap": True,
    "infotext_skip_pasting": [],
    "infotext_styles": "Apply if any",
    # live previews
    "live_previews_enable": True,  # *
    "live_previews_image_format": "png",
    "show_progress_grid": True,
    "show_progress_every_n_steps": 10,  # *
    "show_progress_type": "Approx cheap",
    "live_preview_content": "Prompt",
    "live_preview_refresh_period": 1000.0,
    "live_preview_fast_interrupt": False,
    # sampler parameters
    "eta_ddim": 0.0,  # *
    "eta_ancestral": 1.0,
    "ddim_discretize": "uniform",
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "sigma_min": 0.0,
    "sigma_max": 0.0,
    "rho": 0.0,
    "eta_noise_seed_delta": 0,
    "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False,
    "uni_pc_variant": "bh1",
    "uni_pc_skip_type": "time_uniform",
    "uni_pc_order": 3,
    "uni_pc_lower_order_final": True,
    "sd_noise_schedule": "Default",
    "skip_early_cond": 0.0,
    "beta_dist_alpha": 0.6,
    "beta_dist_beta": 0.6,
    # postprocessing
    "postprocessing_enable_in_main_ui": [],
    "postprocessing_operation_order": [],
    "upscaling_max_images_in_cache": 5,
    # derived, read-only
    "sd_checkpoint_hash": "",
}

# A1111 ignores these from the API (`restrict_api`): a client must not open the server to URL fetching.
RESTRICTED_OPTIONS = frozenset({"api_enable_requests", "api_forbid_local_requests", "api_useragent", "outdir_samples",
    "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids",
    "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save", "outdir_init_images", "temp_dir"})
READ_ONLY_OPTIONS = frozenset({"sd_checkpoint_hash"})
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "samples_format": ("png", "jpg", "jpeg", "webp"),
    "grid_format": ("png", "jpg", "jpeg", "webp"),
    "emphasis": ("Original", "No norm", "Ignore", "None"),
    "randn_source": ("GPU", "CPU", "NV"),
}

# Pixel-space upscalers this server has (A1111's built-ins; model upscalers such as ESRGAN are not shipped).
UPSCALERS: dict[str, Any] = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
# Hires-fix latent modes (§3.7). Hires runs in pixel space here, so each maps to the nearest Pillow filter.
LATENT_UPSCALE_MODES: dict[str, Any] = {
    "Latent": Image.Resampling.BILINEAR,
    "Latent (antialiased)": Image.Resampling.BILINEAR,
    "Latent (bicubic)": Image.Resampling.BICUBIC,
    "Latent (bicubic antialiased)": Image.Resampling.BICUBIC,
    "Latent (nearest)": Image.Resampling.NEAREST,
    "Latent (nearest-exact)": Image.Resampling.NEAREST,
}
HIRES_DEFAULT_DENOISING = 0.7  # A1111's UI default; the API's null would fail there

# request.infotext (1.8+): infotext key → (request field, type), used for fields the request did not set.
INFOTEXT_FIELDS: dict[str, tuple[str, type]] = {
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Size-1": ("width", int),
    "Size-2": ("height", int),
    "Denoising strength": ("denoising_strength", float),
}
INFOTEXT_HIRES_FIELDS: dict[str, tuple[str, type]] = {
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
}
INFOTEXT_SETTINGS: dict[str, str] = {"Clip skip": "CLIP_stop_at_last_layers", "Emphasis": "emphasis"}

CMD_FLAGS: dict[str, Any] = {
    "api": True,
    "nowebui": False,
    "api_log": False,
    "api_server_stop": False,
    "skip_torch_cuda_test": True,
    "no_half": False,
    "no_half_vae": False,
    "precision": "autocast",
    "lowvram": False,
    "medvram": False,
    "medvram_sdxl": False,
    "xformers": False,
    "opt_sdp_attention": True,
    "disable_safe_unpickle": False,
    "enable_insecure_extension_access": False,
    "cors_allow_origins": None,
    "cors_allow_origins_regex": None,
    "subpath": None,
    "timeout_keep_alive": 30,
    "disable_console_progressbars": True,
    "hide_ui_dir_config": True,
    "freeze_settings": False,
    "ui_debug_mode": False,
    "skip_version_check": True,
}
REDACTED = "<redacted>"

# ------------------------------------------------------------------------------------------- request models


class _A1111Model(BaseModel):
    # pydantic v1 habits A1111 clients rely on: unknown keys ignored, "20" → 20, 20 → "20" for strings.
    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, coerce_numbers_to_str=True, protected_namespaces=()
    )


class _ProcessingRequest(_A1111Model):
    """The fields txt2img and img2img share (`StableDiffusionProcessing`), in A1111's order."""

    prompt: Optional[str] = ""
    negative_prompt: Optional[str] = ""
    styles: Optional[list[str]] = Field(None, description="names from /prompt-styles, applied to the prompts")
    seed: Optional[int] = Field(-1, description="-1: random; image i of the request uses seed + i")
    subseed: Optional[int] = -1
    subseed_strength: Optional[float] = Field(0, description="variation seeds are not supported; reported as 0")
    seed_resize_from_h: Optional[int] = -1
    seed_resize_from_w: Optional[int] = -1
    sampler_name: Optional[str] = Field(
        None, description="A1111 name (1.9+ or legacy 'DPM++ 2M Karras'); null: sampler_index"
    )
    scheduler: Optional[str] = Field(
        None, description="schedule type name or label; null/'automatic': the sampler's own"
    )
    batch_size: Optional[int] = 1
    n_iter: Optional[int] = 1
    steps: Optional[int] = Field(50, description="A1111's API default is 50")
    cfg_scale: Optional[float] = 7.0
    width: Optional[int] = 512
    height: Optional[int] = 512
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: Optional[bool] = False
    do_not_save_grid: Optional[bool] = False
    eta: Optional[float] = None
    denoising_strength: Optional[float] = None
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = Field(
        None, description="options for this request only (see /options)"
    )
    override_settings_restore_afterwards: Optional[bool] = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: Optional[bool] = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None

    @field_validator("seed", "subseed", mode="before")
    @classmethod
    def _blank_seed_is_random(cls, value):
        return -1 if isinstance(value, str) and not value.strip() else value


class _ApiExtras(_A1111Model):
    """The API-only fields A1111 appends to both processing models."""

    sampler_index: Optional[str] = "Euler"
    script_name: Optional[str] = None
    script_args: Optional[list[Any]] = Field(default_factory=list)
    send_images: Optional[bool] = True
    save_images: Optional[bool] = False
    alwayson_scripts: Optional[dict[str, Any]] = Field(default_factory=dict)
    infotext: Optional[str] = Field(None, description="an infotext; fills every field the request does not set")
    # The reseller gateway form (seeds/002) names the checkpoint in `model`; A1111 itself would ignore it.
    model: Optional[str] = Field(None, exclude=True, description="gateway extension: checkpoint for this request")


class Txt2ImgRequest(_ApiExtras, _ProcessingRequest):
    """`StableDiffusionTxt2ImgProcessingAPI` (A1111 1.10)."""

    enable_hr: Optional[bool] = False
    firstphase_width: Optional[int] = 0
    firstphase_height: Optional[int] = 0
    hr_scale: Optional[float] = 2.0
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: Optional[int] = 0
    hr_resize_x: Optional[int] = 0
    hr_resize_y: Optional[int] = 0
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: Optional[str] = ""
    hr_negative_prompt: Optional[str] = ""
    force_task_id: Optional[str] = None


class Img2ImgRequest(_ApiExtras, _ProcessingRequest):
    """`StableDiffusionImg2ImgProcessingAPI` (A1111 1.10)."""

    init_images: Optional[list[str]] = Field(None, description="base64 images, with or without a data: prefix")
    denoising_strength: Optional[float] = 0.75
    resize_mode: Optional[int] = Field(0, description="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent")
    image_cfg_scale: Optional[float] = None
    mask: Optional[str] = Field(None, description="base64 mask; white is repainted")
    mask_blur_x: Optional[int] = 4
    mask_blur_y: Optional[int] = 4
    mask_blur: Optional[int] = None
    mask_round: Optional[bool] = True
    inpainting_fill: Optional[int] = Field(0, description="0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpaint_full_res: Optional[bool] = True
    inpaint_full_res_padding: Optional[int] = 0
    inpainting_mask_invert: Optional[int] = 0
    initial_noise_multiplier: Optional[float] = None
    latent_mask: Optional[str] = None
    force_task_id: Optional[str] = None
    include_init_images: Optional[bool] = Field(False, exclude=True)


def _echo_order(cls) -> list[str]:
    own = [n for n in cls.model_fields if n not in _ProcessingRequest.model_fields and n not in _ApiExtras.model_fields]
    return [*_ProcessingRequest.model_fields, *own, *_ApiExtras.model_fields]


# The echo lists the shared processing fields, then the task's own, then the API extras, as A1111 does.
ECHO_ORDER = {Txt2ImgRequest: _echo_order(Txt2ImgRequest), Img2ImgRequest: _echo_order(Img2ImgRequest)}


class ExtrasBaseRequest(_A1111Model):
    resize_mode: Optional[int] = Field(0, ge=0, le=1, description="0: scale by upscaling_resize, 1: to w × h")
    show_extras_results: Optional[bool] = True
    gfpgan_visibility: Optional[float] = Field(0, ge=0, le=1)
    codeformer_visibility: Optional[float] = Field(0, ge=0, le=1)
    codeformer_weight: Optional[float] = Field(0, ge=0, le=1)
    upscaling_resize: Optional[float] = Field(2, gt=0)
    upscaling_resize_w: Optional[int] = Field(512, ge=1)
    upscaling_resize_h: Optional[int] = Field(512, ge=1)
    upscaling_crop: Optional[bool] = True
    upscaler_1: Optional[str] = "None"
    upscaler_2: Optional[str] = "None"
    extras_upscaler_2_visibility: Optional[float] = Field(0, ge=0, le=1)
    upscale_first: Optional[bool] = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: Optional[str] = ""


class FileData(_A1111Model):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData]


class PNGInfoRequest(_A1111Model):
    image: str


# ------------------------------------------------------------------------------------------ response models


class TextToImageResponse(BaseModel):
    images: Optional[list[str]] = Field(None, description="base64 files without a data: prefix")
    parameters: dict[str, Any]
    info: str = Field(description="a JSON string: seeds, prompts, infotexts, model...")


class ImageToImageResponse(TextToImageResponse):
    pass


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: Optional[str] = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: Optional[str] = None
    textinfo: Optional[str] = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(BaseModel):
    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: Optional[str] = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = None
    scale: Optional[int] = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, Any]
    skipped: dict[str, Any]


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptInfo(BaseModel):
    name: Optional[str] = None
    is_alwayson: Optional[bool] = None
    is_img2img: Optional[bool] = None
    args: list[dict[str, Any]] = Field(default_factory=list)


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool


# ------------------------------------------------------------------------------------------------ errors


class ScriptNotFound(SdgateError):
    status = 422
    code = "script_not_found"


class InitImageNotFound(SdgateError):
    status = 404
    code = "init_image_not_found"


class UnknownOption(InvalidRequest):
    code = "unknown_option"


def error_body(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) in A1111's shape `{error, detail, body, errors}` for any exception.

    HTTPExceptions (auth, 404s) keep their status and headers; our errors carry theirs; anything else is a 500
    with the exception's message, never its traceback (the server log has that)."""
    from starlette.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return exc.status_code, {"error": "HTTPException", "detail": exc.detail or "", "body": "", "errors": ""}, dict(
            exc.headers or {}
        )
    if isinstance(exc, SdgateError):
        return exc.status, {"error": type(exc).__name__, "detail": exc.message, "body": "", "errors": str(exc)}, {}
    return 500, {"error": type(exc).__name__, "detail": "", "body": "", "errors": str(exc)}, {}


# ------------------------------------------------------------------------------------------------ styles


# ------------------------------------------------------------------------------------------------ options


class OptionsStore:
    """A1111's `opts`: defaults overlaid with what clients changed, persisted as JSON (written atomically)."""

    def __init__(self, path: Path | None, defaults: dict[str, Any]):
        self.path = Path(path) if path else None
        self.defaults = dict(defaults)
        self._changed: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.path and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable options file %s: %s", self.path, e)
                saved = {}
            self._changed = {k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in self.defaults}

    def values(self) -> dict[str, Any]:
        with self._lock:
            return {**self.defaults, **self._changed}

    def get(self, key: str) -> Any:
        with self._lock:
            return self._changed.get(key, self.defaults.get(key))

    def saved(self, key: str) -> Any:
        with self._lock:
            return self._changed.get(key)

    def update(self, values: dict[str, Any]) -> None:
        if not values:
            return
        with self._lock:
            self._changed.update(values)
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                outputs.write_atomic(self.path, json.dumps(self._changed, indent=2, sort_keys=True).encode())


def coerce_option(key: str, value: Any, default: Any) -> Any:
    """Check a value against the option's default type (A1111 checks nothing and fails later)."""
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                return value.strip().lower() in ("true", "1")
            if isinstance(value, (bool, int)) and not isinstance(value, float):
                return bool(value)
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif isinstance(default, str):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            value = str(value)
        elif isinstance(default, list) and not isinstance(value, list):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"option {key!r}: expected {type(default).__name__}, got {value!r}", details={"option": key}
        ) from None
    choices = OPTION_CHOICES.get(key)
    if choices and value not in choices:
        raise InvalidRequest(f"option {key!r}: {value!r} is not one of {', '.join(choices)}", details={"option": key})
    return value


# ------------------------------------------------------------------------------------------ image helpers


def resize_image(
    mode: int, image: Image.Image, width: int, height: int, resample=Image.Resampling.LANCZOS
) -> Image.Image:
    """A1111's resize modes: 0/3 stretch, 1 cover and centre-crop, 2 fit and fill the bars by stretching the
    image's edge rows/columns."""
    if image.size == (width, height):
        return image
    if mode == 1:
        scale = max(width / image.width, height / image.height)
        w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
        resized = image.resize((w, h), resample)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode == 2:
        scale = min(width / image.width, height / image.height)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        resized = image.resize((w, h), resample)
        canvas = Image.new(image.mode, (width, height))
        x, y = (width - w) // 2, (height - h) // 2
        canvas.paste(resized, (x, y))
        if h < height:  # bars above and below: stretch the first/last row
            if y > 0:
                canvas.paste(resized.crop((0, 0, w, 1)).resize((w, y)), (x, 0))
            if height - y - h > 0:
                canvas.paste(resized.crop((0, h - 1, w, h)).resize((w, height - y - h)), (x, y + h))
        if w < width:
            if x > 0:
                canvas.paste(canvas.crop((x, 0, x + 1, height)).resize((x, height)), (0, 0))
            if width - x - w > 0:
                canvas.paste(canvas.crop((x + w - 1, 0, x + w, height)).resize((width - x - w, height)), (x + w, 0))
        return canvas
    return image.resize((width, height), resample)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill' masked content: paint the masked area with colours diffused in from around it, by compositing
    progressively sharper blurs of the unmasked pixels (premultiplied alpha, so the hole adds no black)."""
    keep = ImageOps.invert(mask.convert("L"))
    source = Image.new("RGBA", image.size, (0, 0, 0, 0))
    source.paste(image.convert("RGBA"), mask=keep)
    premultiplied = source.convert("RGBa")
    filled = Image.new("RGBA", image.size, (0, 0, 0, 0))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = (premultiplied.filter(ImageFilter.GaussianBlur(radius)) if radius else premultiplied).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(layer)
    return filled.convert("RGB")


def make_grid(images: list[Image.Image], rows: int = -1) -> Image.Image:
    """A1111's grid: `rows` rows (default: the largest divisor of n not above √n)."""
    n = len(images)
    if rows <= 0:
        rows = max(1, int(n**0.5))
        while n % rows:
            rows -= 1
    cols = -(-n // rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


def _floor8(value: int | None, name: str) -> int:
    if value is None:
        raise InvalidRequest(f"{name} must not be null")
    # A1111 floors the latent size to /8 without complaint; the image then has the floored size.
    return int(value) // 8 * 8


def _random_seed(seed: int | None) -> int:
    return random.randrange(MAX_SEED) if seed is None or int(seed) < 0 else int(seed)


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    """The `__metadata__` of a .safetensors header (LoRA training info), without reading the weights."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > 100 * 1024 * 1024:
                return {}
            header = json.loads(f.read(size))
        meta = header.get("__metadata__") or {}
        return {k: v for k, v in meta.items() if isinstance(k, str)}
    except (OSError, ValueError, struct.error):
        return {}


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def gateway_keys(config) -> list[str]:
    """Bearer keys for the gateway prefix: `[a1111] gateway_keys = [...]` and/or env SDGATE_GATEWAY_KEYS."""
    section = (getattr(config, "raw", None) or {}).get("a1111", {}) or {}
    keys = [str(k) for k in section.get("gateway_keys", []) or [] if str(k)]
    keys += [k.strip() for k in os.environ.get("SDGATE_GATEWAY_KEYS", "").split(",") if k.strip()]
    return keys


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class _Plan:
    """A request translated: the jobs to run and what the response needs to describe them."""

    task: str  # "txt2img" | "img2img"
    jobs: list[Job]
    prompt: str
    negative_prompt: str
    subseed: int
    width: int
    height: int
    clip_skip: int
    opts: dict[str, Any]
    extra: dict[str, Any]  # extra_generation_params known before running
    denoising_strength: float | None
    started: float
    hires: dict[str, Any] | None = None
    originals: list[Image.Image] = field(default_factory=list)  # img2img: resized inits, for the inpaint overlay
    overlay_mask: Image.Image | None = None


def _derive(job: Job, **changes) -> Job:
    """A copy of `job` for another pass or image; it gets its own id (the queue and progress key on it)."""
    return replace(job, id=uuid.uuid4().hex[:12], **changes)


def _merge(results: list[Result]) -> Result:
    if len(results) == 1:
        return results[0]
    first = results[0]
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return replace(
        first,
        images=[im for r in results for im in r.images],
        seeds=[s for r in results for s in r.seeds],
        notes=notes,
        interrupted=any(r.interrupted for r in results),
        skipped=any(r.skipped for r in results),
        timings=timings,
        finished_at=results[-1].finished_at,
    )


class A1111Api(PerService):
    """The A1111 API over a Service: what each /sdapi/v1 route does, in A1111's terms."""

    def __init__(self, service, *, options_path: Path | None = None, styles_path: Path | None = None):
        self.service = service
        self.config = service.config
        self.models = service.models
        self.queue = service.queue
        section = (self.config.raw or {}).get("a1111", {}) or {}
        self.outputs_dir = Path(self.config.outputs_dir)
        self.strict_scripts = bool(section.get("strict_scripts", False))
        defaults = dict(OPTION_DEFAULTS)
        for key, kind in (("outdir_txt2img_samples", "txt2img-images"), ("outdir_img2img_samples", "img2img-images"),
                          ("outdir_extras_samples", "extras-images"), ("outdir_txt2img_grids", "txt2img-grids"),
                          ("outdir_img2img_grids", "img2img-grids")):
            defaults[key] = str(self.outputs_dir / kind)
        options_path = options_path or Path(section.get("options_file", self.outputs_dir / "a1111-options.json"))
        self.options = OptionsStore(options_path, defaults)
        self.styles = StyleStore(styles_path or configured_styles_path(service.config.raw))
        self._warned: set[str] = set()
        self._restore_saved_checkpoint()

    # ------------------------------------------------------------------ models and options

    def _restore_saved_checkpoint(self) -> None:
        """A checkpoint chosen through POST /options survives a restart, unless --model names one."""
        saved = self.options.saved("sd_model_checkpoint")
        if not saved or self.config.model:
            return
        try:
            self.models.default = self.models.resolve(saved).title
        except SdgateError as e:
            log.warning("saved sd_model_checkpoint %r is not available (%s); using the default", saved, e.message)

    def _current_model(self) -> ModelInfo | None:
        try:
            return self.models.resolve(None)
        except SdgateError:
            return None

    def _check_option(self, key: str, value: Any) -> Any:
        if key not in OPTION_DEFAULTS:
            raise UnknownOption(f"unknown option {key!r}", details={"option": key})
        if key == "sd_model_checkpoint":
            if not value:
                raise InvalidRequest("option 'sd_model_checkpoint' must name a checkpoint")
            return self.models.resolve(str(value)).title  # every A1111 alias form; ModelNotFound otherwise
        if key in ("samples_format", "grid_format") and isinstance(value, str):
            value = value.strip().lower()
        return coerce_option(key, value, OPTION_DEFAULTS[key])

    def _apply_options(self, values: dict[str, Any]) -> None:
        if "sd_model_checkpoint" in values:
            self.models.default = values["sd_model_checkpoint"]
        self.options.update(values)

    async def get_options(self) -> dict[str, Any]:
        values = self.options.values()
        current = await asyncio.to_thread(self._current_model)
        values["sd_model_checkpoint"] = current.title if current else None
        values["sd_checkpoint_hash"] = (current.sha256 or "") if current else ""
        return values

    async def set_options(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object of option names to values")
        checked = {}
        for key, value in body.items():
            if key in RESTRICTED_OPTIONS or key in READ_ONLY_OPTIONS:
                continue
            checked[key] = await asyncio.to_thread(self._check_option, key, value)
        self._apply_options(checked)
        return None

    def _effective_options(self, override: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """This request's options: stored values overlaid with `override_settings` (checked, not stored)."""
        overrides = {}
        for key, value in (override or {}).items():
            if key in RESTRICTED_OPTIONS or key in READ_ONLY_OPTIONS:
                continue
            if key not in OPTION_DEFAULTS:
                self._warn_once(f"override:{key}", "override_settings key %r is not an option here; ignored", key)
                continue
            overrides[key] = self._check_option(key, value)
        return {**self.options.values(), **overrides}, overrides

    def _warn_once(self, tag: str, message: str, *args) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            log.warning(message, *args)

    # ------------------------------------------------------------------ request → jobs

    def _check_scripts(self, req) -> None:
        if req.script_name:
            raise ScriptNotFound(f"Script '{req.script_name}' not found")
        for title in req.alwayson_scripts or {}:
            if self.strict_scripts:
                raise ScriptNotFound(f"always on script {title} not found")
            self._warn_once(f"script:{title}", "alwayson_scripts %r is not available here; ignored", title)

    def _apply_infotext(self, req, hires: bool) -> None:
        """request.infotext (1.8+): fills every field the request did not set, as A1111 does."""
        if not req.infotext:
            return
        params = parse_generation_parameters(req.infotext)
        table = {**INFOTEXT_FIELDS, **(INFOTEXT_HIRES_FIELDS if hires else {})}
        for key, (name, kind) in table.items():
            if name in req.model_fields_set or key not in params:
                continue
            try:
                setattr(req, name, kind(params[key]))
            except (TypeError, ValueError):
                continue
        if hires and "enable_hr" not in req.model_fields_set and "Denoising strength" in params and (
            "Hires upscale" in params or "Hires upscaler" in params or params.get("Hires resize-1")
        ):
            req.enable_hr = True
        settings = dict(req.override_settings or {})
        for key, option in INFOTEXT_SETTINGS.items():
            if key in params and option not in settings:
                settings[option] = params[key]
        if "Model hash" in params and "sd_model_checkpoint" not in settings:
            for candidate in (params.get("Model hash"), params.get("Model")):
                try:
                    settings["sd_model_checkpoint"] = self.models.resolve(str(candidate)).title
                    break
                except SdgateError:
                    continue
        req.override_settings = settings or req.override_settings

    def _model_for(self, req, overrides: dict[str, Any]) -> str | None:
        if "sd_model_checkpoint" in overrides:
            return overrides["sd_model_checkpoint"]
        if req.model:
            return self.models.resolve(req.model).title
        return None

    def _base_job(self, req, opts: dict[str, Any], overrides: dict[str, Any], task: str) -> tuple[Job, dict]:
        from ..local.samplers import resolve_sampler

        prompt, negative = self.styles.apply(req.prompt or "", req.negative_prompt or "", req.styles)
        sampler = req.sampler_name or req.sampler_index or DEFAULT_SAMPLER
        resolve_sampler(sampler, req.scheduler)  # fail before queueing: unknown names list the valid ones
        preview_every = int(opts["show_progress_every_n_steps"]) if opts["live_previews_enable"] else 0
        extra: dict[str, Any] = {}
        if opts["emphasis"] == "None":
            extra["Emphasis"] = "None"
        if req.subseed_strength:
            self._warn_once("subseed", "variation seeds (subseed_strength) are not supported; ignored")
        job = Job(
            prompt=prompt,
            negative_prompt=negative,
            width=_floor8(req.width, "width"),
            height=_floor8(req.height, "height"),
            steps=req.steps if req.steps is not None else 50,
            cfg_scale=req.cfg_scale if req.cfg_scale is not None else 7.0,
            sampler=sampler,
            schedule=req.scheduler or None,
            seed=_random_seed(req.seed),
            batch_size=req.batch_size or 1,
            n_iter=req.n_iter or 1,
            model=self._model_for(req, overrides),
            clip_skip=int(opts["CLIP_stop_at_last_layers"] or 1),
            eta=req.eta if req.eta is not None else float(opts["eta_ddim"]),
            prompt_weighting=opts["emphasis"] != "None",
            preview_every=max(0, preview_every),
            source="a1111",
            extra={"task": task},
        )
        return job, extra

    def _validate(self, job: Job) -> None:
        engine = getattr(self.service, "engine", None)
        if engine is not None and hasattr(engine, "validate"):
            engine.validate(job)

    def _plan_txt2img(self, req: Txt2ImgRequest, opts, overrides, started: float) -> _Plan:
        job, extra = self._base_job(req, opts, overrides, "txt2img")
        plan = _Plan(
            task="txt2img", jobs=[job], prompt=job.prompt, negative_prompt=job.negative_prompt,
            subseed=_random_seed(req.subseed), width=job.width, height=job.height, clip_skip=job.clip_skip,
            opts=opts, extra=extra, denoising_strength=req.denoising_strength, started=started,
        )
        if req.enable_hr:
            self._plan_hires(req, plan)
        self._validate(job)
        return plan

    def _plan_hires(self, req: Txt2ImgRequest, plan: _Plan) -> None:
        """Hires fix as A1111 does it, in pixel space: a first pass at the base size, an upscale, then an
        img2img pass per image with that image's seed."""
        from ..local.samplers import resolve_sampler

        job = plan.jobs[0]
        upscaler = req.hr_upscaler or "Latent"
        if upscaler not in LATENT_UPSCALE_MODES and upscaler not in UPSCALERS:
            raise InvalidRequest(f"could not find upscaler named {upscaler}", details={"hr_upscaler": upscaler})
        extra: dict[str, Any] = {}
        if req.firstphase_width or req.firstphase_height:  # the pre-1.0 form: width/height are the final size
            target_w, target_h = job.width, job.height
            job.width = _floor8(req.firstphase_width or job.width, "firstphase_width")
            job.height = _floor8(req.firstphase_height or job.height, "firstphase_height")
            plan.width, plan.height = job.width, job.height
            extra["Hires resize"] = f"{target_w}x{target_h}"
        elif not req.hr_resize_x and not req.hr_resize_y:
            scale = req.hr_scale if req.hr_scale is not None else 2.0
            target_w, target_h = int(job.width * scale), int(job.height * scale)
            extra["Hires upscale"] = scale
        else:
            rx, ry = req.hr_resize_x or 0, req.hr_resize_y or 0
            extra["Hires resize"] = f"{rx}x{ry}"
            if not ry:
                target_w, target_h = rx, rx * job.height // job.width
            elif not rx:
                target_w, target_h = ry * job.width // job.height, ry
            else:
                target_w, target_h = rx, ry
        steps = req.hr_second_pass_steps or job.steps
        if req.hr_second_pass_steps:
            extra["Hires steps"] = req.hr_second_pass_steps
        extra["Hires upscaler"] = upscaler
        sampler, schedule = job.sampler, job.schedule
        if req.hr_sampler_name and req.hr_sampler_name != "Use same sampler":
            sampler = req.hr_sampler_name
            extra["Hires sampler"] = sampler
        if req.hr_scheduler and req.hr_scheduler != "Use same scheduler":
            schedule = req.hr_scheduler
            extra["Hires schedule type"] = schedule
        resolve_sampler(sampler, schedule)
        model = job.model
        if req.hr_checkpoint_name and req.hr_checkpoint_name != "Use same checkpoint":
            model = self.models.resolve(req.hr_checkpoint_name).title
            extra["Hires checkpoint"] = req.hr_checkpoint_name
        prompt, negative = job.prompt, job.negative_prompt
        if req.hr_prompt:
            prompt = self.styles.apply(req.hr_prompt, "", req.styles)[0]
            extra["Hires prompt"] = prompt
        if req.hr_negative_prompt:
            negative = self.styles.apply("", req.hr_negative_prompt, req.styles)[1]
            extra["Hires negative prompt"] = negative
        denoising = req.denoising_strength if req.denoising_strength is not None else HIRES_DEFAULT_DENOISING
        plan.denoising_strength = denoising
        plan.extra = {"Denoising strength": denoising, **plan.extra, **extra}
        second = _derive(
            job, prompt=prompt, negative_prompt=negative, width=_floor8(target_w, "hires width"),
            height=_floor8(target_h, "hires height"), steps=steps, sampler=sampler, schedule=schedule, model=model,
            batch_size=1, n_iter=1, denoising_strength=denoising, extra={"task": "txt2img", "hires": True},
        )
        self._validate(second)
        filt = LATENT_UPSCALE_MODES.get(upscaler) or UPSCALERS.get(upscaler) or Image.Resampling.LANCZOS
        plan.hires = {"job": second, "resample": filt}

    def _plan_img2img(self, req: Img2ImgRequest, opts, overrides, started: float) -> _Plan:
        if not req.init_images:
            raise InitImageNotFound("Init image not found")
        job, extra = self._base_job(req, opts, overrides, "img2img")
        inits = [decode_base64_image(data, f"init_images[{i}]") for i, data in enumerate(req.init_images)]
        mode = req.resize_mode or 0
        originals = [resize_image(mode, im.convert("RGB"), job.width, job.height) for im in inits]
        denoising = req.denoising_strength if req.denoising_strength is not None else 0.75
        if not 0 <= denoising <= 1:
            raise InvalidRequest(f"denoising_strength must be between 0 and 1 (got {denoising})")
        extra = {"Denoising strength": denoising, **extra}
        mask = None
        if req.mask:
            raw = decode_base64_image(req.mask, "mask")
            # A mask drawn on a transparent layer carries the strokes in its alpha channel.
            if raw.mode == "RGBA" and raw.getchannel("A").getextrema() != (255, 255):
                mask = raw.getchannel("A").point(lambda v: 255 if v > 128 else 0)
            else:
                mask = raw.convert("L")
            if req.inpainting_mask_invert:
                mask = ImageOps.invert(mask)
            mask = resize_image(mode, mask, job.width, job.height)
            blur_x = req.mask_blur if req.mask_blur is not None else (req.mask_blur_x or 0)
            blur_y = req.mask_blur if req.mask_blur is not None else (req.mask_blur_y or 0)
            if blur_x > 0 or blur_y > 0:
                mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
                if blur_x == blur_y:
                    extra["Mask blur"] = blur_x
            if req.inpaint_full_res and mask.getbbox() is not None:
                # "Only masked": work at full resolution on the mask's box plus padding, then paste back.
                job.mask_crop_padding = max(0, int(req.inpaint_full_res_padding or 0))
                extra["Inpaint area"] = "Only masked"
                extra["Masked area padding"] = job.mask_crop_padding
            if req.inpainting_fill in (2, 3):
                self._warn_once("fill", "inpainting_fill latent noise/nothing are not supported; using the original")
        inputs = [fill_masked(im, mask) if mask is not None and req.inpainting_fill == 0 else im for im in originals]
        job.init_image, job.mask, job.denoising_strength = inputs[0], mask, denoising
        jobs = [job]
        if len(inputs) > 1:
            # A1111 spreads several init images over one batch: image k of every batch uses init k.
            if len(inputs) > job.batch_size:
                raise InvalidRequest(
                    f"{len(inputs)} init images but batch_size is {job.batch_size}; send at most batch_size images"
                )
            count = len(inputs)
            jobs = [
                _derive(job, init_image=inputs[k], seed=job.seed + b * count + k, batch_size=1, n_iter=1)
                for b in range(job.n_iter)
                for k in range(count)
            ]
            originals = [originals[k] for _ in range(job.n_iter) for k in range(count)]
        else:
            originals = [originals[0]] * job.image_count
        self._validate(job)
        return _Plan(
            task="img2img", jobs=jobs, prompt=job.prompt, negative_prompt=job.negative_prompt,
            subseed=_random_seed(req.subseed), width=job.width, height=job.height, clip_skip=job.clip_skip,
            opts=opts, extra=extra, denoising_strength=denoising, started=started, originals=originals,
            overlay_mask=mask if opts["overlay_inpaint"] else None,
        )

    # ------------------------------------------------------------------ running

    async def _run(self, jobs: list[Job]) -> Result:
        results = []
        for job in jobs:
            result = await self.service.run_async(job)
            results.append(result)
            if result.interrupted:  # interrupt stops the whole request, as in A1111
                break
        return _merge(results)

    async def _run_hires(self, plan: _Plan, first: Result) -> Result:
        spec = plan.hires
        base: Job = spec["job"]
        results = []
        for image, seed in zip(first.images, first.seeds):
            upscaled = await asyncio.to_thread(image.convert("RGB").resize, (base.width, base.height), spec["resample"])
            result = await self.service.run_async(_derive(base, init_image=upscaled, seed=seed))
            results.append(result)
            if result.interrupted:
                break
        done = _merge(results)
        # The response describes the first pass (sampler, model, size), as A1111's does; images whose second
        # pass never ran (interrupted) come back as their first pass.
        return replace(
            first,
            images=done.images + first.images[len(done.images) :],
            notes=list(dict.fromkeys([*first.notes, *done.notes])),
            interrupted=done.interrupted,
            finished_at=done.finished_at,
        )

    def _prepare(self, req, started: float) -> _Plan:
        """Everything before the queue (it may hash model files and decode images: run it off the event loop)."""
        txt2img = isinstance(req, Txt2ImgRequest)
        self._apply_infotext(req, hires=txt2img)
        self._check_scripts(req)
        opts, overrides = self._effective_options(req.override_settings)
        plan = (self._plan_txt2img if txt2img else self._plan_img2img)(req, opts, overrides, started)
        if overrides and req.override_settings_restore_afterwards is False:
            self._apply_options(overrides)
        return plan

    async def txt2img(self, req: Txt2ImgRequest) -> dict[str, Any]:
        plan = await asyncio.to_thread(self._prepare, req, time.time())
        result = await self._run(plan.jobs)
        if plan.hires and result.images and not result.interrupted:
            result = await self._run_hires(plan, result)
        return await asyncio.to_thread(self._respond, req, plan, result)

    async def img2img(self, req: Img2ImgRequest) -> dict[str, Any]:
        plan = await asyncio.to_thread(self._prepare, req, time.time())
        result = await self._run(plan.jobs)
        return await asyncio.to_thread(self._respond, req, plan, result)

    # ------------------------------------------------------------------ result → response

    def _infotext(self, plan: _Plan, result: Result, job: Job, seed: int, extra: dict[str, Any]) -> str:
        opts = plan.opts
        params = {
            "Steps": job.steps,
            "Sampler": result.sampler,
            "Schedule type": "Automatic",
            "CFG scale": job.cfg_scale,
            "Seed": seed,
            "Size": f"{plan.width}x{plan.height}",
            "Model hash": result.model.hash if opts["add_model_hash_to_info"] else None,
            "Model": checkpoint_short_name(result.model) if opts["add_model_name_to_info"] else None,
            "Clip skip": plan.clip_skip if plan.clip_skip > 1 else None,
            "RNG": RNG_SOURCE if RNG_SOURCE != "GPU" else None,
            **extra,
            "Version": VERSION if opts["add_version_to_infotext"] else None,
        }
        return create_infotext(plan.prompt, plan.negative_prompt, params)

    def _echo(self, req) -> dict[str, Any]:
        """`parameters`: the request as parsed, defaults filled, nothing resolved (seed stays -1)."""
        dumped = req.model_dump()
        if isinstance(req, Img2ImgRequest) and not req.include_init_images:
            dumped["init_images"] = None
            dumped["mask"] = None
        order = ECHO_ORDER.get(type(req), list(dumped))
        return {k: dumped[k] for k in order if k in dumped}

    def _respond(self, req, plan: _Plan, result: Result) -> dict[str, Any]:
        opts = plan.opts
        job = plan.jobs[0]
        images = list(result.images)
        if plan.overlay_mask is not None:
            images = [
                Image.composite(img.convert("RGB"), orig, plan.overlay_mask) if img.size == orig.size else img
                for img, orig in zip(images, plan.originals)
            ] + images[len(plan.originals) :]
        seeds = list(result.seeds)
        n = len(images)
        extra = dict(plan.extra)
        if result.schedule and result.schedule != "Automatic":
            extra = {"Schedule type": result.schedule, **extra}
        infotexts = [self._infotext(plan, result, job, seeds[i], extra) for i in range(n)]

        fmt = str(opts["samples_format"]).lower()
        quality = int(opts["jpeg_quality"])
        index_of_first_image = 0
        if req.save_images:
            kind = f"{plan.task}-images"
            for img, seed, text in zip(images, seeds, infotexts):
                text = text if opts["enable_pnginfo"] else None
                outputs.save_image(img, self.outputs_dir, kind, seed, text, fmt, quality=quality)
            if n >= 2 and (opts["grid_save"] or opts["return_grid"]):
                grid = make_grid(images, int(opts["n_rows"]))
                if opts["grid_save"]:
                    outputs.save_image(grid, self.outputs_dir, f"{plan.task}-grids", seeds[0], infotexts[0],
                                       str(opts["grid_format"]), quality=quality, prefix="grid-")
                if opts["return_grid"]:
                    images, infotexts = [grid, *images], [infotexts[0], *infotexts]
                    seeds = [seeds[0], *seeds]
                    index_of_first_image = 1

        encoded = []
        if req.send_images is not False:
            encoded = [
                encode_base64(img, fmt, text if opts["enable_pnginfo"] else None, quality=quality,
                              lossless_webp=bool(opts["webp_lossless"]))
                for img, text in zip(images, infotexts)
            ]
        count = len(result.seeds)
        first_seed = result.seeds[0] if result.seeds else job.seed
        info = {
            "prompt": plan.prompt,
            "all_prompts": [plan.prompt] * count,
            "negative_prompt": plan.negative_prompt,
            "all_negative_prompts": [plan.negative_prompt] * count,
            "seed": first_seed,
            "all_seeds": list(result.seeds),
            "subseed": plan.subseed,
            "all_subseeds": [plan.subseed + i for i in range(count)],
            "subseed_strength": 0,
            "width": plan.width,
            "height": plan.height,
            "sampler_name": result.sampler,
            "cfg_scale": job.cfg_scale,
            "steps": job.steps,
            "batch_size": job.batch_size,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": checkpoint_short_name(result.model),
            "sd_model_hash": result.model.hash,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": req.seed_resize_from_w,
            "seed_resize_from_h": req.seed_resize_from_h,
            "denoising_strength": plan.denoising_strength,
            "extra_generation_params": extra,
            "index_of_first_image": index_of_first_image,
            "infotexts": infotexts,
            "styles": list(req.styles or []),
            "job_timestamp": datetime.datetime.fromtimestamp(plan.started).strftime("%Y%m%d%H%M%S"),
            "clip_skip": plan.clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": VERSION,
        }
        return {"images": encoded, "parameters": self._echo(req), "info": json.dumps(info, default=lambda _: None)}

    # ------------------------------------------------------------------ extras and png-info

    @staticmethod
    def _check_upscalers(req: ExtrasBaseRequest) -> tuple[str, str]:
        names = (req.upscaler_1 or "None", req.upscaler_2 or "None")
        for name in names:
            if name not in UPSCALERS:
                available = ", ".join(UPSCALERS)
                raise InvalidRequest(f"could not find upscaler named {name}; available: {available}",
                                     details={"upscaler": name, "available": list(UPSCALERS)})
        return names

    def _upscale(self, image: Image.Image, req: ExtrasBaseRequest) -> tuple[Image.Image, dict[str, Any]]:
        names = self._check_upscalers(req)
        if req.gfpgan_visibility or req.codeformer_visibility:
            self._warn_once("faces", "face restoration (GFPGAN/CodeFormer) is not available; ignored")
        if names[0] == "None":
            return image, {}
        info: dict[str, Any] = {}
        if req.resize_mode == 1:
            tw, th = req.upscaling_resize_w or 512, req.upscaling_resize_h or 512
            scale = max(tw / image.width, th / image.height)
            info["Postprocess upscale to"] = f"{tw}x{th}"
        else:
            scale = req.upscaling_resize if req.upscaling_resize is not None else 2.0
            info["Postprocess upscale by"] = scale
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if max(size) > MAX_UPSCALE_SIDE:
            raise InvalidRequest(
                f"the upscaled image would be {size[0]}x{size[1]}; the limit is {MAX_UPSCALE_SIDE} per side"
            )
        rgb = image.convert("RGB") if image.mode not in ("RGB", "RGBA", "L") else image

        def upscale(name: str) -> Image.Image:
            out = rgb.resize(size, UPSCALERS[name])
            if req.resize_mode == 1 and req.upscaling_crop:
                left, top = (out.width - tw) // 2, (out.height - th) // 2
                out = out.crop((left, top, left + tw, top + th))
            return out

        result = upscale(names[0])
        info["Postprocess upscaler"] = names[0]
        if names[1] != "None" and req.extras_upscaler_2_visibility:
            second = upscale(names[1])
            result = Image.blend(result.convert("RGB"), second.convert("RGB"), float(req.extras_upscaler_2_visibility))
            info["Postprocess upscaler 2"] = names[1]
            info["Postprocess upscaler 2 visibility"] = req.extras_upscaler_2_visibility
        if req.resize_mode == 1 and req.upscaling_crop:
            info["Postprocess crop to"] = f"{tw}x{th}"
        return result, info

    def _extras_one(self, data: str, field: str, req: ExtrasBaseRequest) -> tuple[str, str]:
        image = decode_base64_image(data, field)
        out, info = self._upscale(image, req)
        text = ", ".join(f"{k}: {quote(v)}" for k, v in info.items())
        chunks = {k: v for k, v in (image.info or {}).items() if isinstance(k, str) and isinstance(v, str)}
        if text:
            chunks["postprocessing"] = text
        parameters = chunks.pop("parameters", None)
        opts = self.options.values()
        encoded = encode_base64(out, str(opts["samples_format"]), parameters, quality=int(opts["jpeg_quality"]),
                                text_chunks=chunks)
        return encoded, text

    @staticmethod
    def _html(text: str) -> str:
        return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"

    async def extra_single_image(self, req: ExtrasSingleImageRequest) -> dict[str, Any]:
        self._check_upscalers(req)
        encoded, text = await asyncio.to_thread(self._extras_one, req.image, "image", req)
        return {"html_info": self._html(text), "image": encoded}

    async def extra_batch_images(self, req: ExtrasBatchImagesRequest) -> dict[str, Any]:
        self._check_upscalers(req)
        images, text = [], ""
        for i, item in enumerate(req.imageList):
            encoded, text = await asyncio.to_thread(self._extras_one, item.data, f"imageList[{i}].data", req)
            images.append(encoded)
        return {"html_info": self._html(text), "images": images}

    async def png_info(self, req: PNGInfoRequest) -> dict[str, Any]:
        if not req.image or not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        image = await asyncio.to_thread(decode_base64_image, req.image, "image")
        geninfo, items = read_infotext(image)
        return {"info": geninfo or "", "items": items, "parameters": parse_generation_parameters(geninfo or "")}

    # ------------------------------------------------------------------ progress and control

    def progress(self, skip_current_image: bool = False) -> dict[str, Any]:
        current = self.queue.current
        pending = self.queue.pending()
        ticket = current or (pending[0] if pending else None)
        if ticket is None:
            return {"progress": 0, "eta_relative": 0, "state": ProgressState().model_dump(), "current_image": None,
                    "textinfo": None}
        p = ticket.progress
        job = ticket.job
        job_count = max(1, p.batch_count)
        running = current is not None and p.state == "running"
        fraction = 0.0
        eta = 0.0
        if running:
            fraction = min(1.0, 0.01 + p.batch_no / job_count + (p.step / p.steps / job_count if p.steps else 0.0))
            elapsed = time.time() - (p.started_at or time.time())
            eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        task = job.extra.get("task") if job.source == "a1111" else None
        state = ProgressState(
            skipped=bool(ticket.skipped),
            interrupted=bool(ticket.interrupted),
            job=f"scripts_{task}" if task else (job.source or "job"),
            job_count=job_count,
            job_timestamp=datetime.datetime.fromtimestamp(p.started_at or ticket.submitted_at).strftime("%Y%m%d%H%M%S"),
            job_no=p.batch_no,
            sampling_step=p.step if running else 0,
            sampling_steps=p.steps,
        )
        image = None
        if running and not skip_current_image and p.preview is not None:
            image = encode_base64(p.preview, "png")
        return {"progress": fraction, "eta_relative": eta, "state": state.model_dump(), "current_image": image,
                "textinfo": None}

    def interrupt(self) -> dict:
        self.queue.interrupt_current()
        return {}

    def skip(self) -> None:
        self.queue.skip_current()
        return None

    # ------------------------------------------------------------------ lists

    def samplers(self) -> list[dict[str, Any]]:
        from ..local.samplers import a1111_samplers

        # pydantic v1 stringified option values ("True"); clients compare strings.
        return [{**s, "options": {k: str(v) for k, v in s["options"].items()}} for s in a1111_samplers()]

    def schedulers(self) -> list[dict[str, Any]]:
        from ..local.samplers import a1111_schedulers

        return a1111_schedulers()

    async def sd_models(self) -> list[dict[str, Any]]:
        models = await asyncio.to_thread(self.models.list)
        rows = []
        for m in models:
            config = None
            if m.kind == "single_file":
                yaml = Path(m.source).with_suffix(".yaml")
                config = str(yaml) if yaml.is_file() else None
            rows.append({"title": m.title, "model_name": m.name, "hash": m.hash, "sha256": m.sha256,
                         "filename": m.source, "config": config})
        return rows

    @property
    def _models_dir(self) -> Path:
        return Path(self.config.models_dir)

    def sd_vae(self) -> list[dict[str, Any]]:
        files = _files(self._models_dir / "VAE", (".safetensors", ".pt", ".ckpt"))
        return [{"model_name": p.name, "filename": str(p)} for p in files]

    def loras(self) -> list[dict[str, Any]]:
        rows = []
        for p in _files(self._models_dir / "Lora", (".safetensors", ".pt", ".ckpt")):
            meta = _safetensors_metadata(p) if p.suffix.lower() == ".safetensors" else {}
            alias = meta.get("ss_output_name") or p.stem
            rows.append({"name": p.stem, "alias": alias, "path": str(p), "metadata": meta})
        return rows

    def embeddings(self) -> dict[str, Any]:
        # Textual inversion is not applied by the engine: files found are listed as skipped, honestly.
        skipped = {
            p.stem: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": 0}
            for p in _files(self._models_dir / "embeddings", (".safetensors", ".pt", ".bin"))
        }
        return {"loaded": {}, "skipped": skipped}

    def upscalers(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for name in UPSCALERS
        ]

    def latent_upscale_modes(self) -> list[dict[str, Any]]:
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    def prompt_styles(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in self.styles.all()]

    def cmd_flags(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **CMD_FLAGS,
            "listen": cfg.host in ("0.0.0.0", "::"),
            "server_name": cfg.host,
            "port": cfg.port,
            "share": bool(cfg.share),
            "api_auth": REDACTED if cfg.api_auth else None,
            "gradio_auth": REDACTED if cfg.auth else None,
            "ckpt": cfg.model,
            "models_dir": str(cfg.models_dir),
            "ckpt_dir": str(Path(cfg.models_dir) / "Stable-diffusion"),
            "vae_dir": str(Path(cfg.models_dir) / "VAE"),
            "lora_dir": str(Path(cfg.models_dir) / "Lora"),
            "embeddings_dir": str(Path(cfg.models_dir) / "embeddings"),
            "data_dir": str(REPO_ROOT),
            "styles_file": [str(self.styles.path)],
            "device": getattr(self.service, "device", cfg.device),
            "demo": bool(cfg.demo),
        }

    async def memory(self) -> dict[str, Any]:
        return await asyncio.to_thread(_memory)

    async def refresh_checkpoints(self) -> None:
        await asyncio.to_thread(self.models.refresh)

    async def unload_checkpoint(self) -> dict:
        await asyncio.to_thread(self.models.unload)
        return {}

    async def reload_checkpoint(self) -> dict:
        await asyncio.to_thread(self.models.get, None)
        return {}


def _memory() -> dict[str, Any]:
    try:
        import psutil

        process = psutil.Process()
        rss = process.memory_info().rss
        vm = psutil.virtual_memory()
        ram = {"free": vm.available, "used": rss, "total": vm.total}
    except Exception as e:  # psutil missing or a sandbox hiding /proc
        ram = {"error": str(e)}
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("cuda not available")
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()

        def pair(name: str) -> dict[str, int]:
            return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as e:
        cuda = {"error": str(e)}
    return {"ram": ram, "cuda": cuda}


# ================================================================== the reverse pair, for the relay to a gateway
#
# A relay that sends a Job to a gateway speaking A1111 builds the call with `job_to_upstream(job)`, POSTs
# `request.json` to `request.path` (after the gateway's base URL and prefix), and turns the 200 answer into a
# Result with `upstream_to_result(job, content)`. Nothing above this line uses these functions.


@dataclass
class UpstreamRequest:
    """One A1111 call: POST `json` to `path` (relative to the gateway's base URL and prefix)."""

    path: str
    json: dict[str, Any]
    method: str = "POST"
    dropped: list[str] = field(default_factory=list)  # Job fields A1111's API cannot carry
    notes: list[str] = field(default_factory=list)


def job_to_upstream(job: Job) -> UpstreamRequest:
    """The /sdapi/v1/txt2img (or img2img, when the job has an init image) body an A1111 client would send.

    The model travels as `override_settings.sd_model_checkpoint` (restored afterwards, as webuiapi does), clip
    skip and emphasis as their options, LoRAs as `<lora:name:weight>` prompt tags; A1111 names the sampler and
    schedule type. A1111 carries every field of a Job that changes the image."""
    from ..local.samplers import resolve_sampler

    choice = resolve_sampler(job.sampler, job.schedule)
    notes = list(choice.notes)
    prompt = job.prompt + "".join(f" <lora:{lora.name}:{lora.weight:g}>" for lora in job.loras)
    overrides: dict[str, Any] = {}
    if job.model:
        overrides["sd_model_checkpoint"] = job.model
    if job.clip_skip and job.clip_skip > 1:
        overrides["CLIP_stop_at_last_layers"] = job.clip_skip
    if not job.prompt_weighting:
        overrides["emphasis"] = "None"
    body: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seed if job.seed is not None else -1,
        "sampler_name": choice.name,
        "scheduler": choice.schedule,
        "batch_size": job.batch_size,
        "n_iter": job.n_iter,
        "steps": job.steps,
        "cfg_scale": job.cfg_scale,
        "width": job.width,
        "height": job.height,
        "send_images": True,
        "save_images": False,
    }
    if job.eta is not None:
        body["eta"] = job.eta
    if overrides:
        body["override_settings"] = overrides
        body["override_settings_restore_afterwards"] = True
    path = "/sdapi/v1/txt2img"
    if job.init_image is not None:
        path = "/sdapi/v1/img2img"
        body["init_images"] = [encode_base64(job.init_image.convert("RGB"), "png")]
        body["denoising_strength"] = job.denoising_strength
        body["resize_mode"] = 0
        if job.mask is not None:
            body["mask"] = encode_base64(job.mask.convert("L"), "png")
            body["mask_blur"] = 0  # the Job's mask is final: blurred (or not) by the dialect that made it
            body["inpainting_fill"] = 1  # "original": the init image under the mask, as the Job means it
            body["inpaint_full_res"] = job.mask_crop_padding is not None
            body["inpaint_full_res_padding"] = job.mask_crop_padding or 0
    return UpstreamRequest(path=path, json=body, notes=notes)


def upstream_to_result(job: Job, content: bytes, model: ModelInfo | None = None) -> Result:
    """A 200 answer of /sdapi/v1/txt2img or img2img → Result: the images after any grid, the seeds, sampler and
    model from `info`. Raises GenerationFailed when the answer is not an A1111 response."""
    from ..job import GenerationFailed

    try:
        body = json.loads(content)
        encoded = body["images"]
        info = body.get("info") or "{}"
        info = json.loads(info) if isinstance(info, str) else info
        if not isinstance(encoded, list) or not isinstance(info, dict):
            raise TypeError("images is not a list or info is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise GenerationFailed(f"the gateway's answer is not an A1111 response ({type(e).__name__}: {e})") from None
    first = int(info.get("index_of_first_image") or 0)
    images = [decode_base64_image(data, f"images[{i}]") for i, data in enumerate(encoded[first:], first)]
    seeds = [int(s) for s in info.get("all_seeds") or []][: len(images)]
    if len(seeds) < len(images):
        start = int(info.get("seed", job.seed if job.seed is not None else -1))
        seeds += [start + i for i in range(len(seeds), len(images))]
    sampler = str(info.get("sampler_name") or job.sampler)
    if model is None:
        name = str(info.get("sd_model_name") or job.model or "a1111")
        model = ModelInfo(name=name, title=name, source="a1111", kind="remote", hash=info.get("sd_model_hash"))
    return Result(
        job=job, images=images, seeds=seeds, model=model, sampler=sampler,
        schedule=str((info.get("extra_generation_params") or {}).get("Schedule type") or job.schedule or "Automatic"),
        scheduler_class="remote", finished_at=time.time(),
    )
