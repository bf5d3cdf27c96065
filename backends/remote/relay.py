"""The relay: requests answered by remote gateways instead of the local engine.

Two paths (docs/architecture.md):
- **forward**: a request in style S, routed (`[routing] S = "gw"`) to a gateway that speaks S, goes out as the
  caller sent it (path, body, the headers that matter; the caller's auth replaced by the gateway's key) and the
  answer comes back as it is (status, Finish-Reason/Seed/x-request-id..., body). ModelsLab is polled to the end
  and its output files are downloaded and served by us (README: Gateways).
- **translate**: everything else that reaches a gateway does so as a Job (S request → Job → the gateway's style T
  → answer → Result → S response), through style T's reverse pair (`codec_for(T).call_upstream`, a dialect's,
  handed over by backends/assembly.py: this package imports no dialect). The service hands such jobs here instead
  of to the local queue (`LocalService.submit`); what T could not carry is on the Result (`dropped`).

All gateway I/O runs on one event loop in a thread of its own: the HTTP routes (uvicorn's loop), the UI (Gradio's
threads) and tests (their own loops) share the pooled connections, and a synchronous caller can wait on a future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import contextlib
import logging
import threading
import time
from typing import Any, Awaitable, Callable

import httpx

from ..job import GenerationFailed, InvalidRequest, Job, Result, SdgateError, Style
from ..queue import Ticket
from ..upstream import ForwardRequest, Forwarded, UpstreamAnswer, UpstreamCodec, UpstreamRequest
from . import styles
from .client import Deadline, GatewayClient
from .config import GatewayConfig, RelayConfig, canonical_style, parse_relay_config, parse_target
from .errors import RelayInterrupted, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)


class GatewayCall:
    """The `Gateway` (backends/upstream.py) a codec gets for one job or forwarded request: the gateway's client
    under one deadline."""

    def __init__(self, gateway: GatewayConfig, client: GatewayClient, deadline: Deadline):
        self.config = gateway
        self.client = client
        self.deadline = deadline
        self.name = gateway.name
        self.base_url = gateway.url("")
        self.poll_interval = gateway.poll_interval
        self.deadline_s = deadline.seconds

    def seconds_left(self) -> float:
        return self.deadline.left()

    async def send(self, request: UpstreamRequest) -> UpstreamAnswer:
        answer = await self.client.request(request.method, request.path, json=request.json, data=request.data,
                                           files=request.files, headers=request.headers or None,
                                           key_in_body=request.key_in_body, deadline=self.deadline)
        return UpstreamAnswer(answer.status_code, dict(answer.headers), answer.content)

    async def download(self, url: str) -> bytes:
        """An output URL's bytes (our key is sent only if the URL is on the gateway's own origin)."""
        return (await self.client.request("GET", url, deadline=self.deadline)).content

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def unreadable(self, message: str) -> SdgateError:
        return UpstreamError(self.name, message, shape="unreadable")

    def timed_out(self, message: str) -> SdgateError:
        return UpstreamTimeout(self.name, message)

    def redact(self, content: bytes) -> bytes:
        return self.client.redact_bytes(content)


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
    def __init__(self, config: RelayConfig, *, transports: dict[str, httpx.AsyncBaseTransport] | None = None,
                 codec_for: Callable[[Style], UpstreamCodec] | None = None):
        self.config = config
        self.codec_for = codec_for  # each style's reverse pair; set by backends/assembly.py
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
        raw = dict(config.raw or {})
        raw["models"] = {**(raw.get("models") or {}), "aliases": config.all_aliases()}
        relay_config = parse_relay_config(raw)
        return cls(relay_config) if relay_config.gateways else None

    # ---------------------------------------------------------------------------------------- routing

    def gateway(self, name: str) -> GatewayConfig:
        try:
            return self.config.gateways[name]
        except KeyError:
            raise SdgateError(f"no gateway named {name!r}; configured: {', '.join(self.config.gateways) or 'none'}",
                              details={"gateway": name}) from None

    def routed(self, style: Style | str) -> GatewayConfig | None:
        """The gateway `[routing]` sends every request of `style` to, if any."""
        name = self.config.routing.get(canonical_style(style) or str(style))
        return self.config.gateways[name] if name else None

    def choices(self, style: Style | str) -> list[str]:
        style = canonical_style(style) or str(style)
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

    def codec(self, style: Style) -> UpstreamCodec:
        if self.codec_for is None:
            raise SdgateError("the relay has no style codecs (the service was not assembled)")
        return self.codec_for(style)

    def submit(self, job: Job, backend: str) -> RemoteTicket:
        ticket = RemoteTicket(job)
        ticket.task = self._spawn(self._settle(ticket, backend))
        return ticket

    async def _settle(self, ticket: RemoteTicket, backend: str) -> None:
        if not ticket.future.set_running_or_notify_cancel():
            return
        try:
            result = await self.run_job(ticket.job, backend, ticket)
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

    async def run_job(self, job: Job, backend: str, ticket: Ticket | None = None) -> Result:
        """`job` sent to gateway `backend` in the style it speaks (the job's own when it can), answered as a Result."""
        gw = self.gateway(backend)
        parsed = parse_target(job.model)
        upstream_model = (parsed[1] if parsed else job.model) or gw.model
        style = styles.pick_style(gw, job.style)
        call = GatewayCall(gw, self._clients[gw.name], Deadline(gw.deadline))
        started = time.perf_counter()
        async with self._slot(gw, call.deadline):
            if ticket is not None:
                ticket.progress.state, ticket.progress.started_at = "running", time.time()
            result = await self.codec(style).call_upstream(dataclasses.replace(job, model=upstream_model), call)
        result.job = job
        result.backend = gw.name
        carried = self.codec(style).carries
        result.dropped += [name for name in job.features_asked() if name not in carried and name not in result.dropped]
        result.timings["relay"] = time.perf_counter() - started
        result.timings.setdefault("total", result.timings["relay"])
        if result.dropped:
            result.notes.append(f"gateway {gw.name} ({style}) could not carry: {', '.join(result.dropped)}")
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

    async def forward(self, gateway: str, style: Style, request: ForwardRequest) -> Forwarded:
        """The caller's own request, sent to `gateway` (which speaks `style`); awaitable from any loop."""
        gw = self.gateway(gateway)
        return await self._on_loop(self._forward(gw, self.codec(style), request))

    async def _forward(self, gw: GatewayConfig, codec: UpstreamCodec, request: ForwardRequest) -> Forwarded:
        spec = codec.forward_spec
        call = GatewayCall(gw, self._clients[gw.name], Deadline(gw.deadline))
        upstream = spec.upstream_path(request.path) + (f"?{request.query}" if request.query else "")
        sent = {k: v for k, v in request.headers.items() if k.lower() in spec.request_headers}
        async with self._slot(gw, call.deadline):
            try:
                if spec.key_in_body:  # the caller's key in the body is replaced by the gateway's
                    payload = _json_object(request.body)
                    answer = await call.client.request(request.method, upstream, json=payload, key_in_body=True,
                                                       deadline=call.deadline)
                else:
                    answer = await call.client.request(request.method, upstream, content=request.body or None,
                                                       headers=sent, deadline=call.deadline)
            except UpstreamError as e:
                if e.shape in spec.error_shapes and e.raw is not None:
                    status, raw_headers, content = e.raw  # already the caller's shape: pass it through
                    log.info("gateway %s: %s %s -> %s (passed through)", gw.name, request.method, request.path, status)
                    return Forwarded(status, styles.response_headers(raw_headers), content)
                raise
            finished = await codec.finish_forward(
                UpstreamAnswer(answer.status_code, dict(answer.headers), answer.content), call, request)
        if finished is not None:
            return finished
        content = answer.content
        if not answer.headers.get("content-type", "").startswith("image/"):
            content = call.redact(content)
        return Forwarded(answer.status_code, styles.response_headers(answer.headers), content)


def _json_object(body: bytes) -> dict:
    try:
        parsed = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request body is not a JSON object")
    return parsed
