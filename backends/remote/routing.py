"""Which backend a request runs on, as seen from code that knows nothing about gateways.

Two ways lead to a gateway:
- a model/engine alias whose target is `gateway:<name>[/<upstream model>]` (config `[models.aliases]`): the model
  manager resolves it to a remote `ModelInfo` (kind "gateway", title = the target), so the dialect's Job carries
  `model = "gateway:<name>/<model>"` and the service sends the job to the relay;
- a *route context*, entered by a route whose style is routed to a gateway that speaks another style (or by a UI
  tab whose Backend dropdown names a gateway): every Job the dialect submits inside it goes to that gateway, and
  the model names it resolves are taken as upstream names, untouched.

Kept free of heavy imports: the model manager calls `remote_model` on every resolve.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Iterator, Mapping

from ..job import ModelInfo
from .config import parse_target, target


@dataclass
class RouteContext:
    gateway: str | None  # None: only collect what jobs sent elsewhere (by a model alias) report
    style: str | None = None  # the caller's style, when a route entered the context
    backends: list[str] = field(default_factory=list)  # the gateways that answered
    dropped: list[str] = field(default_factory=list)  # Job fields the gateway's style could not carry
    notes: list[str] = field(default_factory=list)

    def add_dropped(self, fields: list[str]) -> None:
        for name in fields:
            if name not in self.dropped:
                self.dropped.append(name)


_current: contextvars.ContextVar[RouteContext | None] = contextvars.ContextVar("sdgate_route", default=None)


def current() -> RouteContext | None:
    return _current.get()


@contextlib.contextmanager
def routed_to(gateway: str | None, style: str | None = None) -> Iterator[RouteContext]:
    """Jobs submitted inside (and in tasks/threads started inside: they copy the context) go to `gateway`."""
    ctx = RouteContext(gateway, style)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextlib.contextmanager
def routed_locally() -> Iterator[None]:
    """The opposite: an explicit "local" choice inside a routed context."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def gateway_model_info(gateway: str, model: str | None) -> ModelInfo:
    title = target(gateway, model)
    return ModelInfo(name=model or gateway, title=title, source=title, kind="gateway")


def remote_model(name: str | None, aliases: Mapping[str, str]) -> ModelInfo | None:
    """What `ModelManager.resolve(name)` returns for a remote model, or None for a local one.

    An alias chain ending in `gateway:...` wins; inside a route context every other name (and None, the default)
    is the gateway's to interpret, so it is passed on as it came."""
    followed, seen = name, set()
    while followed in aliases and followed not in seen:
        seen.add(followed)
        followed = aliases[followed]
    parsed = parse_target(followed)
    if parsed is None and name is not None:
        parsed = parse_target(name)  # a job built from a remote model's title
    if parsed is not None:
        return gateway_model_info(*parsed)
    ctx = _current.get()
    if ctx is not None and ctx.gateway is not None:
        return gateway_model_info(ctx.gateway, name or None)
    return None
