"""The relay: requests answered by remote gateways instead of the local engine.

Two paths (design.md "How a request flows"):
- **forward**: a request in style S, routed (`[routing] S = "gw"`) to a gateway that speaks S, goes out as the
  caller sent it (path, body, the headers that matter; the caller's auth replaced by the gateway's key) and the
  answer comes back as it is (status, Finish-Reason/Seed/x-request-id..., body). ModelsLab is polled to the end
  and its output files are downloaded and served by us (README: Gateways).
- **translate**: everything else that reaches a gateway does so as a Job (S request → Job → the gateway's style T
  → answer → Result → S response), through the dialects' reverse pairs (styles.py). The service hands such jobs
  here instead of to the local queue (`Service.submit`); what T could not carry is reported.

All gateway I/O runs on one event loop in a thread of its own: the HTTP routes (uvicorn's loop), the UI (Gradio's
threads) and tests (their own loops) share the pooled connections, and a synchronous caller can wait on a future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

import httpx

from ..job import GenerationFailed, InvalidRequest, Job, ModelNotFound, Result, SdgateError
from ..queue import Ticket
from . import routing, styles
from .client import Deadline, GatewayClient
from .config import GatewayConfig, RelayConfig, canonical_style, parse_relay_config, parse_target
from .errors import RelayInterrupted, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

DROPPED_HEADER = "X-Sdgate-Dropped-Fields"  # Job fields the gateway's style could not carry
BACKEND_HEADER = "X-Sdgate-Backend"  # which gateway answered


@dataclass
class Forwarded:
    """A gateway's answer to a forwarded request, ready to send back as it is."""

    status: int
    headers: dict[str, str]
    content: bytes


def backend_of(relay: "Relay | None", job: Job) -> str | None:
    """Where the service runs `job`: None for the local queue, else the gateway `relay` sends it to."""
    if relay is not None:
        return relay.backend_for(job)
    if job.backend not in (None, "", "local"):
        raise SdgateError(f"no gateway named {job.backend!r}: no [[gateways]] are configured",
                          details={"gateway": job.backend})
    _refuse_remote_model(job)
    return None


def _refuse_remote_model(job: Job) -> None:
    """A gateway's model on the local engine would fail in the loader with an obscure message: say it here."""
    parsed = parse_target(job.model)
    if parsed is not None:
        raise ModelNotFound(f"model {job.model!r} belongs to gateway {parsed[0]!r} and cannot run locally",
                            details={"model": job.model})


class RemoteTicket(Ticket):
    """A relayed job looks like a queued one to its callers (wait, result, progress, interrupt)."""

    def __init__(self, job: Job):
        super().__init__(job)
        self.task: concurrent.futures.Future | None = None

    def interrupt(self) -> None:
        super().interrupt()
        if self.task is not None:
            self.task.cancel()  # cancels the request to the gateway; the caller gets RelayInterrupted

    def skip(self) -> None:
        self.interrupt()  # one remote call: nothing to skip to


class Relay:
    def __init__(self, config: RelayConfig, *, transports: dict[str, httpx.AsyncBaseTransport] | None = None):
        self.config = config
        self._clients = {name: GatewayClient(gw, transport=(transports or {}).get(name))
                         for name, gw in config.gateways.items()}
        # bound to the relay loop at first use
        self._limits = {name: asyncio.Semaphore(gw.max_concurrency) for name, gw in config.gateways.items()}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sdgate-relay", daemon=True)
        self._thread.start()
        self._closed = False

    @classmethod
    def from_config(cls, config) -> "Relay | None":
        """The relay for a service Config (its `.raw` TOML), or None when no gateway is configured."""
        raw = dict(getattr(config, "raw", None) or {})
        aliases = {**(raw.get("models") or {}).get("aliases", {}), **(getattr(config, "model_aliases", None) or {})}
        raw["models"] = {**(raw.get("models") or {}), "aliases": aliases}
        relay_config = parse_relay_config(raw)
        return cls(relay_config) if relay_config.gateways else None

    # ---------------------------------------------------------------------------------------- routing

    def gateway(self, name: str) -> GatewayConfig:
        try:
            return self.config.gateways[name]
        except KeyError:
            raise SdgateError(f"no gateway named {name!r}; configured: {', '.join(self.config.gateways) or 'none'}",
                              details={"gateway": name}) from None

    def routed(self, style: str) -> GatewayConfig | None:
        """The gateway `[routing]` sends every request of `style` to, if any."""
        name = self.config.routing.get(canonical_style(style) or style)
        return self.config.gateways[name] if name else None

    def choices(self, style: str) -> list[str]:
        style = canonical_style(style) or style
        return [g.name for g in self.config.for_style(style)]

    def status_rows(self) -> list[list[str]]:
        """[name, URL with prefix, styles, how its last request went] per gateway; never a key."""
        rows = []
        for name, gw in self.config.gateways.items():
            last = self._clients[name].last
            if last is None:
                health = "not used yet"
            else:
                text, when = last
                health = f"{text[:160]} ({time.time() - when:.0f} s ago)"
            rows.append([name, gw.url(""), ", ".join(gw.styles), health])
        return rows

    def backend_for(self, job: Job) -> str | None:
        """Where `job` runs: None for the local queue, else a gateway name (and `job.backend` says so)."""
        if job.backend == "local":
            _refuse_remote_model(job)
            return None
        name = job.backend
        if not name:
            ctx = routing.current()
            parsed = parse_target(job.model)
            name = (ctx.gateway if ctx is not None else None) or (parsed[0] if parsed else None)
        if name:
            self.gateway(name)
            job.backend = name
        return name

    # ---------------------------------------------------------------------------------------- the loop

    def _spawn(self, coro: Awaitable[Any]) -> concurrent.futures.Future:
        if self._closed:
            raise SdgateError("the relay is shut down")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _on_loop(self, coro: Awaitable[Any]) -> Any:
        """Run `coro` on the relay loop and await it from whatever loop the caller is on."""
        return await asyncio.wrap_future(self._spawn(coro))

    def close(self) -> None:
        if self._closed:
            return
        done = asyncio.run_coroutine_threadsafe(self._aclose(), self._loop)
        with contextlib.suppress(Exception):
            done.result(5)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    # ---------------------------------------------------------------------------------------- jobs

    def submit(self, job: Job, backend: str) -> RemoteTicket:
        ticket = RemoteTicket(job)
        ctx = routing.current()  # captured here: the relay loop runs in a context of its own
        ticket.task = self._spawn(self._settle(ticket, backend, ctx))
        return ticket

    async def _settle(self, ticket: RemoteTicket, backend: str, ctx: routing.RouteContext | None) -> None:
        if not ticket.future.set_running_or_notify_cancel():
            return
        try:
            result = await self.run_job(ticket.job, backend, ctx, ticket)
        except asyncio.CancelledError:
            ticket.future.set_exception(RelayInterrupted(f"interrupted before gateway {backend} answered"))
        except SdgateError as e:
            ticket.future.set_exception(e)
        except Exception as e:  # a bug must still settle the caller's wait
            log.exception("relayed job %s failed", ticket.id)
            ticket.future.set_exception(GenerationFailed(f"relay to {backend} failed: {type(e).__name__}: {e}"))
        else:
            ticket.future.set_result(result)
        finally:
            ticket.progress.state = "done"

    async def run_job(self, job: Job, backend: str, ctx: routing.RouteContext | None = None,
                      ticket: Ticket | None = None) -> Result:
        gw = self.gateway(backend)
        parsed = parse_target(job.model)
        upstream_model = (parsed[1] if parsed else job.model) or gw.model
        style = styles.pick_style(gw, canonical_style(job.source) or (ctx.style if ctx else None))
        out = styles.Outbound(styles.with_model(job, upstream_model), gw, self._clients[gw.name],
                              Deadline(gw.deadline))
        started = time.perf_counter()
        async with self._slot(gw, out.deadline):
            if ticket is not None:
                ticket.progress.state, ticket.progress.started_at = "running", time.time()
            result = await styles.RUNNERS[style](out)
        result.job = job
        result.timings["relay"] = time.perf_counter() - started
        result.timings.setdefault("total", result.timings["relay"])
        if ctx is not None and gw.name not in ctx.backends:
            ctx.backends.append(gw.name)
        if out.dropped:
            result.notes.append(f"gateway {gw.name} ({style}) could not carry: {', '.join(out.dropped)}")
            if ctx is not None:
                ctx.add_dropped(out.dropped)
        log.info("job %s relayed to %s as %s in %.2f s", job.id, gw.name, style, result.timings["relay"])
        return result

    @contextlib.asynccontextmanager
    async def _slot(self, gw: GatewayConfig, deadline: Deadline):
        """One of the gateway's max_concurrency slots, waited for inside the deadline."""
        limit = self._limits[gw.name]
        try:
            await asyncio.wait_for(limit.acquire(), max(0.0, deadline.left()))
        except asyncio.TimeoutError:
            raise UpstreamTimeout(gw.name, f"all {gw.max_concurrency} connections stayed busy for the deadline "
                                  f"of {deadline.seconds:g} s") from None
        try:
            yield
        finally:
            limit.release()

    # ---------------------------------------------------------------------------------------- forwarding

    async def forward(self, gateway: str, style: str, method: str, path: str, query: str,
                      headers: dict[str, str], body: bytes,
                      store_output: Callable[[bytes, int], str] | None = None) -> Forwarded:
        """The caller's own request, sent to `gateway` (which speaks `style`); awaitable from any loop."""
        return await self._on_loop(self._forward(self.gateway(gateway), style, method, path, query, headers,
                                                 body, store_output))

    async def _forward(self, gw: GatewayConfig, style: str, method: str, path: str, query: str,
                       headers: dict[str, str], body: bytes, store_output) -> Forwarded:
        spec = styles.FORWARD[style]
        client = self._clients[gw.name]
        deadline = Deadline(gw.deadline)
        upstream = styles.upstream_path(style, path) + (f"?{query}" if query else "")
        sent = {k: v for k, v in headers.items() if k.lower() in spec.request_headers}
        async with self._slot(gw, deadline):
            try:
                if spec.key_in_body:
                    return await self._forward_modelslab(gw, client, deadline, method, upstream, body, store_output)
                answer = await client.request(method, upstream, content=body or None, headers=sent,
                                              deadline=deadline)
            except UpstreamError as e:
                if e.shape in spec.error_shapes and e.raw is not None:
                    status, raw_headers, content = e.raw  # already the caller's shape: pass it through
                    log.info("gateway %s: %s %s -> %s (passed through)", gw.name, method, path, status)
                    return Forwarded(status, styles.response_headers(raw_headers), content)
                raise
        content = answer.content
        if not answer.headers.get("content-type", "").startswith("image/"):
            content = client.redact_bytes(content)
        return Forwarded(answer.status_code, styles.response_headers(answer.headers), content)

    async def _forward_modelslab(self, gw, client, deadline, method, upstream, body, store_output) -> Forwarded:
        """ModelsLab: the caller's body with the gateway's key; `processing` polled to `success`; output URLs
        downloaded and served by us (a URL on the gateway's CDN may be unreachable for the caller, or expire)."""
        payload = styles.modelslab_body(body)
        if payload is None:
            raise InvalidRequest("the request body is not a JSON object")
        answer = await client.request(method, upstream, json=payload, key_in_body=True, deadline=deadline)
        out = styles.Outbound(Job(), gw, client, deadline)
        try:
            first = json.loads(answer.content)
        except (ValueError, UnicodeDecodeError):
            first = None
        if not isinstance(first, dict):
            raise UpstreamError(gw.name, "answered something that is not a JSON object",
                                http_status=answer.status_code, shape="text")
        if first.get("status") != "processing" and "output" not in first:  # system_details, models lists...
            return Forwarded(answer.status_code, styles.response_headers(answer.headers),
                             client.redact_bytes(answer.content))
        finished = await styles.poll_modelslab(out, answer.content)
        reply = dict(first) if first.get("status") == "success" else {"status": "success", "id": finished.id}
        reply.update(output=list(finished.output), meta=finished.meta or reply.get("meta", {}))
        if finished.generation_time is not None:
            reply["generationTime"] = finished.generation_time
        for stale in ("fetch_result", "future_links", "eta", "messege", "message", "tip_1"):
            reply.pop(stale, None)
        if store_output is not None:
            urls = []
            for i, entry in enumerate(finished.output):
                if entry.startswith(("http://", "https://")):
                    data = await styles.download(out, entry)
                    entry = await asyncio.to_thread(store_output, data, i)
                urls.append(entry)
            reply["output"] = urls
            reply["proxy_links"] = [u for u in urls if u.startswith(("http://", "https://"))]
        content = client.redact_bytes(json.dumps(reply).encode())
        return Forwarded(200, {"content-type": "application/json"}, content)

    # ---------------------------------------------------------------------------------------- UI

    @contextlib.contextmanager
    def use_backend(self, backend: str | None, style: str | None = None) -> Iterator[routing.RouteContext | None]:
        """Run a dialect call on `backend` ("local"/None: this server; else a gateway): the UI's Backend choice."""
        if backend in (None, "", "local"):
            with routing.routed_locally():
                yield None
            return
        self.gateway(backend)
        with routing.routed_to(backend, canonical_style(style or "") or style) as ctx:
            yield ctx
