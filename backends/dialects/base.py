"""The one contract every API style implements (docs/adding-a-style.md).

A dialect is one object per Service (`registry.dialects(service)`), shared by the style's HTTP routes
(webui/routes/<style>.py) and its UI tab (webui/tabs/<style>.py), which call the same entry points:

    request = dialect.parse(operation, body, call)     # the style's own pydantic model, or the style's 4xx
    reply = await dialect.run(operation, request, call) # → Jobs → service.submit → Results → the style's answer

- `operation` names one of the style's generation routes ("txt2img", "image-to-image", "core", ...);
- `call` is the request as the dialect sees it, whoever sent it: the Route decided when it arrived (local or a
  gateway, as a value), the caller's address and headers, path parameters, the URL base for answers;
- `authorize(call, body)` checks the caller's credentials the style's way and returns the owner (None: open);
- `render_error(exc, call)` turns any exception into the style's error shape;
- the relay's reverse pair: `to_upstream(job)` → the requests in this style and the Job fields it cannot carry,
  `from_upstream(job, plan, answers)` → the Result (`call_upstream` sends them; override it when the style
  needs more, as ModelsLab's polling does).

Every Job a dialect builds takes `backend` from `call.route` (`job_for_route`) and its `style` from the dialect:
nothing downstream guesses where a job runs or who made it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..job import LOCAL, GenerationFailed, Job, ModelInfo, ModelNotFound, Result, Route, Style
from ..service import Service
from ..upstream import ForwardRequest, Forwarded, ForwardSpec, Gateway, UpstreamAnswer, UpstreamPlan

BACKEND_HEADER = "X-Sdgate-Backend"  # which gateway answered
SAFETY_HEADER = "X-Sdgate-Safety-Check"  # passed | filtered | not-run: what the safety checker said, or that it did not run
DROPPED_HEADER = "X-Sdgate-Dropped-Fields"  # Job fields the gateway's style could not carry


@dataclass(frozen=True)
class Call:
    """One request as a dialect sees it, from an HTTP route or a UI tab alike."""

    route: Route = LOCAL
    client_host: str | None = None  # the caller's address (the loopback-only rule when a style has no keys)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    params: Mapping[str, str] = field(default_factory=dict)  # path parameters (engine_id, request_id, ...)
    path: str = ""  # the URL path it came to ("" from the UI)
    base_url: str = ""  # "http://host:port/" where the caller reached us, for URLs in answers
    ui: bool = False  # from a UI tab: the UI's own login already let the person in
    owner: str | None = None  # who is asking (backends/keys.py `request_owner`; a tab: its login or session)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    """A dialect's answer, neutral of any web framework: webui turns it into a response (`routes.to_response`)
    and a tab reads `body` directly. `body` is JSON-able data, or bytes of `media_type`."""

    body: Any
    status: int = 200
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def traced(self, results: list[Result]) -> "Reply":
        """Name the gateways that answered and what their styles could not carry (README: Gateways)."""
        backends = list(dict.fromkeys(r.backend for r in results if r.backend))
        dropped = list(dict.fromkeys(name for r in results for name in r.dropped))
        if backends:
            self.headers[BACKEND_HEADER] = ", ".join(backends)
        if dropped:
            self.headers[DROPPED_HEADER] = ", ".join(dropped)
        return self


class Dialect:
    """The base every style's dialect class derives from: the contract (the methods below, under these names)
    and the shared mechanics. A subclass sets `style` and `forward_spec` and implements the abstract methods."""

    style: ClassVar[Style]
    forward_spec: ClassVar[ForwardSpec] = ForwardSpec()
    # the optional Job capabilities (job.FEATURE_FIELDS) this style can ask a gateway for; the relay lists the
    # others a job asked for in Result.dropped
    carries: ClassVar[frozenset[str]] = frozenset()
    operations: ClassVar[tuple[str, ...]] = ()  # what `parse`/`run` take

    def __init__(self, service: Service):
        self.service = service

    # ------------------------------------------------------------------------------------------- requests

    def parse(self, operation: str, body: bytes | Mapping[str, Any], call: Call) -> Any:
        """The request body (raw bytes, or the fields a form or a tab gives) → the style's request model."""
        raise NotImplementedError

    async def run(self, operation: str, request: Any, call: Call) -> Reply:
        """Run a parsed request on `call.route` and answer in the style's shape."""
        raise NotImplementedError

    def authorize(self, call: Call, body: Mapping[str, Any] | None = None) -> str | None:
        """Check the caller's credentials (raise the style's 401/403); the owner's identity, or None."""
        raise NotImplementedError

    def render_error(self, exc: BaseException, call: Call) -> Reply:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- helpers

    def job_for_route(self, job: Job, call: Call) -> Job:
        """Stamp a Job with who made it and where it runs. The dialect's own owner (a key in the body) wins."""
        job.style = self.style
        job.backend = call.route.gateway
        job.owner = job.owner or call.owner
        return job

    def resolve_model(self, name: str | None, call: Call):
        return self.service.resolve_model(name, call.route)

    def resolve_or_demo(self, name: str, call: Call) -> tuple[ModelInfo, str | None]:
        """The model `name` means on the call's route. With --demo, a name that is not installed runs the tiny model
        of the family it suggests ("xl" in it: tiny-sdxl, else tiny-sd1), and the note says so, so the documented
        examples of every gateway work on the demo; otherwise (or on a gateway's route) the ModelNotFound stands."""
        try:
            return self.resolve_model(name, call), None
        except ModelNotFound:
            if not (self.service.demo and call.route.local):
                raise
        fallback = "tiny-sdxl" if "xl" in name.lower() else "tiny-sd1"
        return self.resolve_model(fallback, call), f"model {name!r} is not installed; --demo ran {fallback}"

    # ------------------------------------------------------------------------------------------- relay

    def to_upstream(self, job: Job) -> UpstreamPlan:
        raise NotImplementedError

    def from_upstream(self, job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
        raise NotImplementedError

    async def call_upstream(self, job: Job, gateway: Gateway) -> Result:
        """Send `to_upstream(job)`'s requests in order and read the answers back (off the event loop: decoding
        images is CPU work). An answer the reverse pair cannot read is the gateway's fault."""
        plan = self.to_upstream(job)
        answers = [await gateway.send(request) for request in plan.requests]
        result = await self.read_upstream(gateway, self.from_upstream, job, plan, answers)
        result.dropped = list(plan.dropped)
        result.notes += plan.notes
        return result

    @staticmethod
    async def read_upstream(gateway: Gateway, fn, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except GenerationFailed as e:
            raise gateway.unreadable(e.message) from None

    async def finish_forward(self, answer: UpstreamAnswer, gateway: Gateway,
                             request: ForwardRequest) -> Forwarded | None:
        """A forwarded answer that needs more work before the caller gets it (None: pass it back as it is)."""
        return None
