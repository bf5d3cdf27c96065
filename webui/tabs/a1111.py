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
from .scripts import ScriptBlock, script_block

RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
DEFAULT_STEPS = 20  # A1111's UI default (its API's is 50)
VAE_FIXED_CHOICES = ["Automatic", "None"]  # then the files of models/VAE/ (A1111's "SD VAE" quick setting)
DEFAULT_SWITCH_AT = 0.8  # A1111's refiner "Switch at" default
# A1111's variation-seed row, used only while its "Extra" checkbox is on
SEED_EXTRAS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
# The first choice of these dropdowns means "as the first pass" / "no refiner": null in the request.
UNSET_CHOICES = {
    "hr_checkpoint_name": "Use same checkpoint",
    "hr_sampler_name": "Use same sampler",
    "hr_scheduler": "Use same scheduler",
    "refiner_checkpoint": "None",
}
# What "send to" sets for a field this issue adds when the infotext does not have it (A1111 writes these keys
# only when they are on or differ from the first pass), so a previous image's variation seed, hires
# checkpoint, refiner or VAE never lingers in the tab.
ABSENT_FROM_INFOTEXT: dict[str, Any] = {
    "subseed": -1, "subseed_strength": 0, "seed_resize_from_w": 0, "seed_resize_from_h": 0,
    "tiling": False, "restore_faces": False, **UNSET_CHOICES, "hr_prompt": "", "hr_negative_prompt": "",
    "refiner_switch_at": DEFAULT_SWITCH_AT, "sd_vae": "Automatic",
}


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


def vae_choices(service) -> list[str]:
    try:
        return [*VAE_FIXED_CHOICES, *service.vae_names()]
    except (SdgateError, OSError):
        return list(VAE_FIXED_CHOICES)


def seed_extras_rows(fields: Fields, key: str, limits, extras: gr.Checkbox) -> tuple[gr.Button, gr.Button]:
    """A1111's variation-seed rows, shown while the seed row's "Extra" is on; its (random, reuse) buttons."""
    with gr.Column(visible=False, elem_id=f"{key}_seed_extras") as rows:
        with gr.Row(equal_height=True):
            fields.add("subseed", gr.Number(value=-1, precision=0, label="Variation seed", elem_id=f"{key}_subseed",
                                            scale=4, min_width=120))
            random_subseed = gr.Button("Random", size="sm", min_width=64, scale=0,
                                       elem_id=f"{key}_random_subseed", elem_classes="sdg-seed-tool")
            reuse_subseed = gr.Button("Reuse", size="sm", min_width=64, scale=0, elem_id=f"{key}_reuse_subseed",
                                      elem_classes="sdg-seed-tool")
            fields.add("subseed_strength", gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                                     elem_id=f"{key}_subseed_strength", scale=4, min_width=140))
        with gr.Row():
            fields.add("seed_resize_from_w", gr.Slider(0, limits.max_width, value=0, step=8,
                                                       label="Resize seed from width",
                                                       elem_id=f"{key}_seed_resize_from_w", min_width=140))
            fields.add("seed_resize_from_h", gr.Slider(0, limits.max_height, value=0, step=8,
                                                       label="Resize seed from height",
                                                       elem_id=f"{key}_seed_resize_from_h", min_width=140))
    # .change also fires when a restore or "send to" sets the box, so the rows follow the value
    extras.change(lambda on: gr.Column(visible=bool(on)), [extras], [rows], queue=False, api_visibility="private")
    return random_subseed, reuse_subseed


def hires_extras(fields: Fields, key: str, service, samplers: list[str], schedules: list[str]) -> None:
    """The hires pass's own checkpoint, sampler, schedule and prompts (A1111's "Hires checkpoint" row)."""
    with gr.Row():
        for name, label, choices in (("hr_checkpoint_name", "Hires checkpoint", model_choices(service)),
                                     ("hr_sampler_name", "Hires sampling method", samplers),
                                     ("hr_scheduler", "Hires schedule type", schedules)):
            fields.add(name, gr.Dropdown([UNSET_CHOICES[name], *choices], value=UNSET_CHOICES[name], label=label,
                                         elem_id=f"{key}_{name}", min_width=140))
    with gr.Row():
        fields.add("hr_prompt", gr.Textbox("", label="Hires prompt", lines=2, placeholder="(as the prompt)",
                                           elem_id=f"{key}_hr_prompt"))
        fields.add("hr_negative_prompt", gr.Textbox("", label="Hires negative prompt", lines=2,
                                                    placeholder="(as the negative prompt)",
                                                    elem_id=f"{key}_hr_negative_prompt"))


@dataclass
class ScriptFields:
    """The Script block's controls as tab fields: their names in `Fields` (the dropdown is "script", each argument
    its control's elem_id without the tab's prefix, e.g. "x_y_z_plot_x_type"), in `block.inputs` order."""

    block: ScriptBlock
    names: list[str]

    def request_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """Takes the block's values out of `body`; `script_name` and `script_args` as A1111 gets them."""
        return self.block.request_fields(*(body.pop(name, None) for name in self.names))


def add_script_block(fields: Fields, task: str, key: str) -> ScriptFields:
    block = script_block(task, key)
    names = []
    for component in block.inputs:
        name = "script" if component is block.dropdown else component.elem_id.removeprefix(f"{key}_")
        if name in fields.components:  # two arguments with one label would share a field
            raise ValueError(f"script field {name!r} is already a field of {key}")
        # the dropdown is not kept across reloads (as A1111): restoring it would switch its groups by a server
        # round trip on every page load; its arguments are kept
        fields.add(name, component, persist=name != "script")
        names.append(name)
    return ScriptFields(block, names)


@dataclass
class A1111Tab:
    task: str  # "txt2img" | "img2img"
    tab_id: str
    fields: Fields
    state: gr.State
    store: gr.BrowserState
    script: ScriptFields


def fields_from_infotext(service, text: str, task: str) -> dict[str, Any]:
    """The tab's fields from an infotext ("send to" from History and PNG Info): the dialect's one reading of an
    infotext, the same as a request's `infotext` field gets (each checkpoint, the hires and refiner ones too, as
    the title of this server's model), the VAE option as the tab's "SD VAE" field, the "Extra" seed row on when the infotext has a variation seed
    or seed resize, and the fields of ABSENT_FROM_INFOTEXT it lacks set to "off"."""

    def title(name: str) -> str:
        return service.models.resolve(name).title

    data = {**ABSENT_FROM_INFOTEXT, **d.fields_from_infotext(text, task, title)}  # absent: "off"
    settings = data.get("override_settings") or {}
    if settings.get("sd_vae"):
        data["sd_vae"] = settings["sd_vae"]
    for side in ("seed_resize_from_w", "seed_resize_from_h"):
        data[side] = max(0, _number(data.get(side)))  # the API's -1 is the slider's 0: off
    data["seed_enable_extras"] = _number(data.get("subseed_strength")) > 0 or any(
        data[side] > 0 for side in ("seed_resize_from_w", "seed_resize_from_h"))
    return data


def request_body(task: str, values: dict[str, Any], script: ScriptFields | None = None) -> dict[str, Any]:
    """The tab's fields as the JSON body a client would POST to /sdapi/v1/<task>: the UI-only fields (Backend,
    "Extra", "SD VAE", the Script block's) turned into what A1111's UI sends for them."""
    body = dict(values)
    body.pop("backend", None)
    if script is not None:
        body.update(script.request_fields(body))
    body["model"] = body.get("model") or None
    body["seed"] = -1 if body.get("seed") is None else int(body["seed"])
    if body.pop("seed_enable_extras", False):
        body["subseed"] = -1 if body.get("subseed") is None else int(body["subseed"])
        body["subseed_strength"] = float(body.get("subseed_strength") or 0)
        for side in ("seed_resize_from_w", "seed_resize_from_h"):
            body[side] = int(_number(body.get(side))) or -1  # the slider's 0: off, the API's -1
    else:  # A1111: with "Extra" off the variation row is not used
        for name in SEED_EXTRAS:
            body.pop(name, None)
    for name, unset in UNSET_CHOICES.items():
        if name in body and body[name] in (unset, "", None):
            body[name] = None
    vae = body.pop("sd_vae", None)
    if vae:  # per request, as A1111's scripts send its quick setting
        body["override_settings"] = {**(body.get("override_settings") or {}), "sd_vae": vae}
    if task == "img2img":
        image = body.pop("init_images", None)
        if image is None:
            raise gr.Error("img2img needs an image: upload one (or send one from History or PNG Info)")
        body["init_images"] = [encode_base64(image, "png")]
        mask_image = body.pop("mask", None)
        body["mask"] = encode_base64(mask_image, "png") if mask_image is not None else None
    # The UI saves every image, as A1111's UI saves them; the History tab reads them back.
    return {**body, "save_images": True, "send_images": True}


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


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
                # not kept across reloads: restoring it would show its rows through a server round trip on every
                # page load (and a page closed meanwhile aborts it); the rows' own values are kept
                extras = fields.add("seed_enable_extras", gr.Checkbox(
                    False, label="Extra", elem_id=f"{key}_subseed_show", scale=0, min_width=80), persist=False)
            subseed_tools = seed_extras_rows(fields, key, limits, extras)
            with gr.Row(elem_classes="sdg-flags"):
                fields.add("restore_faces", gr.Checkbox(False, label="Restore faces", elem_id=f"{key}_restore_faces"))
                fields.add("tiling", gr.Checkbox(False, label="Tiling", elem_id=f"{key}_tiling"))
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
                    hires_extras(fields, key, service, samplers, schedules)
            with gr.Accordion("Refiner", open=False, elem_id=f"{key}_refiner"), gr.Row():
                fields.add("refiner_checkpoint", gr.Dropdown(
                    [UNSET_CHOICES["refiner_checkpoint"], *model_choices(service)],
                    value=UNSET_CHOICES["refiner_checkpoint"], label="Checkpoint",
                    elem_id=f"{key}_refiner_checkpoint", min_width=180))
                fields.add("refiner_switch_at", gr.Slider(0.01, 1, value=DEFAULT_SWITCH_AT, step=0.01,
                                                          label="Switch at", elem_id=f"{key}_refiner_switch_at",
                                                          min_width=140))
            with gr.Row():
                fields.add("model", gr.Dropdown(
                    model_choices(service), value=default_model(service), label="Model (checkpoint)",
                    elem_id=f"{key}_model", elem_classes="sdg-model-choice", min_width=180))
                fields.add("sd_vae", gr.Dropdown(vae_choices(service), value="Automatic", label="SD VAE",
                                                 elem_id=f"{key}_sd_vae", min_width=140))
                fields.add("backend", backend_dropdown(service, Style.A1111, key))
            script = add_script_block(fields, task, key)  # last, as in A1111

        results = results_column(key)

    def present(reply, session: dict) -> Shown:
        response = reply.body
        info = json.loads(response["info"])
        if info.get("all_subseeds"):  # for the variation seed's Reuse button, as "last_seed" for the seed's
            session["last_subseed"] = info["all_subseeds"][0]
        raw = [decode_base64(b64) for b64 in response["images"]]
        seeds = info.get("all_seeds") or []
        first = int(info.get("index_of_first_image") or 0)
        names = ["grid"] * first + list(seeds)  # a grid comes first when batch > 1, as A1111 returns it
        paths = [files.write(data, name, sniff_ext(data)) for data, name in zip(raw, names)]
        return Shown(paths, info.get("infotexts") or [], first, seeds, list(info.get("notes") or []))

    async def generate(session: dict, **values):
        def prepare():
            call = tab_call(service, Style.A1111, values.get("backend"), session)
            return dialect_run(dialect, task, request_body(task, values, script), call)  # what POST /sdapi/v1/<task> does

        async for frame in run_tab(service, session, prepare, lambda reply: present(reply, session)):
            yield frame

    wire_generate(generate, state, fields, actions, results, api_name=key)
    swap.click(lambda w, h: (h, w), [width, height], [width, height], queue=False, api_visibility="private")
    random_seed.click(lambda: -1, None, [seed], queue=False, api_visibility="private")
    reuse_seed.click(lambda s: s.get("last_seed", gr.skip()), [state], [seed], queue=False,
                     api_visibility="private")
    random_subseed, reuse_subseed = subseed_tools
    subseed = fields.components["subseed"]
    random_subseed.click(lambda: -1, None, [subseed], queue=False, api_visibility="private")
    reuse_subseed.click(lambda s: s.get("last_subseed", gr.skip()), [state], [subseed], queue=False,
                        api_visibility="private")
    store = persist_fields(blocks, fields)
    return A1111Tab(task=task, tab_id=key, fields=fields, state=state, store=store, script=script)
