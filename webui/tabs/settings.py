"""Settings: the models (with refresh and the server's default), the gateways and their health, and defaults
(the live-preview options the A1111 dialect keeps, and this browser's saved fields)."""

from __future__ import annotations

import asyncio
import html

import gradio as gr

from backends.dialects import a1111 as d
from backends.dialects import registry
from backends.infotext import VERSION
from backends.job import SdgateError, Style

from .common import gateway_rows, ui_error

MODEL_HEADERS = ["Title", "Kind", "Family", "Source"]
GATEWAY_HEADERS = ["Name", "URL", "Styles", "Health"]


def model_rows(models) -> list[list[str]]:
    return [[m.title, m.kind, m.family or "", m.source] for m in models]


def build_settings_tab(service, model_dropdowns: list[gr.Dropdown], stores: list[gr.BrowserState]) -> None:
    dialect: d.A1111Dialect = registry.dialect(service, Style.A1111)
    cfg = service.config
    flags = [f"device **{service.device}**", f"dtype **{str(service.dtype).removeprefix('torch.')}**",
             "listening on the LAN" if cfg.host in ("0.0.0.0", "::") else f"bound to {html.escape(cfg.host)}",
             "UI login on" if cfg.auth else "UI login off", "API auth on" if cfg.api_auth else "API auth off"]
    if service.demo:
        flags.append("demo models")
    gr.Markdown(f"{VERSION} · " + " · ".join(flags), elem_id="settings_summary")

    with gr.Accordion("Models", open=True, elem_id="settings_models_box"):
        models = gr.Dataframe(model_rows(service.models.list()), headers=MODEL_HEADERS, interactive=False,
                              wrap=True, elem_id="settings_models")
        with gr.Row():
            refresh = gr.Button("Refresh models", size="sm", elem_id="settings_refresh_models", min_width=120,
                                scale=0)
            default = gr.Dropdown([m.title for m in service.models.list()], value=_default_title(service),
                                  label="Server default model", elem_id="settings_default_model", min_width=200)
            set_default = gr.Button("Make default", size="sm", elem_id="settings_set_default", min_width=120,
                                    scale=0)
        models_note = gr.Markdown("", elem_id="settings_models_note")

    with gr.Accordion("Gateways", open=True, elem_id="settings_gateways_box"):
        rows = gateway_rows(service)
        gr.Dataframe(rows, headers=GATEWAY_HEADERS, interactive=False, elem_id="settings_gateways",
                     visible=bool(rows))
        if not rows:
            gr.Markdown("No remote gateways are configured: every tab runs on this server's engine.",
                        elem_id="settings_gateways_none")

    with gr.Accordion("Defaults", open=True, elem_id="settings_defaults_box"):
        opts = dialect.options.values()
        with gr.Row():
            live = gr.Checkbox(bool(opts["live_previews_enable"]), label="Live previews while generating",
                               elem_id="settings_live_previews", min_width=200)
            every = gr.Slider(1, 50, value=int(opts["show_progress_every_n_steps"]), step=1,
                              label="Preview every N steps", elem_id="settings_preview_every", min_width=200)
        save = gr.Button("Save defaults", size="sm", elem_id="settings_save_defaults", scale=0)
        saved_note = gr.Markdown("", elem_id="settings_defaults_note")
        gr.Markdown("The fields of every tab are kept in this browser and come back after a reload.")
        reset = gr.Button("Reset this browser's saved fields", size="sm", variant="stop",
                          elem_id="settings_reset_fields", scale=0)

    async def do_refresh():
        found = await asyncio.to_thread(service.models.refresh)
        titles = [m.title for m in found]
        current = _default_title(service)
        note = f"{len(found)} model{'s' if len(found) != 1 else ''} found."
        return (model_rows(found), gr.Dropdown(choices=titles, value=current), note,
                *[gr.Dropdown(choices=titles) for _ in model_dropdowns])

    async def do_set_default(title):
        try:
            await dialect.set_options({"sd_model_checkpoint": title})
        except SdgateError as e:
            raise ui_error(e) from None
        return f"Default model: {_default_title(service)}"

    async def do_save(live_value, every_value):
        await dialect.set_options({"live_previews_enable": bool(live_value),
                               "show_progress_every_n_steps": int(every_value)})
        return "Saved."

    refresh.click(do_refresh, None, [models, default, models_note, *model_dropdowns], api_visibility="private")
    set_default.click(do_set_default, [default], [models_note], api_visibility="private")
    save.click(do_save, [live, every], [saved_note], api_visibility="private")
    reset.click(lambda: [{} for _ in stores], None, stores, api_visibility="private").then(
        None, js="() => { window.location.reload(); }", api_visibility="private")


def _default_title(service) -> str | None:
    try:
        return service.models.resolve(None).title
    except SdgateError:
        return None
