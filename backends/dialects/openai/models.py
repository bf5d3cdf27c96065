"""The OpenAI Images request models (docs/reference/openai_images.md §1-3) and `parse_request`: a JSON body
(generations) or form fields (edits, variations; a tab builds the same) → the operation's model, or OpenAI's 400
worded its way ("Missing required parameter: 'prompt'.", "Invalid value: ..."), with `param` set."""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import OpenAIError, bad_request, missing
from .options import MAX_N, MAX_PROMPT, MAX_SEED

Quality = Literal["auto", "standard", "hd", "low", "medium", "high", "xhigh", "max"]  # options.QUALITIES


class ImageRequest(BaseModel):
    """What every Images operation takes. Form values arrive as strings (`n` is "2" in multipart: §2); pydantic's
    lax mode reads them. Unknown fields (`moderation`, `safety`, Azure's, LiteLLM's extras) are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    prompt: str = Field("", max_length=MAX_PROMPT)
    model: Optional[str] = None
    n: int = Field(1, ge=1, le=MAX_N)
    size: Optional[str] = None  # "WxH" or "auto"
    quality: Optional[Quality] = None
    style: Optional[Literal["vivid", "natural"]] = None
    response_format: Optional[Literal["url", "b64_json"]] = None
    output_format: Optional[Literal["png", "jpeg", "webp"]] = None
    output_compression: Optional[int] = Field(None, ge=0, le=100)
    background: Optional[Literal["transparent", "opaque", "auto"]] = None
    moderation: Optional[Literal["low", "auto"]] = None
    user: Optional[str] = None
    safety_identifier: Optional[str] = None  # SDK 3.x: wins over `user`
    stream: bool = False
    partial_images: Optional[int] = Field(None, ge=0, le=3)
    # extension fields (§7): what SD has and OpenAI does not
    seed: Optional[int] = Field(None, ge=-1, le=MAX_SEED, description="-1 or absent: random; image i: seed + i")
    negative_prompt: str = Field("", max_length=MAX_PROMPT)
    steps: Optional[int] = Field(None, ge=1, le=150)
    guidance_scale: Optional[float] = Field(None, ge=0, le=30)

    @field_validator("size", "model", "user", "safety_identifier", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @property
    def owner(self) -> Optional[str]:
        return self.safety_identifier or self.user or None

    @property
    def images(self) -> list[bytes]:
        return []


class GenerateRequest(ImageRequest):
    pass


class EditRequest(ImageRequest):
    image: list[bytes] = Field(default_factory=list, repr=False)  # `image`, or `image[]` repeated
    mask: Optional[bytes] = Field(None, repr=False)  # alpha 0 = repaint
    input_fidelity: Optional[Literal["high", "low"]] = None
    strength: Optional[float] = Field(None, ge=0, le=1, description="extension: img2img denoising strength")

    @property
    def images(self) -> list[bytes]:
        return self.image


class VariationRequest(ImageRequest):
    image: list[bytes] = Field(default_factory=list, repr=False)
    strength: Optional[float] = Field(None, ge=0, le=1, description="extension: img2img denoising strength")

    @property
    def images(self) -> list[bytes]:
        return self.image


REQUEST_MODELS: dict[str, type[ImageRequest]] = {
    "generations": GenerateRequest, "edits": EditRequest, "variations": VariationRequest,
}
REQUIRED = {"generations": ("prompt",), "edits": ("image", "prompt"), "variations": ("image",)}


def _supported(ctx: Mapping[str, Any]) -> str:
    expected = str(ctx.get("expected", ""))
    return expected.replace(" or ", ", ")


def to_openai_error(exc: ValidationError) -> OpenAIError:
    """The first pydantic error in OpenAI's words (OpenAI reports one problem at a time)."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ())]
    param = loc[0] if loc else None
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return missing(param or "?")
    if kind == "literal_error":
        return bad_request(f"Invalid value: '{value}'. Supported values are: {_supported(ctx)}.", param)
    if kind == "string_too_long":
        return bad_request(f"Invalid '{param}': string too long. Expected a string with maximum length "
                           f"{ctx.get('max_length')}, but got a string with length {len(str(value))} instead.",
                           param, "string_above_max_length")
    if kind in ("greater_than_equal", "greater_than"):
        return bad_request(f"Invalid '{param}': integer below minimum value. Expected a value >= "
                           f"{ctx.get('ge', ctx.get('gt'))}, but got {value} instead.", param,
                           "integer_below_min_value")
    if kind in ("less_than_equal", "less_than"):
        return bad_request(f"Invalid '{param}': integer above maximum value. Expected a value <= "
                           f"{ctx.get('le', ctx.get('lt'))}, but got {value} instead.", param,
                           "integer_above_max_value")
    return bad_request(f"Invalid type for '{param}': {err.get('msg', 'invalid value')}.", param, "invalid_type")


def read_body(body: bytes | Mapping[str, Any]) -> dict[str, Any]:
    """A route's raw JSON bytes, or a form's / a tab's fields → a dict; `image[]` parts join `image`."""
    if isinstance(body, (bytes, bytearray)):
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("We could not parse the JSON body of your request. (HINT: This likely means you "
                              "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                              None, None) from None
        if not isinstance(data, dict):
            raise bad_request("The request body must be a JSON object.", None, None)
        return data
    data = dict(body)
    images: list[bytes] = []
    for name in ("image", "image[]"):
        value = data.pop(name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (bytes, bytearray)) and item:
                images.append(bytes(item))
            elif isinstance(item, str) and item:
                raise bad_request(f"Invalid '{name}': expected a file, got a text field.", "image", "invalid_image")
    if images:
        data["image"] = images
    if isinstance(data.get("mask"), (bytes, bytearray)) and not data["mask"]:
        data.pop("mask")
    # multipart sends "" for an unset field: absent (but an empty prompt stays, to be refused as missing)
    return {k: v for k, v in data.items() if not (isinstance(v, str) and v == "" and k != "prompt")}


def parse_request(operation: str, body: bytes | Mapping[str, Any]) -> ImageRequest:
    if operation not in REQUEST_MODELS:
        raise OpenAIError(404, f"Invalid URL (POST /v1/images/{operation})")
    data = read_body(body)
    for name in REQUIRED[operation]:
        if name not in data or data[name] in (None, "", []):
            raise missing(name)
    if operation == "generations" and any(k in data for k in ("image", "mask")):
        raise bad_request("Unknown parameter: 'image' (use /v1/images/edits).", "image", "unknown_parameter")
    try:
        req = REQUEST_MODELS[operation].model_validate(data)
    except ValidationError as e:
        raise to_openai_error(e) from None
    if req.stream:
        raise bad_request("Streaming is not supported by this server; send stream=false.", "stream",
                          "unsupported_value")
    return req
