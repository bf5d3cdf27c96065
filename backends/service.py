"""The Service: the one object every dialect, route and tab talks to, declared as an interface.

Dialects see the server only through this Protocol (it lives in the core layer, with the contract); the concrete
service that wires the local engine and the relay together is `backends/assembly.py`. Tests use that real service,
or a fake that declares this interface, so production code never guesses at what a service has.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Mapping, Protocol, runtime_checkable

from .config import Config
from .job import Job, ModelInfo, Result, Route, Style
from .keys import ApiKeys
from .queue import JobQueue, Ticket
from .upstream import ForwardRequest, Forwarded

DEMO_NOTE = "demo model: random weights, images are noise"


class ModelCatalog(Protocol):
    """The local models (backends/local/models.py `ModelManager`)."""

    aliases: Mapping[str, str]
    default: str | None  # the model a request naming none gets (A1111's "current checkpoint")

    def list(self) -> list[ModelInfo]: ...

    def refresh(self) -> list[ModelInfo]: ...

    def resolve(self, name: str | None) -> ModelInfo: ...

    def loaded(self) -> list[str]: ...

    def unload(self, name: str | None = None) -> None: ...

    def get(self, name: str | None = None) -> Any: ...


@runtime_checkable
class Service(Protocol):
    config: Config
    keys: ApiKeys
    device: str
    dtype: Any
    models: ModelCatalog
    queue: JobQueue

    @property
    def demo(self) -> bool: ...

    # ---------------------------------------------------------------------------------------- where it runs

    def route_for(self, style: Style) -> Route:
        """The route `[routing]` gives every request of `style` (local when none)."""
        ...

    def gateways(self, style: Style) -> list[str]:
        """The configured gateways that serve `style`, directly or translated (the UI's Backend choices)."""
        ...

    def gateway_rows(self) -> list[list[str]]:
        """[name, URL with prefix, styles, health] per gateway, for Settings; never a key."""
        ...

    def resolve_model(self, name: str | None, route: Route) -> ModelInfo:
        """The model a request names, on its route: a gateway's name is the gateway's to read (a `gateway`-kind
        ModelInfo); locally an alias may still point at a gateway (`gateway:<name>/<model>`)."""
        ...

    # ---------------------------------------------------------------------------------------- jobs

    def validate(self, job: Job) -> None:
        """The engine's checks (limits, sampler, LoRAs) for a job that runs here; nothing for a gateway's."""
        ...

    def lora_names(self) -> list[str]: ...

    def vae_names(self) -> list[str]:
        """The VAEs in models/VAE/ (files and diffusers folders), by the names a request uses."""
        ...

    def embedding_names(self) -> list[str]:
        """The textual-inversion embeddings in models/embeddings/, by the names a prompt uses."""
        ...

    def vae_files(self) -> list[tuple[str, str]]:
        """(name, path) of each VAE `vae_names` lists, in the same order (A1111's /sd-vae)."""
        ...

    def embedding_listing(self) -> dict[str, dict]:
        """A1111's /embeddings: {"loaded": {name: info}, "skipped": {...}}, loaded = those that fit the current
        model's text encoders (it is loaded to know them); every one loaded when there is no local model."""
        ...

    def submit(self, job: Job) -> Ticket: ...

    def run(self, job: Job, timeout: float | None = None) -> Result: ...

    async def run_async(self, job: Job) -> Result: ...

    def ticket(self, job_id: str) -> Ticket | None:
        """A job by id, waiting, running or recently finished (local or relayed)."""
        ...

    def cancel(self, ticket: Ticket) -> None:
        """Remove a waiting job; interrupt a running one (its images so far are kept)."""
        ...

    def drop(self, ticket: Ticket) -> None:
        """The caller went away: a waiting job never runs; a running one stops unless it shares a batch."""
        ...

    def watch(self, callback: Callable[[Ticket], None]) -> ContextManager[None]:
        """Tell `callback` of each ticket submitted from this context (a UI event learns its own jobs)."""
        ...

    async def forward(self, route: Route, style: Style, request: ForwardRequest) -> Forwarded:
        """A caller's own request, sent as it is to `route.gateway` (which speaks `style`)."""
        ...

    def close(self) -> None: ...
