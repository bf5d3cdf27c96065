"""The OpenAI Images tab: generations, edits (with an optional mask: transparent = repaint, as OpenAI's) and
variations. The fields become the body an OpenAI client sends, and the tab calls the dialect's `parse` and `run`
as POST /v1/images/{operation} does (backends/dialects/openai/), asking for `b64_json`; the Backend choice is the
call's Route. Enums and limits are read from the dialect's package."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from backends.dialects import openai as oa
from backends.dialects import registry
from backends.images import decode_base64, open_image, read_infotext
from backends.job import Style
from backends.service import Service

from .common import (
    Shown,
    action_buttons,
    backend_dropdown,
    dialect_run,
    field_bounds,
    read_infotexts,
    results_column,
    run_tab,
    save_output,
    tab_call,
    wire_generate,
)
from .fields import Fields, persist_fields

TAB = "openai_images"
NONE = "(none)"
OPERATION_LABELS = {"generations": "Generate", "edits": "Edit", "variations": "Variation"}
SIZES = ("auto", "256x256", "512x512", "768x768", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792")
SEED_RE = re.compile(r"\bSeed: (\d+)")


def form_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The fields an OpenAI client would send for this operation (empty ones left out)."""
    operation = values.get("operation") or "generations"
    form: dict[str, Any] = {
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or None,
        "model": values.get("model") or None,
        "n": values.get("n") or 1,
        "size": values.get("size") or None,
        "output_format": values.get("output_format") or None,
        "response_format": "b64_json",  # the tab shows the images itself
    }
    if values.get("seed") not in (None, "", -1):
        form["seed"] = int(values["seed"])
    for name in ("quality", "style"):
        if values.get(name) not in (None, "", NONE):
            form[name] = values[name]
    if operation == "variations":
        form.pop("prompt")
    if operation != "generations":
        if values.get("image"):
            form["image"] = [Path(values["image"]).read_bytes()]
        if operation == "edits" and values.get("mask"):
            form["mask"] = Path(values["mask"]).read_bytes()
    return {k: v for k, v in form.items() if v is not None}


def build_openai_tab(blocks: gr.Blocks, service: Service) -> Fields:
    dialect = registry.dialect(service, Style.OPENAI)
    fields = Fields(TAB)
    state = gr.State({})
    seed_lo, seed_hi = field_bounds(oa.GenerateRequest, "seed")
    n_lo, n_hi = field_bounds(oa.GenerateRequest, "n")

    with gr.Row(elem_classes="sdg-toprow"):
        with gr.Column(scale=5, min_width=260):
            fields.add("prompt", gr.Textbox("", label="Prompt", lines=3, max_lines=10, elem_id=f"{TAB}_prompt",
                                            max_length=oa.MAX_PROMPT))
            fields.add("negative_prompt", gr.Textbox("", label="Negative prompt (extension)", lines=2, max_lines=8,
                                                     elem_id=f"{TAB}_negative_prompt", max_length=oa.MAX_PROMPT))
        with gr.Column(scale=1, min_width=200, elem_classes="sdg-actions"):
            actions = action_buttons(TAB)
            fields.add("style", gr.Dropdown([NONE, *oa.STYLE_PRESETS], value=NONE, label="Style",
                                            elem_id=f"{TAB}_style"))

    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(scale=1, min_width=300, elem_classes="sdg-params"):
            operation = fields.add("operation", gr.Radio(
                [(OPERATION_LABELS[o], o) for o in oa.OPERATIONS], value="generations", label="Operation",
                elem_id=f"{TAB}_operation"))
            with gr.Row():
                fields.add("model", gr.Dropdown(list(oa.MODEL_NAMES), value="dall-e-3", label="Model",
                                                allow_custom_value=True, elem_id=f"{TAB}_model", min_width=140))
                fields.add("size", gr.Dropdown(list(SIZES), value="512x512", label="Size (any WxH)",
                                               allow_custom_value=True, elem_id=f"{TAB}_size", min_width=140))
            with gr.Row():
                fields.add("quality", gr.Dropdown([NONE, *oa.QUALITIES], value=NONE, label="Quality",
                                                  elem_id=f"{TAB}_quality", min_width=120))
                fields.add("n", gr.Slider(n_lo, n_hi, value=1, step=1, label="Images (n)", elem_id=f"{TAB}_n",
                                          min_width=120))
            with gr.Row():
                fields.add("seed", gr.Number(-1, precision=0, minimum=seed_lo, maximum=seed_hi,
                                             label="Seed (-1: random)", elem_id=f"{TAB}_seed", min_width=140))
                fields.add("output_format", gr.Dropdown(list(oa.OUTPUT_FORMATS), value="png", label="Output format",
                                                        elem_id=f"{TAB}_output_format", min_width=140))
            with gr.Group(visible=False, elem_id=f"{TAB}_image_box") as image_box:
                fields.add("image", gr.Image(label="Image (edits, variations)", type="filepath",
                                             sources=["upload", "clipboard"], height=200, elem_id=f"{TAB}_image"),
                           persist=False)
                fields.add("mask", gr.Image(label="Mask (edits; transparent = repaint)", type="filepath",
                                            image_mode="RGBA", sources=["upload", "clipboard"], height=200,
                                            elem_id=f"{TAB}_mask"), persist=False)
            fields.add("backend", backend_dropdown(service, Style.OPENAI, TAB))
        results = results_column(TAB)

    def operation_changed(op):
        return gr.Group(visible=op != "generations")

    async def generate(session: dict, **values):
        operation_name = values.get("operation") or "generations"

        def prepare():
            call = tab_call(service, Style.OPENAI, values.get("backend"), session)
            return dialect_run(dialect, operation_name, form_fields(values), call)  # the route's rules and words

        def present(reply) -> Shown:
            kept = {k: v for k, v in values.items() if k not in ("image", "mask")}
            paths, seeds = [], []
            for item in reply.body["data"]:
                data = decode_base64(item["b64_json"])
                found = SEED_RE.search(read_infotext(open_image(data))[0] or "")
                seeds.append(int(found.group(1)) if found else -1)
                paths.append(str(save_output(service.config.outputs_dir, TAB, data, seeds[-1], kept,
                                             owner=session.get("owner"))))
            return Shown(paths, read_infotexts(paths), 0, seeds, [f"size {reply.body['size']}"])

        async for frame in run_tab(service, session, prepare, present):
            yield frame

    operation.change(operation_changed, [operation], [image_box], api_visibility="private", queue=False)
    wire_generate(generate, state, fields, actions, results, api_name=TAB)
    persist_fields(blocks, fields)
    return fields
