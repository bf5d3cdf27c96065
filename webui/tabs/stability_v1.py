"""The Stability v1 tab: text-to-image for the v1 engines. The fields build the JSON body a v1 client would send
to POST /v1/generation/{engine_id}/text-to-image (weighted `text_prompts`, the sampler and preset enums, the
engine's size rule), and the dialect's `parse` then `run` answer it, as they answer that route. Every limit and
table here is read from backends/dialects/stability_v1/."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, get_args

import gradio as gr

from backends.dialects import registry
from backends.dialects import stability_v1 as v1
from backends.dialects.base import Call
from backends.images import decode_base64
from backends.job import SdgateError, Style

from .common import (
    Shown,
    action_buttons,
    backend_dropdown,
    field_bounds,
    read_infotexts,
    results_column,
    run_tab,
    save_output,
    tab_call,
    wire_generate,
)
from .fields import Fields, persist_fields

TAB = "stability_v1"
NONE = "(none)"
PROMPT_ROWS = 4  # weighted text prompts: prompt, negative (weight -1), two more


def engine_choices(service) -> list[str]:
    """Stability's engine ids first, then the local models by name (the dialect serves those too)."""
    local = [m.name for m in service.models.list() if m.name not in v1.ENGINES]
    return [*v1.ENGINES, *local]


@functools.lru_cache(maxsize=64)
def allowed_sizes(engine_id: str, max_side: int) -> list[tuple[int, int]]:
    """The (width, height) pairs the engine's rule accepts, asked of the dialect's own check: the nine SDXL
    pairs, each side 320–1536 in steps of 64 for SD 1.6, and so on."""
    rule = v1.rule_for(engine_id, max_side)
    sides = range(64, max_side + 1, 64)
    candidates = list(rule.pairs) or [(w, h) for w in sides for h in sides]
    valid = []
    for w, h in candidates:
        try:
            v1.check_size(engine_id, w, h, max_side=max_side)
        except SdgateError:
            continue
        valid.append((w, h))
    return valid


def width_choices(engine_id: str, max_side: int) -> list[int]:
    return sorted({w for w, _ in allowed_sizes(engine_id, max_side)})


def height_choices(engine_id: str, width: int | None, max_side: int) -> list[int]:
    return sorted({h for w, h in allowed_sizes(engine_id, max_side) if w == width})


def default_size(dialect: v1.StabilityV1Dialect, engine_id: str) -> tuple[int, int]:
    """The size an omitted width/height takes: the engine's, or for a local model its family's."""
    family = None
    try:
        family = dialect.resolve_model(engine_id, Call()).family
    except SdgateError:
        pass
    return v1.default_size(engine_id, family)


def build_request_body(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(engine id, the JSON body a v1 client would send). Empty prompt rows are left out; a style preset of
    "(none)" and a seed of 0 are omitted, as a client leaving them out would."""
    prompts = []
    for i in range(1, PROMPT_ROWS + 1):
        text = (values.get(f"prompt_{i}") or "").strip()
        if text:
            weight = values.get(f"weight_{i}")
            prompts.append({"text": text, "weight": 1.0 if weight is None else float(weight)})
    body: dict[str, Any] = {
        "text_prompts": prompts,
        "cfg_scale": values.get("cfg_scale"),
        "clip_guidance_preset": values.get("clip_guidance_preset"),
        "sampler": values.get("sampler"),
        "samples": values.get("samples"),
        "seed": values.get("seed") or None,
        "steps": values.get("steps"),
        "style_preset": None if values.get("style_preset") in (None, "", NONE) else values["style_preset"],
    }
    for side in ("width", "height"):
        if str(values.get(side) or "").strip().isdigit():
            body[side] = int(values[side])
    return str(values.get("engine_id") or ""), {k: v for k, v in body.items() if v is not None}


def build_stability_v1_tab(blocks: gr.Blocks, service) -> Fields:
    dialect: v1.StabilityV1Dialect = registry.dialect(service, Style.STABILITY_V1)
    fields = Fields(TAB)
    state = gr.State({})
    max_side = dialect.max_side
    engines = engine_choices(service)
    engine0 = v1.DEFAULT_SDXL_ENGINE if v1.DEFAULT_SDXL_ENGINE in engines else (engines[0] if engines else "")
    steps_lo, steps_hi = v1.STEPS_LENIENT if dialect.lenient else v1.STEPS_STRICT
    cfg_lo, cfg_hi = field_bounds(v1.GenerationParams, "cfg_scale")
    samples_lo, samples_hi = field_bounds(v1.GenerationParams, "samples")
    seed_lo, seed_hi = field_bounds(v1.GenerationParams, "seed")

    with gr.Row(elem_classes="sdg-toprow"):
        with gr.Column(scale=5, min_width=260):
            with gr.Row(equal_height=True):
                fields.add("prompt_1", gr.Textbox("", label="Prompt", lines=3, max_lines=10, scale=5, min_width=200,
                                                  elem_id=f"{TAB}_prompt"))
                fields.add("weight_1", gr.Number(1.0, label="Weight", elem_id=f"{TAB}_weight_1", scale=1,
                                                 min_width=80))
            with gr.Row(equal_height=True):
                fields.add("prompt_2", gr.Textbox("", label="Negative prompt (a negative weight)", lines=2,
                                                  max_lines=8, scale=5, min_width=200, elem_id=f"{TAB}_prompt_2"))
                fields.add("weight_2", gr.Number(-1.0, label="Weight", elem_id=f"{TAB}_weight_2", scale=1,
                                                 min_width=80))
            with gr.Accordion("More weighted prompts", open=False, elem_id=f"{TAB}_more_prompts"):
                for i in range(3, PROMPT_ROWS + 1):
                    with gr.Row(equal_height=True):
                        fields.add(f"prompt_{i}", gr.Textbox("", label=f"Text prompt {i}", lines=1, scale=5,
                                                             min_width=200, elem_id=f"{TAB}_prompt_{i}"))
                        fields.add(f"weight_{i}", gr.Number(1.0, label="Weight", elem_id=f"{TAB}_weight_{i}",
                                                            scale=1, min_width=80))
        with gr.Column(scale=1, min_width=200, elem_classes="sdg-actions"):
            actions = action_buttons(TAB)
            fields.add("style_preset", gr.Dropdown([NONE, *get_args(v1.STYLE_PRESETS)], value=NONE,
                                                   label="Style preset", elem_id=f"{TAB}_style_preset"))

    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(scale=1, min_width=300, elem_classes="sdg-params"):
            engine = fields.add("engine_id", gr.Dropdown(engines, value=engine0, label="Engine",
                                                         elem_id=f"{TAB}_engine"))
            w0, h0 = default_size(dialect, engine0)
            with gr.Row():
                # The choices follow the engine (and the height the width); custom values are let through
                # to the dialect, whose size rule answers with the allowed sizes.
                width = fields.add("width", gr.Dropdown(width_choices(engine0, max_side), value=w0, label="Width",
                                                        allow_custom_value=True, elem_id=f"{TAB}_width",
                                                        min_width=120))
                height = fields.add("height", gr.Dropdown(height_choices(engine0, w0, max_side), value=h0,
                                                          label="Height", allow_custom_value=True,
                                                          elem_id=f"{TAB}_height", min_width=120))
            with gr.Row():
                fields.add("sampler", gr.Dropdown(list(get_args(v1.SAMPLERS)), value=v1.DEFAULT_SAMPLER,
                                                  label="Sampler", elem_id=f"{TAB}_sampler", min_width=140))
                fields.add("clip_guidance_preset", gr.Dropdown(
                    list(get_args(v1.CLIP_GUIDANCE_PRESETS)), value="NONE", label="CLIP guidance preset",
                    elem_id=f"{TAB}_clip_guidance_preset", min_width=140,
                    info="accepted; no local effect"))
            fields.add("steps", gr.Slider(steps_lo, steps_hi, value=v1.DEFAULT_STEPS, step=1, label="Steps",
                                          elem_id=f"{TAB}_steps"))
            fields.add("cfg_scale", gr.Slider(cfg_lo, cfg_hi, value=v1.DEFAULT_CFG, step=0.5, label="CFG scale",
                                              elem_id=f"{TAB}_cfg_scale"))
            with gr.Row():
                fields.add("samples", gr.Slider(samples_lo, samples_hi, value=1, step=1, label="Samples",
                                                elem_id=f"{TAB}_samples", min_width=140))
                fields.add("seed", gr.Number(0, precision=0, minimum=seed_lo, maximum=seed_hi,
                                             label="Seed (0: random)", elem_id=f"{TAB}_seed", min_width=140))
            fields.add("backend", backend_dropdown(service, Style.STABILITY_V1, TAB))
        results = results_column(TAB)

    def engine_changed(engine_id, w, h):
        """Keep the size when the new engine accepts it, else take the engine's default."""
        sizes = allowed_sizes(engine_id, max_side)
        w, h = _int(w), _int(h)
        if (w, h) not in sizes:
            w, h = default_size(dialect, engine_id)
        return (gr.Dropdown(choices=width_choices(engine_id, max_side), value=w),
                gr.Dropdown(choices=height_choices(engine_id, w, max_side), value=h))

    def width_changed(engine_id, w, h):
        heights = height_choices(engine_id, _int(w), max_side)
        return gr.Dropdown(choices=heights, value=_int(h) if _int(h) in heights else (heights[0] if heights else h))

    async def generate(session: dict, **values):
        def prepare():
            engine_id, body = build_request_body(values)
            call = tab_call(service, Style.STABILITY_V1, values.get("backend"), session, engine_id=engine_id)

            async def run():  # what POST /v1/generation/{engine_id}/text-to-image does with this body
                planned = await asyncio.to_thread(dialect.parse, v1.TEXT_TO_IMAGE, body, call)
                return await dialect.run(v1.TEXT_TO_IMAGE, planned, call)

            return run

        def present(reply) -> Shown:
            artifacts = reply.body["artifacts"]
            seeds = [a["seed"] for a in artifacts]
            saved = [str(save_output(service.config.outputs_dir, TAB, decode_base64(a["base64"]), a["seed"],
                                     values, owner=session.get("owner"))) for a in artifacts]
            reasons = sorted({a["finishReason"] for a in artifacts} - {"SUCCESS"})
            return Shown(saved, read_infotexts(saved), 0, seeds, [f"finishReason {r}" for r in reasons])

        async for frame in run_tab(service, session, prepare, present):
            yield frame

    def refine(data: dict) -> dict:
        """Restored or sent values: the size choices of the engine they name (and the size they name)."""
        engine_id = data.get("engine_id")
        if engine_id not in engines:
            return {}
        w, h = _int(data.get("width")), _int(data.get("height"))
        if w is None or h is None:
            w, h = default_size(dialect, engine_id)
        return {"width": gr.Dropdown(choices=width_choices(engine_id, max_side), value=w),
                "height": gr.Dropdown(choices=height_choices(engine_id, w, max_side), value=h)}

    # `.input` (a person's choice), not `.change`: when a restore or "send to" sets engine and size together,
    # a change handler would read the size before it arrived and overwrite it; `refine` covers those cases.
    engine.input(engine_changed, [engine, width, height], [width, height], api_visibility="private", queue=False)
    width.input(width_changed, [engine, width, height], [height], api_visibility="private", queue=False)
    fields.refine = refine
    wire_generate(generate, state, fields, actions, results, api_name=TAB)
    persist_fields(blocks, fields)
    return fields


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
