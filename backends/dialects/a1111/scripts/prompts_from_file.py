"""Prompts from file or textbox (`"prompts from file or textbox"`, 4 args; a1111_features.md §3.3): one run per
non-blank line; a line with `--flag value` pairs overrides those request fields for its run."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from typing import Any

from ....job import InvalidRequest
from ....sampler_table import A1111_SAMPLERS
from ...base import Reply
from .args import Arg, defaults
from .runner import ScriptContext, arguments, as_bool

TITLE = "Prompts from file or textbox"
# checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt
ARGS: tuple[Arg, ...] = (
    Arg("Iterate seed every line", False, "checkbox"),
    Arg("Use same random seed for all lines", False, "checkbox"),
    Arg("Insert prompts at the", "start", "dropdown", ("start", "end")),
    Arg("List of prompt inputs", "", "textarea"),
)
DEFAULTS = defaults(ARGS)


def _bool(value: str) -> bool:
    return value == "true"  # A1111 reads only the literal `true` as on


# The flags a line may carry and how each value is read. `None`: accepted and ignored (A1111's output paths,
# its display prompt, its sampler index, and `styles`, which A1111 sets as a raw string that does nothing).
FLAGS: dict[str, Callable[[str], Any] | None] = {
    "sd_model": str,
    "outpath_samples": None, "outpath_grids": None, "prompt_for_display": None, "sampler_index": None,
    "styles": None,
    "prompt": str, "negative_prompt": str, "sampler_name": str,
    "seed": int, "subseed": int, "seed_resize_from_h": int, "seed_resize_from_w": int, "batch_size": int,
    "n_iter": int, "steps": int, "width": int, "height": int,
    "subseed_strength": float, "cfg_scale": float,
    "restore_faces": _bool, "tiling": _bool, "do_not_save_samples": _bool, "do_not_save_grid": _bool,
}
MULTI_WORD = ("prompt", "negative_prompt")  # these take every token up to the next --flag


def parse_line(line: str) -> dict[str, Any]:
    """A line's flags, or the whole line as the prompt (no `--`, or anything in it that does not parse)."""
    if "--" not in line:
        return {"prompt": line}
    try:
        tokens = shlex.split(line)
        found: dict[str, Any] = {}
        pos = 0
        while pos < len(tokens):
            tag = tokens[pos]
            if not tag.startswith("--") or tag[2:] not in FLAGS:
                raise ValueError(f"unknown commandline option: {tag}")
            name = tag[2:]
            if name in MULTI_WORD:
                words = []
                pos += 1
                while pos < len(tokens) and not tokens[pos].startswith("--"):
                    words.append(tokens[pos])
                    pos += 1
                found[name] = " ".join(words)
                continue
            if pos + 1 >= len(tokens):
                raise ValueError(f"missing value for {tag}")
            read = FLAGS[name]
            if read is not None:
                found[name] = read(tokens[pos + 1])
            pos += 2
        return found
    except ValueError:
        return {"prompt": line}


def _sampler(name: str) -> str | None:
    """By name or alias, any case; an unknown one means the default sampler (A1111 sets None)."""
    wanted = name.lower()
    for sampler in A1111_SAMPLERS:
        if wanted == sampler.name.lower() or wanted in (a.lower() for a in sampler.aliases):
            return sampler.name
    return None


def changes_for(ctx: ScriptContext, line: str, position: str) -> dict[str, Any]:
    """The request fields a line changes (the request's own prompts joined to the line's)."""
    req = ctx.request
    changes: dict[str, Any] = {}
    for name, value in parse_line(line).items():
        if name in ("prompt", "negative_prompt"):
            own = getattr(req, name) or ""
            if value and own:
                value = f"{value} {own}" if position == "start" else f"{own} {value}"
        elif name == "sampler_name":
            value = _sampler(value)
        elif name == "sd_model":
            title = ctx.api.resolve_model(value, ctx.call).title
            changes["override_settings"] = {**(req.override_settings or {}), "sd_model_checkpoint": title}
            continue
        changes[name] = value
    return changes


async def run(ctx: ScriptContext, args: list[Any]) -> Reply:
    iterate, same_seed, position, text = arguments(args, DEFAULTS)
    iterate, same_seed = as_bool(iterate), as_bool(same_seed)
    position = "end" if str(position).lower() == "end" else "start"
    lines = [line for line in (raw.strip() for raw in str(text or "").splitlines()) if line]
    if not lines:
        raise InvalidRequest("Prompts from file or textbox: prompt_txt has no prompts")
    req = ctx.request
    seed = ctx.fixed_seed(req.seed) if (iterate or same_seed) else req.seed
    runs = []
    for line in lines:
        changes = await asyncio.to_thread(changes_for, ctx, line, position)
        run = await ctx.run(**{"seed": seed, **changes})
        runs.append(run)
        if run.interrupted:
            break
        if iterate:
            seed += (req.batch_size or 1) * (req.n_iter or 1)
    images = [encoded for r in runs for encoded in r.encoded]
    infotexts = [t for r in runs for t in r.infotexts]

    def column(key: str) -> list[Any]:
        return [v for r in runs for v in (r.info.get(key) or [])]

    # A1111 answers with the script's final seed and no grid
    return ctx.reply(images, infotexts, runs[0].info, all_prompts=column("all_prompts"),
                     all_negative_prompts=column("all_negative_prompts"), seed=seed, all_seeds=[seed],
                     all_subseeds=column("all_subseeds"), index_of_first_image=0)
