"""Prompt enhancement (`Job.enhance_prompt`, ModelsLab's `enhance_prompt`, on by default there). The real service
asks a language model; here it is a fixed rule over the data in `enhance_phrases.json`, so the same prompt is
always enhanced the same way and no model is needed. It runs after translation (registry order), on English.

The rule:
- Prompt: the first style in the file (illustration, painting, photographic, scenery: in that priority, so an
  "anime portrait" is not given camera phrases) one of whose keywords occurs in the prompt as a whole word or phrase,
  in any case, gives its phrases; no style matched: the default phrases. Each phrase whose words are already in the
  prompt (emphasis brackets and weights ignored: "(masterpiece:1.2)" has "masterpiece") is left out; the rest are
  appended after a comma, in the file's order.
- Negative prompt: the phrases ModelsLab's service appends (the example response of its text2img document,
  docs/reference/seeds/004_48e4500ad6959eba.txt), in its order and with its emphasis, after a comma (the service
  writes none). A phrase already an item of the negative prompt exactly as written is left out (the service repeats
  it: "mutated hands" twice in its example), so enhancing twice changes nothing.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from ...job import Job
from .base import Feature

PHRASES_FILE = Path(__file__).with_name("enhance_phrases.json")


@cache
def phrases() -> dict:
    return json.loads(PHRASES_FILE.read_text(encoding="utf-8"))


def _words(text: str) -> str:
    """`text` as its lower-case words between single spaces: brackets, weights' colons and commas gone."""
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def style_phrases(prompt: str) -> list[str]:
    """The phrases the rule chooses for `prompt` (module docstring), before those already present are left out."""
    words = _words(prompt)
    for style in phrases()["styles"]:
        if any(_words(keyword) in words for keyword in style["keywords"]):
            return style["phrases"]
    return phrases()["default"]


def enhance_prompt(prompt: str) -> str:
    words = _words(prompt)
    added = [p for p in dict.fromkeys(style_phrases(prompt)) if _words(p) not in words]
    return _append(prompt, added)


def enhance_negative(negative: str) -> str:
    present = {" ".join(item.lower().split()) for item in negative.split(",")}
    added = [p for p in phrases()["negative"] if " ".join(p.lower().split()) not in present]
    return _append(negative, list(dict.fromkeys(added)))


def _append(text: str, added: list[str]) -> str:
    head = text.strip().rstrip(",").rstrip()
    return ", ".join([head, *added] if head else added)


class Enhance(Feature):
    name = "enhance"

    def wanted(self, job: Job) -> bool:
        return bool(job.enhance_prompt)

    def key(self, job: Job) -> None:
        return None  # acts on this job's own prompts only: batch-mates may differ

    def rewrite(self, run) -> None:
        run.prompt = enhance_prompt(run.prompt)
        run.negative = enhance_negative(run.negative)
