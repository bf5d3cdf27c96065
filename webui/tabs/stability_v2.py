"""The Stability v2beta tab: Stable Image Core, Ultra and SD3. The fields become the form a v2beta client posts, and
the tab calls the dialect's `parse` and `run` as POST /v2beta/stable-image/generate/{endpoint} does
(backends/dialects/stability_v2/), asking for the JSON answer; the Backend choice is the call's Route. Enums and
limits are read from the dialect's package."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import gradio as gr

from backends.dialects import registry
from backends.dialects import stability_v2 as v2
from backends.images import decode_base64
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

TAB = "stability_v2beta"
NONE = "(none)"
ENDPOINT_LABELS = {"core": "Core", "ultra": "Ultra", "sd3": "SD3"}
IMAGE_ENDPOINTS = ("ultra", "sd3")  # the endpoints that take an init image
JSON_ACCEPT = {"accept": "application/json"}  # the tab reads the JSON answer


def form_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The multipart fields a v2beta client would send for this endpoint (empty ones left out, as the
    dialect treats empty values as absent)."""
    endpoint = values.get("endpoint") or "core"
    form: dict[str, Any] = {
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or "",
        "aspect_ratio": values.get("aspect_ratio"),
        "seed": values.get("seed") or 0,
        "output_format": values.get("output_format"),
    }
    if values.get("style_preset") not in (None, "", NONE):
        form["style_preset"] = values["style_preset"]
    if endpoint == "sd3":
        form["model"] = values.get("model")
        form["mode"] = values.get("mode")
        if values.get("cfg_scale") is not None:
            form["cfg_scale"] = values["cfg_scale"]
    image = values.get("image")
    if endpoint in IMAGE_ENDPOINTS and image and (endpoint == "ultra" or values.get("mode") == "image-to-image"):
        form["image"] = Path(image).read_bytes()
        form["strength"] = values.get("strength")
    return {k: v for k, v in form.items() if v is not None}


def build_stability_v2_tab(blocks: gr.Blocks, service: Service) -> Fields:
    dialect = registry.dialect(service, Style.STABILITY_V2)
    fields = Fields(TAB)
    state = gr.State({})
    seed_lo, seed_hi = field_bounds(v2.CoreRequest, "seed")
    cfg_lo, cfg_hi = field_bounds(v2.SD3Request, "cfg_scale")
    strength_lo, strength_hi = field_bounds(v2.UltraRequest, "strength")

    with gr.Row(elem_classes="sdg-toprow"):
        with gr.Column(scale=5, min_width=260):
            fields.add("prompt", gr.Textbox("", label="Prompt", lines=3, max_lines=10, elem_id=f"{TAB}_prompt",
                                            max_length=v2.MAX_PROMPT))
            fields.add("negative_prompt", gr.Textbox("", label="Negative prompt", lines=2, max_lines=8,
                                                     elem_id=f"{TAB}_negative_prompt", max_length=v2.MAX_PROMPT))
        with gr.Column(scale=1, min_width=200, elem_classes="sdg-actions"):
            actions = action_buttons(TAB)
            fields.add("style_preset", gr.Dropdown([NONE, *v2.STYLE_PRESETS], value=NONE, label="Style preset",
                                                   elem_id=f"{TAB}_style_preset"))

    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(scale=1, min_width=300, elem_classes="sdg-params"):
            endpoint = fields.add("endpoint", gr.Radio(
                [(ENDPOINT_LABELS.get(e, e), e) for e in v2.ENDPOINTS], value="core", label="Service",
                elem_id=f"{TAB}_endpoint"))
            fields.add("aspect_ratio", gr.Dropdown(list(v2.ASPECT_RATIOS), value="1:1", label="Aspect ratio",
                                                   elem_id=f"{TAB}_aspect_ratio"))
            with gr.Row():
                fields.add("seed", gr.Number(0, precision=0, minimum=seed_lo, maximum=seed_hi,
                                             label="Seed (0: random)", elem_id=f"{TAB}_seed", min_width=140))
                fields.add("output_format", gr.Dropdown(list(v2.OUTPUT_FORMATS), value="png", label="Output format",
                                                        elem_id=f"{TAB}_output_format", min_width=140))
            with gr.Group(visible=False, elem_id=f"{TAB}_sd3_box") as sd3_box:
                with gr.Row():
                    fields.add("model", gr.Dropdown(list(get_args(v2.SD3Model)), value="sd3.5-large",
                                                    label="SD3 model", elem_id=f"{TAB}_model", min_width=140))
                    fields.add("mode", gr.Radio(["text-to-image", "image-to-image"], value="text-to-image",
                                                       label="Mode", elem_id=f"{TAB}_mode", min_width=140))
                fields.add("cfg_scale", gr.Number(None, minimum=cfg_lo, maximum=cfg_hi, elem_id=f"{TAB}_cfg_scale",
                                                  label=f"CFG scale ({cfg_lo:g}–{cfg_hi:g}; empty: the model's default)"))
            with gr.Group(visible=False, elem_id=f"{TAB}_image_box") as image_box:
                fields.add("image", gr.Image(label="Init image (Ultra, SD3 image-to-image)", type="filepath",
                                             sources=["upload", "clipboard"], height=200, elem_id=f"{TAB}_image"),
                           persist=False)
                fields.add("strength", gr.Slider(strength_lo, strength_hi, value=0.5, step=0.01,
                                                 label="Strength (0 keeps the image)", elem_id=f"{TAB}_strength"))
            fields.add("backend", backend_dropdown(service, Style.STABILITY_V2, TAB))
        results = results_column(TAB)

    def endpoint_changed(ep):
        return gr.Group(visible=ep == "sd3"), gr.Group(visible=ep in IMAGE_ENDPOINTS)

    async def generate(session: dict, **values):
        endpoint_name = values.get("endpoint") or "core"

        def prepare():
            call = replace(tab_call(service, Style.STABILITY_V2, values.get("backend"), session), headers=JSON_ACCEPT)
            return dialect_run(dialect, endpoint_name, form_fields(values), call)  # the route's rules and words

        def present(reply) -> Shown:
            body = json.loads(reply.body)
            kept = {k: v for k, v in values.items() if k != "image"}
            path = str(save_output(service.config.outputs_dir, TAB, decode_base64(body["image"]), body["seed"],
                                   kept, owner=session.get("owner")))
            notes = [] if body["finish_reason"] == "SUCCESS" else [f"finish_reason {body['finish_reason']}"]
            return Shown([path], read_infotexts([path]), 0, [body["seed"]], notes)

        async for frame in run_tab(service, session, prepare, present):
            yield frame

    endpoint.change(endpoint_changed, [endpoint], [sd3_box, image_box], api_visibility="private", queue=False)
    wire_generate(generate, state, fields, actions, results, api_name=TAB)
    persist_fields(blocks, fields)
    return fields
