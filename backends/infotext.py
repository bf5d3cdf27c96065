"""A1111's infotext: the "parameters" text every generated PNG carries (docs/reference/a1111_api.md §2.3).

The lingua franca of image metadata: A1111, Forge, ComfyUI importers and our PNG Info tab read it, so every
dialect writes one, whatever API made the image.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .config import REPO_ROOT
from .job import ModelInfo
from .sampler_table import A1111_SAMPLERS, SCHEDULES


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("sdgate")
    except Exception:
        pass
    try:
        import tomllib

        return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    except Exception:
        return "0"


VERSION = f"sdgate-{_package_version()}"

# The infotext's fixed key order (§2.3); extra_generation_params follow, then Version and User.
INFOTEXT_KEYS = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size",
    "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength", "Conditional mask weight", "Clip skip",
    "ENSD", "Token merging ratio", "Token merging ratio hr", "Init image hash", "RNG", "Tiling",
)

# png-info fills what an infotext leaves out with the value A1111 would have used (§2.3, last bullet).
INFOTEXT_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Emphasis": "Original",
    "Refiner switch by sampling steps": False,
}


def quote(value: Any) -> Any:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def create_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """`prompt[\\nNegative prompt: neg]\\nK: v, K: v` with the fixed keys first (in A1111's order), then any
    other keys in their insertion order, then Version and User. None values are left out."""
    ordered: dict[str, Any] = {key: params.get(key) for key in INFOTEXT_KEYS}
    ordered.update((k, v) for k, v in params.items() if k not in ("Version", "User"))
    ordered["Version"] = params.get("Version")
    ordered["User"] = params.get("User")
    line = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in ordered.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


# key: value pairs; a value is a JSON string (which may hold commas) or runs to the next comma.
_PARAM = re.compile(r'\s*(\w[\w \-/+.()]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_generation_parameters(text: str) -> dict[str, Any]:
    """The reverse of create_infotext, as A1111's png-info gives it: values mostly strings, `Size` split into
    `Size-1`/`Size-2`, and defaults for the keys an infotext leaves out."""
    res: dict[str, Any] = {}
    lines = (text or "").strip().split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) >= 3:
        lines = lines[:-1]
    else:
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    res["Prompt"] = "\n".join(prompt_lines)
    res["Negative prompt"] = "\n".join(negative_lines)
    for key, value in _PARAM.findall(last):
        value = unquote(value.strip())
        size = _IMAGE_SIZE.match(value) if isinstance(value, str) else None
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    _split_legacy_sampler(res)
    for key, value in INFOTEXT_DEFAULTS.items():
        res.setdefault(key, value)
    return res


def _split_legacy_sampler(res: dict[str, Any]) -> None:
    """Pre-1.9 infotexts carry the schedule in the sampler name ("DPM++ 2M Karras")."""
    sampler = res.get("Sampler")
    if not isinstance(sampler, str) or "Schedule type" in res:
        return
    names = {s.name for s in A1111_SAMPLERS}
    if sampler in names:
        return
    for sched in SCHEDULES:
        for label in (sched.label, sched.name):
            if sampler.endswith(" " + label) and sampler[: -len(label) - 1] in names:
                res["Sampler"] = sampler[: -len(label) - 1]
                res["Schedule type"] = sched.label
                return


def checkpoint_short_name(info: ModelInfo) -> str:
    """A1111's `name_for_extra`: the checkpoint file name without folder or extension."""
    title = info.title
    if info.hash and title.endswith(f" [{info.hash}]"):
        title = title[: -len(info.hash) - 3]
    base = title.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for ext in (".safetensors", ".ckpt", ".pt", ".bin"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base
