"""The v2beta request models (docs/reference/hosted_apis.md §B.2), one per endpoint, and `parse_request`: form
fields → the endpoint's model, or a 400 worded the way upstream words it ("prompt: is required")."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import bad_request, not_found
from .options import MAX_PROMPT, MAX_SEED, SD3_LEGACY

Endpoint = Literal["core", "ultra", "sd3"]
AspectRatio = Literal["21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"]
OutputFormat = Literal["jpeg", "png", "webp"]
StylePreset = Literal[
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
    "pixel-art", "tile-texture",
]
SD3Model = Literal[
    "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash", "sd3-large", "sd3-large-turbo", "sd3-medium"
]


class V2Request(BaseModel):
    """Fields every generate endpoint takes. Form values arrive as strings; pydantic's lax mode turns "7" into 7.
    Unknown fields (and the official sample's empty `none` file part) are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT, description="1..10000 chars; (word:0.5) weights")
    negative_prompt: str = Field("", max_length=MAX_PROMPT)
    aspect_ratio: AspectRatio = "1:1"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="0: random")
    output_format: OutputFormat = "png"
    style_preset: Optional[StylePreset] = None

    @property
    def init_image(self) -> Optional[bytes]:
        """The image file part when this request uses it (ultra's optional image, sd3's image-to-image)."""
        return None


class CoreRequest(V2Request):
    pass


class UltraRequest(V2Request):
    image: Optional[bytes] = Field(None, repr=False, description="optional init image (png/jpeg/webp file part)")
    strength: Optional[float] = Field(None, ge=0, le=1, description="required with image; 0 keeps the image")

    @model_validator(mode="after")
    def _strength_with_image(self):
        if self.image is not None and self.strength is None:
            raise ValueError("strength: is required when image is provided")
        return self

    @property
    def init_image(self) -> Optional[bytes]:
        return self.image


class SD3Request(V2Request):
    model: SD3Model = "sd3.5-large"
    mode: Literal["text-to-image", "image-to-image"] = "text-to-image"
    image: Optional[bytes] = Field(None, repr=False, description="required for image-to-image")
    strength: Optional[float] = Field(None, ge=0, le=1, description="required for image-to-image")
    cfg_scale: Optional[float] = Field(None, ge=1, le=10, description="default 4 (large/medium), 1 (turbo/flash)")

    @model_validator(mode="after")
    def _image_to_image(self):
        if self.mode == "image-to-image":
            missing = [f"{name}: is required for image-to-image mode"
                       for name in ("image", "strength") if getattr(self, name) is None]
            if missing:
                raise ValueError("; ".join(missing))
        return self

    @property
    def canonical_model(self) -> str:
        return SD3_LEGACY.get(self.model, self.model)

    @property
    def init_image(self) -> Optional[bytes]:
        return self.image if self.mode == "image-to-image" else None


REQUEST_MODELS: dict[str, type[V2Request]] = {"core": CoreRequest, "ultra": UltraRequest, "sd3": SD3Request}
_BOUNDS = {"seed": (0, MAX_SEED), "strength": (0, 1), "cfg_scale": (1, 10)}


def _error_strings(exc: ValidationError) -> list[str]:
    """pydantic errors → `["field: what is wrong"]`, the way upstream words them ("prompt: is required")."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or None
        kind, ctx = err.get("type"), err.get("ctx") or {}
        if kind == "missing":
            text = "is required"
        elif kind == "literal_error":
            text = f"must be one of {ctx.get('expected', '')}".replace("'", "")
        elif kind == "string_too_short":
            text = "cannot be empty"
        elif kind == "string_too_long":
            text = f"must be at most {ctx.get('max_length')} characters"
        elif kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
            field_name = err["loc"][0] if err.get("loc") else ""
            text = f"{err['msg'][0].lower()}{err['msg'][1:]}"
            bounds = _BOUNDS.get(str(field_name))
            if bounds:
                text = f"must be between {bounds[0]} and {bounds[1]}"
        elif kind == "value_error":
            out.extend(part.strip() for part in str(ctx.get("error", err["msg"])).split(";"))
            continue
        else:
            text = f"{err['msg'][0].lower()}{err['msg'][1:]}"
        out.append(f"{loc}: {text}" if loc else text)
    return out or ["invalid request"]


def parse_request(endpoint: str, fields: Mapping[str, Any]) -> V2Request:
    """Form fields (str, or bytes for file parts) → the endpoint's request model; a V2Error 400 otherwise.
    Empty values count as absent (clients send `seed=` for "default")."""
    if endpoint not in REQUEST_MODELS:
        raise not_found(endpoint)
    data = {k: v for k, v in fields.items() if not (isinstance(v, (str, bytes)) and v == "" and k != "prompt")}
    if isinstance(data.get("image"), bytes) and not data["image"]:
        data.pop("image")
    try:
        return REQUEST_MODELS[endpoint].model_validate(data)
    except ValidationError as e:
        raise bad_request(*_error_strings(e)) from None
