"""A1111 prompt editing, alternation and AND (docs/reference/a1111_features.md §1), as per-call text schedules.

Written from the documented behaviour, not from A1111's (AGPL) source. Pure Python, no torch.

    prompt_schedule("a [cat:dog:2] b", 4)  -> [(2, "a cat b"), (4, "a dog b")]
    prompt_schedule("[cat|dog]", 4)        -> [(1, "cat"), (2, "dog"), (3, "cat"), (4, "dog")]
    split_and("a :1.2 AND b")              -> [("a", 1.2), ("b", 1.0)]

A schedule is `[(end_at, text), ...]`: entry k is used while the call counter (0 for the first UNet call of a
sampling run) is ≤ end_at_k (`text_at`). `(x:1.2)` weights, `[x]` down-weights and BREAK stay in the texts for the
attention parser (text_encoding.py); `<lora:...>` tags were stripped before (engine `start`).

The parser is forgiving where A1111's grammar is not: a bracket that opens no valid construct (`[a:b:c:3]`,
`a [unbalanced`) stays literal text on its own, and the rest of the prompt is still read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..sampler_table import ROWS, SAMPLER_LOOKUP, name_key

_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_AND = re.compile(r"\bAND\b")
_SUB_WEIGHT = re.compile(r"\s*:\s*([-+]?(\d+\.?|\d*\.\d+))\s*$")  # the reference's regex, verbatim

# Diffusers schedulers whose timesteps list two UNet calls per step (2·steps − 1 calls), as A1111 counts them.
TWO_CALLS_PER_STEP = frozenset(
    {"HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler"})


# ------------------------------------------------------------------------------------ the tree


@dataclass(frozen=True)
class Scheduled:
    before: tuple  # nodes
    after: tuple
    when: str  # the number as written: "." in it makes it a fraction


@dataclass(frozen=True)
class Alternate:
    options: tuple  # of node tuples


def parse(text: str) -> tuple:
    """The prompt as nodes: str (literal), Scheduled, Alternate."""
    nodes, _ = _sequence(text, 0, frozenset())
    return tuple(nodes)


def _sequence(s: str, i: int, stops: frozenset) -> tuple[list, int]:
    """Nodes from s[i:] up to (not including) the first character in `stops` at this level, or the end."""
    nodes: list = []

    def add(*made) -> None:  # adjacent literals merge into one string
        for node in made:
            if isinstance(node, str) and nodes and isinstance(nodes[-1], str):
                nodes[-1] += node
            elif node != "":
                nodes.append(node)

    while i < len(s) and s[i] not in stops:
        c = s[i]
        if c == "\\":  # an escape stays as written: the attention parser reads it
            add(s[i : i + 2])
            i += 2
        elif c == "(":
            inner, j = _sequence(s, i + 1, frozenset(")"))
            if j < len(s):  # "(...)" is emphasis: its text stays, schedules inside it still count
                add("(", *inner, ")")
                i = j + 1
            else:
                add("(")
                i += 1
        elif c == "[":
            found = _bracket(s, i)
            if found is None:
                add("[")
                i += 1
            else:
                made, i = found
                add(*made)
        else:
            add(c)
            i += 1
    return nodes, i


def _bracket(s: str, i: int) -> tuple[list, int] | None:
    """The construct opening at s[i] == "[" and the index after it, or None when it forms none."""
    first, j = _sequence(s, i + 1, frozenset(":|]"))
    if j >= len(s):
        return None
    if s[j] == "]":  # [x]: emphasis, kept as text around whatever is inside
        return ["[", *first, "]"], j + 1
    if s[j] == "|":
        options = [tuple(first)]
        while j < len(s) and s[j] == "|":
            option, j = _sequence(s, j + 1, frozenset(":|]"))
            options.append(tuple(option))
        if j >= len(s) or s[j] != "]":
            return None
        return [Alternate(tuple(options))], j + 1
    second, k = _sequence(s, j + 1, frozenset(":|]"))  # s[j] == ":"
    if k >= len(s) or s[k] == "|":
        return None
    if s[k] == "]":  # [to:when]
        number = _NUMBER.fullmatch(s[j + 1 : k])
        return ([Scheduled((), tuple(first), number.group(1))], k + 1) if number else None
    end = s.find("]", k + 1)  # [from:to:when]
    number = _NUMBER.fullmatch(s[k + 1 : end]) if end > 0 else None
    if number is None:
        return None
    return [Scheduled(tuple(first), tuple(second), number.group(1))], end + 1


# ------------------------------------------------------------------------------------ schedules


def when_step(when: str, total: int, hires_base: int | None = None) -> int:
    """The call index after which `[a:b:when]` switches, clamped to `total`. Text with "." is a fraction of
    `total`, else an absolute call index. hires_base: the first pass's total, for the hires pass's schedule
    (fractions count from 1.0, integers from the first pass's end)."""
    v = float(when)
    if "." in when:
        step = int((v - 1) * total) if hires_base is not None else int(v * total)
    else:
        step = int(v) - hires_base if hires_base is not None else int(v)
    return min(step, total)


def _points(nodes, total: int, hires_base: int | None, out: set) -> None:
    for node in nodes:
        if isinstance(node, Scheduled):
            step = when_step(node.when, total, hires_base)
            if 0 < step < total:
                out.add(step)
            _points(node.before, total, hires_base, out)
            _points(node.after, total, hires_base, out)
        elif isinstance(node, Alternate):
            out.update(range(1, total + 1))
            for option in node.options:
                _points(option, total, hires_base, out)


def _render(nodes, at: int, total: int, hires_base: int | None) -> str:
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, Scheduled):
            branch = node.before if at <= when_step(node.when, total, hires_base) else node.after
            parts.append(_render(branch, at, total, hires_base))
        else:
            parts.append(_render(node.options[(at - 1) % len(node.options)], at, total, hires_base))
    return "".join(parts)


def prompt_schedule(text: str, total: int, hires_base: int | None = None) -> list[tuple[int, str]]:
    """`[(end_at, text), ...]` for `total` calls: the text at each point where some construct changes, each
    rendered as of its point (a switch at `when` ≤ 0 is immediate, at ≥ total never)."""
    total = max(1, int(total))
    nodes = parse(text)
    points: set[int] = {total}
    _points(nodes, total, hires_base, points)
    schedule: list[tuple[int, str]] = []
    for at in sorted(points):
        rendered = _render(nodes, at, total, hires_base)
        if schedule and schedule[-1][1] == rendered:
            schedule[-1] = (at, rendered)  # the same text runs on: one entry
        else:
            schedule.append((at, rendered))
    return schedule


def text_at(schedule: list[tuple[int, str]], counter: int) -> str:
    for end_at, text in schedule:
        if counter <= end_at:
            return text
    return schedule[-1][1]


def split_and(prompt: str) -> list[tuple[str, float]]:
    """The positive prompt's AND parts, each with its trailing `:weight` taken off (default 1.0). As in A1111,
    a prompt without AND that ends in `:<number>` gets that weight too ("aspect 16:9" → "aspect 16", ×9)."""
    parts = []
    for part in _AND.split(prompt):
        m = _SUB_WEIGHT.search(part)
        parts.append((part[: m.start()], float(m.group(1))) if m else (part, 1.0))
    return parts


def total_steps(steps: int, second_order: bool) -> int:
    """A1111's N: the steps, or twice as many for its second-order samplers (two calls per step)."""
    return 2 * steps if second_order else steps


def counter_scale(second_order: bool, scheduler_class: str) -> float:
    """A1111 call counter per UNet call here: 1 when the diffusers scheduler makes as many calls per step as the
    A1111 sampler; 2 for a second-order A1111 sampler run by a one-call substitute (DPM++ 2S a)."""
    ours = 2 if scheduler_class in TWO_CALLS_PER_STEP else 1
    return (2 if second_order else 1) / ours


def sampler_counting(choice, steps: int) -> tuple[int, float]:
    """(A1111's N, its call counter per UNet call here) for a resolved sampler (backends/samplers.py
    SamplerChoice). Second-order is A1111's flag on the sampler asked for (sampler_table.py options)."""
    row = SAMPLER_LOOKUP.get(name_key(choice.requested)) if choice.requested else None
    row = row or ROWS.get(choice.name)
    second = row is not None and row.options.get("second_order") == "True"
    return total_steps(steps, second), counter_scale(second, choice.scheduler_class)
