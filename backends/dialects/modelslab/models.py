"""ModelsLab's request bodies with its typing quirks (docs/reference/hosted_apis.md §C.2): numbers as strings,
flags as "yes"/"no", booleans, "true" or 1, null meaning absent; the required fields and limits, in ModelsLab's
own messages."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ...job import InvalidRequest, Lora
from .options import (
    ALGORITHM_TYPES,
    DEFAULTS,
    FLAG_FIELDS,
    INT_FIELDS,
    LORA_STRENGTH,
    MAX_SEED,
    RANGES,
    STR_FIELDS,
    UPSCALE_FACTORS,
    Family,
)

_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off"}


def parse_flag(value: Any, name: str = "flag") -> Optional[bool]:
    """"yes"/"no" in any case, booleans, "true"/"false", 1/0; None (and "") mean absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{name} must be yes or no")


def is_yes(value: Any) -> bool:
    """A flag as a gateway's answer writes it ("yes", "true", ...), absent or unreadable meaning no."""
    return str(value).lower() in _TRUE


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def parse_number(value: Any, name: str, integer: bool) -> Optional[Union[int, float]]:
    """An int, float or numeric string ("512", " 7.5 "); None and "" mean absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"{name} must be a whole number")
        return int(value)
    return float(value)


class Text2ImgRequest(BaseModel):
    """The text2img body of every family (docs/reference/hosted_apis.md §C.2). Every field is optional here:
    absent and null mean the default (DEFAULTS); `check()` enforces what is required and the limits, with
    ModelsLab's messages. Unknown fields are kept (extra="allow") only to be listed in `meta.ignored_fields`."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    key: Optional[str] = None
    model_id: Optional[str] = None
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    samples: Optional[int] = None
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    seed: Optional[int] = None
    clip_skip: Optional[int] = None
    scheduler: Optional[str] = None
    safety_checker: Optional[bool] = None
    safety_checker_type: Optional[str] = None
    enhance_prompt: Optional[bool] = None
    multi_lingual: Optional[bool] = None
    panorama: Optional[bool] = None
    self_attention: Optional[bool] = None
    upscale: Optional[int] = None  # 0: off; "yes" is 2
    highres_fix: Optional[bool] = None
    tomesd: Optional[bool] = None
    use_karras_sigmas: Optional[bool] = None
    base64: Optional[bool] = None
    temp: Optional[bool] = None
    instant_response: Optional[bool] = None
    loadbalancer: Optional[bool] = None
    algorithm_type: Optional[str] = None
    embeddings_model: Optional[str] = None
    lora_model: Optional[Any] = None  # "a,b" or ["a", "b"]
    lora_strength: Optional[Any] = None  # "0.6,0.8", 0.6 or [0.6, 0.8]
    vae: Optional[str] = None
    webhook: Optional[str] = None
    track_id: Optional[Union[int, str]] = None
    ip_adapter_id: Optional[str] = None
    ip_adapter_scale: Optional[Any] = None
    ip_adapter_image: Optional[Any] = None

    @field_validator(*INT_FIELDS, mode="before")
    @classmethod
    def _int(cls, value, info: ValidationInfo):
        return parse_number(value, info.field_name, integer=True)

    @field_validator("guidance_scale", mode="before")
    @classmethod
    def _float(cls, value, info: ValidationInfo):
        return parse_number(value, info.field_name, integer=False)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value):
        seed = parse_number(value, "seed", integer=True)
        return None if seed is None or seed < 0 else seed  # null, "" and -1: a random seed

    @field_validator(*FLAG_FIELDS, mode="before")
    @classmethod
    def _flag(cls, value, info: ValidationInfo):
        return parse_flag(value, info.field_name)

    @field_validator("upscale", mode="before")
    @classmethod
    def _upscale(cls, value):
        """"yes"/"no" (and booleans) as a flag, or a factor "2"/"3"/"4" as the other endpoints take it."""
        try:
            flag = parse_flag(value, "upscale")
        except ValueError:
            flag = None
            try:
                factor = parse_number(value, "upscale", integer=True)
            except ValueError:
                factor = None
            if factor in UPSCALE_FACTORS:
                return factor
            raise ValueError("upscale must be yes, no, 2, 3 or 4") from None
        return None if flag is None else (2 if flag else 0)

    @field_validator(*STR_FIELDS, mode="before")
    @classmethod
    def _str(cls, value, info: ValidationInfo):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric model_id or key
        raise ValueError(f"{info.field_name} must be a string")

    @field_validator("track_id", mode="before")
    @classmethod
    def _track_id(cls, value):
        if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
            return value
        raise ValueError("track_id must be a string or an integer")

    def value(self, name: str) -> Any:
        """The field's value, or its default when absent."""
        v = getattr(self, name)
        return DEFAULTS.get(name) if v is None else v


@dataclass(frozen=True)
class FetchRequest:
    """A fetch: the request id from the path (`<fetch path>/{id}`) or the body (`request_id`, or `id`)."""

    key: str | None
    request_id: str


def _validation_message(error: ValidationError) -> str:
    messages = []
    for e in error.errors():
        msg = str(e.get("msg", ""))
        msg = msg.removeprefix("Value error, ")
        if not e.get("ctx", {}).get("error") and e.get("loc"):  # pydantic's own message: name the field
            msg = f"{e['loc'][0]}: {msg}"
        messages.append(msg)
    return "; ".join(dict.fromkeys(messages))


def parse_body(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of a request body (the client's Content-Type is not trusted either way); a dict (a UI
    tab's fields) is taken as it is."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


def body_key(body: Mapping[str, Any]) -> str | None:
    """The caller's key as the body gives it (a number is its text)."""
    key = body.get("key")
    return None if key is None else str(key)


def parse_request(body: Mapping[str, Any]) -> Text2ImgRequest:
    try:
        return Text2ImgRequest.model_validate(dict(body))
    except ValidationError as e:
        raise InvalidRequest(_validation_message(e)) from None


def parse_fetch(body: Mapping[str, Any], path_id: str | None) -> FetchRequest:
    wanted = path_id if path_id is not None else body.get("request_id", body.get("id"))
    if wanted is None or str(wanted).strip() == "":
        raise InvalidRequest("request_id is required")
    return FetchRequest(body_key(body), str(wanted))


def check(req: Text2ImgRequest, family: Family) -> None:
    """Required fields and the documented limits, in ModelsLab's words (first the missing fields, then ranges)."""
    problems = []
    if not (req.prompt or "").strip():
        problems.append("prompt is required")
    if family.model_required and not (req.model_id or "").strip():
        problems.append("model_id is required")
    out_of_range = set()
    for name, low, high in RANGES:
        if not low <= req.value(name) <= high:
            problems.append(f"{name} must be between {low:g} and {high:g}")
            out_of_range.add(name)
    for name in ("width", "height"):
        if name not in out_of_range and req.value(name) % 8:
            problems.append(f"{name} must be divisible by 8")
    if req.seed is not None and req.seed > MAX_SEED:
        problems.append(f"seed must be between 0 and {MAX_SEED}")
    algorithm = str(req.value("algorithm_type")).strip().lower()
    if algorithm not in ALGORITHM_TYPES:
        problems.append(f"algorithm_type must be one of {', '.join(ALGORITHM_TYPES)}")
    if problems:
        raise InvalidRequest("; ".join(problems), details={"problems": problems})


def split_names(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def parse_loras(lora_model: Any, lora_strength: Any) -> list[Lora]:
    """`lora_model` "a,b" + `lora_strength` "0.6,0.8" → Loras. No strength: 1.0 each; otherwise one per LoRA."""
    names = split_names(lora_model)
    strengths_text = split_names(lora_strength)
    if not names:
        return []
    if not strengths_text:
        return [Lora(name, 1.0) for name in names]
    if len(strengths_text) != len(names):
        raise InvalidRequest(
            f"lora_strength must give one value per lora_model: {len(names)} LoRAs, {len(strengths_text)} strengths"
        )
    loras = []
    for name, text in zip(names, strengths_text):
        try:
            strength = float(text)
        except ValueError:
            raise InvalidRequest(f"lora_strength {text!r} is not a number") from None
        if not LORA_STRENGTH[0] <= strength <= LORA_STRENGTH[1]:
            raise InvalidRequest(f"lora_strength must be between {LORA_STRENGTH[0]:g} and {LORA_STRENGTH[1]:g}")
        loras.append(Lora(name, strength))
    return loras
