"""The one job queue: every UI tab and API route submits here, and one worker thread owns the device.

Two threads calling one diffusers pipeline give silently wrong images (shared scheduler state), so all
generation runs on the worker. Callers get a `Ticket`: a future for the Result plus live progress and the
interrupt/skip switches for that job alone.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from typing import Callable

from .job import GenerationFailed, Job, Progress, QueueFull, Result, SdgateError

log = logging.getLogger(__name__)


class Ticket:
    """A submitted job. The engine sees it as the job's control: it reads `interrupted`/`skipped` and
    calls `report()`; callers wait on `result()` / `wait()` and read `progress`."""

    def __init__(self, job: Job):
        self.job = job
        self.progress = Progress(job_id=job.id, steps=job.steps, batch_count=job.n_iter)
        self.future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        self.interrupted = False
        self.skipped = False
        self.submitted_at = time.time()

    @property
    def id(self) -> str:
        return self.job.id

    # --- switches (any thread) ---
    def interrupt(self) -> None:
        """Stop now and return the images that exist (the running batch is decoded as it stands)."""
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


class JobQueue:
    """FIFO with a bound; `run_job(job, ticket) -> Result` does the work on the single worker thread."""

    def __init__(self, run_job: Callable[[Job, Ticket], Result], max_pending: int = 64):
        self._run_job = run_job
        self.max_pending = max_pending
        self._pending: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._current: Ticket | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="sdgate-worker", daemon=True)
        self._worker.start()

    # --- submitting ---
    def submit(self, job: Job) -> Ticket:
        ticket = Ticket(job)
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"the queue is full ({self.max_pending} jobs waiting); try again later")
            self._pending.append(ticket)
            ticket.progress.position = len(self._pending) - 1 + (self._current is not None)
            self._cond.notify()
        return ticket

    def run(self, job: Job, timeout: float | None = None) -> Result:
        """Submit and wait (for synchronous callers)."""
        return self.submit(job).result(timeout)

    async def run_async(self, job: Job) -> Result:
        return await self.submit(job).wait()

    # --- looking and steering ---
    @property
    def current(self) -> Ticket | None:
        return self._current

    def pending(self) -> list[Ticket]:
        with self._cond:
            return list(self._pending)

    def position(self, ticket: Ticket) -> int:
        """Jobs ahead of this one (0 when it runs or is next)."""
        with self._cond:
            try:
                return self._pending.index(ticket) + (self._current is not None)
            except ValueError:
                return 0

    def cancel(self, ticket: Ticket) -> bool:
        """Drop a job that has not started; a running one is interrupted instead."""
        with self._cond:
            if ticket in self._pending:
                self._pending.remove(ticket)
                ticket.future.cancel()
                return True
        ticket.interrupt()
        return False

    def interrupt_current(self) -> None:
        if (t := self._current) is not None:
            t.interrupt()

    def skip_current(self) -> None:
        if (t := self._current) is not None:
            t.skip()

    def stop_accepting(self) -> None:
        """The server is going down: refuse new jobs, answer the waiting ones with a clean "shutting down"
        error, and interrupt the running one so its caller gets its partial images before connections close.
        Returns at once (safe in a signal handler)."""
        with self._cond:
            self._closed = True
            for t in self._pending:
                if not t.future.done():
                    t.future.set_exception(QueueFull("the server is shutting down"))
                t.progress.state = "done"
            self._pending.clear()
            self._cond.notify_all()
        self.interrupt_current()

    def close(self, timeout: float = 10.0) -> None:
        self.stop_accepting()
        self._worker.join(timeout)

    # --- the worker ---
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                ticket = self._pending.popleft()
                self._current = ticket
                for i, t in enumerate(self._pending):
                    t.progress.position = i + 1
            if ticket.future.set_running_or_notify_cancel():
                self._execute(ticket)
            with self._cond:
                self._current = None

    def _execute(self, ticket: Ticket) -> None:
        p = ticket.progress
        p.state, p.position, p.started_at = "running", 0, time.time()
        try:
            result = self._run_job(ticket.job, ticket)
        except SdgateError as e:
            ticket.future.set_exception(e)
        except Exception as e:  # never let a job kill the worker; callers get a clean error
            log.exception("job %s failed", ticket.id)
            ticket.future.set_exception(GenerationFailed(f"generation failed: {type(e).__name__}: {e}"))
        else:
            result.timings["queue_wait"] = p.started_at - ticket.submitted_at
            ticket.future.set_result(result)
        finally:
            p.state = "done"
