"""A1111 prompt syntax: attention weights, BREAK and extra-network tags (docs/reference/a1111_api.md §6.1, §6.2).

Written from the documented behaviour, not from A1111's (AGPL) source. Pure Python, no torch.

    parse_prompt_attention("a (cat:1.3) [dog] BREAK sky")
    -> [("a ", 1.0), ("cat", 1.3), (" ", 1.0), ("dog", 0.909...), ("BREAK", -1.0), ("sky", 1.0)]

Scheduling `[a:b:when]`, alternation `[a|b]` and `AND` are read before this, by prompt_schedule.py (the engine
encodes each text of a schedule); here such brackets would be plain (down-weighted) text.
"""

from __future__ import annotations

import re

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_WEIGHT = -1.0

# `:1.3)` closes the innermost round bracket with an explicit weight.
_EXPLICIT_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
# BREAK must be a whole uppercase word; the whitespace around it goes with it.
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_ESCAPABLE = "()[]\\"
_SPECIAL = "()[]:\\"


def _lex(text: str):
    """Yield (kind, value) tokens: text / open / close / weight (value = (number, source))."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt and nxt in _ESCAPABLE:
                yield "text", nxt
                i += 2
            else:  # a backslash that escapes nothing is dropped; the next character is read normally
                i += 1
        elif c in "([":
            yield "open", c
            i += 1
        elif c in ")]":
            yield "close", c
            i += 1
        elif c == ":":
            m = _EXPLICIT_WEIGHT.match(text, i)
            number = _to_float(m.group(1)) if m else None
            if number is None:  # a bare colon, or "(a:1.2.3)": plain text, never an error
                yield "text", ":"
                i += 1
            else:
                yield "weight", (number, m.group(0))
                i = m.end()
        else:
            j = i + 1
            while j < n and text[j] not in _SPECIAL:
                j += 1
            yield "text", text[i:j]
            i = j


def _to_float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split an A1111 prompt into (text, weight) runs; ("BREAK", -1.0) marks a forced chunk break."""
    # Each run is [text, weight]; a BREAK run has weight None so that brackets around it cannot
    # rescale it (A1111 would turn "(a BREAK b)" into the literal word BREAK weighted -1.1).
    runs: list[list] = []
    # Round and square brackets close independently, as in A1111: "(a [b) c]" is legal.
    opened: dict[str, list[int]] = {"(": [], "[": []}

    def scale_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            if run[1] is not None:
                run[1] *= factor

    for kind, value in _lex(text):
        if kind == "open":
            opened[value].append(len(runs))
        elif kind == "weight" and opened["("]:
            scale_from(opened["("].pop(), value[0])
        elif kind == "close" and value == ")" and opened["("]:
            scale_from(opened["("].pop(), ROUND_MULTIPLIER)
        elif kind == "close" and value == "]" and opened["["]:
            scale_from(opened["["].pop(), SQUARE_MULTIPLIER)
        else:  # text, or a closer / weight with nothing open: literal
            literal = value[1] if kind == "weight" else value
            for k, part in enumerate(_BREAK.split(literal)):
                if k > 0:
                    runs.append(["BREAK", None])
                if part:
                    runs.append([part, 1.0])

    # Brackets left open close at the end of the prompt with their usual multiplier.
    for start in opened["("]:
        scale_from(start, ROUND_MULTIPLIER)
    for start in opened["["]:
        scale_from(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for run in runs:
        if merged and run[1] is not None and merged[-1][1] == run[1]:
            merged[-1][0] += run[0]
        else:
            merged.append(run)
    if not merged:
        return [("", 1.0)]
    return [(t, BREAK_WEIGHT if w is None else w) for t, w in merged]


def is_break(run: tuple[str, float]) -> bool:
    return run[0] == "BREAK" and run[1] == BREAK_WEIGHT


def strip_extra_networks(text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Remove `<type:arg:arg>` tags (e.g. `<lora:name:0.8>`); return the text and [(type, args)] in order."""
    found: list[tuple[str, list[str]]] = []

    def take(m: re.Match) -> str:
        found.append((m.group(1), m.group(2).split(":")))
        return ""

    return _EXTRA_NETWORK.sub(take, text), found
