"""What crosses between a dialect and a gateway, as values: the contract between the relay (backends/remote) and
each style's reverse pair (backends/dialects/<style>/upstream.py). Neither side imports the other: the relay is
handed the dialects' codecs when the service is assembled (backends/assembly.py).

- translate: the relay gives a style's codec the Job and a `Gateway` (send, download, sleep, the deadline);
  the codec builds the upstream requests (`to_upstream`: requests + the Job fields the style cannot carry),
  sends them and reads the answers back into a Result (`from_upstream`).
- forward: a request in the gateway's own style goes out as the caller sent it, per the style's `ForwardSpec`;
  a style whose answers need more work (ModelsLab's polling) finishes it in `finish_forward`.
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from .job import Job, Result, SdgateError, Style


# Request headers that mean something to a Stability gateway, v1 and v2beta alike (forwarded as they came; the
# caller's auth never is: the gateway's key replaces it).
STABILITY_HEADERS = ("content-type", "accept", "organization", "stability-client-id", "stability-client-version",
                     "stability-client-user-id")


@dataclass(frozen=True)
class ForwardSpec:
    """How a caller's own request of a style is forwarded to a gateway that speaks it."""

    # our own extra mount points of the style → the upstream path they stand for (the gateway adds its prefix)
    local_prefixes: tuple[tuple[str, str], ...] = ()
    # request headers that mean something upstream (auth never: the gateway's key replaces the caller's)
    request_headers: tuple[str, ...] = ("content-type", "accept")
    key_in_body: bool = False  # ModelsLab: the body's `key` is the caller's; the gateway's replaces it
    error_shapes: tuple[str, ...] = ()  # upstream error shapes that already are this style's: passed through

    def upstream_path(self, path: str) -> str:
        for local, upstream in self.local_prefixes:
            if path == local or path.startswith(local + "/"):
                return upstream + path[len(local):]
        return path


@dataclass
class UpstreamRequest:
    """One HTTP call to a gateway, in its style. `path` is the upstream path (the gateway adds its prefix) or,
    for a follow-up the gateway itself named, an absolute URL on the gateway's own origin."""

    method: str
    path: str
    json: Any = None
    data: dict[str, Any] | None = None
    files: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    key_in_body: bool = False  # the gateway's key goes into the JSON body (ModelsLab)


@dataclass
class UpstreamAnswer:
    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.content)


@dataclass
class UpstreamPlan:
    """`to_upstream`'s answer: the calls to make, in order, and what the style could not carry."""

    requests: list[UpstreamRequest]
    dropped: list[str] = field(default_factory=list)  # Job fields the style has no way to send
    notes: list[str] = field(default_factory=list)  # how fields were carried approximately
    context: Any = None  # the dialect's own working data, handed back to `from_upstream`


@dataclass
class ForwardRequest:
    """A caller's request as it arrived, for forwarding."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    base_url: str = ""  # where the caller reached us, for URLs we serve in the answer


@dataclass
class Forwarded:
    """A gateway's answer to a forwarded request, ready to send back as it is."""

    status: int
    headers: dict[str, str]
    content: bytes


class Gateway(Protocol):
    """The gateway one job or forwarded request goes to, as a dialect's upstream code sees it. Every call
    shares one deadline; failures come back as SdgateErrors the caller's dialect renders."""

    name: str
    base_url: str  # scheme://host[:port] + path prefix
    poll_interval: float
    deadline_s: float  # the whole deadline of this job or forwarded request, in seconds (for messages)

    def seconds_left(self) -> float: ...

    async def send(self, request: UpstreamRequest) -> UpstreamAnswer: ...

    async def download(self, url: str) -> bytes: ...

    async def sleep(self, seconds: float) -> None: ...

    def unreadable(self, message: str) -> SdgateError:
        """An answer the dialect cannot read: the gateway's fault (a 502 to the caller)."""
        ...

    def timed_out(self, message: str) -> SdgateError: ...

    def redact(self, content: bytes) -> bytes:
        """`content` with any echo of the gateway's key replaced."""
        ...


class UpstreamCodec(Protocol):
    """A style's reverse pair as the relay uses it (every Dialect is one)."""

    style: Style
    forward_spec: ForwardSpec

    async def call_upstream(self, job: Job, gateway: Gateway) -> Result: ...

    async def finish_forward(self, answer: UpstreamAnswer, gateway: Gateway,
                             request: ForwardRequest) -> Forwarded | None: ...
