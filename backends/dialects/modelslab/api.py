"""The ModelsLab dialect: what each ModelsLab route does (text2img on every family, fetch, the enterprise stubs,
system_load, the `/generations/` files), over the Service. The HTTP routes (webui/routes/modelslab.py) and the UI
tab (webui/tabs/modelslab.py) call the same entry points: `parse("text2img", body, call)` then
`run("text2img", request, call)`; the family is `call.params["family"]`, a fetch's id `call.params["request_id"]`
(or the body's)."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ...images import encode_image
from ...keys import owner_of_key
from ...job import (
    GenerationFailed,
    InvalidRequest,
    Lora,
    LoraNotFound,
    ModelInfo,
    ModelNotFound,
    QueueFull,
    Result,
    SdgateError,
    Style,
)
from ...samplers import diffusers_schedulers
from ...service import Service
from ..base import Call, Reply
from .errors import InvalidKey, RateLimited, RequestNotFound, error_response
from .files import GenerationFiles
from .jobs import JobStore, Record, deliver_webhook, key_owner, webhook_problem
from .models import FetchRequest, Text2ImgRequest, body_key, check, parse_body, parse_fetch, parse_request
from .options import DEFAULT_FAMILY, FAMILY, SCHEDULERS, Family, Settings
from .plan import Plan, build_plan, infotext, nsfw_detected, result_meta
from .replies import failed_body, processing_body, webhook_payload
from .upstream import ModelslabUpstream

log = logging.getLogger(__name__)


class ModelslabDialect(ModelslabUpstream):
    """One instance per service (`registry.dialect`): the results store behind fetch lives in it."""

    style = Style.MODELSLAB
    operations: ClassVar[tuple[str, ...]] = ("text2img", "fetch")

    def __init__(self, service: Service):
        super().__init__(service)
        self.settings = Settings.from_config(service.config.raw)
        self.store = JobStore(self.settings.expiry_hours * 3600)
        self.files = GenerationFiles(service.config.outputs_dir, self.settings)
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    # ------------------------------------------------------------------ the contract

    def parse(self, operation: str, body: bytes | Mapping[str, Any], call: Call) -> Text2ImgRequest | FetchRequest:
        data = parse_body(body)
        if operation == "text2img":
            req = parse_request(data)
            check(req, self.family(call))  # required fields and the documented ranges, in ModelsLab's words
            return req
        if operation == "fetch":
            return parse_fetch(data, call.params.get("request_id"))
        raise ValueError(f"ModelsLab has no operation {operation!r}")

    async def run(self, operation: str, request: Any, call: Call) -> Reply:
        if operation == "text2img":
            return await self.text2img(request, call)
        if operation == "fetch":
            return Reply(self.fetch(request, call))
        raise ValueError(f"ModelsLab has no operation {operation!r}")

    def authorize(self, call: Call, body: Mapping[str, Any] | None = None) -> str | None:
        """The body's `key` (keys in `[keys] modelslab`; none configured: loopback callers only)."""
        key = body_key(body or {})
        if not self.service.keys.allows(Style.MODELSLAB, key, call.client_host):
            raise InvalidKey("Invalid API key")
        return key

    def render_error(self, exc: BaseException, call: Call) -> Reply:
        status, body = error_response(exc, self.settings.always_200)
        return Reply(body, status)

    # ------------------------------------------------------------------ lookups

    @staticmethod
    def family(call: Call) -> Family:
        return FAMILY[call.params.get("family", DEFAULT_FAMILY)]

    def _owner(self, key: str | None) -> str | None:
        return key_owner(key) if self.service.keys.configured(Style.MODELSLAB) else None

    def _resolve_model(self, model_id: str | None, call: Call) -> tuple[ModelInfo, list[str]]:
        """The model for `model_id` on the call's route (blocking: may scan the models folder). In --demo an
        unknown id runs a tiny model of the family its name suggests, with a note, so every ModelsLab script works
        against the demo. A gateway's model is the gateway's to find."""
        if not model_id:
            return self.resolve_model(None, call), []
        try:
            model, note = self.resolve_or_demo(model_id, call)
        except ModelNotFound:
            raise ModelNotFound(f"Model not found: {model_id}", details={"model_id": model_id}) from None
        return model, [note] if note else []

    def _check_loras(self, loras: list[Lora]) -> None:
        """Name every missing LoRA before queueing (the engine would find only the first, and only later)."""
        if not loras:
            return
        available = {name.lower() for name in self.service.lora_names()}
        missing = [lora.name for lora in loras if lora.name.lower() not in available]
        if missing:
            raise LoraNotFound(f"lora not found: {', '.join(missing)}", details={"missing": missing})

    async def plan(self, req: Text2ImgRequest, call: Call) -> Plan:
        """A checked request → its Plan on the call's route (model resolved, LoRAs present, the engine's checks
        for a job that runs here)."""
        model_id = (req.model_id or "").strip() or None
        model, notes = await asyncio.to_thread(self._resolve_model, model_id, call)
        config = self.service.config
        plan = build_plan(req, model=model, model_id=model_id, settings=self.settings, features=config.features,
                          max_width=config.limits.max_width, notes=notes)
        if req.key:  # the key in the body names the owner (fair queue, /jobs/{id})
            plan.job.owner = owner_of_key(req.key)
        self.job_for_route(plan.job, call)
        if call.route.local and model.kind != "gateway":  # a gateway has LoRAs of its own: it finds them or
            await asyncio.to_thread(self._check_loras, plan.job.loras)  # says which it lacks
        await asyncio.to_thread(self.service.validate, plan.job)
        return plan

    def base_url(self, request_base: str) -> str:
        return self.files.base_url(request_base)

    # ------------------------------------------------------------------ text2img

    async def text2img(self, req: Text2ImgRequest, call: Call) -> Reply:
        family = self.family(call)
        plan = await self.plan(req, call)
        if plan.webhook:
            problem = webhook_problem(plan.webhook, self.settings.webhook_hosts)
            if problem:
                raise InvalidRequest(problem)

        self.store.sweep()
        if self.store.in_flight() >= self.settings.max_queued:
            raise RateLimited(
                f"Rate limit exceeded. Maximum {self.settings.max_queued} queued requests allowed.",
                retry_after=self._retry_after(),
            )
        base = self.base_url(call.base_url)
        request_id = self.store.new_id()
        prefix = str(uuid.uuid4())
        plan.meta["file_prefix"] = prefix
        plan.job.extra["modelslab_id"] = request_id
        record = Record(
            id=request_id,
            fetch_path=family.fetch[0],
            links=[self.files.link(base, prefix, i) for i in range(plan.job.image_count)],
            meta=plan.meta,
            job=plan.job,
            owner=self._owner(req.key),
            base64=plan.base64,
            webhook=plan.webhook,
            track_id=plan.track_id,
            webhook_status="pending" if plan.webhook else "",
        )
        try:
            record.ticket = self.service.submit(plan.job)
        except QueueFull as e:  # the shared queue is full: ModelsLab's busy answer
            raise RateLimited(e.message, retry_after=self._retry_after()) from None
        self.store.add(record)
        task = asyncio.create_task(self._complete(record, plan, prefix))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        # a UI tab shows its own progress and waits for its images; an API caller gets `processing` after sync_wait
        wait = None if call.ui else self.settings.sync_wait
        if not plan.instant and (wait is None or wait > 0):
            try:
                await asyncio.wait_for(asyncio.shield(record.done.wait()), wait)
            except asyncio.TimeoutError:
                pass
        if record.status == "success":
            return Reply(record.response).traced([record.trace] if record.trace else [])
        if record.status == "failed":
            raise record.error
        return Reply(processing_body(record, self.store.eta(record, self.service.queue),
                                     self._fetch_url(base, record)))

    def _fetch_url(self, base: str, record: Record) -> str:
        return f"{base}{record.fetch_path}/{record.id}"

    def _retry_after(self) -> int:
        """Seconds until a queued ModelsLab job should have finished (the soonest one)."""
        etas = [self.store.eta(r, self.service.queue) for r in self.store.records() if r.status == "processing"]
        return max(1, math.ceil(min(etas))) if etas else 5

    async def _complete(self, record: Record, plan: Plan, prefix: str) -> None:
        """Wait for the job, write the files, settle the record, then call the webhook (after `done` is set, so a
        synchronous answer never waits on somebody else's webhook receiver)."""
        ticket = record.ticket
        try:
            try:
                result = await ticket.wait()
            except asyncio.CancelledError:
                if not ticket.future.cancelled():
                    raise  # this task itself is being cancelled (shutdown)
                raise QueueFull("the job was dropped from the queue (server shutting down)") from None
            record.response = await asyncio.to_thread(self._finish, record, plan, prefix, result)
            record.meta, record.status = record.response["meta"], "success"
            record.trace = replace(result, images=[])
        except SdgateError as e:
            record.error, record.status = e, "failed"
        except Exception as e:  # noqa: BLE001 - a job must settle whatever happens
            log.exception("ModelsLab request %s failed", record.id)
            record.error, record.status = GenerationFailed(f"generation failed: {type(e).__name__}: {e}"), "failed"
        finally:
            record.finished = time.time()
            record.ticket = None
            record.done.set()
        if record.webhook:
            status = await deliver_webhook(record.webhook, webhook_payload(record), self.settings.webhook_timeout)
            record.webhook_status = status
            if record.response is not None:
                record.response["webhook_status"] = status

    def _finish(self, record: Record, plan: Plan, prefix: str, result: Result) -> dict[str, Any]:
        """On a worker thread: write `<prefix>-<i>.png` (the future links), build the success body."""
        started = time.perf_counter()
        job = plan.job
        self.store.observe(job, result.timings.get("total", 0.0) - result.timings.get("load", 0.0))
        images = result.images
        text = infotext(job, result)
        encoded = []
        for i, image in enumerate(images):
            data = encode_image(image, "png", text)
            self.files.write(prefix, i, data)
            encoded.append(data)
        links = record.links[: len(images)]
        meta = result_meta(record.meta, result)
        if result.interrupted or result.skipped:
            meta["notes"].append(f"interrupted: {len(images)} of {job.image_count} images")
        return {
            "status": "success",
            "generationTime": round(result.timings.get("total", 0.0) + time.perf_counter() - started, 3),
            "id": record.id,
            "output": [base64.b64encode(d).decode("ascii") for d in encoded] if plan.base64 else links,
            "proxy_links": links,
            "nsfw_content_detected": nsfw_detected(job, result),
            "meta": meta,
            "webhook_status": record.webhook_status,
            "tip": "",
        }

    # ------------------------------------------------------------------ fetch

    def fetch(self, req: FetchRequest, call: Call) -> dict[str, Any]:
        try:
            request_id = int(req.request_id.strip())
        except ValueError:
            request_id = None
        record = self.store.get(request_id) if request_id is not None else None
        if record is None or (record.owner is not None and record.owner != self._owner(req.key)):
            raise RequestNotFound(f"Request not found: {req.request_id} (unknown or expired id)")
        if record.status == "success":
            return record.response
        if record.status == "failed":
            return failed_body(record)
        base = self.base_url(call.base_url)
        return processing_body(record, self.store.eta(record, self.service.queue), self._fetch_url(base, record))

    # ------------------------------------------------------------------ generated files

    def generation_file(self, name: str) -> Path | None:
        """The file behind an output URL, or None when it is unknown, not written yet, or expired."""
        return self.files.find(name)

    # ------------------------------------------------------------------ enterprise stubs and system load

    def _queue_state(self) -> tuple[int, float]:
        queue = self.service.queue
        tickets = ([queue.current] if queue.current is not None else []) + queue.pending()
        seconds = sum(JobStore.units(t.job) * (1.0 - t.progress.fraction) for t in tickets) * self.store.rate
        return len(tickets), round(seconds, 2)

    async def system_load(self, body: bytes | Mapping[str, Any], call: Call) -> dict:
        self.authorize(call, parse_body(body))
        queue_num, queue_time = self._queue_state()
        return {"queue_num": queue_num, "queue_time": queue_time, "status": "ok"}

    async def system_details(self, body: bytes | Mapping[str, Any], call: Call) -> dict:
        self.authorize(call, parse_body(body))
        queue_num, queue_time = self._queue_state()
        service = self.service
        return {
            "status": "success",
            "message": "sdgate local server",
            "device": service.device,
            "dtype": str(service.dtype).removeprefix("torch."),
            "demo": service.demo,
            "models_loaded": service.models.loaded(),
            "queue_num": queue_num,
            "queue_time": queue_time,
        }

    async def schedulers_list(self, body: bytes | Mapping[str, Any], call: Call) -> dict:
        self.authorize(call, parse_body(body))
        names = list(dict.fromkeys([*SCHEDULERS, *diffusers_schedulers()]))
        return {"status": "success", "message": names, "schedulers": names}

    async def get_all_models(self, body: bytes | Mapping[str, Any], call: Call) -> dict:
        self.authorize(call, parse_body(body))
        models = await asyncio.to_thread(self.service.models.list)
        loaded = set(self.service.models.loaded())
        aliases = dict(self.service.models.aliases)
        items = [{"model_id": m.name, "title": m.title, "loaded": m.title in loaded} for m in models]
        items += [{"model_id": alias, "title": target, "alias": True} for alias, target in sorted(aliases.items())]
        return {"status": "success", "message": items, "models": items}
