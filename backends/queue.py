"""The one job queue: every UI tab and API route submits here, and one worker thread owns the device.

Two threads calling one diffusers pipeline give silently wrong images (shared scheduler state), so all generation
runs on the worker. What it adds to a plain FIFO (docs/architecture.md, "Serving"):

- **Owners, served round-robin.** Every job has an owner (an API key, a login, an address). The worker always
  serves the owner it served least recently, one batch at a time: a job of 40 batches yields after each one, so
  another owner's single job starts within one pipeline call. Within one owner, jobs run in order.
- **Dynamic batching.** When the worker picks a job's next batch, waiting jobs that can share its pipeline call
  (the runner's `batch_key`: same model, LoRAs, size, steps, sampler, CFG, text-to-image) join it, up to
  `max_batch` images, with their own seeds and generators: each image is what its job gets alone. Nothing waits
  for batch-mates unless `gather_s` says so, so a lone request pays nothing.
- **Bounds.** `max_pending` waiting jobs in all and `max_pending_per_owner` per owner; beyond them `submit` raises
  QueueFull with a `retry_after` estimate, which each dialect answers in its style's busy shape.
- **Ids and steering.** Every ticket is found by its job id (`get`), with state, position and ETA; `cancel`
  removes a waiting job, interrupts a running one (its batch-mates go on undisturbed), and `drop`s it when its
  caller went away.

Callers get a `Ticket`: a future for the Result plus live progress and the interrupt/skip switches for that job.

With `workers > 1` (the Ray Serve runner, backends/cluster/: one worker per replica) several batches run at once,
each on its own worker thread; the order they are picked in is the same fair order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Hashable, Iterable, Protocol

from .job import GenerationFailed, InvalidRequest, Job, JobCancelled, Progress, QueueFull, Result, SdgateError

log = logging.getLogger(__name__)

FINISHED_KEPT = 500  # finished tickets kept for /jobs/{id}
IMAGES_KEPT = 32  # of those, the newest whose images /jobs/{id}/images/{n} still serves (memory)
DEFAULT_STEP_SECONDS = 0.05  # per step and megapixel-image, until a call has been measured


class Ticket:
    """A submitted job. The engine sees it as the job's control: it reads `interrupted`/`skipped` and
    calls `report()`; callers wait on `result()` / `wait()` and read `progress`."""

    def __init__(self, job: Job):
        self.job = job
        self.progress = Progress(job_id=job.id, steps=job.steps, batch_count=job.n_iter)
        self.future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        self.interrupted = False
        self.skipped = False
        self.dropped = False  # its caller went away: nobody reads the result
        self.submitted_at = time.time()
        self.finished_at: float | None = None
        self.outcome: str | None = None  # done | failed | cancelled, once finished
        self.eta: float | None = None  # seconds until done, as last estimated
        self.run: Any = None  # the runner's per-job state, once it has started
        self.batch_key: Hashable | None = None
        self.images_forgotten = False

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def owner(self) -> str:
        return self.job.owner or "anonymous"

    @property
    def state(self) -> str:
        """queued | running | done | failed | cancelled"""
        if self.outcome is None and self.future.done():  # a relayed ticket settles its future only
            self.outcome = ("cancelled" if self.future.cancelled() or self.dropped
                            else "failed" if self.future.exception() is not None else "done")
        return self.outcome or ("running" if self.progress.state == "running" else "queued")

    # --- switches (any thread) ---
    def interrupt(self) -> None:
        """Stop now and return the images that exist (a batch of its own is decoded as it stands; a batch shared
        with other jobs runs to its end, so theirs are undisturbed, and this job stops after it)."""
        self.interrupted = True

    def skip(self) -> None:
        """Stop the running batch (keeping its partial images) and go on with the next one."""
        self.skipped = True

    # --- called by the engine on the worker thread ---
    def report(self, step: int, steps: int, batch_no: int, preview=None) -> None:
        p = self.progress
        p.step, p.steps, p.batch_no = step, steps, batch_no
        if preview is not None:
            p.preview, p.preview_step = preview, step

    # --- waiting ---
    def result(self, timeout: float | None = None) -> Result:
        return self.future.result(timeout)

    async def wait(self) -> Result:
        return await asyncio.wrap_future(self.future)

    def done(self) -> bool:
        return self.future.done()

    def forget_images(self) -> None:
        """Let a long-finished job's images go (its caller has had them); its state stays known."""
        if self.future.done() and not self.future.cancelled() and self.future.exception() is None:
            self.future.result().images = []
            self.images_forgotten = True


class Runner(Protocol):
    """What the queue needs from the engine (backends/local/engine.py `LocalEngine`)."""

    def batch_key(self, job: Job) -> Hashable | None:
        """Jobs with equal keys can share one pipeline call; None: this job runs alone."""
        ...

    def start(self, job: Job) -> Any:
        """Check the job and make its run state (`.done`, `.result()`); raises the job's own error."""
        ...

    def run_batch(self, members: list[tuple[Any, Ticket]]) -> None:
        """Run the next batch of each (run, control) in as few pipeline calls as their prompts allow."""
        ...


class Listener(Protocol):
    """Told what the queue does (backends/metrics.py counts it); every method is optional."""

    def on_submit(self, ticket: Ticket) -> None: ...

    def on_finish(self, ticket: Ticket) -> None: ...

    def on_call(self, tickets: list[Ticket], images: int, seconds: float, steps: int) -> None: ...


class JobQueue:
    def __init__(self, runner: Runner, *, max_pending: int = 64, max_pending_per_owner: int = 16,
                 max_batch: int = 8, gather_s: float = 0.0, listeners: Iterable[Any] = (), workers: int = 1):
        self.runner = runner
        self.max_pending = max_pending
        self.max_pending_per_owner = max_pending_per_owner
        self.max_batch = max(1, max_batch)
        self.gather_s = gather_s
        self.listeners = list(listeners)
        self._waiting: dict[str, collections.deque[Ticket]] = {}  # owner → its tickets, in order
        self._last_served: dict[str, float] = {}  # owner → when its last batch started
        self._running: list[Ticket] = []  # the tickets of every batch running now (one per worker)
        self._tickets: collections.OrderedDict[str, Ticket] = collections.OrderedDict()  # id → ticket
        self._cond = threading.Condition()
        self._closed = False
        self._step_seconds = DEFAULT_STEP_SECONDS  # per step and megapixel-image, measured (moving average)
        self.calls = 0  # pipeline batches run (for bench/serving.py and the tests)
        self._workers = [threading.Thread(target=self._work, name=f"sdgate-worker-{n}", daemon=True)
                         for n in range(max(1, workers))]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------------------------------------ submitting

    def submit(self, job: Job) -> Ticket:
        ticket = Ticket(job)
        try:
            ticket.batch_key = self.runner.batch_key(job)
        except Exception:  # noqa: BLE001 - an unbatchable job runs alone; its real error comes from `start`
            ticket.batch_key = None
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down", retry_after=30)
            known = self._tickets.get(job.id)
            if known is not None and not known.done():
                raise InvalidRequest(f"a job with id {job.id!r} is already queued or running",
                                     details={"id": job.id})
            waiting = sum(len(q) for q in self._waiting.values())
            mine = sum(1 for t in self._waiting.get(ticket.owner, ()) if t.run is None)
            if waiting >= self.max_pending:
                raise QueueFull(f"the queue is full ({self.max_pending} jobs waiting); try again later",
                                retry_after=self.retry_after())
            if mine >= self.max_pending_per_owner:
                raise QueueFull(f"you have {mine} job(s) waiting, the most one caller may queue "
                                f"({self.max_pending_per_owner}); try again when one has started",
                                retry_after=self.retry_after())
            self._waiting.setdefault(ticket.owner, collections.deque()).append(ticket)
            self._remember(ticket)
            self._estimate()
            self._cond.notify()
        self._tell("on_submit", ticket)
        return ticket

    def run(self, job: Job, timeout: float | None = None) -> Result:
        """Submit and wait (for synchronous callers)."""
        return self.submit(job).result(timeout)

    async def run_async(self, job: Job) -> Result:
        return await self.submit(job).wait()

    # ------------------------------------------------------------------------------------------ looking

    def get(self, job_id: str) -> Ticket | None:
        with self._cond:
            return self._tickets.get(job_id)

    @property
    def current(self) -> Ticket | None:
        """The first job of the running call (A1111's single "current job")."""
        running = self._running
        return running[0] if running else None

    def pending(self) -> list[Ticket]:
        """Waiting tickets (those between two batches too) in the order they will next run."""
        with self._cond:
            return [t for t, _ in self._order()]

    def position(self, ticket: Ticket) -> int:
        """Pipeline calls ahead of this job's next batch (0 when it runs or is next)."""
        return ticket.progress.position

    def track(self, ticket: Ticket) -> None:
        """Know a ticket that runs elsewhere (a relayed job) by its id, for /jobs/{id}."""
        with self._cond:
            self._remember(ticket)

    def tickets_of(self, owner: str | None, *, admin: bool = False) -> list[Ticket]:
        """The running, then waiting, tickets of `owner` (every one for an admin), in the order they run."""
        with self._cond:
            mine = [t for t in [*self._running, *(t for t, _ in self._order())] if admin or t.owner == owner]
        return list(dict.fromkeys(mine))

    def depth(self) -> dict[str, int]:
        """{"running": jobs in the running call, "waiting": jobs waiting, "owners": owners with waiting jobs}."""
        with self._cond:
            return {"running": len(self._running), "waiting": sum(len(q) for q in self._waiting.values()),
                    "owners": sum(1 for q in self._waiting.values() if q)}

    def cancel(self, ticket: Ticket) -> bool:
        """Remove a job that has not started (True); interrupt one that has (its images so far are kept)."""
        with self._cond:
            queue = self._waiting.get(ticket.owner)
            if queue is not None and ticket in queue and ticket.run is None:
                queue.remove(ticket)
                ticket.outcome, ticket.finished_at = "cancelled", time.time()
                ticket.progress.state = "done"
                # an error, not future.cancel(): a waiting caller gets its style's answer, not a CancelledError
                ticket.future.set_exception(JobCancelled(f"job {ticket.id} was cancelled before it started"))
                self._estimate()
                finished = True
            else:
                finished = False
        if finished:
            self._tell("on_finish", ticket)
            return True
        ticket.interrupt()
        with self._cond:  # between two batches: finish now with what it has
            queue = self._waiting.get(ticket.owner)
            if queue is not None and ticket in queue:
                queue.remove(ticket)
            else:
                return False
        self._finish(ticket)
        return False

    def drop(self, ticket: Ticket) -> None:
        """The caller went away: a waiting job never reaches the pipeline, a running one stops (alone) or runs
        on unread (in a shared batch: its batch-mates' images must not change)."""
        ticket.dropped = True
        self.cancel(ticket)

    def interrupt_current(self) -> None:
        for t in list(self._running):
            t.interrupt()

    def stop_accepting(self) -> None:
        """The server is going down: refuse new jobs, answer the waiting ones with a clean "shutting down"
        error, and interrupt the running ones so their callers get partial images before connections close.
        Returns at once (safe in a signal handler)."""
        with self._cond:
            self._closed = True
            waiting = [t for q in self._waiting.values() for t in q]
            self._waiting.clear()
            self._cond.notify_all()
        for t in waiting:
            if not t.future.done():
                t.future.set_exception(QueueFull("the server is shutting down", retry_after=30))
            t.outcome, t.progress.state = "cancelled", "done"
        self.interrupt_current()

    def close(self, timeout: float = 10.0) -> None:
        self.stop_accepting()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            with self._cond:
                idle = not any(self._waiting.values())
                while not self._closed and not any(self._waiting.values()):
                    self._cond.wait()
                if self._closed:
                    return
            if idle and self.gather_s > 0:
                time.sleep(self.gather_s)  # woken from idle: let batch-mates arrive ([queue] gather_ms)
            with self._cond:
                members = self._pick()
                self._running = [*self._running, *members]
                for t in members:
                    t.progress.position = 0
                self._estimate()
            if members:
                try:
                    self._execute(members)
                finally:
                    with self._cond:
                        self._running = [t for t in self._running if t not in members]

    def _pick(self) -> list[Ticket]:
        """The next batch: the least recently served owner's next job, then batch-mates with its key, taken
        round-robin across owners, up to `max_batch` images. Called with the lock held."""
        order = self._owners()
        if not order:
            return []
        head = self._waiting[order[0]].popleft()
        self._last_served[order[0]] = time.monotonic()
        members, images = [head], head.job.batch_size
        if head.batch_key is not None:
            taken = True
            while taken and images < self.max_batch:
                taken = False
                for owner in order:
                    queue = self._waiting[owner]
                    mate = next((t for t in queue if t.batch_key == head.batch_key and not t.interrupted), None)
                    if mate is None or images + mate.job.batch_size > self.max_batch:
                        continue
                    queue.remove(mate)
                    members.append(mate)
                    images += mate.job.batch_size
                    taken = True
        return members

    def _owners(self) -> list[str]:
        """Owners with waiting jobs, least recently served first (never served: by arrival)."""
        owners = [o for o, q in self._waiting.items() if q]
        return sorted(owners, key=lambda o: self._last_served.get(o, float("-inf")))

    def _execute(self, members: list[Ticket]) -> None:
        started = []
        for t in members:
            if t.run is None:
                if not t.future.set_running_or_notify_cancel():
                    continue  # cancelled while it was being picked
                t.progress.state, t.progress.started_at = "running", time.time()
                try:
                    t.run = self.runner.start(t.job)
                except Exception as e:  # noqa: BLE001 - this job's own problem: it alone fails
                    self._fail(t, e)
                    continue
            else:
                t.progress.state = "running"
            started.append(t)
        if not started:
            return
        began = time.perf_counter()
        try:
            self.runner.run_batch([(t.run, t) for t in started])
        except Exception as e:  # noqa: BLE001 - the call failed: every job in it fails, the worker goes on
            for t in started:
                self._fail(t, e)
            return
        seconds = time.perf_counter() - began
        self.calls += 1
        self._measure(started, seconds)
        self._tell("on_call", started, sum(t.job.batch_size for t in started), seconds, started[0].job.steps)
        with self._cond:
            again = []
            for t in started:
                if t.run.done or t.interrupted or t.dropped:
                    continue
                again.append(t)  # its next batch waits for its owner's next turn, ahead of the owner's others
            for t in reversed(again):
                self._waiting.setdefault(t.owner, collections.deque()).appendleft(t)
                t.skipped = False
        for t in started:
            if t not in again:
                self._finish(t)

    def _finish(self, ticket: Ticket) -> None:
        try:
            result = ticket.run.result()
            result.timings["queue_wait"] = (ticket.progress.started_at or ticket.submitted_at) - ticket.submitted_at
        except Exception as e:  # noqa: BLE001
            self._fail(ticket, e)
            return
        ticket.outcome = "cancelled" if ticket.dropped else "done"
        ticket.finished_at, ticket.progress.state = time.time(), "done"
        if not ticket.future.done():
            ticket.future.set_result(result)
        self._tell("on_finish", ticket)

    def _fail(self, ticket: Ticket, error: BaseException) -> None:
        if not isinstance(error, SdgateError):
            log.error("job %s failed", ticket.id, exc_info=error)
            error = GenerationFailed(f"generation failed: {type(error).__name__}: {error}")
        ticket.outcome, ticket.finished_at, ticket.progress.state = "failed", time.time(), "done"
        if not ticket.future.done():
            ticket.future.set_exception(error)
        self._tell("on_finish", ticket)

    # ------------------------------------------------------------------------------------------ estimates

    @staticmethod
    def _work_units(ticket: Ticket, batches: int = 1) -> float:
        """Steps × megapixel-images of `batches` of this job (what a call's time grows with)."""
        job = ticket.job
        return batches * job.steps * job.width * job.height * job.batch_size / 1e6

    def _measure(self, tickets: list[Ticket], seconds: float) -> None:
        units = sum(self._work_units(t) for t in tickets)
        if units > 0:
            self._step_seconds = 0.7 * self._step_seconds + 0.3 * (seconds / units)

    def _order(self) -> list[tuple[Ticket, int]]:
        """Each waiting ticket with the number of batches that will run before its next one, simulating the
        round-robin (batching ignored: the estimate errs late). Called with the lock held."""
        queues = {o: collections.deque(self._waiting[o]) for o in self._owners()}
        left = {t.id: t.job.n_iter - getattr(t.run, "batch_no", 0) for q in queues.values() for t in q}
        rotation = collections.deque(queues)
        order, seen, served = [], set(), 0
        while rotation:
            owner = rotation.popleft()
            queue = queues[owner]
            ticket = queue[0]
            if ticket.id not in seen:
                seen.add(ticket.id)
                order.append((ticket, served))
            served += 1
            left[ticket.id] -= 1
            if left[ticket.id] <= 0:
                queue.popleft()
            if queue:
                rotation.append(owner)
        return order

    def _estimate(self) -> None:
        """Refresh every waiting ticket's position and ETA. Called with the lock held."""
        running = 0.0
        for t in self._running:
            p = t.progress
            remaining = 1.0 - (p.step / p.steps if p.steps else 0.0)
            running = max(running, self._work_units(t) * remaining * self._step_seconds)
            t.eta = running + self._work_units(t, max(0, t.job.n_iter - p.batch_no - 1)) * self._step_seconds
        ahead = running
        busy = 1 if self._running else 0
        parallel = len(self._workers)  # batches that run at once (replicas); the estimate assumes they share evenly
        for ticket, calls in self._order():
            ticket.progress.position = calls // parallel + busy
            done = getattr(ticket.run, "batch_no", 0)
            ticket.eta = ahead + self._work_units(ticket, ticket.job.n_iter - done) * self._step_seconds
            ahead += self._work_units(ticket) * self._step_seconds / parallel

    @property
    def closed(self) -> bool:
        return self._closed

    def retry_after(self) -> int:
        """Seconds a refused caller should wait: until the soonest waiting job should be done."""
        etas = [t.eta for q in self._waiting.values() for t in q if t.eta is not None]
        return max(1, min(300, int(min(etas)) + 1)) if etas else 5

    def refresh(self) -> None:
        """Recompute positions and ETAs (a status answer calls it for fresh figures)."""
        with self._cond:
            self._estimate()

    def _remember(self, ticket: Ticket) -> None:
        self._tickets[ticket.id] = ticket
        self._tickets.move_to_end(ticket.id)
        finished = [t for t in self._tickets.values() if t.done()]
        for t in finished[: max(0, len(finished) - FINISHED_KEPT)]:
            del self._tickets[t.id]
        for t in finished[: max(0, len(finished) - IMAGES_KEPT)]:
            t.forget_images()

    def _tell(self, event: str, *args: Any) -> None:
        for listener in self.listeners:
            fn: Callable | None = getattr(listener, event, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a metrics bug must not stop the queue
                log.exception("queue listener %s.%s failed", type(listener).__name__, event)
