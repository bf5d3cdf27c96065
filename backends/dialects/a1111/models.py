"""A1111 1.10's request and response models (docs/reference/a1111_api.md §1): its fields, defaults and
pydantic v1 habits, so that every A1111 client's body parses as it does there."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    subseed_strength: Optional[float] = Field(0, description="0..1: how far the noise moves toward the subseed's")
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
    # The reseller gateway form (docs/reference/seeds/002_55db42df34d1e548.txt) names the checkpoint in `model`;
    # A1111 itself would ignore it.
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


class PendingTasksResponse(BaseModel):
    size: int
    tasks: list[str]


class InternalProgressRequest(BaseModel):
    id_task: Optional[str] = None
    id_live_preview: int = -1
    live_preview: bool = True


class InternalProgressResponse(BaseModel):
    active: bool
    queued: bool
    completed: bool
    progress: Optional[float] = None
    eta: Optional[float] = None
    live_preview: Optional[str] = None
    id_live_preview: int = -1
    textinfo: Optional[str] = None


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
