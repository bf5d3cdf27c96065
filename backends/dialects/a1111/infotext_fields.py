"""Infotext → request fields: the one reading of an infotext into A1111 request fields, used by the request's
`infotext` field (1.8+, docs/reference/a1111_api.md §1.1: "fills every field not explicitly set") and by the UI's
"send to txt2img/img2img" (History, PNG Info), so both paste the same values under the same rules."""

from __future__ import annotations

from typing import Any, Callable

from ...infotext import parse_generation_parameters
from ...job import SdgateError


def _flag(value: Any) -> bool:
    """An infotext boolean ("True"/"False"), or a key present at all (`Face restoration: CodeFormer`)."""
    return str(value).strip().lower() not in ("false", "0", "")


# infotext key → (request field, type)
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
    "Variation seed": ("subseed", int),
    "Variation seed strength": ("subseed_strength", float),
    # `Seed resize from: WxH`; the request's own `infotext` field swaps them (A1111's quirk, plan.apply_infotext)
    "Seed resize from-1": ("seed_resize_from_w", int),
    "Seed resize from-2": ("seed_resize_from_h", int),
    "Tiling": ("tiling", _flag),
    "Face restoration": ("restore_faces", _flag),
    "Refiner switch at": ("refiner_switch_at", float),
}
# txt2img only
INFOTEXT_HIRES_FIELDS: dict[str, tuple[str, type]] = {
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
}
# checkpoints other than the main one, written `name [hash]`: the request field gets the title they resolve to
INFOTEXT_CHECKPOINTS: dict[str, str] = {"Refiner": "refiner_checkpoint", "Hires checkpoint": "hr_checkpoint_name"}
# infotext key → the option it sets (as override_settings)
INFOTEXT_SETTINGS: dict[str, str] = {"Clip skip": "CLIP_stop_at_last_layers", "Emphasis": "emphasis", "VAE": "sd_vae"}


def fields_from_infotext(text: str, task: str, resolve_model: Callable[[str], str]) -> dict[str, Any]:
    """Request fields from an infotext, for `task` ("txt2img" | "img2img"): the fields of the tables above that
    it has (a value that does not convert is left out); for txt2img `enable_hr`; `model`, the checkpoint title
    `resolve_model` gives for its `Model hash` (else its `Model`) when it has a hash, as A1111 maps `Model hash`
    to the checkpoint; and `override_settings` for the options it sets.

    Hires fix is on when the infotext has A1111's hires keys: `Denoising strength` (written with every hires
    pass) and one of `Hires upscale`, `Hires upscaler` or a non-zero `Hires resize` (A1111's txt2img paste rule)."""
    params = parse_generation_parameters(text or "")
    hires = task == "txt2img"
    data: dict[str, Any] = {}
    for key, (name, kind) in {**INFOTEXT_FIELDS, **(INFOTEXT_HIRES_FIELDS if hires else {})}.items():
        if key in params:
            try:
                data[name] = kind(params[key])
            except (TypeError, ValueError):
                continue
    if hires:
        data["enable_hr"] = "Denoising strength" in params and (
            "Hires upscale" in params or "Hires upscaler" in params or _nonzero(params.get("Hires resize-1"))
        )
    if "Model hash" in params:
        found = _checkpoint(resolve_model, params.get("Model hash"), params.get("Model"))
        if found:
            data["model"] = found
    for key, name in INFOTEXT_CHECKPOINTS.items():
        if key == "Hires checkpoint" and not hires:
            continue
        value = str(params.get(key) or "")
        label, _, tail = value.partition(" [")
        if not value or value.startswith("Use same"):
            continue
        found = _checkpoint(resolve_model, tail.rstrip("]"), label)
        if found:
            data[name] = found
    settings = {option: params[key] for key, option in INFOTEXT_SETTINGS.items() if key in params}
    if settings:
        data["override_settings"] = settings
    return data


def _checkpoint(resolve_model: Callable[[str], str], *candidates: Any) -> str | None:
    """The first candidate (a hash, then a name) that names a checkpoint here; None when none does."""
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return resolve_model(str(candidate))
        except SdgateError:
            continue
    return None


def _nonzero(value: Any) -> bool:
    try:
        return int(value or 0) != 0
    except (TypeError, ValueError):
        return False
