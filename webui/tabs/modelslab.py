"""The ModelsLab tab (stablediffusionapi.com text2img). The fields become the JSON body a ModelsLab client posts
to POST /api/v6/images/text2img, and the dialect's `parse` then `run` answer it, as they answer that route: its
typing rules, limits and messages, the seed, scheduler class and LoRAs, the options with no local effect, the
images with their infotext (asked for as base64, so the tab saves exactly the bytes the route serves). Tables
(schedulers, ranges, defaults) are read from backends/dialects/modelslab/."""

from __future__ import annotations

from typing import Any

import gradio as gr

from backends.dialects import modelslab as ml
from backends.dialects import registry
from backends.dialects.base import Reply
from backends.images import decode_base64
from backends.job import Style

from .common import (
    Shown,
    action_buttons,
    backend_dropdown,
    dialect_run,
    read_infotexts,
    results_column,
    run_tab,
    save_output,
    tab_call,
    wire_generate,
)
from .fields import Fields, persist_fields

TAB = "modelslab"
FAMILY = "v6"  # the UI speaks the current route family: model_id is required
# The switches the tab shows, in ModelsLab's order (their defaults come from ml.DEFAULTS).
FLAGS = ("use_karras_sigmas", "tomesd", "panorama", "self_attention", "safety_checker", "enhance_prompt",
         "multi_lingual")
FLAG_LABELS = {"use_karras_sigmas": "Karras sigmas", "tomesd": "ToMe SD", "panorama": "Panorama (4 × height wide)",
"self_attention": "Self-attention", "safety_checker": "Safety checker",
               "enhance_prompt": "Enhance prompt", "multi_lingual": "Multi-lingual"}
UPSCALE_CHOICES = [("no", "no"), ("2× (yes)", "yes"), ("3×", "3"), ("4×", "4")]


def names(lister) -> list[str]:
    """A listing for a dropdown (LoRAs, VAEs, embeddings); a folder that cannot be read lists nothing."""
    try:
        return sorted(lister())
    except OSError:
        return []


def request_body(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON body a ModelsLab client would send (flags as "yes"/"no", LoRAs comma-joined)."""
    body: dict[str, Any] = {
        "model_id": values.get("model_id"),
        "prompt": values.get("prompt"),
        "negative_prompt": values.get("negative_prompt") or None,
        "width": values.get("width"),
        "height": values.get("height"),
        "samples": values.get("samples"),
        "num_inference_steps": values.get("num_inference_steps"),
        "guidance_scale": values.get("guidance_scale"),
        "scheduler": values.get("scheduler"),
        "seed": values.get("seed"),
        "clip_skip": values.get("clip_skip"),
        "base64": "yes",
    }
    loras = values.get("lora_model") or []
    if loras:
        body["lora_model"] = ",".join(loras)
        body["lora_strength"] = values.get("lora_strength") or None
    if values.get("vae"):
        body["vae"] = values["vae"]
    if values.get("embeddings_model"):
        body["embeddings_model"] = ",".join(values["embeddings_model"])
    if values.get("upscale") not in (None, "no"):
        body["upscale"] = values["upscale"]
    for flag in FLAGS:
        if values.get(flag) is not None:
            body[flag] = ml.yes_no(bool(values[flag]))
    return {k: v for k, v in body.items() if v is not None}


def build_modelslab_tab(blocks: gr.Blocks, service) -> Fields:
    dialect: ml.ModelslabDialect = registry.dialect(service, Style.MODELSLAB)
    fields = Fields(TAB)
    state = gr.State({})
    ranges = {name: (lo, hi) for name, lo, hi in ml.RANGES}
    defaults = ml.DEFAULTS
    models = [m.name for m in service.models.list()]
    try:
        model0 = service.models.resolve(None).name
    except Exception:
        model0 = models[0] if models else None

    with gr.Row(elem_classes="sdg-toprow"):
        with gr.Column(scale=5, min_width=260):
            fields.add("prompt", gr.Textbox("", label="Prompt", lines=3, max_lines=10, elem_id=f"{TAB}_prompt"))
            fields.add("negative_prompt", gr.Textbox("", label="Negative prompt", lines=2, max_lines=8,
                                                     elem_id=f"{TAB}_negative_prompt"))
        with gr.Column(scale=1, min_width=200, elem_classes="sdg-actions"):
            actions = action_buttons(TAB)
            fields.add("model_id", gr.Dropdown(models, value=model0, allow_custom_value=True, label="model_id",
                                               elem_id=f"{TAB}_model_id"))

    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(scale=1, min_width=300, elem_classes="sdg-params"):
            with gr.Row():
                for name in ("width", "height"):
                    lo, hi = ranges[name]
                    fields.add(name, gr.Slider(lo, hi, value=defaults[name], step=8, label=name.capitalize(),
                                               elem_id=f"{TAB}_{name}", min_width=140))
            with gr.Row():
                lo, hi = ranges["samples"]
                fields.add("samples", gr.Slider(lo, hi, value=defaults["samples"], step=1, label="Samples",
                                                elem_id=f"{TAB}_samples", min_width=140))
                lo, hi = ranges["num_inference_steps"]
                fields.add("num_inference_steps", gr.Slider(lo, hi, value=defaults["num_inference_steps"], step=1,
                                                            label="Steps", elem_id=f"{TAB}_steps", min_width=140))
            with gr.Row():
                lo, hi = ranges["guidance_scale"]
                fields.add("guidance_scale", gr.Slider(lo, hi, value=defaults["guidance_scale"], step=0.5,
                                                       label="Guidance scale", elem_id=f"{TAB}_guidance_scale",
                                                       min_width=140))
                lo, hi = ranges["clip_skip"]
                fields.add("clip_skip", gr.Slider(lo, hi, value=defaults["clip_skip"], step=1, label="Clip skip",
                                                  elem_id=f"{TAB}_clip_skip", min_width=140))
            with gr.Row():
                fields.add("scheduler", gr.Dropdown(list(ml.SCHEDULERS), value=defaults["scheduler"],
                                                    label="Scheduler", elem_id=f"{TAB}_scheduler", min_width=180))
                fields.add("seed", gr.Number(None, precision=0, minimum=-1, maximum=ml.MAX_SEED,
                                             label="Seed (empty or -1: random)", elem_id=f"{TAB}_seed",
                                             min_width=140))
            with gr.Row():
                fields.add("lora_model", gr.Dropdown(names(service.lora_names), value=[], multiselect=True,
                                                     allow_custom_value=True, label="LoRA ids",
                                                     elem_id=f"{TAB}_lora_model", min_width=180))
                lo, hi = ml.LORA_STRENGTH
                fields.add("lora_strength", gr.Textbox("", label=f"LoRA strengths ({lo:g}–{hi:g}, comma separated)",
                                                       placeholder="0.8 or 0.6,0.9", elem_id=f"{TAB}_lora_strength",
                                                       min_width=140))
            with gr.Row():
                fields.add("vae", gr.Dropdown(["", *names(service.vae_names)], value="", allow_custom_value=True,
                                              label="VAE (empty: the model's own)", elem_id=f"{TAB}_vae",
                                              min_width=180))
                fields.add("embeddings_model", gr.Dropdown(names(service.embedding_names), value=[],
                                                           multiselect=True, allow_custom_value=True,
                                                           label="Embeddings", elem_id=f"{TAB}_embeddings_model",
                                                           min_width=180))
                fields.add("upscale", gr.Dropdown(UPSCALE_CHOICES, value="no", label="Upscale",
                                                  elem_id=f"{TAB}_upscale", min_width=120))
            with gr.Row(elem_classes="sdg-flags"):
                for flag in FLAGS:
                    fields.add(flag, gr.Checkbox(bool(defaults[flag]), label=FLAG_LABELS[flag],
                                                 elem_id=f"{TAB}_{flag}", min_width=150))
            fields.add("backend", backend_dropdown(service, Style.MODELSLAB, TAB))
        results = results_column(TAB)

    async def generate(session: dict, **values):
        def prepare():
            call = tab_call(service, Style.MODELSLAB, values.get("backend"), session, family=FAMILY)
            # what POST /api/v6/images/text2img does with this body: ModelsLab's own checks and words
            return dialect_run(dialect, "text2img", request_body(values), call)

        def present(reply: Reply) -> Shown:
            answer = reply.body  # a `success` body: a UI call waits for its images
            meta = answer["meta"]
            saved = [str(save_output(service.config.outputs_dir, TAB, decode_base64(b64), seed, values,
                                     owner=session.get("owner")))
                     for b64, seed in zip(answer["output"], meta["seeds"])]
            notes = list(meta.get("notes") or [])
            if "original_prompt" in meta:
                notes.append(f"prompt used: {meta['prompt']}")
            if answer.get("nsfw_content_detected"):
                notes.append("the safety checker flagged an image: it was replaced by a blank one")
            for name, why in (meta.get("not_applied") or {}).items():
                notes.append(f"not applied: {name}: {why}")
            return Shown(saved, read_infotexts(saved), 0, list(meta["seeds"]), notes)

        async for frame in run_tab(service, session, prepare, present):
            yield frame

    wire_generate(generate, state, fields, actions, results, api_name=TAB)
    persist_fields(blocks, fields)
    return fields
