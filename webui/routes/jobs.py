"""Jobs by id, for every style: `GET /jobs/{id}` (state, queue position, steps, ETA, preview, images),
`DELETE /jobs/{id}` (cancel your own), `GET /jobs/{id}/images/{n}`, and `POST /jobs`, the asynchronous submit:
any style's request body with its style and operation, answered at once with the job id.

A job is its owner's (backends/keys.py `request_owner`: the API key, the Basic-auth user, else the address); anyone
else gets 404, as if it did not exist, unless `[queue] admins` names them. POST /jobs runs the style's own entry
points (`authorize`, `parse`, `run`), so a bad body gets that style's own error answer; the style's finished answer
is in `GET /jobs/{id}` as `response`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from backends.dialects import registry
from backends.dialects.base import Call, Dialect, Reply
from backends.images import encode_base64
from backends.job import Route, Style
from backends.keys import is_admin

from . import make_call, to_response

ASYNC_KEPT = 200  # POST /jobs records kept (their answers), newest first


class AsyncSubmit(BaseModel):
    style: Style = Field(description="the API style of `request`: a1111, stability_v1, stability_v2, modelslab, openai")
    operation: str = Field(description="the style's generation route: txt2img, img2img (a1111); text-to-image, "
                                       "image-to-image, masking (stability_v1); core, ultra, sd3 (stability_v2); "
                                       "text2img (modelslab); generations, edits, variations (openai)")
    request: dict[str, Any] = Field(default_factory=dict, description="the body that style's route takes")
    params: dict[str, str] = Field(default_factory=dict,
                                   description="path parameters of that route, e.g. {\"engine_id\": ...} (stability_v1)")


class Accepted(BaseModel):
    id: str
    state: str
    url: str


class ImageRef(BaseModel):
    url: str
    seed: Optional[int] = None


class JobStatus(BaseModel):
    id: str
    style: Optional[str] = None
    state: str = Field(description="queued | running | done | failed | cancelled")
    position: int = Field(description="pipeline calls ahead of this job's next batch (0: running or next)")
    step: int
    steps: int
    batch: int
    batches: int
    progress: float
    eta: Optional[float] = Field(None, description="seconds until done, from measured step times")
    submitted_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    interrupted: bool = False
    worker: Optional[str] = Field(None, description="the engine replica running it, or that ran it (--ray)")
    error: Optional[str] = None
    preview: Optional[str] = Field(None, description="data URI of the latest preview (with ?preview=true)")
    images: list[ImageRef] = Field(default_factory=list)
    response: Any = Field(None, description="POST /jobs: the style's own answer, once it is ready")
    response_status: Optional[int] = None


@dataclass
class AsyncCall:
    """One POST /jobs request running in the background: its task and the tickets it made."""

    task: asyncio.Task
    tickets: list
    dialect: Dialect
    call: Call


def _may_see(owner: str | None, admins: list[str], ticket) -> bool:
    return ticket is not None and (ticket.owner == owner or is_admin(owner, admins))


def create_router(service) -> APIRouter:
    r = APIRouter(tags=["jobs"])
    calls: collections.OrderedDict[str, AsyncCall] = collections.OrderedDict()

    def caller(request: Request) -> Call:
        # any dialect gives the owner and address; A1111's is used for who is asking
        return make_call(request, registry.dialect(service, Style.A1111))

    def own_ticket(request: Request, job_id: str):
        call = caller(request)
        ticket = service.ticket(job_id)
        if not _may_see(call.owner, service.config.serving.admins, ticket):
            return None
        return ticket

    def not_found(job_id: str) -> JSONResponse:
        return JSONResponse({"detail": f"no job {job_id!r} of yours"}, status_code=404)

    @r.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "no such job of yours"}})
    def job_status(request: Request, job_id: str, preview: bool = False):
        ticket = own_ticket(request, job_id)
        if ticket is None:
            return not_found(job_id)
        service.queue.refresh()
        p = ticket.progress
        state = ticket.state
        status = JobStatus(
            id=ticket.id, style=str(ticket.job.style) if ticket.job.style else None, state=state,
            position=p.position if state == "queued" else 0, step=p.step, steps=p.steps, batch=p.batch_no,
            batches=p.batch_count, progress=1.0 if state == "done" else p.fraction,
            eta=round(ticket.eta, 2) if ticket.eta is not None and state in ("queued", "running") else None,
            submitted_at=ticket.submitted_at, started_at=p.started_at, finished_at=ticket.finished_at,
            interrupted=bool(ticket.interrupted), worker=getattr(ticket.run, "worker", None),
        )
        if preview and p.preview is not None and state == "running":
            status.preview = "data:image/png;base64," + encode_base64(p.preview, "png")
        if ticket.future.done():
            error = ticket.future.exception()
            if error is not None:
                status.error = getattr(error, "message", None) or str(error)
            elif not ticket.images_forgotten:
                result = ticket.future.result()
                status.interrupted = bool(result.interrupted)
                status.worker = result.worker
                status.images = [ImageRef(url=f"/jobs/{ticket.id}/images/{i}",
                                          seed=result.seeds[i] if i < len(result.seeds) else None)
                                 for i in range(len(result.images))]
        record = calls.get(ticket.id)
        if record is not None:
            if not record.task.done():
                if state == "done":
                    status.state = "running"  # the request's next pass (hires fix, another image) is still to come
            else:
                reply = _answer(record)
                status.response, status.response_status = reply.body, reply.status
                if reply.status >= 400 and status.state == "done":
                    status.state = "failed"
        return status

    @r.get("/jobs/{job_id}/images/{index}", responses={200: {"content": {"image/png": {}}}, 404: {}, 410: {}})
    def job_image(request: Request, job_id: str, index: int):
        ticket = own_ticket(request, job_id)
        if ticket is None or not ticket.future.done() or ticket.future.exception() is not None:
            return not_found(job_id)
        if ticket.images_forgotten:
            return JSONResponse({"detail": "this job's images are no longer kept"}, status_code=410)
        images = ticket.future.result().images
        if not 0 <= index < len(images):
            return JSONResponse({"detail": f"job {job_id!r} has {len(images)} image(s)"}, status_code=404)
        buffer = io.BytesIO()
        images[index].save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @r.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "no such job of yours"}})
    def cancel_job(request: Request, job_id: str):
        ticket = own_ticket(request, job_id)
        if ticket is None:
            return not_found(job_id)
        record = calls.get(job_id)
        for t in (record.tickets if record is not None else [ticket]):
            if not t.done():
                service.cancel(t)
        deadline = time.time() + 0.5  # a waiting job is cancelled at once; give a running one a moment to stop
        while not ticket.done() and time.time() < deadline:
            time.sleep(0.02)
        return job_status(request, job_id)

    @r.post("/jobs", status_code=202, response_model=Accepted,
            responses={400: {"description": "the style's own error answer"}})
    async def submit(request: Request, body: AsyncSubmit):
        dialect = registry.dialect(service, body.style)
        call = make_call(request, dialect, **body.params)
        # the answer is kept as JSON; a style that forwards to a gateway is translated instead (a Job runs there)
        call = replace(call, route=Route(call.route.gateway) if call.route.gateway else call.route,
                       headers={**call.headers, "accept": "application/json"})
        try:
            if body.operation not in dialect.operations:
                # FastAPI's 422 shape (a list of field errors), as the route's documented 422 declares
                return JSONResponse({"detail": [{
                    "type": "value_error", "loc": ["body", "operation"], "input": body.operation,
                    "msg": f"{body.style} has no operation {body.operation!r}; one of: {', '.join(dialect.operations)}",
                }]}, status_code=422)
            dialect.authorize(call, body.request)
            parsed = dialect.parse(body.operation, body.request, call)
        except Exception as e:  # noqa: BLE001 - the style's own error answer
            return to_response(dialect.render_error(e, call))
        loop = asyncio.get_running_loop()
        first: asyncio.Future = loop.create_future()
        tickets: list = []

        def seen(ticket) -> None:  # called where the dialect submits (maybe a worker thread)
            tickets.append(ticket)
            loop.call_soon_threadsafe(lambda: first.done() or first.set_result(ticket))

        with service.watch(seen):
            task = asyncio.ensure_future(dialect.run(body.operation, parsed, call))
        await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():  # finished (or failed) without queueing anything: the answer as it is
            try:
                return to_response(task.result())
            except Exception as e:  # noqa: BLE001
                return to_response(dialect.render_error(e, call))
        ticket = first.result()
        calls[ticket.id] = AsyncCall(task, tickets, dialect, call)
        while len(calls) > ASYNC_KEPT:
            calls.popitem(last=False)
        return Accepted(id=ticket.id, state=ticket.state, url=f"/jobs/{ticket.id}")

    return r


def _answer(record: AsyncCall) -> Reply:
    """The finished POST /jobs request's answer in its style (an error in that style's shape)."""
    try:
        reply = record.task.result()
    except BaseException as e:  # noqa: BLE001 - a failure is the style's error answer
        return record.dialect.render_error(e, record.call)
    if not isinstance(reply, Reply):
        return Reply(reply)
    if isinstance(reply.body, (bytes, bytearray)):
        if reply.media_type == "application/json":
            return Reply(json.loads(reply.body), reply.status)
        return Reply({"media_type": reply.media_type, "base64": base64.b64encode(reply.body).decode()}, reply.status)
    return reply
