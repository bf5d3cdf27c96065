"""History and PNG Info: the saved images, newest first, with their generation parameters, and "send to tab".

Sending restores the fields of the tab an image came from: A1111 images through their infotext (the A1111
dialect's `fields_from_infotext`, as a request's `infotext` field is read), images from the other tabs through
the request the UI stored beside the infotext (`REQUEST_CHUNK`), or their infotext when that is missing.

Each person sees the images they made (`outputs.OWNER_CHUNK` against `ui_owner`: their login, else their
address), unless `[security] shared_history = true`; images saved without an owner (older ones) only then.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from PIL import Image

from backends import outputs
from backends.dialects import a1111 as d
from backends.dialects import registry
from backends.images import read_infotext
from backends.job import Style

from .common import REQUEST_CHUNK, TAB_IDS, ui_error, ui_owner

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PAGE_SIZE = 36
# outputs/<kind>/<date>/<file>: the tab each kind of folder comes from (the UI saves the other styles'
# images as "<tab id>-images").
KIND_TABS = {"txt2img-images": "a1111_txt2img", "img2img-images": "a1111_img2img"}


@dataclass
class SendTarget:
    """A tab that can receive fields: its id, its Fields, and how to turn an image into field values."""

    tab_id: str
    fields: Any  # common.Fields
    from_image: Callable[[str, str, dict], dict]  # (path, infotext, request chunk) → request-field values


def saved_images(outputs_dir: Path) -> list[Path]:
    """Every saved image under outputs/*-images/<date>/, newest first (grids are left out)."""
    found = []
    root = Path(outputs_dir)
    if not root.is_dir():
        return []
    for kind in os.scandir(root):
        if not kind.is_dir() or not kind.name.endswith("-images"):
            continue
        for day in os.scandir(kind.path):
            if not day.is_dir():
                continue
            for entry in os.scandir(day.path):
                if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES) and not entry.name.startswith("."):
                    found.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
    found.sort(reverse=True)
    return [path for _, _, path in found]


def visible_images(files: list[Path], outputs_dir: Path, viewer: str, shared: bool) -> list[Path]:
    """The saved images `viewer` (an owner, `ui_owner`) may see: all when History is shared, else their own."""
    if shared:
        return files
    tag = outputs.owner_tag(outputs_dir, viewer)
    return [path for path in files if outputs.stored_owner(path) == tag]


def readable(path: str | Path, outputs_dir: Path) -> bool:
    """A path a History or PNG Info event may open: under the outputs folder or Gradio's upload folder."""
    from gradio.utils import get_cache_folder, get_upload_folder

    try:
        target = Path(os.path.abspath(path)).resolve()
        roots = [Path(outputs_dir), Path(get_upload_folder()), Path(get_cache_folder())]
        return target.is_file() and any(target.is_relative_to(root.resolve()) for root in roots)
    except (OSError, ValueError):
        return False


def read_image_info(path: str | Path) -> tuple[str, dict]:
    """(infotext, the stored request or {}) of an image file."""
    with Image.open(path) as image:
        text, items = read_infotext(image)
    request = {}
    raw = items.get(REQUEST_CHUNK)
    if isinstance(raw, str):
        try:
            request = json.loads(raw)
        except ValueError:
            request = {}
    return text or "", request if isinstance(request, dict) else {}


def source_tab(path: str | Path, request: dict) -> str | None:
    if isinstance(request.get("tab"), str) and request["tab"] in TAB_IDS:
        return request["tab"]
    kind = Path(path).parent.parent.name
    if kind in KIND_TABS:
        return KIND_TABS[kind]
    tab = kind.removesuffix("-images")
    return tab if tab in TAB_IDS else None


def send_buttons(targets: dict[str, SendTarget], key: str) -> dict[str, gr.Button]:
    with gr.Row(elem_classes="sdg-send-row"):
        return {
            tab_id: gr.Button(f"Send to {TAB_IDS[tab_id]}", size="sm", elem_id=f"{key}_send_{tab_id}", min_width=120)
            for tab_id in targets
        }


def wire_send(buttons: dict[str, gr.Button], targets: dict[str, SendTarget], tabs: gr.Tabs, path_state,
              text_box, outputs_dir: Path) -> None:
    """Each button: the selected image's fields → the target tab's components, and switch to that tab."""
    for tab_id, button in buttons.items():
        target = targets[tab_id]

        def send(path, text, target=target):
            if not path or not readable(path, outputs_dir):
                raise gr.Error("pick an image first")
            try:
                _, request = read_image_info(path)
                data = target.from_image(path, text or "", request)
            except gr.Error:
                raise
            except Exception as e:
                raise ui_error(e) from None
            return [*target.fields.updates(data), gr.Tabs(selected=target.tab_id)]

        button.click(send, [path_state, text_box], [*target.fields.inputs, tabs], api_visibility="private")


def build_history_tab(service, targets: dict[str, SendTarget], tabs: gr.Tabs, history_tab: gr.Tab) -> None:
    outputs_dir = Path(service.config.outputs_dir)
    paths_state = gr.State([])
    selected = gr.State("")
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", elem_id="history_refresh", min_width=90, scale=0)
        page = gr.Number(1, precision=0, minimum=1, label="Page", elem_id="history_page", min_width=90, scale=0)
        summary = gr.Markdown("", elem_id="history_summary")
    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(scale=3, min_width=300):
            gallery = gr.Gallery(label="Saved images (newest first)", format="png", columns=4, height="auto",
                                 object_fit="contain", allow_preview=False, interactive=False,
                                 elem_id="history_gallery")
        with gr.Column(scale=2, min_width=300):
            image = gr.Image(label="Selected", type="filepath", format="png", interactive=False, height=256,
                             buttons=["download", "fullscreen"], elem_id="history_image")
            info = gr.Textbox(label="Generation parameters", lines=4, max_lines=14, interactive=False,
                              buttons=["copy"], elem_id="history_info")
            buttons = send_buttons(targets, "history")

    def load(page_no, request: gr.Request):
        files = visible_images(saved_images(outputs_dir), outputs_dir, ui_owner(request),
                               service.config.security.shared_history)
        pages = max(1, -(-len(files) // PAGE_SIZE))
        page_no = min(max(1, int(page_no or 1)), pages)
        shown = [str(p) for p in files[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]]
        text = f"{len(files)} image{'s' if len(files) != 1 else ''} in `{outputs_dir}` · page {page_no} of {pages}"
        return shown, shown, text, page_no

    def pick(paths, evt: gr.SelectData):
        if not isinstance(evt.index, int) or evt.index >= len(paths):
            return gr.skip(), gr.skip(), gr.skip()
        path = paths[evt.index]
        text, _ = read_image_info(path)
        return path, path, text

    outs = [gallery, paths_state, summary, page]
    refresh.click(load, [page], outs, api_visibility="private")
    page.submit(load, [page], outs, api_visibility="private")
    history_tab.select(load, [page], outs, api_visibility="private")
    gallery.select(pick, [paths_state], [selected, image, info], api_visibility="private")
    wire_send(buttons, targets, tabs, selected, info, outputs_dir)


def build_pnginfo_tab(service, targets: dict[str, SendTarget], tabs: gr.Tabs) -> None:
    dialect: d.A1111Dialect = registry.dialect(service, Style.A1111)
    path_state = gr.State("")
    with gr.Row(elem_classes="sdg-main"):
        with gr.Column(min_width=300):
            # type="filepath" hands over the uploaded file itself: decoding it to PIL in gradio could drop
            # the text chunks we are here to read.
            upload = gr.Image(label="Drop a PNG (or JPEG/WebP) here", type="filepath", sources=["upload", "clipboard"],
                              height=320, elem_id="pnginfo_image")
        with gr.Column(min_width=300):
            info = gr.Textbox(label="Generation parameters", lines=5, max_lines=16, interactive=False,
                              buttons=["copy"], elem_id="pnginfo_info")
            params = gr.JSON(label="Parsed", elem_id="pnginfo_parameters", open=False)
            items = gr.JSON(label="Other text in the file", elem_id="pnginfo_items", open=False)
            buttons = send_buttons(targets, "pnginfo")

    async def read(path):
        if not path:
            return "", "", None, None
        data = await asyncio.to_thread(Path(path).read_bytes)
        try:
            answer = await dialect.png_info(d.PNGInfoRequest(image=base64.b64encode(data).decode("ascii")))
        except Exception as e:
            raise ui_error(e) from None
        return path, answer["info"], answer["parameters"], answer["items"]

    upload.change(read, [upload], [path_state, info, params, items], api_name="png_info")
    wire_send(buttons, targets, tabs, path_state, info, Path(service.config.outputs_dir))
