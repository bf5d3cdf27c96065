"""v1's request and response schemas (pydantic), and the two ways a body reaches them: JSON (text-to-image) and
multipart form items (image-to-image, masking). Unknown keys are ignored (clients send fields of newer API
versions); "7" → 7 as upstream's JSON decoding does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import bad_request, validation_error
from .options import (
    CFG_RANGE,
    CLIP_GUIDANCE_PRESETS,
    DEFAULT_SAMPLER,
    MAX_SAMPLES,
    MAX_SEED,
    SAMPLERS,
    STYLE_PRESETS,
)


class _V1Model(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPrompt(_V1Model):
    text: str = Field(max_length=2000)
    weight: float | None = Field(None, description="1 when omitted; negative: a negative prompt")


class GenerationParams(_V1Model):
    """The optional parameters every generation route takes (v1's GenerationRequestOptionalParams)."""

    cfg_scale: float | None = Field(None, ge=CFG_RANGE[0], le=CFG_RANGE[1], description="default 7")
    clip_guidance_preset: CLIP_GUIDANCE_PRESETS | None = Field(None, description="accepted; no local effect")
    sampler: SAMPLERS | None = Field(None, description=f"omitted: {DEFAULT_SAMPLER}")
    samples: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="default 1")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="0 or omitted: random")
    steps: int | None = Field(None, description="10..50, default 30")
    style_preset: STYLE_PRESETS | None = None
    extras: dict[str, Any] | None = Field(None, description="accepted and ignored")


class TextToImageRequest(GenerationParams):
    text_prompts: list[TextPrompt] = Field(min_length=1)
    height: int | None = Field(None, description="multiple of 64; omitted: the engine's default")
    width: int | None = Field(None, description="multiple of 64; omitted: the engine's default")


class ImageToImageRequest(GenerationParams):
    """The multipart fields of image-to-image besides `init_image` (indexed `text_prompts[i][text]` keys are
    gathered into `text_prompts` first)."""

    text_prompts: list[TextPrompt] = Field(min_length=1)
    init_image_mode: Literal["IMAGE_STRENGTH", "STEP_SCHEDULE"] | None = None
    image_strength: float | None = Field(None, ge=0, le=1, description="default 0.35")
    step_schedule_start: float | None = Field(None, ge=0, le=1, description="default 0.65")
    step_schedule_end: float | None = Field(None, ge=0, le=1, description="accepted; no local effect")


class MaskingRequest(GenerationParams):
    text_prompts: list[TextPrompt] = Field(min_length=1)
    mask_source: Literal["MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA"]


class Artifact(BaseModel):
    base64: str
    finishReason: str
    seed: int


class GenerationResponse(BaseModel):
    artifacts: list[Artifact]


class EngineItem(BaseModel):
    id: str
    name: str
    description: str
    type: str


class ErrorResponse(BaseModel):
    id: str
    name: str
    message: str


def parse_json(model: type[BaseModel], body: bytes | str | Mapping[str, Any]) -> Any:
    """A JSON body (or the same fields as a dict) → the request model, or a 400 `bad_request` naming each bad
    field."""
    try:
        if isinstance(body, Mapping):
            return model.model_validate(dict(body))
        if not body or not body.strip():
            raise bad_request("request body: is required (a JSON object)")
        return model.model_validate_json(body)
    except ValidationError as e:
        raise validation_error(e) from None


def parse_form(model: type[BaseModel], fields: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(dict(fields))
    except ValidationError as e:
        raise validation_error(e) from None


_TEXT_PROMPT_KEY = re.compile(r"^text_prompts\[(\d+)\]\[(\w+)\]$")


def form_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Multipart text fields → the dict a request model validates. `text_prompts[i][text|weight]` keys become a
    list ordered by index (a repeated key overrides); empty values count as absent; files are left out."""
    prompts: dict[int, dict[str, str]] = {}
    fields: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(value, str):
            continue
        m = _TEXT_PROMPT_KEY.match(key)
        if m:
            prompts.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key.startswith("extras"):
            continue  # experimental pass-through: ignored
        elif value.strip() != "":
            fields[key] = value
    if prompts:
        fields["text_prompts"] = [
            {k: v for k, v in prompts[i].items() if k == "text" or v.strip() != ""} for i in sorted(prompts)
        ]
    return fields
