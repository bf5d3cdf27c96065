"""The A1111 tabs' Script block: A1111's "Script" dropdown ("None" and the tab's scripts) and each script's
fields, shown only while that script is chosen. The fields are built from the scripts' argument table
(backends/dialects/a1111/scripts/), so the block sends exactly the `script_name` / `script_args` a client would
POST. A tab puts the block where it wants it (`script_block`), adds `block.inputs` to its generate handler's
inputs and merges `block.request_fields(*values)` into the body it builds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from backends.dialects.a1111.scripts import Script, scripts_for
from backends.dialects.a1111.scripts.args import Arg

NO_SCRIPT = "None"
# argument kinds with no field here: their API default is sent (the note's HTML; a values list, which the
# X/Y/Z plot reads from the text field instead when none is sent)
HIDDEN_KINDS = ("html", "list")


def _elem_id(*parts: str) -> str:
    return re.sub(r"\W+", "_", "_".join(parts)).strip("_").lower()


def _field(arg: Arg, task: str, key: str):
    """One argument's control (None for a hidden kind)."""
    elem_id = _elem_id(key, arg.label)
    if arg.kind in HIDDEN_KINDS:
        return None
    if arg.kind == "checkbox":
        return gr.Checkbox(value=bool(arg.value), label=arg.label, elem_id=elem_id)
    if arg.kind == "slider":
        return gr.Slider(minimum=arg.minimum, maximum=arg.maximum, step=arg.step, value=arg.value, label=arg.label,
                         elem_id=elem_id)
    if arg.kind == "number":
        return gr.Number(value=arg.value, label=arg.label, elem_id=elem_id)
    if arg.kind in ("dropdown", "index"):
        # "index": the API wants the position in the list (the X/Y/Z axis types, the upscaler)
        return gr.Dropdown(choices=arg.choices_for(task), value=arg.value, label=arg.label, elem_id=elem_id,
                           type="index" if arg.kind == "index" else "value")
    return gr.Textbox(value=arg.value, label=arg.label, lines=4 if arg.kind == "textarea" else 1, elem_id=elem_id)


@dataclass
class ScriptBlock:
    task: str  # "txt2img" | "img2img"
    dropdown: gr.Dropdown
    groups: list[gr.Group]
    scripts: list[Script]
    fields: list[list[Any]] = field(default_factory=list)  # per script, one control (or None) per argument

    @property
    def inputs(self) -> list:
        """The components whose values `request_fields` takes, in its order."""
        return [self.dropdown, *(c for controls in self.fields for c in controls if c is not None)]

    def request_fields(self, *values: Any) -> dict[str, Any]:
        """The dropdown's and fields' values (as `inputs` lists them) → `script_name` and `script_args`."""
        chosen, rest = values[0], iter(values[1:])
        body: dict[str, Any] = {"script_name": None, "script_args": []}
        for script, controls in zip(self.scripts, self.fields):
            args = [a.default() if c is None else next(rest) for a, c in zip(script.args, controls)]
            if chosen == script.title:
                body = {"script_name": script.name, "script_args": [_api_value(a, v) for a, v in zip(script.args, args)]}
        return body


def _api_value(arg: Arg, value: Any) -> Any:
    if value is None:
        return arg.default()
    if arg.kind == "slider" and isinstance(arg.step, int) and float(value).is_integer():
        return int(value)
    return value


def script_block(task: str, key: str | None = None) -> ScriptBlock:
    """The dropdown and every script's fields (hidden until chosen), built inside the caller's layout."""
    key = key or task
    scripts = scripts_for(task)
    dropdown = gr.Dropdown(choices=[NO_SCRIPT, *[s.title for s in scripts]], value=NO_SCRIPT, label="Script",
                           elem_id=f"{key}_script")
    block = ScriptBlock(task, dropdown, [], scripts)
    for script in scripts:
        with gr.Group(visible=False, elem_id=_elem_id(key, "script", script.name)) as group:
            block.fields.append([_field(arg, task, _elem_id(key, script.name)) for arg in script.args])
        block.groups.append(group)
    dropdown.change(lambda name: [gr.Group(visible=name == s.title) for s in scripts], [dropdown], block.groups,
                    queue=False, api_visibility="private")
    return block
