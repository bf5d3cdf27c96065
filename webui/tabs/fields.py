"""A tab's request fields: the one table (field name → component) that builds the request, saves and restores the
fields in the browser, and receives "send to tab" from History and PNG Info."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

# Not a secret: gr.BrowserState's encryption only scrambles localStorage. A fixed value keeps the saved
# fields readable after a server restart (a random one per start would lose them, with a console error).
STORAGE_SECRET = "sdgate-fields-v1"


@dataclass
class Fields:
    """A tab's request fields: request-model field name → component, in form order. The same table builds
    the request, saves and restores the fields in the browser, and receives "send to tab"."""

    key: str
    components: dict[str, gr.components.Component] = field(default_factory=dict)
    persisted: list[str] = field(default_factory=list)
    store: Any = None  # the gr.BrowserState keeping them (persist_fields)
    # For fields whose choices depend on others (v1's sizes on the engine): data → {name: component update}
    # applied whenever values are set from outside (restore, send to tab), where no user event recomputes them.
    refine: Callable[[dict], dict[str, Any]] | None = None

    def add(self, name: str, component, persist: bool = True):
        self.components[name] = component
        if persist:
            self.persisted.append(name)
        return component

    @property
    def names(self) -> list[str]:
        return list(self.components)

    @property
    def inputs(self) -> list:
        return list(self.components.values())

    def values(self, args: tuple | list) -> dict[str, Any]:
        return dict(zip(self.components, args))

    def updates(self, data: dict[str, Any], names: list[str] | None = None) -> list:
        """Component values for `data` (request-field name → value), for `names` (default: every field);
        fields not in it stay as they are."""
        names = self.names if names is None else names
        refined = self.refine(data) if self.refine else {}
        out = []
        for name in names:
            if name in refined:
                out.append(refined[name])
            elif name in data:
                out.append(coerce_for(self.components[name], data[name]))
            else:
                out.append(gr.skip())
        return out


def _choice_values(component) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in (getattr(component, "choices", None) or [])]


def coerce_for(component, value):
    """A stored or sent value made fit for `component`; gr.skip() when it cannot be (a model that is gone,
    a sampler name this server lacks), so one stale value never breaks restoring the rest."""
    if isinstance(component, gr.Dropdown):
        choices = _choice_values(component)
        if component.multiselect:
            items = value if isinstance(value, list) else [value]
            return [v for v in items if v in choices] if not component.allow_custom_value else items
        if value in choices or component.allow_custom_value:
            return value
        return gr.skip()
    if isinstance(component, gr.Radio):
        return value if value in _choice_values(component) else gr.skip()
    if isinstance(component, (gr.Slider, gr.Number)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return gr.skip()
        lo, hi = getattr(component, "minimum", None), getattr(component, "maximum", None)
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            return gr.skip()
        return int(number) if number.is_integer() else number
    if isinstance(component, gr.Checkbox):
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)
    if isinstance(component, gr.Textbox):
        return "" if value is None else str(value)
    return value


def keyword_signature(fn: Callable, names: list[str]) -> Callable:
    """Give `fn(session, **values)` a signature naming each field with a None default: gradio then lists
    every field as an optional, named API parameter (an image field has no initial value, and without a
    default it would be a required one)."""
    first = [inspect.Parameter("session", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if "request" in inspect.signature(fn).parameters:  # gradio fills a `gr.Request`-annotated one itself
        first.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                       annotation=fn.__annotations__.get("request")))
    fields = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in names]
    fn.__signature__ = inspect.Signature([*first, *fields])
    return fn


def persist_fields(blocks: gr.Blocks, fields: Fields) -> gr.BrowserState:
    """Keep the tab's fields in the browser's localStorage: saved on every change by a client-side function
    (no server round trip), restored when the page loads. Images are not kept (localStorage is small)."""
    names = fields.persisted
    comps = [fields.components[n] for n in names]
    store = gr.BrowserState({}, storage_key=f"sdgate.{fields.key}", secret=STORAGE_SECRET)
    js = f"(...values) => Object.fromEntries({json.dumps(names)}.map((name, i) => [name, values[i]]))"
    gr.on([c.change for c in comps], fn=None, js=js, inputs=comps, outputs=[store], api_visibility="private",
          queue=False)

    def restore(saved):
        return fields.updates(saved if isinstance(saved, dict) else {}, names)

    blocks.load(restore, inputs=[store], outputs=comps, api_visibility="private", queue=False,
                show_progress="hidden")
    fields.store = store
    return store
