"""Wires the backend together: models, engine and the one job queue that every route and tab shares."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .config import Config, ConfigError
from .job import Job, Result
from .keys import ApiKeys
from .local.engine import LocalEngine
from .local.models import ModelManager
from .queue import JobQueue, Ticket
from .remote.relay import Relay, backend_of

log = logging.getLogger(__name__)

DEMO_NOTE = "demo model: random weights, images are noise"

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
}

# Callbacks told of every ticket submitted from the current context (see Service.watch). A context variable,
# not a list on the service: each UI event watches only the jobs its own dialect call submits.
_watchers: contextvars.ContextVar[tuple[Callable[[Ticket], None], ...]] = contextvars.ContextVar(
    "sdgate_ticket_watchers", default=()
)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_device(name: str) -> str:
    if name != "auto":
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }
        if not available.get(name, False):
            raise ConfigError(f"--device {name}: no such device on this machine")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        # Half precision where the device is made for it; fp32 on CPU keeps results exact and portable.
        return torch.float16 if device in ("cuda", "mps") else torch.float32
    return DTYPES[name]


@dataclass
class Service:
    config: Config
    models: ModelManager
    engine: LocalEngine
    queue: JobQueue
    device: str
    dtype: torch.dtype
    keys: ApiKeys
    relay: Relay | None = None  # remote gateways (backends/remote), None when none is configured

    def submit(self, job: Job) -> Ticket:
        # a job for a gateway never waits in the device queue; the relay bounds each gateway's concurrency
        backend = backend_of(self.relay, job)
        ticket = self.relay.submit(job, backend) if backend else self.queue.submit(job)
        for watcher in _watchers.get():
            watcher(ticket)
        return ticket

    def run(self, job: Job, timeout: float | None = None) -> Result:
        return self.submit(job).result(timeout)

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

    @property
    def demo(self) -> bool:
        return self.config.demo

    def close(self) -> None:
        self.queue.close()
        if self.relay is not None:
            self.relay.close()


def create_service(config: Config) -> Service:
    if config.threads:
        torch.set_num_threads(config.threads)
    relay = Relay.from_config(config)  # first: a bad [[gateways]] entry fails before any model work
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    aliases = dict(config.model_aliases)
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
        aliases=aliases,
        device=device,
        dtype=dtype,
        cache_size=config.model_cache_size,
    )
    engine = LocalEngine(models, config.limits)
    queue = JobQueue(engine.generate, max_pending=config.max_pending)
    return Service(
        config=config, models=models, engine=engine, queue=queue, device=device, dtype=dtype,
        keys=ApiKeys(config.raw), relay=relay,
    )
