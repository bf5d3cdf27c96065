"""X/Y/Z plot (`"x/y/z plot"`, 18 args; a1111_features.md §3.1): one run of the request per cell of up to three
axes, then the grid (labels on its axes), optional per-Z sub-grids and the cells themselves, each with the
infotext it ran with."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from PIL import Image

from ....job import InvalidRequest
from ....samplers import resolve_sampler
from ...base import Reply
from .args import Arg, defaults
from .axes import SEED_AXES, Axis, axes_for, axis_at, legend, read_values
from .grid import label, labelled_grid
from .runner import Run, ScriptContext, arguments, as_bool, as_number, insert_params

TITLE = "X/Y/Z plot"
NAMES = "XYZ"


def _axis_labels(task: str) -> list[str]:
    return [a.label for a in axes_for(task)]


def _axis_args(name: str, default: int) -> tuple[Arg, ...]:
    return (Arg(f"{name} type", _axis_labels("txt2img")[default], "index", _axis_labels, api_default=default),
            Arg(f"{name} values", "", "text"),
            Arg(f"{name} values (list)", [], "list"))


# x_type, x_values, x_values_dropdown, y_…, z_…, draw_legend, include_lone_images, include_sub_grids,
# no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode
ARGS: tuple[Arg, ...] = (
    *_axis_args("X", 1), *_axis_args("Y", 0), *_axis_args("Z", 0),
    Arg("Draw legend", True, "checkbox"),
    Arg("Include Sub Images", False, "checkbox"),
    Arg("Include Sub Grids", False, "checkbox"),
    Arg("Keep -1 for seeds", False, "checkbox"),
    Arg("Vary seeds for X", False, "checkbox"),
    Arg("Vary seeds for Y", False, "checkbox"),
    Arg("Vary seeds for Z", False, "checkbox"),
    Arg("Grid margins (px)", 0, "slider", minimum=0, maximum=500, step=2),
    Arg("Use text inputs instead of dropdowns", False, "checkbox"),
)
DEFAULTS = defaults(ARGS)


def _check_choices(ctx: ScriptContext, axis: Axis, values: list[Any]) -> None:
    """Unknown samplers, schedules and checkpoints fail before any cell runs, as A1111 confirms them."""
    for value in values:
        if axis.label in ("Sampler", "Hires sampler"):
            resolve_sampler(value)
        elif axis.label == "Schedule type":
            resolve_sampler("Euler", value)
        elif axis.label == "Checkpoint name":
            ctx.api.resolve_model(value, ctx.call)


def _fix_seeds(ctx: ScriptContext, axis: Axis, values: list[Any]) -> tuple[list[Any], bool]:
    """-1 (random) on a seed axis becomes one drawn seed per value, so the grid can be made again."""
    if axis.label not in SEED_AXES:
        return values, False
    fixed = [ctx.fixed_seed(v) for v in values]
    return fixed, fixed != values


def _same_size(images: list[Image.Image]) -> list[Image.Image]:
    size = images[0].size
    return [im if im.size == size else im.resize(size) for im in images]


async def run(ctx: ScriptContext, args: list[Any]) -> Reply:
    values = arguments(args, DEFAULTS)
    draw_legend, include_lone, include_subs, no_fixed_seeds = (as_bool(v) for v in values[9:13])
    vary = [as_bool(v) for v in values[13:16]]
    margin = max(0, int(as_number(values[16], float, "margin_size")))
    csv_mode = as_bool(values[17])
    req = ctx.request

    axes: list[Axis] = []
    axis_values: list[list[Any]] = []
    params: dict[str, Any] = {"Script": TITLE}
    for n, name in enumerate(NAMES):
        kind, text, dropdown = values[3 * n : 3 * n + 3]
        axis = axis_at(ctx.operation, kind, f"{name.lower()}_type")
        found = read_values(axis, text, dropdown, csv_mode)
        if not found:
            raise InvalidRequest(f"X/Y/Z plot: the {name} axis ({axis.label}) has no values")
        fixed = False
        if not no_fixed_seeds:
            found, fixed = _fix_seeds(ctx, axis, found)
        await asyncio.to_thread(_check_choices, ctx, axis, found)
        axes.append(axis)
        axis_values.append(found)
        if axis.label != "Nothing":
            params[f"{name} Type"] = axis.label
            params[f"{name} Values"] = text if text else ", ".join(map(str, dropdown or []))
            if fixed:
                params[f"Fixed {name} Values"] = ", ".join(map(str, found))
    xs, ys, zs = axis_values
    limit = float(ctx.opts.get("img_max_size_mp", 200))
    if len(xs) * len(ys) * len(zs) * (req.width or 512) * (req.height or 512) / 1e6 >= limit:
        raise InvalidRequest(f"X/Y/Z plot: the grid would be over img_max_size_mp ({limit:g} megapixels)")

    base: dict[str, Any] = {}
    if not no_fixed_seeds:
        base = {"seed": ctx.fixed_seed(req.seed), "subseed": ctx.fixed_seed(req.subseed)}
    cells = list(itertools.product(range(len(zs)), range(len(ys)), range(len(xs))))  # x fastest
    # the costliest axis (checkpoint, VAE) changes least often; results are kept by position either way
    by_cost = sorted(range(3), key=lambda a: -axes[a].cost)
    order = sorted(cells, key=lambda c: tuple((c[2], c[1], c[0])[a] for a in by_cost))
    runs: dict[tuple[int, int, int], Run] = {}
    for iz, iy, ix in order:
        changes = dict(base)
        for axis, vals, i in zip(axes, axis_values, (ix, iy, iz)):
            if axis.apply is not None:
                axis.apply(changes, vals[i], vals, req)
        seed = changes.get("seed", req.seed)
        if seed is not None and seed >= 0:
            xdim, ydim = (len(xs) if vary[0] else 1), (len(ys) if vary[1] else 1)
            changes["seed"] = seed + (ix if vary[0] else 0) + (iy * xdim if vary[1] else 0) + (
                iz * xdim * ydim if vary[2] else 0)
        result = await ctx.run(**changes)
        runs[(iz, iy, ix)] = result
        if result.interrupted:
            break
    return await asyncio.to_thread(_answer, ctx, axes, axis_values, runs, params, draw_legend, include_lone,
                                   include_subs, margin)


def _answer(ctx: ScriptContext, axes: list[Axis], axis_values: list[list[Any]], runs: dict, params: dict[str, Any],
            draw_legend: bool, include_lone: bool, include_subs: bool, margin: int) -> Reply:
    xs, ys, zs = axis_values
    cells = list(itertools.product(range(len(zs)), range(len(ys)), range(len(xs))))
    done = [c for c in cells if c in runs and runs[c].images]
    if not done:
        raise InvalidRequest("X/Y/Z plot: no cell produced an image")
    blank_size = runs[done[0]].images[0].size
    image_of = {c: runs[c].images[0] if c in done else Image.new("RGB", blank_size) for c in cells}

    def names(axis_index: int, vals: list[Any]):
        return [label(legend(axes[axis_index], v)) for v in vals] if draw_legend else None

    sub_grids = []
    for iz in range(len(zs)):
        images = _same_size([image_of[(iz, iy, ix)] for iy in range(len(ys)) for ix in range(len(xs))])
        sub_grids.append(labelled_grid(images, len(xs), len(ys), names(0, xs), names(1, ys), margin))
    if len(zs) > 1:
        main = labelled_grid(_same_size(sub_grids), len(zs), 1, names(2, zs), None, margin)
    else:
        main, sub_grids = sub_grids[0], []

    def text_of(cell) -> str:
        return runs[cell].infotexts[0] if cell in runs and runs[cell].infotexts else ""

    first = done[0]
    grid_text = insert_params(text_of(first), params)
    sub_texts = [insert_params(text_of((iz, 0, 0)), params) for iz in range(len(sub_grids))] if include_subs else []
    cell_texts = [text_of(c) for c in cells]
    ctx.save(main, grid_text, runs[first].info.get("seed", -1), grid=True)

    images: list[Image.Image | str] = [main, *(sub_grids if include_subs else [])]
    if include_lone:
        images += [runs[c].encoded[0] for c in done]
    head = [first] * (1 + len(sub_texts))  # the grids are described by their first cell

    def column(key: str) -> list[Any]:
        return [runs[c].info.get(key) if c in runs else None for c in head + cells]

    return ctx.reply(images, [grid_text, *sub_texts, *cell_texts], runs[first].info, all_prompts=column("prompt"),
                     all_negative_prompts=column("negative_prompt"), all_seeds=column("seed"),
                     all_subseeds=column("subseed"), index_of_first_image=1)
