"""ModelsLab's asynchronous side: the results store behind `fetch`, the ETA estimate, and webhook delivery.

A ModelsLab request that outlasts the synchronous wait answers `processing` with an id; the job keeps running and
its outcome lands in a `Record` here, which the fetch routes read until it expires. Everything runs on the server's
event loop; a lock still guards the dict so that a caller on another thread (the UI) sees a consistent store.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ...job import Job, Result, SdgateError

log = logging.getLogger(__name__)

# Ids are ints (clients store them as such). Starting from the clock (tenths of a second since 2023-11) keeps
# them rising across restarts, so a client polling an id from before a restart never gets someone else's job.
_ID_EPOCH = 17_000_000_000


@dataclass
class Record:
    """One ModelsLab request from submission to expiry."""

    id: int
    fetch_path: str  # the family's fetch route, for `fetch_result`
    links: list[str]  # the output URLs the images will have (`future_links`, then `output`)
    meta: dict[str, Any]
    job: Job
    owner: str | None = None  # sha256 of the key that created it, when keys are configured
    base64: bool = False
    webhook: str | None = None
    track_id: Any = None
    created: float = field(default_factory=time.time)
    status: str = "processing"  # processing | success | failed
    response: dict[str, Any] | None = None  # the success body once done
    error: SdgateError | None = None
    webhook_status: str = ""
    finished: float | None = None
    ticket: Any = None  # the queue's Ticket while the job is queued or running
    trace: Result | None = None  # the Result without its images: which gateway answered, what it could not carry
    done: asyncio.Event = field(default_factory=asyncio.Event)


def key_owner(key: str | None) -> str:
    """What the store keeps of a key: a digest, so a key never sits in memory longer than the request."""
    return hashlib.sha256((key or "").encode()).hexdigest()


class JobStore:
    def __init__(self, expiry_s: float = 24 * 3600):
        self.expiry_s = expiry_s
        self._records: dict[int, Record] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(max(1, int(time.time() * 10) - _ID_EPOCH))
        # seconds per unit of work (one step of one 512×512 image), learnt from finished jobs
        self.rate = 0.1

    def new_id(self) -> int:
        return next(self._ids)

    def add(self, record: Record) -> None:
        with self._lock:
            self._records[record.id] = record

    def get(self, request_id: int) -> Record | None:
        self.sweep()
        with self._lock:
            return self._records.get(request_id)

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records.values())

    def in_flight(self) -> int:
        with self._lock:
            return sum(r.status == "processing" for r in self._records.values())

    def sweep(self, now: float | None = None) -> None:
        """Forget finished records older than the expiry (running ones are kept whatever their age)."""
        now = time.time() if now is None else now
        with self._lock:
            for rid in [r.id for r in self._records.values() if r.finished and now - r.finished > self.expiry_s]:
                del self._records[rid]

    # ---------------------------------------------------------------------------------------------- ETA

    @staticmethod
    def units(job: Job) -> float:
        return job.steps * job.image_count * (job.width * job.height) / (512 * 512)

    def observe(self, job: Job, seconds: float) -> None:
        """Learn the rate from a finished job (a moving average, so a model load does not dominate)."""
        units = self.units(job)
        if units > 0 and seconds > 0:
            self.rate = 0.7 * self.rate + 0.3 * (seconds / units)

    def eta(self, record: Record, queue) -> float:
        """Seconds until this record's job should be done: the work ahead of it in the shared queue (the running
        job's remaining part, every waiting job before it) plus its own."""
        ticket = record.ticket
        if ticket is None or ticket.done():
            return 0.0
        work = 0.0
        current = queue.current
        if current is not None:
            work += self.units(current.job) * (1.0 - current.progress.fraction)
        if current is not ticket:
            for waiting in queue.pending():
                work += self.units(waiting.job)
                if waiting is ticket:
                    break
        return round(max(1.0, work * self.rate), 2)


# ------------------------------------------------------------------------------------------------ webhooks


def webhook_problem(url: str, allowed_hosts: list[str]) -> str | None:
    """Why `url` may not be called (None when it may). Only hosts listed in `[modelslab] webhook_hosts` are
    called: a webhook makes this server send requests on a client's behalf, so nothing is allowed by default."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"webhook must be an http(s) URL, got {url!r}"
    host = parts.hostname.lower()
    allowed = {h.lower() for h in allowed_hosts}
    if "*" in allowed or host in allowed:
        return None
    listed = ", ".join(sorted(allowed)) or "none"
    return f"webhook host {host!r} is not allowed (allowed: {listed}; set [modelslab] webhook_hosts in the config)"


async def deliver_webhook(url: str, payload: dict[str, Any], timeout: float) -> str:
    """POST the payload once, best effort; returns what happened, for the record's `webhook_status`. Redirects are
    not followed, so an allowed host cannot bounce the call to one that is not."""
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.post(url, json=payload)
    except httpx.HTTPError as e:
        log.warning("webhook for ModelsLab request %s failed: %s", payload.get("id"), type(e).__name__)
        return f"failed: {type(e).__name__}"
    if 200 <= response.status_code < 300:
        return "sent"
    log.warning("webhook for ModelsLab request %s answered HTTP %s", payload.get("id"), response.status_code)
    return f"failed: HTTP {response.status_code}"
