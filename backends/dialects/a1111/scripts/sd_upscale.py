"""SD upscale (`"sd upscale"`, img2img only, 4 args; a1111_features.md §3.4): the init image upscaled, cut into
overlapping tiles of the request's size, each tile through img2img with the request's settings, and stitched
back with a linear blend across each overlap so no seam shows."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageColor

from ....images import decode_base64_image, encode_base64
from ....job import InvalidRequest
from ...base import Reply
from ..imaging import UPSCALERS
from .args import Arg, defaults
from .runner import ScriptContext, arguments, as_number, insert_params

TITLE = "SD upscale"
# info (the UI's HTML note; send ""), overlap, upscaler_index (into /sdapi/v1/upscalers, or a name), scale_factor
ARGS: tuple[Arg, ...] = (
    Arg("info", "<p>Will upscale the image by the selected scale factor; use width and height sliders to set tile "
        "size</p>", "html", api_default=""),
    Arg("Tile overlap", 64, "slider", minimum=0, maximum=256, step=16),
    Arg("Upscaler", "None", "index", tuple(UPSCALERS), api_default=0),
    Arg("Scale Factor", 2.0, "slider", minimum=1.0, maximum=4.0, step=0.05),
)
DEFAULTS = defaults(ARGS)


@dataclass
class Tiling:
    """Where the tiles of an image go: tile size, the overlap asked for, and each column's/row's offset (the
    last tile touches the far edge, so real overlaps can be larger than asked)."""

    tile_w: int
    tile_h: int
    overlap: int
    xs: list[int]
    ys: list[int]
    width: int
    height: int


def _offsets(total: int, tile: int, overlap: int) -> list[int]:
    count = max(1, math.ceil((total - overlap) / (tile - overlap)))
    if count == 1:
        return [0]
    return [min(int(i * (total - tile) / (count - 1)), total - tile) for i in range(count)]


def plan_tiles(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> Tiling:
    return Tiling(tile_w, tile_h, overlap, _offsets(width, tile_w, overlap), _offsets(height, tile_h, overlap),
                  width, height)


def _ramp(length: int, across: int, horizontal: bool) -> Image.Image:
    """An "L" mask rising linearly 0 → 255 over `length` pixels (along x or y), `across` pixels wide."""
    values = [round(255 * i / (length - 1)) if length > 1 else 255 for i in range(length)]
    line = Image.new("L", (length, 1) if horizontal else (1, length))
    line.putdata(values)
    return line.resize((length, across) if horizontal else (across, length), Image.Resampling.NEAREST)


def _blend_paste(canvas: Image.Image, piece: Image.Image, at: int, overlap: int, horizontal: bool) -> None:
    """`piece` pasted at offset `at`; its first `overlap` pixels fade in over what is already there."""
    w, h = piece.size
    if at == 0 or overlap <= 0:
        canvas.paste(piece, (at, 0) if horizontal else (0, at))
        return
    if horizontal:
        canvas.paste(piece.crop((0, 0, overlap, h)), (at, 0), _ramp(overlap, h, True))
        canvas.paste(piece.crop((overlap, 0, w, h)), (at + overlap, 0))
    else:
        canvas.paste(piece.crop((0, 0, w, overlap)), (0, at), _ramp(overlap, w, False))
        canvas.paste(piece.crop((0, overlap, w, h)), (0, at + overlap))


def stitch(tiles: list[Image.Image], tiling: Tiling) -> Image.Image:
    """Row by row, each next tile fading in over its overlap; then the rows the same way, top to bottom."""
    cols = len(tiling.xs)
    rows = []
    for r in range(len(tiling.ys)):
        row = Image.new("RGB", (tiling.width, tiling.tile_h))
        for c, x in enumerate(tiling.xs):
            _blend_paste(row, tiles[r * cols + c].convert("RGB"), x, tiling.overlap, True)
        rows.append(row)
    image = Image.new("RGB", (tiling.width, tiling.height))
    for y, row in zip(tiling.ys, rows):
        _blend_paste(image, row, y, tiling.overlap, False)
    return image


def upscaler_name(value: Any) -> str:
    """An upscaler by its index in /sdapi/v1/upscalers or its name (any case); model upscalers are not here."""
    names = list(UPSCALERS)
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        i = int(value)
        if 0 <= i < len(names):
            return names[i]
        raise InvalidRequest(f"SD upscale: upscaler_index {i} is out of range (0-{len(names) - 1}: {names})")
    for name in names:
        if name.lower() == str(value).strip().lower():
            return name
    raise InvalidRequest(f"SD upscale: could not find upscaler named {value} (available: {', '.join(names)})")


def prepare_image(ctx: ScriptContext, upscaler: str, scale: float) -> Image.Image:
    """The init image flattened onto img2img_background_color, then upscaled to a multiple of 8."""
    source = decode_base64_image(ctx.request.init_images[0], "init_images[0]", ctx.api.service.config.limits)
    if source.mode in ("RGBA", "LA", "P"):
        background = Image.new("RGBA", source.size, ImageColor.getrgb(str(ctx.opts["img2img_background_color"])))
        source = Image.alpha_composite(background, source.convert("RGBA"))
    source = source.convert("RGB")
    if upscaler == "None":  # A1111: no upscale at all, whatever the factor
        return source
    size = (int(source.width * scale) // 8 * 8, int(source.height * scale) // 8 * 8)
    return source.resize(size, UPSCALERS[upscaler])


async def run(ctx: ScriptContext, args: list[Any]) -> Reply:
    _, overlap, upscaler_arg, scale = arguments(args, DEFAULTS)
    overlap = int(as_number(overlap, float, "overlap"))
    scale = float(as_number(scale, float, "scale_factor"))
    upscaler = upscaler_name(upscaler_arg)
    req = ctx.request
    if not req.init_images:
        raise InvalidRequest("SD upscale needs an init image")
    tile_w, tile_h = (req.width or 512) // 8 * 8, (req.height or 512) // 8 * 8
    if not 0 <= overlap < min(tile_w, tile_h):
        raise InvalidRequest(f"SD upscale: overlap must be between 0 and the tile size ({tile_w}x{tile_h}) - 1")
    if scale <= 0:
        raise InvalidRequest("SD upscale: scale_factor must be above 0")
    image = await asyncio.to_thread(prepare_image, ctx, upscaler, scale)
    tiling = plan_tiles(image.width, image.height, tile_w, tile_h, overlap)
    pieces = [image.crop((x, y, x + tile_w, y + tile_h)) for y in tiling.ys for x in tiling.xs]
    encoded = await asyncio.to_thread(lambda: [encode_base64(p, "png") for p in pieces])
    start = ctx.fixed_seed(req.seed)
    batch = max(1, req.batch_size or 1)
    outputs: list[Image.Image] = []
    texts: list[str] = []
    first_info: dict[str, Any] | None = None
    text = ""
    params = {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
    interrupted = False
    for n in range(max(1, req.n_iter or 1)):
        tiles = []
        for t, tile in enumerate(encoded):
            # A1111 runs the tiles in batches: batch b starts at seed + n + b, image j of it adds j
            seed = start + n + t // batch + t % batch
            run = await ctx.run(init_images=[tile], mask=None, resize_mode=0, seed=seed, batch_size=1, n_iter=1,
                                width=tile_w, height=tile_h, save_images=False)
            if run.interrupted or not run.images:
                interrupted = True
                break
            tiles.append(run.images[0])
            if t == 0:
                text = insert_params(run.infotexts[0], params)
                first_info = first_info or run.info
        if interrupted:  # as A1111: the upscales finished so far
            break
        stitched = await asyncio.to_thread(stitch, tiles, tiling)
        outputs.append(stitched)
        texts.append(text)
        await asyncio.to_thread(ctx.save, stitched, text, start + n, grid=False)
    # `info` describes the first tile's run (its Size is the tile size), as A1111's does
    return ctx.reply(outputs, texts, first_info or {}, seed=start,
                     all_seeds=[start + n for n in range(len(outputs))], index_of_first_image=0)
