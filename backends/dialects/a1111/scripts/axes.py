"""The X/Y/Z plot's axes as data (a1111_features.md §3.1): each tab's list in A1111's order (the API sends an
axis as its index in that list), what each axis changes in the request, how its values are read (lists, ranges
`1-5 (+2)`, counts `1-10 [5]`), and the axes this server cannot vary (a 4xx, never silently ignored)."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ....job import InvalidRequest

Changes = dict[str, Any]  # request fields → the values a cell runs with
Apply = Callable[[Changes, Any, list, Any], None]  # (changes, value, all values of the axis, request)

INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)\s*\[(\d+)\s*\]\s*")
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
FLOAT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[(\d+(?:\.\d*)?)\s*\]\s*")


def current(changes: Changes, request, name: str) -> Any:
    return changes[name] if name in changes else getattr(request, name)


def to_field(name: str) -> Apply:
    def apply(changes: Changes, value, values, request) -> None:
        changes[name] = value

    return apply


def to_option(key: str) -> Apply:
    """An option for this cell only, through `override_settings` as a client would send it."""

    def apply(changes: Changes, value, values, request) -> None:
        changes["override_settings"] = {**(current(changes, request, "override_settings") or {}), key: value}

    return apply


def prompt_search_replace(changes: Changes, value, values, request) -> None:
    """Prompt S/R: the axis's first value is searched for; each value replaces it in both prompts."""
    search = values[0]
    prompt = current(changes, request, "prompt") or ""
    negative = current(changes, request, "negative_prompt") or ""
    if search not in prompt and search not in negative:
        raise InvalidRequest(f"Prompt S/R did not find {search} in prompt or negative prompt.")
    changes["prompt"], changes["negative_prompt"] = prompt.replace(search, value), negative.replace(search, value)


def prompt_order(changes: Changes, value: tuple[str, ...], values, request) -> None:
    """Prompt order: the tokens, where they occur in the prompt, put back in this permutation's order."""
    prompt = current(changes, request, "prompt") or ""
    found = sorted((prompt.find(token), token) for token in value if token in prompt)
    pieces, last = [], 0
    for position, token in found:
        pieces.append(prompt[last:position])
        last = position + len(token)
    order = iter(t for t in value if t in prompt)
    changes["prompt"] = "".join(piece + next(order) for piece in pieces) + prompt[last:]


def size(changes: Changes, value: str, values, request) -> None:
    width, _, height = str(value).lower().partition("x")
    try:
        changes["width"], changes["height"] = int(width), int(height)
    except ValueError:
        raise InvalidRequest(f"X/Y/Z plot: size {value!r} is not WIDTHxHEIGHT") from None


def styles(changes: Changes, value: str, values, request) -> None:
    changes["styles"] = [*(current(changes, request, "styles") or []), *[s for s in str(value).split(",") if s]]


@dataclass(frozen=True)
class Axis:
    label: str
    kind: str = "str"  # how values are read: int | float | str | choice | size | order | bool
    apply: Apply | None = None  # None: this server cannot vary it
    tasks: tuple[str, ...] = ("txt2img", "img2img")
    cost: float = 0.0  # the costliest axis changes least often (A1111: checkpoints 1.0, VAE 0.7)
    legend: str = "label"  # "label": "Steps: 4"; "value": just the value (prompt S/R, prompt order)

    @property
    def supported(self) -> bool:
        return self.apply is not None or self.label == "Nothing"


T2I, I2I = ("txt2img",), ("img2img",)

# A1111's master list; each tab shows the axes whose `tasks` include it, in this order (indices in §3.1).
AXES: tuple[Axis, ...] = (
    Axis("Nothing"),
    Axis("Seed", "int", to_field("seed")),
    Axis("Var. seed", "int", to_field("subseed")),
    Axis("Var. strength", "float", to_field("subseed_strength")),
    Axis("Steps", "int", to_field("steps")),
    Axis("Hires steps", "int", to_field("hr_second_pass_steps"), T2I),
    Axis("CFG Scale", "float", to_field("cfg_scale")),
    Axis("Image CFG Scale", "float", None, I2I),
    Axis("Prompt S/R", "str", prompt_search_replace, legend="value"),
    Axis("Prompt order", "order", prompt_order, legend="value"),
    Axis("Sampler", "choice", to_field("sampler_name")),
    Axis("Hires sampler", "choice", to_field("hr_sampler_name"), T2I),
    Axis("Checkpoint name", "choice", to_option("sd_model_checkpoint"), cost=1.0),
    Axis("Negative Guidance minimum sigma", "float", None),
    Axis("Sigma Churn", "float", None),
    Axis("Sigma min", "float", None),
    Axis("Sigma max", "float", None),
    Axis("Sigma noise", "float", None),
    Axis("Schedule type", "choice", to_field("scheduler")),
    Axis("Schedule min sigma", "float", None),
    Axis("Schedule max sigma", "float", None),
    Axis("Schedule rho", "float", None),
    Axis("Beta schedule alpha", "float", None),
    Axis("Beta schedule beta", "float", None),
    Axis("Eta", "float", to_field("eta")),
    Axis("Clip skip", "int", to_option("CLIP_stop_at_last_layers")),
    Axis("Denoising", "float", to_field("denoising_strength")),
    Axis("Initial noise multiplier", "float", None),
    Axis("Extra noise", "float", None),
    Axis("Hires upscaler", "choice", to_field("hr_upscaler"), T2I),
    Axis("Cond. Image Mask Weight", "float", None, I2I),
    Axis("VAE", "choice", to_option("sd_vae"), cost=0.7),
    Axis("Styles", "choice", styles),
    Axis("UniPC Order", "int", None, cost=0.5),
    Axis("Face restore", "bool", to_field("restore_faces")),
    Axis("Token merging ratio", "float", None),
    Axis("Token merging ratio high-res", "float", None),
    Axis("Always discard next-to-last sigma", "bool", None),
    Axis("SGM noise multiplier", "bool", None),
    Axis("Refiner checkpoint", "choice", to_field("refiner_checkpoint"), cost=1.0),
    Axis("Refiner switch at", "float", to_field("refiner_switch_at"), cost=1.0),
    Axis("RNG source", "choice", None),
    Axis("FP8 mode", "choice", None, cost=0.9),
    Axis("Size", "size", size),
)
SEED_AXES = ("Seed", "Var. seed")


def axes_for(task: str) -> list[Axis]:
    return [a for a in AXES if task in a.tasks]


def axis_at(task: str, index: Any, name: str) -> Axis:
    """The axis a `*_type` argument names: its index in the tab's list (what the API sends; null is Nothing),
    or, leniently, its label."""
    axes = axes_for(task)
    if index is None or index == "":
        return axes[0]
    if isinstance(index, str) and not index.strip().lstrip("-").isdigit():
        for axis in axes:
            if axis.label.lower() == index.strip().lower():
                return axis
        raise InvalidRequest(f"X/Y/Z plot: {name} {index!r} is not an axis of {task}")
    i = int(index)
    if not 0 <= i < len(axes):
        raise InvalidRequest(f"X/Y/Z plot: {name} {i} is out of range (0-{len(axes) - 1} for {task})")
    axis = axes[i]
    if not axis.supported:
        raise InvalidRequest(f"X/Y/Z plot: the axis {axis.label!r} is not supported by this server")
    return axis


def split_csv(text: str) -> list[str]:
    """A1111 reads axis values as one CSV line (quotes allowed), each stripped, blanks dropped."""
    rows = csv.reader(io.StringIO(str(text or "")), skipinitialspace=True)
    return [v.strip() for v in itertools.chain.from_iterable(rows) if v.strip()]


def _ints(text: str) -> list[int]:
    out: list[int] = []
    for value in split_csv(text):
        if m := INT_RANGE.fullmatch(value):
            start, end = int(m[1].replace(" ", "")), int(m[2].replace(" ", ""))
            out += range(start, end + 1, int(m[3]) if m[3] else 1)  # A1111's end is b+1, whatever the step
        elif m := INT_COUNT.fullmatch(value):
            start, end = int(m[1].replace(" ", "")), int(m[2].replace(" ", ""))
            out += [int(x) for x in np.linspace(start, end, int(m[3]))]
        else:
            out.append(_number(value, int))
    return out


def _floats(text: str) -> list[float]:
    out: list[float] = []
    for value in split_csv(text):
        if m := FLOAT_RANGE.fullmatch(value):
            start, end = float(m[1].replace(" ", "")), float(m[2].replace(" ", ""))
            step = float(m[3]) if m[3] else 1.0
            out += [round(float(x), 8) for x in np.arange(start, end + step, step)]  # may overshoot, as A1111
        elif m := FLOAT_COUNT.fullmatch(value):
            start, end = float(m[1].replace(" ", "")), float(m[2].replace(" ", ""))
            out += [round(float(x), 8) for x in np.linspace(start, end, int(float(m[3])))]
        else:
            out.append(_number(value, float))
    return out


def _number(value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(f"X/Y/Z plot: {value!r} is not a valid {kind.__name__} value or range") from None


def read_values(axis: Axis, text: Any, dropdown: Any, csv_mode: bool) -> list[Any]:
    """An axis's values. Choice axes read the dropdown list unless csv_mode; this server also reads their text
    when no dropdown list is sent (A1111 would ignore it and return no images)."""
    if axis.label == "Nothing":
        return [None]
    if axis.kind in ("choice", "bool") and not csv_mode and dropdown:
        values = [str(v) for v in (dropdown if isinstance(dropdown, list) else [dropdown])]
    elif axis.kind == "int":
        return _ints(text)
    elif axis.kind == "float":
        return _floats(text)
    else:
        values = split_csv(text)
    if axis.kind == "order":
        return [tuple(p) for p in itertools.permutations(values)]
    if axis.kind == "bool":
        return [v.lower() in ("true", "codeformer", "gfpgan") for v in values]
    return values


def legend(axis: Axis, value: Any) -> str:
    if axis.label == "Nothing":
        return ""
    if axis.kind == "order":
        return ", ".join(value)
    return str(value) if axis.legend == "value" else f"{axis.label}: {value}"
