"""What every API tab shares: the backend choice, the run control kept per browser session, streaming a dialect
call's progress into the page, readable errors, result files, field persistence in the browser and "send to".

Presentation only. A tab builds its dialect's request model from the fields (so the dialect's validation
applies) and hands the dialect call to `run_tab`, which runs it on the shared queue, streams its progress,
and shows what comes back.
"""

from __future__ import annotations

import asyncio
import base64
import html
import inspect
import io
import itertools
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import gradio as gr
from PIL import Image
from pydantic import ValidationError

from backends import outputs
from backends.dialects.base import Call, Dialect, Reply
from backends.job import LOCAL, QueueFull, Route, Style
from backends.service import Service
from backends.images import decode_base64, encode_image, read_infotext
from backends.queue import Ticket

from .fields import Fields, keyword_signature

log = logging.getLogger(__name__)

# How often a running generation refreshes its progress line and preview in the page.
POLL_SECONDS = 0.25
# The PNG text chunk where a tab that saves its own images (Stability, ModelsLab) keeps the request's fields as
# JSON `{"tab": ..., "fields": {...}}`, beside the A1111 `parameters` infotext: History restores every field from it.
REQUEST_CHUNK = "sdgate-request"

# API style → the tab that sends requests in it (tab ids are also the `gr.Tabs(selected=...)` values).
TAB_IDS = {
    "a1111_txt2img": "A1111 txt2img",
    "a1111_img2img": "A1111 img2img",
    "stability_v1": "Stability v1",
    "stability_v2beta": "Stability v2beta",
    "modelslab": "ModelsLab",
    "openai_images": "OpenAI Images",
    "history": "History",
    "pnginfo": "PNG Info",
    "settings": "Settings",
}


def backend_choices(service: Service, style: Style) -> list[str]:
    """Where a tab's requests can run: "local" (this server's engine), then every configured gateway that
    serves `style`."""
    return ["local", *service.gateways(style)]


def gateway_rows(service: Service) -> list[list[str]]:
    """Settings' gateway table: [name, base URL, styles it serves, health] per configured gateway (no keys)."""
    return service.gateway_rows()


def ui_owner(request: gr.Request | None) -> str:
    """Who is using the page: the UI login when `--auth` is on, else the browser's address (so a phone on the
    LAN is its own owner for the fair queue and its own History)."""
    if request is None:
        return "ip:unknown"
    if getattr(request, "username", None):
        return "user:" + request.username
    host = request.client.host if getattr(request, "client", None) else None
    return "ip:" + (host or "unknown")


def tab_call(service: Service, style: Style, backend: str | None, session: dict | None = None, **params: str) -> Call:
    """The Call a tab hands its dialect: the Backend choice is the Route (a gateway is always translated to: the
    tab's fields are a Job's, not a caller's raw request). The person passed the UI's own login; the owner is
    the one `wire_generate` put in the session for this event."""
    if (backend or "local") not in backend_choices(service, style):
        raise gr.Error(f"backend {backend!r} is not configured for this API style")
    route = LOCAL if backend in (None, "", "local") else Route(backend)
    return Call(route=route, params=params, ui=True, owner=(session or {}).get("owner"))


def dialect_run(dialect: Dialect, operation: str, body: Any, call: Call) -> Callable[[], Awaitable[Reply]]:
    """A tab's request through its HTTP route's own entry points: `body` (what the route would get) parsed now,
    so its errors show before anything is queued; the returned call runs it (`run_tab` starts it)."""
    request = dialect.parse(operation, body, call)
    return lambda: dialect.run(operation, request, call)


# ------------------------------------------------------------------------------------------- run control


class RunControl:
    """One browser session's generation on one tab: the tickets its dialect call submitted and the
    interrupt switch. It lives in that session's gr.State, so Interrupt and Skip reach only its own jobs
    (A1111's global interrupt let anyone stop anyone: AUTOMATIC1111/stable-diffusion-webui#761)."""

    def __init__(self) -> None:
        self.tickets: list[Ticket] = []
        self.interrupted = False
        self.started = 0.0
        self.task: asyncio.Task | None = None

    def begin(self) -> None:
        self.tickets, self.interrupted, self.started = [], False, time.time()

    def add(self, ticket: Ticket) -> None:
        self.tickets.append(ticket)
        if self.interrupted:  # a later pass (hires, next image) of a request already interrupted
            ticket.interrupt()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def current(self) -> Ticket | None:
        for ticket in self.tickets:
            if not ticket.done():
                return ticket
        return self.tickets[-1] if self.tickets else None

    def interrupt(self) -> None:
        self.interrupted = True
        for ticket in self.tickets:
            if not ticket.done():
                ticket.interrupt()

    def skip(self) -> None:
        ticket = self.current()
        if ticket is not None and not ticket.done():
            ticket.skip()


def control_of(state: dict) -> RunControl:
    """The session's RunControl, kept inside the tab's gr.State dict (the dict is per session; gradio
    deep-copies a State's initial value for each one)."""
    control = state.get("run")
    if control is None:
        control = state["run"] = RunControl()
    return control


def progress_html(text: str, fraction: float | None = None, kind: str = "info", preview: str | None = None) -> str:
    """The progress box above the results: a bar (when there is a fraction), one line of text and the live
    preview (a data: URL). The preview lives in this HTML rather than in an image component so that API
    callers get only the real outputs, and the page does not jump when it appears."""
    bar = ""
    if fraction is not None:
        bar = f'<div class="sdg-bar"><div style="width:{max(0.0, min(1.0, fraction)) * 100:.1f}%"></div></div>'
    img = f'<img class="sdg-preview" alt="live preview" src="{preview}">' if preview else ""
    return f'<div class="sdg-progress sdg-{kind}">{bar}<span>{html.escape(text)}</span>{img}</div>'


def preview_url(image) -> str:
    """A live preview as a small JPEG data: URL (previews are 1/8 of the image size; JPEG keeps them a few KB)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def status_line(control: RunControl, queue) -> tuple[str, float | None]:
    ticket = control.current()
    elapsed = time.time() - control.started
    if ticket is None:
        return f"Preparing… {elapsed:.1f} s", None
    p = ticket.progress
    passes = f" · pass {control.tickets.index(ticket) + 1}" if len(control.tickets) > 1 else ""
    if p.state == "queued":
        queue.refresh()
        ahead = queue.position(ticket)
        eta = f" · ETA {ticket.eta:.0f} s" if ticket.eta is not None else ""
        return (f"Waiting in the queue: {ahead} job{'s' if ahead != 1 else ''} ahead{passes} · {elapsed:.1f} s{eta}",
                0.0)
    if p.state == "running" and p.steps:
        batch = f" · batch {p.batch_no + 1}/{p.batch_count}" if p.batch_count > 1 else ""
        fraction = p.fraction
        eta = ""
        if p.started_at and fraction > 0.02:
            spent = time.time() - p.started_at
            eta = f" · ETA {max(0.0, spent / fraction - spent):.0f} s"
        return f"Step {p.step}/{p.steps}{batch}{passes} ({fraction:.0%}) · {elapsed:.1f} s{eta}", fraction
    return f"Finishing…{passes} {elapsed:.1f} s", 1.0


@dataclass
class Update:
    """One frame of a streamed run: the progress box while it runs, the response at the end."""

    html: str
    done: bool = False
    response: Any = None


async def stream_run(service, control: RunControl, call: Callable[[], Awaitable[Any]]) -> AsyncIterator[Update]:
    """Run `call()` (one dialect request) as a task that watches the tickets it submits, yielding progress
    every POLL_SECONDS and finally the response. Errors propagate; a closed page interrupts the job."""
    control.begin()

    async def watched():
        with service.watch(control.add):
            return await call()

    task = asyncio.create_task(watched())
    control.task = task
    last_preview, url = None, None
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_SECONDS)
            if done:
                break
            text, fraction = status_line(control, service.queue)
            ticket = control.current()
            preview = ticket.progress.preview if ticket is not None else None
            if preview is not None and preview is not last_preview:
                last_preview, url = preview, preview_url(preview)  # encode each preview once
            yield Update(progress_html(text, fraction, preview=url))
    except (asyncio.CancelledError, GeneratorExit):
        # The page went away or the event was cancelled: nobody will see these images. A waiting job never
        # reaches the device; a running one stops (unless it shares a batch with others' jobs).
        control.interrupt()
        for ticket in control.tickets:
            if not ticket.done():
                service.drop(ticket)
        raise
    response = task.result()
    yield Update("", done=True, response=response)


@dataclass
class Shown:
    """What a finished run puts in the page: gallery files (a grid may come first) and one infotext each."""

    paths: list[str]
    infotexts: list[str]
    first: int = 0  # index of the first real image
    seeds: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown under the progress bar (e.g. options not applied)


async def run_tab(service, session: dict, prepare: Callable[[], Callable[[], Awaitable[Any]]],
                  present: Callable[[Any], Shown]) -> AsyncIterator[tuple]:
    """The body of every API tab's generate handler. `prepare()` builds and checks the dialect request (its
    errors are shown before anything is queued) and returns the call that runs it; `present(response)` turns
    the dialect's response into files for the gallery. Yields (progress, gallery, infotext, downloads)."""
    control = control_of(session)
    if control.running:
        raise gr.Error("this tab is already generating: wait for it or press Interrupt")
    try:
        call = prepare()
    except Exception as e:
        # the message stays in the progress box after gradio's toast has gone
        yield progress_html(user_message(e), kind="error"), gr.skip(), gr.skip(), gr.skip()
        raise ui_error(e) from None
    yield progress_html("Starting…", 0.0), gr.skip(), gr.skip(), gr.skip()
    try:
        response = None
        async for update in stream_run(service, control, call):
            if update.done:
                response = update.response
                break
            yield update.html, gr.skip(), gr.skip(), gr.skip()
        shown = await asyncio.to_thread(present, response)
    except Exception as e:
        yield progress_html(user_message(e), kind="error"), gr.skip(), gr.skip(), gr.skip()
        raise ui_error(e) from None
    session["infotexts"] = shown.infotexts
    if shown.seeds:
        session["last_seed"] = shown.seeds[0]
    count = len(shown.paths) - shown.first
    summary = f"{count} image{'s' if count != 1 else ''} in {time.time() - control.started:.1f} s"
    if control.interrupted:
        summary += " · interrupted: the images stop where the sampler was"
    summary += "".join(f" · {note}" for note in shown.notes)
    text = shown.infotexts[shown.first] if len(shown.infotexts) > shown.first else ""
    yield progress_html(summary, 1.0, kind="done"), shown.paths, text, shown.paths[shown.first:]


def wire_results(state: gr.State, gallery: gr.Gallery, info: gr.Textbox, interrupt: gr.Button,
                 skip: gr.Button) -> None:
    """Interrupt and Skip act on this session's own run; picking a gallery image shows its infotext. Not
    queued, so they answer while the generate event is still streaming."""

    def on_interrupt(session: dict):
        control_of(session).interrupt()

    def on_skip(session: dict):
        control_of(session).skip()

    def on_select(session: dict, evt: gr.SelectData):
        texts = session.get("infotexts") or []
        return texts[evt.index] if isinstance(evt.index, int) and evt.index < len(texts) else gr.skip()

    interrupt.click(on_interrupt, [state], None, queue=False, api_visibility="private")
    skip.click(on_skip, [state], None, queue=False, api_visibility="private")
    gallery.select(on_select, [state], [info], queue=False, api_visibility="private")


# ------------------------------------------------------------------------------------------------ layout


@dataclass
class Actions:
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button


def action_buttons(key: str) -> Actions:
    """Generate, then Interrupt and Skip under it (A1111's top-right box)."""
    generate = gr.Button("Generate", variant="primary", size="lg", elem_id=f"{key}_generate",
                         elem_classes="sdg-generate")
    with gr.Row(elem_classes="sdg-stop-row"):
        interrupt = gr.Button("Interrupt", size="sm", elem_id=f"{key}_interrupt", min_width=80)
        skip = gr.Button("Skip", size="sm", elem_id=f"{key}_skip", min_width=80)
    return Actions(generate, interrupt, skip)


@dataclass
class Results:
    progress: gr.HTML
    gallery: gr.Gallery
    info: gr.Textbox
    downloads: gr.File

    @property
    def outputs(self) -> list:
        return [self.progress, self.gallery, self.info, self.downloads]


def results_column(key: str) -> Results:
    """Progress (with the live preview), the gallery, the infotext and the PNG downloads. Gallery and
    downloads are PNG files as the dialect wrote them (format="png": gradio's default webp would drop the
    infotext)."""
    with gr.Column(scale=1, min_width=300, elem_classes="sdg-results"):
        progress = gr.HTML("", elem_id=f"{key}_progress", elem_classes="sdg-progress-box")
        gallery = gr.Gallery(label="Output", format="png", columns=2, height="auto", object_fit="contain",
                             preview=True, interactive=False, buttons=["download", "fullscreen"],
                             elem_id=f"{key}_gallery")
        info = gr.Textbox(label="Generation parameters", lines=3, max_lines=12, interactive=False,
                          buttons=["copy"], elem_id=f"{key}_info")
        downloads = gr.File(label="Download PNG (with its generation parameters)", file_count="multiple",
                            interactive=False, elem_id=f"{key}_files", height=100)
    return Results(progress, gallery, info, downloads)


def wire_generate(fn: Callable, state: gr.State, fields: "Fields", actions: Actions, results: Results,
                  api_name: str) -> None:
    """Generate with the fields as keyword inputs (gradio_client callers use the request's field names:
    `predict(prompt=..., api_name="/<tab>")`), not limited by gradio's concurrency: the job queue orders
    the work and shows each caller its place. Interrupt, Skip and gallery picks as in `wire_results`. Each event
    first puts its person (`ui_owner`) in the session: `tab_call` makes it the jobs' owner, the saved images'."""
    if "request" not in inspect.signature(fn).parameters:
        generate = fn

        async def fn(session: dict, request: gr.Request, **values):
            session["owner"] = ui_owner(request)
            async for frame in generate(session, **values):
                yield frame

    actions.generate.click(keyword_signature(fn, fields.names), [state], results.outputs,
                           inputs_kwargs=fields.components, api_name=api_name, show_progress="hidden",
                           concurrency_limit=None)
    wire_results(state, results.gallery, results.info, actions.interrupt, actions.skip)


def backend_dropdown(service: Service, style: Style, key: str) -> gr.Dropdown:
    return gr.Dropdown(backend_choices(service, style), value="local", label="Backend", elem_id=f"{key}_backend",
                       min_width=100)


# ------------------------------------------------------------------------------------------------ errors


def user_message(error: BaseException) -> str:
    """A one-paragraph message for the page: validation errors field by field, our errors' `.message`."""
    if isinstance(error, ValidationError):
        parts = []
        for e in error.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return "; ".join(parts) or "invalid request"
    message = getattr(error, "message", None)
    if isinstance(error, QueueFull):
        return f"Busy: {message} (about {error.retry_after} s)"
    if isinstance(message, str) and message:
        return message
    detail = getattr(error, "detail", None)  # HTTPException-style errors from a dialect
    if detail:
        return detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return f"{type(error).__name__}: {error}"


def ui_error(error: BaseException) -> gr.Error:
    if not isinstance(error, (ValidationError, gr.Error)) and getattr(error, "message", None) is None:
        log.exception("UI request failed", exc_info=error)
    if isinstance(error, gr.Error):
        return error
    return gr.Error(user_message(error), print_exception=False)


# ----------------------------------------------------------------------------------------- result files


class ResultFiles:
    """Where a tab writes the files it shows: the exact bytes the dialect returned (infotext chunk intact),
    so the gallery and the download hand the user the same PNG an API client would get. Removed at exit."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sdgate-ui-")
        self.root = Path(self._dir.name)
        self._counter = itertools.count()

    def write(self, data: bytes, seed: Any, ext: str = "png") -> str:
        path = self.root / f"{next(self._counter):05d}-{outputs.file_part(seed)}.{outputs.file_part(ext)}"
        path.write_bytes(data)
        return str(path)

    def write_base64(self, items: list[str], seeds: list[Any], ext: str = "png") -> list[str]:
        return [self.write(decode_base64(b64), seed, ext) for b64, seed in zip(items, seeds)]


def save_output(outputs_dir: Path, tab_id: str, data: bytes, seed: Any, fields: dict[str, Any],
                owner: str | None = None) -> Path:
    """Save an image a non-A1111 tab made (its dialect encoded it, infotext included) under
    outputs/<tab id>-images/<date>/NNNNN-<seed>.<ext>, adding the tab's fields as REQUEST_CHUNK to a PNG, so
    History can restore every field, and the owner's tag (`outputs.owner_tag`), so History shows it to its owner."""
    ext = sniff_ext(data)
    if ext == "png":
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            chunks = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
            chunks[REQUEST_CHUNK] = json.dumps({"tab": tab_id, "fields": fields}, default=str)
            chunks.pop(outputs.OWNER_CHUNK, None)  # only ours, never one that came in the image
            if owner:
                chunks[outputs.OWNER_CHUNK] = outputs.owner_tag(outputs_dir, owner)
            data = encode_image(image, "png", chunks.pop("parameters", None), text_chunks=chunks)
    return outputs.save_bytes(data, outputs_dir, f"{tab_id}-images", seed, ext)


def read_infotexts(paths: list[str]) -> list[str]:
    """The infotext inside each saved file (what a PNG-info tool would read)."""
    texts = []
    for path in paths:
        with Image.open(path) as image:
            texts.append(read_infotext(image)[0] or "")
    return texts


def field_bounds(model, name: str) -> tuple[Any, Any]:
    """(ge, le) of a pydantic field: the tab's slider limits come from the dialect's own schema."""
    lo = hi = None
    for item in model.model_fields[name].metadata:
        lo = getattr(item, "ge", None) if getattr(item, "ge", None) is not None else lo
        hi = getattr(item, "le", None) if getattr(item, "le", None) is not None else hi
    return lo, hi


def sniff_ext(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"
