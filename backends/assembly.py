"""Wires the backend together: the concrete Service (backends/service.py declares it) over the local models,
engine and job queue, the relay to gateways, and the dialects' codecs the relay translates with.

The top of the backend layers: it is the one module that imports `local`, `remote` and `dialects` together."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import limits
import torch
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .config import Config, ConfigError
from .dialects import registry
from .job import LOCAL, Job, ModelInfo, ModelNotFound, QueueFull, Result, Route, SdgateError, Style
from .keys import ApiKeys, is_admin
from .local.devices import cpu_engine, pick_device, pick_dtype
from .local.engine import LocalEngine
from .local.features.embeddings import family_widths, list_embeddings
from .local.features.embeddings import library as embedding_library
from .local.features.vae import list_vaes
from .local.models import ModelManager
from .metrics import Metrics
from .queue import JobQueue, Ticket
from .remote.config import parse_target, target
from .remote.relay import Relay
from .service import DEMO_NOTE
from .upstream import ForwardRequest, Forwarded

log = logging.getLogger(__name__)

# In --demo every model or engine name a client may send lands on a tiny model of the matching family.
DEMO_ALIASES = {
    "stable-diffusion-xl-1024-v1-0": "tiny-sdxl",
    "stable-diffusion-xl-1024-v0-9": "tiny-sdxl",
    "stable-diffusion-xl-beta-v2-2-2": "tiny-sd1",
    "stable-diffusion-v1-6": "tiny-sd1",
    "stable-diffusion-v1-5": "tiny-sd1",
    "stable-diffusion-512-v2-1": "tiny-sd1",
    "stable-diffusion-768-v2-1": "tiny-sd1",
    "core": "tiny-sdxl",
    "ultra": "tiny-sdxl",
    "sd3": "tiny-sdxl",
    "sd3.5-large": "tiny-sdxl",
    "sd3.5-large-turbo": "tiny-sdxl",
    "sd3.5-medium": "tiny-sdxl",
    "sd3.5-flash": "tiny-sdxl",
    # the OpenAI Images model names (backends/dialects/openai/options.py MODEL_NAMES)
    "dall-e-2": "tiny-sd1",
    "dall-e-3": "tiny-sdxl",
    "gpt-image-1": "tiny-sdxl",
    "gpt-image-1-mini": "tiny-sd1",
    "gpt-image-1.5": "tiny-sdxl",
    "gpt-image-2": "tiny-sdxl",
    "chatgpt-image-latest": "tiny-sdxl",
}

# Callbacks told of every ticket submitted from the current context (see LocalService.watch). A context variable,
# not a list on the service: each UI event watches only the jobs its own dialect call submits. (Observation only:
# where a job runs is never read from context, it is the Job's `backend`.)
_watchers: contextvars.ContextVar[tuple[Callable[[Ticket], None], ...]] = contextvars.ContextVar(
    "sdgate_ticket_watchers", default=()
)

# Images per batched pipeline call when `[queue] max_batch` is 0. bench/serving.py on this project's 2-core CPU, 8
# concurrent 128² requests on the tiny model: 1.65× the serial images/s with 8, 1.48× with 4 (at 256² both ~1.2×:
# a CPU gains only the per-call overhead). A GPU at 512² keeps gaining up to 8 in diffusers' own measurements.
DEFAULT_MAX_BATCH = {"cpu": 8, "cuda": 8, "mps": 4}

@dataclass(eq=False)  # identity, not equality: one dialect set per service (dialects/registry.py)
class LocalService:
    """The Service: this machine's engine and queue, and the relay when gateways are configured."""

    config: Config
    models: ModelManager
    engine: LocalEngine
    queue: JobQueue
    device: str
    dtype: torch.dtype
    keys: ApiKeys
    relay: Relay | None = None  # remote gateways (backends/remote), None when none is configured
    rate_limit: "RateLimit | None" = None  # `[queue] rate_limit` per owner
    aliases: dict[str, str] = field(default_factory=dict)  # every model alias, `gateway:` targets included
    metrics: Metrics | None = None  # Prometheus metrics of the local queue (GET /metrics)
    cluster: object = None  # the Ray Serve replicas the queue's batches run on (--ray: backends/cluster/)

    @property
    def demo(self) -> bool:
        return self.config.demo

    # ---------------------------------------------------------------------------------------- where it runs

    def route_for(self, style: Style) -> Route:
        gw = self.relay.routed(style) if self.relay is not None else None
        if gw is None:
            return LOCAL
        return Route(gw.name, forward=gw.serves(style))

    def gateways(self, style: Style) -> list[str]:
        return self.relay.choices(style) if self.relay is not None else []

    def gateway_rows(self) -> list[list[str]]:
        return self.relay.status_rows() if self.relay is not None else []

    def check_gateway(self, name: str) -> None:
        if self.relay is None:
            raise SdgateError(f"no gateway named {name!r}: no [[gateways]] are configured", details={"gateway": name})
        self.relay.gateway(name)

    def resolve_model(self, name: str | None, route: Route) -> ModelInfo:
        if route.gateway is not None:  # the gateway's own name for a model: passed on as it came
            self.check_gateway(route.gateway)
            return gateway_model(route.gateway, name or None)
        remote = self._gateway_alias(name)
        if remote is not None:
            return remote
        return self.models.resolve(name)

    def _gateway_alias(self, name: str | None) -> ModelInfo | None:
        """A name whose alias chain ends in `gateway:<name>[/<model>]` (or such a target itself)."""
        followed, seen = name if name else self.models.default, set()
        while followed in self.aliases and followed not in seen:
            seen.add(followed)
            followed = self.aliases[followed]
        parsed = parse_target(followed)
        if parsed is None:
            return None
        self.check_gateway(parsed[0])
        return gateway_model(*parsed)

    # ---------------------------------------------------------------------------------------- jobs

    def backend_of(self, job: Job) -> str | None:
        """Where `job` runs: None for the local queue, else a gateway (its `backend`, or its model's gateway)."""
        parsed = parse_target(job.model)
        if job.backend in (None, "", "local"):
            if parsed is None:
                return None
            if job.backend == "local":
                raise ModelNotFound(f"model {job.model!r} belongs to gateway {parsed[0]!r} and cannot run locally",
                                    details={"model": job.model})
            job.backend = parsed[0]
        self.check_gateway(job.backend)
        return job.backend

    def validate(self, job: Job) -> None:
        if self.backend_of(job) is None:
            self.engine.validate(job)

    def lora_names(self) -> list[str]:
        return self.engine.loras.files()

    def vae_names(self) -> list[str]:
        return [entry.name for entry in list_vaes(self.models.models_dir)]

    def embedding_names(self) -> list[str]:
        return sorted(embedding_library(self.models.models_dir).entries())

    def vae_files(self) -> list[tuple[str, str]]:
        return [(entry.name, str(entry.path)) for entry in list_vaes(self.models.models_dir)]

    def embedding_listing(self) -> dict[str, dict]:
        try:
            widths = family_widths(self.models.get(None).pipe)
        except SdgateError:  # no local model (none installed, or the default is a gateway's)
            widths = None
        return list_embeddings(self.models.models_dir, widths)

    def submit(self, job: Job) -> Ticket:
        # a job for a gateway never waits in the device queue; the relay bounds each gateway's concurrency
        backend = self.backend_of(job)
        if self.rate_limit is not None and not is_admin(job.owner, self.config.serving.admins):
            self.rate_limit.check(job.owner or "anonymous")
        if backend:
            ticket = self.relay.submit(job, backend)
            self.queue.track(ticket)
        else:
            ticket = self.queue.submit(job)
        for watcher in _watchers.get():
            watcher(ticket)
        return ticket

    def run(self, job: Job, timeout: float | None = None) -> Result:
        return self.submit(job).result(timeout)

    def ticket(self, job_id: str) -> Ticket | None:
        return self.queue.get(job_id)

    def cancel(self, ticket: Ticket) -> None:
        if ticket.job.backend:  # relayed: the gateway call is cancelled
            ticket.interrupt()
        else:
            self.queue.cancel(ticket)

    def drop(self, ticket: Ticket) -> None:
        if ticket.job.backend:
            ticket.dropped = True
            ticket.interrupt()
        else:
            self.queue.drop(ticket)

    async def run_async(self, job: Job) -> Result:
        return await self.submit(job).wait()

    @contextlib.contextmanager
    def watch(self, callback: Callable[[Ticket], None]) -> Iterator[None]:
        """Call `callback(ticket)` for each job submitted from this context (and from the tasks and
        `asyncio.to_thread` calls it starts, which copy the context). The web UI runs a dialect's request
        inside this to learn the tickets that request creates, so that it can show their progress and
        interrupt or skip them: the caller's own jobs, never another user's."""
        token = _watchers.set((*_watchers.get(), callback))
        try:
            yield
        finally:
            _watchers.reset(token)

    async def forward(self, route: Route, style: Style, request: ForwardRequest) -> Forwarded:
        if route.gateway is None:
            raise SdgateError("nothing to forward to: the request's route is local")
        self.check_gateway(route.gateway)
        return await self.relay.forward(route.gateway, Style(style), request)

    def close(self) -> None:
        self.queue.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.relay is not None:
            self.relay.close()


class RateLimit:
    """Requests per window per owner (`[queue] rate_limit = "60/minute"`), counted by the `limits` library in a
    moving window; past it a job gets QueueFull (each style's busy answer) with the seconds until a slot frees."""

    def __init__(self, text: str):
        try:
            self.item = limits.parse(text)
        except ValueError as e:
            raise ConfigError(f"[queue] rate_limit {text!r}: {e}") from None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, owner: str) -> None:
        if self.limiter.hit(self.item, owner):
            return
        reset = self.limiter.get_window_stats(self.item, owner).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        raise QueueFull(f"rate limit reached ({self.item}); try again in {wait} s", retry_after=wait)


def gateway_model(gateway: str, model: str | None) -> ModelInfo:
    title = target(gateway, model)
    return ModelInfo(name=model or gateway, title=title, source=title, kind="gateway")


def create_service(config: Config) -> LocalService:
    if config.threads:
        torch.set_num_threads(config.threads)
    relay = Relay.from_config(config)  # first: a bad [[gateways]] entry fails before any model work
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    engine_kind = cpu_engine(config, device)  # before any model work: a bad value is one line at startup
    aliases = config.all_aliases()
    default = config.model
    if config.demo:
        from .local.tiny import write_tiny_models

        write_tiny_models(Path(config.models_dir))
        default = default or "tiny-sd1"
        aliases = {**DEMO_ALIASES, **aliases}
        log.warning(DEMO_NOTE)
    models = ModelManager(
        Path(config.models_dir),
        default=default,
        aliases={k: v for k, v in aliases.items() if parse_target(v) is None},  # the engine's own models only
        device=device,
        dtype=dtype,
        cache_size=config.model_cache_size,
        cpu_offload=config.offload,
        compile=config.compile,
    )
    if config.ray.enabled:  # this process only checks and batches jobs; the replicas pick their own engine
        engine_kind = "torch"
    engine = LocalEngine(models, config.limits, cpu_engine=engine_kind, threads=config.threads,
                         features=config.features)
    serving = config.serving
    metrics = Metrics(device)  # per service: its own registry
    runner, workers, cluster = engine, 1, None
    if config.ray.enabled:  # the engine runs on Ray Serve replicas; this process keeps the queue (backends/cluster/)
        from .cluster.deploy import Cluster

        cluster = Cluster(config, engine, [metrics])
        runner, workers = cluster.runner, cluster.workers
    queue = JobQueue(runner, max_pending=config.max_pending, max_pending_per_owner=serving.max_pending_per_owner,
                     max_batch=serving.max_batch or DEFAULT_MAX_BATCH.get(device, 4), gather_s=serving.gather_ms / 1000,
                     listeners=[metrics], workers=workers)
    metrics.watch(queue)
    rate_limit = RateLimit(serving.rate_limit) if serving.rate_limit else None
    service = LocalService(config, models, engine, queue, device, dtype, ApiKeys(config.raw), relay, rate_limit,
                           aliases)
    service.metrics = metrics
    service.cluster = cluster
    if relay is not None:
        relay.codec_for = lambda style: registry.dialect(service, style)  # the styles' reverse pairs
    return service
