"""A script's arguments as data: what `/sdapi/v1/script-info` lists for each (label, UI default, bounds,
choices), the default `script_args` value the API uses when an argument is left out, and the kind of control
the UI shows for it (webui/tabs/scripts.py builds its fields from these rows)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# the kinds of control: checkbox, number, slider, text, textarea, dropdown (a value), index (a dropdown whose
# value is its position: what the API wants), list (a multi-select), html (a note; its value is ignored)
KINDS = ("checkbox", "number", "slider", "text", "textarea", "dropdown", "index", "list", "html")


@dataclass(frozen=True)
class Arg:
    label: str
    value: Any  # what script-info shows (an index dropdown shows its label, as A1111's does)
    kind: str = "text"
    choices: tuple[str, ...] | Callable[[str], list[str]] | None = None  # a callable gets the task
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    api_default: Any = field(default=None)  # the script_args value when left out; None: `value`

    def default(self) -> Any:
        return self.value if self.api_default is None else self.api_default

    def choices_for(self, task: str) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices(task) if callable(self.choices) else self.choices)

    def info(self, task: str) -> dict[str, Any]:
        """The row of `/sdapi/v1/script-info`."""
        return {"label": self.label, "value": self.value, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": self.choices_for(task)}


def defaults(args: tuple[Arg, ...]) -> list[Any]:
    return [a.default() for a in args]
