"""What every script shares: its runs go through the dialect's own request path (`A1111Dialect.generate`, the
same plan → jobs → service → reply as a plain txt2img/img2img), one changed copy of the request at a time, and
its answer is built from those runs' images and infotexts in A1111's response shape (a1111_features.md §3)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from .... import outputs
from ....images import decode_base64_image, encode_base64
from ....infotext import quote
from ....job import InvalidRequest, Result
from ...base import Call, Reply
from ..plan import RANDOM_SEEDS, apply_infotext
from ..replies import echo

if TYPE_CHECKING:
    from ..api import A1111Dialect

# What each run of a script changes in the request whatever the script: no script again, images always sent
# back (the script needs them), a fresh task id (a forced one names the script's request, not every run).
RUN_FIELDS: dict[str, Any] = {"script_name": None, "script_args": [], "send_images": True, "force_task_id": None,
                              "infotext": None}


@dataclass
class Run:
    """One run of the request: its images (decoded, and as the request path encoded them, infotext inside),
    one infotext per image, its `info` JSON and the Results behind it."""

    encoded: list[str]
    images: list[Image.Image]
    infotexts: list[str]
    info: dict[str, Any]
    results: list[Result]

    @property
    def interrupted(self) -> bool:
        return any(r.interrupted for r in self.results)


@dataclass
class ScriptContext:
    """One script request: the dialect, the request (infotext already applied), its options, and every Result
    its runs produced (for the reply's trace headers)."""

    api: A1111Dialect
    operation: str  # "txt2img" | "img2img"
    request: Any
    call: Call
    opts: dict[str, Any] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)

    @classmethod
    async def start(cls, api: A1111Dialect, operation: str, request, call: Call) -> ScriptContext:
        def prepare() -> dict[str, Any]:
            apply_infotext(api, request, call)  # once, so a pasted seed is the one the script fixes
            return api.effective_options(request.override_settings, call)[0]

        opts = await asyncio.to_thread(prepare)
        return cls(api, operation, request, call, opts)

    def fixed_seed(self, seed: int | None) -> int:
        """A1111 fixes a random (-1) seed once, so every run of the script shares it."""
        return RANDOM_SEEDS.pick(seed, random_below=0)

    async def run(self, **changes: Any) -> Run:
        """The request with `changes`, through the dialect's normal path."""
        request = self.request.model_copy(update={**RUN_FIELDS, **changes}, deep=True)
        body, results = await self.api.generate(self.operation, request, self.call)
        self.results += results
        info = json.loads(body["info"])
        first = int(info.get("index_of_first_image") or 0)
        encoded = list(body["images"])[first:]
        images = await asyncio.to_thread(lambda: [decode_base64_image(b, "image") for b in encoded])
        return Run(encoded, images, list(info.get("infotexts") or [])[first:], info, results)

    def image_format(self) -> tuple[str, int, bool]:
        return str(self.opts["samples_format"]).lower(), int(self.opts["jpeg_quality"]), bool(self.opts["webp_lossless"])

    def save(self, image: Image.Image, infotext: str, seed: int, *, grid: bool) -> None:
        """A script's own image (a grid, a stitched upscale) saved as A1111 saves them with save_images."""
        if not self.request.save_images or (grid and not self.opts["grid_save"]):
            return
        kind = f"{self.operation}-{'grids' if grid else 'images'}"
        fmt = str(self.opts["grid_format" if grid else "samples_format"])
        outputs.save_image(image, self.api.outputs_dir, kind, seed, infotext if self.opts["enable_pnginfo"] else None,
                           fmt, quality=int(self.opts["jpeg_quality"]), prefix="grid-" if grid else "",
                           owner=self.call.owner)

    def reply(self, images: list[Image.Image | str], infotexts: list[str], info: dict[str, Any], **fields) -> Reply:
        """A1111's answer: `images` (a run's own encodings kept; a script's new images encoded here with their
        infotext), the request echoed, and `info` with `fields` and `infotexts` set."""
        fmt, quality, lossless = self.image_format()
        pnginfo = bool(self.opts["enable_pnginfo"])
        encoded: list[str] = []
        if self.request.send_images is not False:
            for i, image in enumerate(images):
                if isinstance(image, str):
                    encoded.append(image)
                    continue
                text = infotexts[i] if i < len(infotexts) and pnginfo else None
                encoded.append(encode_base64(image, fmt, text, quality=quality, lossless_webp=lossless))
        info = {**info, **fields, "infotexts": infotexts}
        body = {"images": encoded, "parameters": echo(self.request), "info": json.dumps(info, default=lambda _: None)}
        return Reply(body).traced(self.results)


def arguments(args: list[Any] | None, defaults: list[Any]) -> list[Any]:
    """`script_args` as the script's positional arguments: missing trailing ones take the UI defaults, extra
    ones are ignored (A1111 slices them into one long list shared by all scripts)."""
    args = list(args or [])
    return [args[i] if i < len(args) and args[i] is not None else d for i, d in enumerate(defaults)]


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def as_number(value: Any, kind: type, name: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"script argument {name} must be a number (got {value!r})") from None


def insert_params(infotext: str, params: dict[str, Any]) -> str:
    """`params` added to an infotext's parameter line, before `Version` as A1111 orders its extra keys."""
    added = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    if not added:
        return infotext
    head, _, last = infotext.rpartition("\n")
    at = last.find(", Version: ")
    last = f"{last[:at]}, {added}{last[at:]}" if at >= 0 else (f"{last}, {added}" if last else added)
    return f"{head}\n{last}" if head else last
