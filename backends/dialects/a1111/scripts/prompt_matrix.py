"""Prompt matrix (`"prompt matrix"`, 5 args; a1111_features.md §3.2): `a | b | c` runs every combination of
the optional parts after the first, then a grid labelled with the parts each row and column uses (unused ones
struck through)."""

from __future__ import annotations

import asyncio
from typing import Any

from PIL import Image

from ....job import InvalidRequest
from ...base import Reply
from .args import Arg, defaults
from .grid import LabelPart, labelled_grid
from .runner import ScriptContext, arguments, as_bool, as_number

TITLE = "Prompt matrix"
# put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size
ARGS: tuple[Arg, ...] = (
    Arg("Put variable parts at start of prompt", False, "checkbox"),
    Arg("Use different seed for each picture", False, "checkbox"),
    Arg("Select prompt", "positive", "dropdown", ("positive", "negative")),
    Arg("Select joining char", "comma", "dropdown", ("comma", "space")),
    Arg("Grid margins (px)", 0, "slider", minimum=0, maximum=500, step=2),
)
DEFAULTS = defaults(ARGS)
MAX_PARTS = 10  # 2^10 images: past this a request is a mistake, not a matrix


def combinations(text: str, put_at_start: bool, delimiter: str) -> tuple[list[str], list[str]]:
    """Every prompt of the matrix (combination c uses optional part n when bit n of c is set) and the parts."""
    first, *parts = text.split("|")
    parts = [p.strip().strip(",").strip() for p in parts]
    joiner = " " if delimiter == "space" else ", "
    prompts = []
    for c in range(2 ** len(parts)):
        chosen = [p for n, p in enumerate(parts) if c & (1 << n)]
        prompts.append(joiner.join([*chosen, first] if put_at_start else [first, *chosen]))
    return prompts, parts


async def run(ctx: ScriptContext, args: list[Any]) -> Reply:
    put_at_start, different_seeds, prompt_type, delimiter, margin = arguments(args, DEFAULTS)
    negative = str(prompt_type).lower() == "negative"
    field = "negative_prompt" if negative else "prompt"
    prompts, parts = combinations(getattr(ctx.request, field) or "", as_bool(put_at_start), str(delimiter).lower())
    if len(parts) > MAX_PARTS:
        raise InvalidRequest(f"Prompt matrix: at most {MAX_PARTS} '|' parts ({len(parts)} sent)")
    seed = ctx.fixed_seed(ctx.request.seed)
    runs = []
    for i, prompt in enumerate(prompts):
        # one image per combination, as A1111's batch of all prompts: image i's seed is seed (+ i)
        run = await ctx.run(**{field: prompt}, seed=seed + (i if as_bool(different_seeds) else 0), batch_size=1,
                            n_iter=1)
        runs.append(run)
        if run.interrupted:
            break
    return await asyncio.to_thread(_answer, ctx, runs, parts, int(as_number(margin, float, "margin_size")))


def _answer(ctx: ScriptContext, runs: list, parts: list[str], margin: int) -> Reply:
    images = [r.images[0] for r in runs if r.images]
    if not images:
        raise InvalidRequest("Prompt matrix: no image was produced")
    k = len(parts)
    col_parts, row_parts = parts[: (k + 1) // 2], parts[(k + 1) // 2 :]
    cols, rows = 2 ** len(col_parts), 2 ** len(row_parts)
    images += [Image.new("RGB", images[0].size) for _ in range(cols * rows - len(images))]  # interrupted: the rest stays blank

    def labels(names: list[str], count: int):
        return [[LabelPart(n, bool(i & (1 << b))) for b, n in enumerate(names)] for i in range(count)]

    grid = labelled_grid(images, cols, rows, labels(col_parts, cols), labels(row_parts, rows), max(0, margin))
    texts = [r.infotexts[0] for r in runs if r.infotexts]
    ctx.save(grid, texts[0], runs[0].info.get("seed", -1), grid=True)

    def column(key: str) -> list[Any]:
        values = [r.info.get(key) for r in runs]
        return [values[0], *values]

    return ctx.reply([grid, *[r.encoded[0] for r in runs if r.encoded]], [texts[0], *texts], runs[0].info,
                     all_prompts=column("prompt"), all_negative_prompts=column("negative_prompt"),
                     all_seeds=column("seed"), all_subseeds=column("subseed"), index_of_first_image=1)
