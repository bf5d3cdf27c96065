"""The A1111 txt2img and img2img tabs: A1111's layout (prompts and Generate/Interrupt/Skip on top, parameters
left, results right) over the A1111 dialect. Every run builds the body a client would POST to
/sdapi/v1/txt2img (or img2img) from the fields, and the dialect's `parse` then `run` answer it, as they answer
that route; the images are saved to outputs/ as A1111's UI saves them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from backends.dialects import a1111 as d
from backends.dialects import registry
from backends.images import decode_base64, encode_base64
from backends.job import SdgateError, Style

from .common import (
    ResultFiles,
    Shown,
    action_buttons,
    backend_dropdown,
    dialect_run,
    results_column,
    run_tab,
    sniff_ext,
    tab_call,
    wire_generate,
)
from .fields import Fields, persist_fields

RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
DEFAULT_STEPS = 20  # A1111's UI default (its API's is 50)


def model_choices(service) -> list[str]:
    try:
        return [m.title for m in service.models.list()]
    except SdgateError:
        return []


def default_model(service) -> str | None:
    try:
        return service.models.resolve(None).title
    except SdgateError:
        return None


@dataclass
class A1111Tab:
    task: str  # "txt2img" | "img2img"
    tab_id: str
    fields: Fields
    state: gr.State
    store: gr.BrowserState


def fields_from_infotext(service, text: str, task: str) -> dict[str, Any]:
    """The tab's fields from an infotext ("send to" from History and PNG Info): the dialect's one reading of an
    infotext, the same as a request's `infotext` field gets, with the checkpoint among this server's models."""
    return d.fields_from_infotext(text, task, lambda name: service.models.resolve(name).title)


def build_a1111_tab(blocks: gr.Blocks, service, task: str, files: ResultFiles) -> A1111Tab:
    dialect: d.A1111Dialect = registry.dialect(service, Style.A1111)
    key = f"a1111_{task}"
    fields = Fields(key)
    samplers = [s["name"] for s in d.a1111_samplers()]
    schedules = [s["label"] for s in d.a1111_schedulers()]
    limits = service.config.limits
    state = gr.State({})

    with gr.Row(elem_classes="sdg-toprow"):
        with gr.Column(scale=5, min_width=260):
            fields.add("prompt", gr.Textbox("",
                label="Prompt", lines=3, max_lines=12, elem_id=f"{key}_prompt",
                placeholder="Prompt (Ctrl+Enter to generate)"))
            fields.add("negative_prompt", gr.Textbox("",
                label="Negative prompt", lines=2, max_lines=8, elem_id=f"{key}_negative_prompt"))
        with gr.Column(scale=1, min_width=200, elem_classes="sdg-actions"):
            actions = action_buttons(key)
            fields.add("styles", gr.Dropdown(
                [s.name for s in dialect.styles.all()], value=[], multiselect=True, label="Styles",
                elem_id=f"{key}_styles"))

    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(scale=1, min_width=300, elem_classes="sdg-params"):
            if task == "img2img":
                fields.add("init_images", gr.Image(
                    label="Image", type="pil", format="png", sources=["upload", "clipboard"],
                    elem_id=f"{key}_init_image", height=260), persist=False)
                fields.add("mask", gr.Image(
                    label="Mask (optional; white is repainted)", type="pil", format="png",
                    sources=["upload", "clipboard"], elem_id=f"{key}_mask", height=160), persist=False)
                fields.add("resize_mode", gr.Radio(
                    RESIZE_MODES, value=RESIZE_MODES[0], type="index", label="Resize mode",
                    elem_id=f"{key}_resize_mode"))
            with gr.Row():
                fields.add("sampler_name", gr.Dropdown(
                    samplers, value=d.DEFAULT_SAMPLER, label="Sampling method", elem_id=f"{key}_sampler",
                    min_width=140))
                fields.add("scheduler", gr.Dropdown(
                    schedules, value="Automatic", label="Schedule type", elem_id=f"{key}_scheduler", min_width=140))
            fields.add("steps", gr.Slider(1, limits.max_steps, value=DEFAULT_STEPS, step=1,
                                          label="Sampling steps", elem_id=f"{key}_steps"))
            with gr.Row(equal_height=True):
                with gr.Column(scale=4, min_width=200):
                    width = fields.add("width", gr.Slider(64, limits.max_width, value=512, step=8, label="Width",
                                                          elem_id=f"{key}_width"))
                    height = fields.add("height", gr.Slider(64, limits.max_height, value=512, step=8,
                                                            label="Height", elem_id=f"{key}_height"))
                swap = gr.Button("⇅", size="sm", min_width=40, scale=0, elem_id=f"{key}_swap",
                                 elem_classes="sdg-tool")
            with gr.Row():
                fields.add("n_iter", gr.Slider(1, 16, value=1, step=1, label="Batch count", elem_id=f"{key}_n_iter",
                                               min_width=140))
                fields.add("batch_size", gr.Slider(1, limits.max_batch_size, value=1, step=1, label="Batch size",
                                                   elem_id=f"{key}_batch_size", min_width=140))
            fields.add("cfg_scale", gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale",
                                              elem_id=f"{key}_cfg_scale"))
            if task == "img2img":
                fields.add("denoising_strength", gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                                           elem_id=f"{key}_denoising_strength"))
            with gr.Row(equal_height=True):
                seed = fields.add("seed", gr.Number(value=-1, precision=0, label="Seed (-1: random)",
                                                    elem_id=f"{key}_seed", scale=4, min_width=120))
                random_seed = gr.Button("Random", size="sm", min_width=64, scale=0, elem_id=f"{key}_random_seed",
                                        elem_classes="sdg-seed-tool")
                reuse_seed = gr.Button("Reuse", size="sm", min_width=64, scale=0, elem_id=f"{key}_reuse_seed",
                                       elem_classes="sdg-seed-tool")
            if task == "txt2img":
                with gr.Accordion("Hires. fix", open=False, elem_id=f"{key}_hires"):
                    fields.add("enable_hr", gr.Checkbox(False, label="Enable hires. fix", elem_id=f"{key}_enable_hr"))
                    with gr.Row():
                        fields.add("hr_upscaler", gr.Dropdown(
                            [*d.LATENT_UPSCALE_MODES, *d.UPSCALERS], value="Latent", label="Upscaler",
                            elem_id=f"{key}_hr_upscaler", min_width=140))
                        fields.add("hr_second_pass_steps", gr.Slider(
                            0, limits.max_steps, value=0, step=1, label="Hires steps (0: same)",
                            elem_id=f"{key}_hr_second_pass_steps", min_width=140))
                    with gr.Row():
                        fields.add("denoising_strength", gr.Slider(
                            0, 1, value=d.HIRES_DEFAULT_DENOISING, step=0.01, label="Denoising strength",
                            elem_id=f"{key}_denoising_strength", min_width=140))
                        fields.add("hr_scale", gr.Slider(1, 4, value=2, step=0.05, label="Upscale by",
                                                         elem_id=f"{key}_hr_scale", min_width=140))
                    with gr.Row():
                        fields.add("hr_resize_x", gr.Slider(0, limits.max_width, value=0, step=8,
                                                            label="Resize width to (0: by scale)",
                                                            elem_id=f"{key}_hr_resize_x", min_width=140))
                        fields.add("hr_resize_y", gr.Slider(0, limits.max_height, value=0, step=8,
                                                            label="Resize height to (0: by scale)",
                                                            elem_id=f"{key}_hr_resize_y", min_width=140))
            with gr.Row():
                fields.add("model", gr.Dropdown(
                    model_choices(service), value=default_model(service), label="Model (checkpoint)",
                    elem_id=f"{key}_model", elem_classes="sdg-model-choice", min_width=180))
                fields.add("backend", backend_dropdown(service, Style.A1111, key))

        results = results_column(key)

    def make_body(values: dict[str, Any]) -> dict[str, Any]:
        """The fields as the JSON body a client would send."""
        body = dict(values)
        body.pop("backend", None)
        body["model"] = body.get("model") or None
        body["seed"] = -1 if body.get("seed") is None else int(body["seed"])
        if task == "img2img":
            image = body.pop("init_images")
            if image is None:
                raise gr.Error("img2img needs an image: upload one (or send one from History or PNG Info)")
            body["init_images"] = [encode_base64(image, "png")]
            mask_image = body.pop("mask")
            body["mask"] = encode_base64(mask_image, "png") if mask_image is not None else None
        # The UI saves every image, as A1111's UI does; the History tab reads them back.
        return {**body, "save_images": True, "send_images": True}

    def present(reply) -> Shown:
        response = reply.body
        info = json.loads(response["info"])
        raw = [decode_base64(b64) for b64 in response["images"]]
        seeds = info.get("all_seeds") or []
        first = int(info.get("index_of_first_image") or 0)
        names = ["grid"] * first + list(seeds)  # a grid comes first when batch > 1, as A1111 returns it
        paths = [files.write(data, name, sniff_ext(data)) for data, name in zip(raw, names)]
        return Shown(paths, info.get("infotexts") or [], first, seeds, list(info.get("notes") or []))

    async def generate(session: dict, **values):
        def prepare():
            call = tab_call(service, Style.A1111, values.get("backend"), session)
            return dialect_run(dialect, task, make_body(values), call)  # what POST /sdapi/v1/<task> does

        async for frame in run_tab(service, session, prepare, present):
            yield frame

    wire_generate(generate, state, fields, actions, results, api_name=key)
    swap.click(lambda w, h: (h, w), [width, height], [width, height], queue=False, api_visibility="private")
    random_seed.click(lambda: -1, None, [seed], queue=False, api_visibility="private")
    reuse_seed.click(lambda s: s.get("last_seed", gr.skip()), [state], [seed], queue=False,
                     api_visibility="private")
    store = persist_fields(blocks, fields)
    return A1111Tab(task=task, tab_id=key, fields=fields, state=state, store=store)
