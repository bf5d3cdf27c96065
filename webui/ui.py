"""The Gradio Blocks UI: one tab per API style, then History, PNG Info and Settings. Presentation only: each API
tab builds its dialect's request model from the fields and runs it through that dialect (webui/tabs/*.py).

Gradio 6 takes css/js/theme at mount time, not in the Blocks constructor, so `mount_ui` does the mounting.
"""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from backends.infotext import parse_generation_parameters
from backends.service import DEMO_NOTE, Service

from .security import ui_auth
from .tabs.a1111 import build_a1111_tab, fields_from_infotext
from .tabs.common import TAB_IDS, ResultFiles
from .tabs.history import SendTarget, build_history_tab, build_pnginfo_tab
from .tabs.modelslab import build_modelslab_tab
from .tabs.openai import build_openai_tab
from .tabs.settings import build_settings_tab
from .tabs.stability_v1 import build_stability_v1_tab
from .tabs.stability_v2 import build_stability_v2_tab

CSS = """
.sdg-progress { font-size: var(--text-md); min-height: 1.6em; }
.sdg-bar { height: 8px; border-radius: 4px; background: var(--neutral-200); overflow: hidden; margin: 2px 0 4px; }
.sdg-bar > div { height: 100%; background: var(--color-accent); transition: width 0.2s; }
.sdg-error span { color: var(--error-text-color, #dc2626); font-weight: 600; }
.sdg-done span { color: var(--body-text-color-subdued); }
#demo_note { border: 1px solid #f59e0b; background: #fffbeb; color: #92400e; border-radius: 6px; padding: 4px 10px; }
#demo_note p { margin: 0; }
.sdg-tool { max-width: 48px !important; min-width: 40px !important; align-self: center; }
.sdg-seed-tool { max-width: 84px !important; align-self: center; }
/* a row of switches wraps instead of squeezing each label to a few letters */
.sdg-flags .form { flex-wrap: wrap !important; }
.sdg-flags .form > div { flex: 1 1 150px !important; min-width: 150px !important; }
.sdg-generate { min-height: 64px; font-size: var(--text-lg); }
.sdg-preview { display: block; width: 100%; max-width: 320px; margin-top: 6px; border-radius: 4px; }
/* Phones: parameters below the results, so prompt, Generate and the image fit the first screen
   (asked for in AUTOMATIC1111/stable-diffusion-webui#5954). */
@media (max-width: 720px) {
  .sdg-main { flex-direction: column; align-items: stretch !important; }
  .sdg-results { order: -1; }
  .sdg-generate { min-height: 48px; }
}
"""

# gradio scopes `css` inside the app's content box; the page's own side padding (32 px, a sixth of a phone's
# width) is outside it, so this rule goes into <head> unscoped.
HEAD = """<style>
@media (max-width: 720px) { .gradio-container .main.fillable { padding-left: 8px !important; padding-right: 8px !important; } }
</style>"""

# Ctrl/Cmd+Enter presses the Generate button of the tab in view, as in A1111.
JS = """
() => {
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const button = [...document.querySelectorAll("button.sdg-generate")].find((b) => b.offsetParent !== null);
    if (button) { event.preventDefault(); button.click(); }
  });
}
"""


def stored_fields(tab_id: str, from_infotext):
    """How History and PNG Info fill a non-A1111 tab: every field from the request the tab stored in the
    image (REQUEST_CHUNK), else what the infotext holds (prompts and seed)."""

    def from_image(path, text, request):
        if request.get("tab") == tab_id and isinstance(request.get("fields"), dict):
            return request["fields"]
        params = parse_generation_parameters(text)
        data = from_infotext(params)
        if str(params.get("Seed", "")).isdigit():
            data["seed"] = int(params["Seed"])
        return data

    return from_image


def build_ui(service: Service) -> tuple[gr.Blocks, ResultFiles]:
    files = ResultFiles()
    with gr.Blocks(title="sdgate", delete_cache=(3600, 24 * 3600)) as blocks:
        if service.demo:
            gr.Markdown(f"**Demo mode:** {DEMO_NOTE}. Start with `--model` or put a checkpoint in "
                        "`models/Stable-diffusion/` for real images.", elem_id="demo_note")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab(TAB_IDS["a1111_txt2img"], id="a1111_txt2img", elem_id="tab_a1111_txt2img"):
                txt2img = build_a1111_tab(blocks, service, "txt2img", files)
            with gr.Tab(TAB_IDS["a1111_img2img"], id="a1111_img2img", elem_id="tab_a1111_img2img"):
                img2img = build_a1111_tab(blocks, service, "img2img", files)
            with gr.Tab(TAB_IDS["stability_v1"], id="stability_v1", elem_id="tab_stability_v1"):
                stability_v1 = build_stability_v1_tab(blocks, service)
            with gr.Tab(TAB_IDS["stability_v2beta"], id="stability_v2beta", elem_id="tab_stability_v2beta"):
                stability_v2 = build_stability_v2_tab(blocks, service)
            with gr.Tab(TAB_IDS["modelslab"], id="modelslab", elem_id="tab_modelslab"):
                modelslab = build_modelslab_tab(blocks, service)
            with gr.Tab(TAB_IDS["openai_images"], id="openai_images", elem_id="tab_openai_images"):
                openai_images = build_openai_tab(blocks, service)
            targets = {
                "a1111_txt2img": SendTarget("a1111_txt2img", txt2img.fields,
                                            lambda path, text, request: fields_from_infotext(service, text, "txt2img")),
                # A1111's "send to img2img": the image becomes the init image, its parameters fill the rest.
                "a1111_img2img": SendTarget("a1111_img2img", img2img.fields, lambda path, text, request: {
                    **fields_from_infotext(service, text, "img2img"), "init_images": path}),
                "stability_v1": SendTarget("stability_v1", stability_v1, stored_fields(
                    "stability_v1", lambda p: {"prompt_1": p["Prompt"], "prompt_2": p["Negative prompt"]})),
                "stability_v2beta": SendTarget("stability_v2beta", stability_v2, stored_fields(
                    "stability_v2beta", lambda p: {"prompt": p["Prompt"], "negative_prompt": p["Negative prompt"]})),
                "modelslab": SendTarget("modelslab", modelslab, stored_fields(
                    "modelslab", lambda p: {"prompt": p["Prompt"], "negative_prompt": p["Negative prompt"]})),
                "openai_images": SendTarget("openai_images", openai_images, stored_fields(
                    "openai_images", lambda p: {"prompt": p["Prompt"], "negative_prompt": p["Negative prompt"]})),
            }
            with gr.Tab(TAB_IDS["history"], id="history", elem_id="tab_history") as history_tab:
                build_history_tab(service, targets, tabs, history_tab)
            with gr.Tab(TAB_IDS["pnginfo"], id="pnginfo", elem_id="tab_pnginfo"):
                build_pnginfo_tab(service, targets, tabs)
            stores = [f.store for f in (txt2img.fields, img2img.fields, stability_v1, stability_v2, modelslab,
                                        openai_images)]
            with gr.Tab(TAB_IDS["settings"], id="settings", elem_id="tab_settings"):
                build_settings_tab(service, [txt2img.fields.components["model"], img2img.fields.components["model"]],
                                   stores)
    blocks.queue(default_concurrency_limit=16, max_size=max(16, service.config.max_pending))
    return blocks, files


def mount_ui(app: FastAPI, service: Service) -> FastAPI:
    """Mount the UI at "/" (after every API route: a mount at "/" shadows routes added later)."""
    blocks, files = build_ui(service)
    app.state.ui_files = files  # keeps the result folder alive as long as the app
    return gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=ui_auth(service.config.auth),  # constant time for user and password (webui/security.py)
        auth_message="sdgate: log in to use the web UI (the HTTP APIs have their own --api-auth)",
        allowed_paths=[str(service.config.outputs_dir), str(files.root)],
        css=CSS,
        js=JS,
        head=HEAD,
        footer_links=["api", "settings"],
    )
