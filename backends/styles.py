"""Prompt styles (styles.json: `[{name, prompt, negative_prompt}]`), one file for the whole server.

A1111's styles and Stability's `style_preset`s are the same idea; every dialect and the UI read this one file.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_PATH = REPO_ROOT / "styles.json"


def styles_path(raw_config: dict[str, Any] | None, *sections: str) -> Path:
    """The styles file: `styles_file` in the first of `sections` that names one, then `[a1111]`, else the
    repo's styles.json."""
    raw = raw_config or {}
    for section in (*sections, "a1111"):
        found = (raw.get(section) or {}).get("styles_file")
        if found:
            return Path(found)
    return DEFAULT_PATH


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_style_prompt(style_prompt: str, prompt: str) -> str:
    """A1111's rule: `{prompt}` in the style is replaced by the prompt; otherwise the style is appended."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


class StyleStore:
    """styles.json: `[{name, prompt, negative_prompt}]`, re-read when the file changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._styles: dict[str, Style] = {}
        self._lock = threading.Lock()

    def all(self) -> list[Style]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                self._styles, self._mtime = {}, None
                return []
            if mtime != self._mtime:
                self._styles = self._load()
                self._mtime = mtime
            return list(self._styles.values())

    def _load(self) -> dict[str, Style]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("cannot read styles from %s: %s", self.path, e)
            return {}
        styles = {}
        for item in data if isinstance(data, list) else []:
            if isinstance(item, dict) and item.get("name"):
                style = Style(str(item["name"]), str(item.get("prompt") or ""), str(item.get("negative_prompt") or ""))
                styles[style.name] = style
        return styles

    def apply(self, prompt: str, negative: str, names: list[str] | None) -> tuple[str, str]:
        known = {s.name: s for s in self.all()}
        for name in names or []:
            style = known.get(name)
            if style is None:  # A1111 skips unknown styles; a typo should not fail a batch script
                log.warning("unknown style %r ignored", name)
                continue
            prompt = merge_style_prompt(style.prompt, prompt)
            negative = merge_style_prompt(style.negative_prompt, negative)
        return prompt, negative
