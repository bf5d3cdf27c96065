"""What the relay needs to know about each API style, as tables: how to send a Job to a gateway in that style
(through the dialect's reverse pair), and how to forward a caller's own request of that style unchanged.

The dialect modules own the field names; this module only calls their reverse pairs:
- a1111:        `job_to_upstream(job)` / `upstream_to_result(job, content)`
- stability_v1: `job_to_request(job, engine)` / `response_to_result(job, status, headers, body, request=...)`
- stability_v2: `job_to_upstream(job)` (one call per image) / `parse_upstream_response` + `upstream_to_result`
- modelslab:    `job_to_request(job, model_id=...)` / `parse_response` → Finished | Pending, `fetch_request`,
                `decode_output` (base64) or a download (URLs), `result_from_response`
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable

from PIL import Image

from ..images import UnreadableImage, open_image
from ..job import GenerationFailed, Job, Result
from .client import Deadline, GatewayClient
from .config import GatewayConfig
from .errors import UpstreamError, UpstreamTimeout

# When a gateway speaks several styles and none is the caller's, the one that carries the most of a Job.
PREFERENCE = ("a1111", "modelslab", "stability_v1", "stability_v2")


@dataclass
class Outbound:
    """One Job's trip to a gateway: the gateway, its client, the model name upstream, the deadline."""

    job: Job  # with `model` set to the upstream model name (or None: the gateway's default)
    gateway: GatewayConfig
    client: GatewayClient
    deadline: Deadline
    dropped: list[str] = field(default_factory=list)


def _add(out: Outbound, names: list[str]) -> None:
    out.dropped += [n for n in names if n not in out.dropped]


async def parse(out: Outbound, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """A reverse pair's parser, off the event loop; an answer it cannot read is the gateway's fault (502)."""
    try:
        return await asyncio.to_thread(fn, *args, **kw)
    except GenerationFailed as e:
        raise UpstreamError(out.gateway.name, e.message, shape="unreadable") from None


def pick_style(gateway: GatewayConfig, caller_style: str | None) -> str:
    if caller_style in gateway.styles:
        return caller_style
    return next(s for s in PREFERENCE if s in gateway.styles)


# ------------------------------------------------------------------------------------------ Job → gateway


async def run_a1111(out: Outbound) -> Result:
    from ..dialects import a1111

    req = a1111.job_to_upstream(out.job)
    _add(out, req.dropped)
    answer = await out.client.request(req.method, req.path, json=req.json, deadline=out.deadline)
    result = await parse(out, a1111.upstream_to_result, out.job, answer.content)
    result.notes += req.notes
    return result


async def run_stability_v1(out: Outbound) -> Result:
    from ..dialects import stability_v1 as v1

    req = v1.job_to_request(out.job, out.job.model or None)  # no model: the engine the size suits
    _add(out, req.not_carried)
    answer = await out.client.request(req.method, req.path, json=req.json, data=req.data,
                                      files=req.files, headers=req.headers, deadline=out.deadline)
    return await parse(out, v1.response_to_result, out.job, answer.status_code, dict(answer.headers),
                       answer.content, request=req)


async def run_stability_v2(out: Outbound) -> Result:
    from ..dialects import stability_v2 as v2

    plan = v2.job_to_upstream(out.job)
    _add(out, plan.dropped)
    images = []
    for req in plan.requests:  # v2beta makes one image per call
        answer = await out.client.request(req.method, req.path, deadline=out.deadline, **req.httpx_kwargs())
        images.append(await parse(out, v2.parse_upstream_response, answer.status_code, dict(answer.headers),
                                  answer.content))
    return v2.upstream_to_result(out.job, images, plan=plan, gateway=out.gateway.name)


async def poll_modelslab(out: Outbound, answer_json: Any) -> Any:
    """`processing` → poll the fetch route until `success` (returned as the parsed Finished) or the deadline.

    D.4 item 6/7: the first poll waits max(eta, poll_interval), later ones poll_interval; fetch_result is used
    only when it lies under the gateway's own base URL (our key goes nowhere else)."""
    from ..dialects import modelslab as ml

    state = await parse(out, ml.parse_response, 200, answer_json)
    wait = max(getattr(state, "eta", 0.0) or 0.0, out.gateway.poll_interval)
    base = out.gateway.url("")
    polls = 0
    while isinstance(state, ml.Pending):
        if wait >= out.deadline.left():
            raise UpstreamTimeout(out.gateway.name, f"ModelsLab request {state.id} still processing after "
                                  f"{polls} polls; the deadline of {out.deadline.seconds:g} s would pass")
        await asyncio.sleep(wait)
        fetch = ml.fetch_request(state, base_url=base)
        answer = await out.client.request(fetch.method, fetch.path, json=fetch.json, key_in_body=True,
                                          deadline=out.deadline)
        state = await parse(out, ml.parse_response, answer.status_code, answer.content)
        wait = out.gateway.poll_interval
        polls += 1
    return state


async def download(out: Outbound, url: str) -> bytes:
    """An output URL's bytes (our key is sent only if the URL is on the gateway's own origin)."""
    answer = await out.client.request("GET", url, deadline=out.deadline)
    return answer.content


def _open(data: bytes, what: str) -> Image.Image:
    try:
        return open_image(data)
    except UnreadableImage as e:
        raise GenerationFailed(f"{what} is not an image ({e})") from None


async def modelslab_images(out: Outbound, finished: Any) -> list[Image.Image]:
    from ..dialects import modelslab as ml

    images = []
    for i, entry in enumerate(finished.output):
        image = await parse(out, ml.decode_output, entry)
        if image is None:
            image = await parse(out, _open, await download(out, entry), f"output {i}")
        images.append(image)
    return images


async def run_modelslab(out: Outbound) -> Result:
    from ..dialects import modelslab as ml

    req = ml.job_to_request(out.job, model_id=out.job.model or "")
    _add(out, req.unsupported)
    answer = await out.client.request(req.method, req.path, json=req.json, key_in_body=True, deadline=out.deadline)
    finished = await poll_modelslab(out, answer.content)
    images = await modelslab_images(out, finished)
    result = ml.result_from_response(out.job, finished, images)
    result.notes += req.notes
    return result


RUNNERS: dict[str, Callable[[Outbound], Awaitable[Result]]] = {
    "a1111": run_a1111,
    "stability_v1": run_stability_v1,
    "stability_v2": run_stability_v2,
    "modelslab": run_modelslab,
}


# --------------------------------------------------------------------------- a caller's request, forwarded


@dataclass(frozen=True)
class ForwardSpec:
    # our own extra mount points of a style → the upstream path they stand for (the gateway adds its prefix)
    local_prefixes: tuple[tuple[str, str], ...] = ()
    # request headers that mean something upstream (auth is never among them: the gateway's key replaces it)
    request_headers: tuple[str, ...] = ("content-type", "accept")
    key_in_body: bool = False  # ModelsLab: the body's `key` is the caller's; the gateway's replaces it
    error_shapes: tuple[str, ...] = ()  # upstream error shapes that already are this style's: passed through


STABILITY_HEADERS = ("content-type", "accept", "organization", "stability-client-id", "stability-client-version",
                     "stability-client-user-id")

FORWARD: dict[str, ForwardSpec] = {
    "a1111": ForwardSpec(local_prefixes=(("/v1/sdapi/v1", "/sdapi/v1"),), error_shapes=("a1111",)),
    "stability_v1": ForwardSpec(local_prefixes=(("/sd/v1", "/v1"),), request_headers=STABILITY_HEADERS,
                                error_shapes=("stability_v1",)),
    "stability_v2": ForwardSpec(local_prefixes=(("/sd/v2beta", "/v2beta"),), request_headers=STABILITY_HEADERS,
                                error_shapes=("stability_v2",)),
    "modelslab": ForwardSpec(key_in_body=True, error_shapes=("modelslab",)),
}

# Response headers that describe one hop, not the answer (and cookies, which belong to the gateway's site).
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                         "server", "date", "set-cookie", "alt-svc", "proxy-authenticate", "upgrade", "trailer",
                         "te", "www-authenticate", "x-process-time"})


def upstream_path(style: str, path: str) -> str:
    for local, upstream in FORWARD[style].local_prefixes:
        if path == local or path.startswith(local + "/"):
            return upstream + path[len(local):]
    return path


def response_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}


def modelslab_body(body: bytes) -> dict | None:
    try:
        parsed = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def with_model(job: Job, model: str | None) -> Job:
    return replace(job, model=model)


def modelslab_store(service, request_base: str) -> Callable[[bytes, int], str]:
    """Where forwarded ModelsLab outputs are served from: the ModelsLab dialect's own `/generations/` files, so
    they live and expire like local ones."""
    import io
    import os
    import uuid
    from pathlib import Path

    from ..dialects import modelslab as ml

    api = ml.ModelslabApi.for_service(service)
    base = api.base_url(request_base)
    prefix = str(uuid.uuid4())

    def store(data: bytes, index: int) -> str:
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):  # the route serves <uuid>-<i>.png: PNG it is
            buf = io.BytesIO()
            _open(data, f"output {index}").save(buf, format="PNG")
            data = buf.getvalue()
        outdir = Path(api.outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}-{index}.png"
        tmp = outdir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, outdir / name)
        return f"{base}{ml.GENERATIONS}/{name}"

    return store
