"""The ingress's side of the cluster: the queue's Runner (backends/queue.py) that sends each batch to a replica.

The JobQueue stays here with its owners, fairness, ids and batching decisions; it runs one worker thread per
replica (`workers=`), and each worker hands the batch it picked to `RayRunner.run_batch`, which streams it through
the Serve deployment handle (replica.py) and feeds the tickets' progress from the stream. So a long job on one
replica holds one worker; the others go on picking, in fair order, for the other replicas.

Seeds are drawn here (`start`), so a job whose batches run on different replicas, or again after a replica died,
gets exactly the images one process would give. What the replicas send back is merged into one Result per job
(`RemoteRun.result`); the dialects save and encode it here, as they do any local job's."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Iterable

import ray.exceptions

from ..job import GenerationFailed, Job, Result, WorkerLost
from ..local.engine import LocalEngine, job_seeds, still_running
from ..queue import Ticket
from ..samplers import resolve_sampler
from .wire import Finished, Outcome, Started, Step, error_in

log = logging.getLogger(__name__)

SWITCH_PUSH_S = 0.05  # how often the running tickets' interrupt/skip switches are copied to the signals actor

# A replica (or its machine) that went away mid-call; anything else from Ray is a bug, not a lost worker.
LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError)


class RemoteRun:
    """A job at the ingress while its batches run on replicas: the seeds drawn here, the images so far."""

    def __init__(self, job: Job, engine: LocalEngine):
        self.job = job
        self.t_start = time.perf_counter()
        self.seeds, self.subseeds = job_seeds(job)
        self.info = engine.models.resolve(job.model)
        # what replicas get: the seeds fixed (a replica resolves the same lists), the model named (the ingress's
        # current default may have changed: A1111's options), nothing the dialect keeps for itself
        self.sent = replace(job, seed=self.seeds[0], subseed=self.subseeds[0], model=self.info.name, extra={})
        self.choice = resolve_sampler(job.sampler, job.schedule)
        self.batch_no = 0
        self.images: list = []
        self.nsfw: list[bool] | None = None
        self.last: Result | None = None
        self.timings: dict[str, float] = {}
        self.interrupted = self.skipped = False
        self.error: BaseException | None = None
        self.workers: list[str] = []  # the replicas that ran its batches
        self.worker: str | None = None  # the replica running it now (GET /jobs/{id})

    @property
    def done(self) -> bool:
        return self.error is not None or self.interrupted or self.batch_no >= self.job.n_iter

    def absorb(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.error = error_in(outcome.error)
            return
        result = outcome.result
        self.images.extend(result.images)
        if result.nsfw is not None:
            self.nsfw = (self.nsfw or []) + list(result.nsfw)
        for name, seconds in result.timings.items():
            if name != "total":
                self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.interrupted = self.interrupted or result.interrupted
        self.skipped = self.skipped or result.skipped
        self.batch_no += 1
        if self.last is not None:
            result.notes = list(dict.fromkeys([*self.last.notes, *result.notes]))
            result.not_applied = {**self.last.not_applied, **result.not_applied}
            result.params = {**self.last.params, **result.params}
            result.batched = max(result.batched, self.last.batched)
        self.last = result

    def result(self) -> Result:
        if self.error is not None:
            raise self.error
        n = len(self.images)
        timings = {**self.timings, "total": time.perf_counter() - self.t_start}
        workers = ", ".join(dict.fromkeys(self.workers)) or None
        if self.last is None:  # interrupted before its first batch ran
            return Result(job=self.job, images=[], seeds=[], model=self.info, sampler=self.choice.name,
                          schedule=self.choice.schedule, scheduler_class=self.choice.scheduler_class,
                          interrupted=self.interrupted, timings=timings, finished_at=time.time(), worker=workers)
        return replace(self.last, job=self.job, images=list(self.images), seeds=self.seeds[:n],
                       subseeds=self.subseeds[:n], nsfw=self.nsfw, interrupted=self.interrupted,
                       skipped=self.skipped, timings=timings, finished_at=time.time(), worker=workers)


class RayRunner:
    """LocalEngine's part of the Runner contract stays here (batch keys, checks: they read the models folder, no
    weights); `run_batch` is a Serve call. `retries`: how many times a batch whose replica died is sent again."""

    def __init__(self, engine: LocalEngine, handle: Any, signals: Any, retries: int = 1,
                 listeners: Iterable[Any] = ()):
        self.engine = engine
        self.handle = handle
        self.signals = signals
        self.retries = max(0, retries)
        self.listeners = list(listeners)
        self._running: dict[str, tuple[Ticket, tuple[bool, bool]]] = {}  # job id → ticket, switches last pushed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._push_switches, name="sdgate-switches", daemon=True).start()

    def batch_key(self, job: Job):
        return self.engine.batch_key(job)

    def start(self, job: Job) -> RemoteRun:
        self.engine.validate(job)
        return RemoteRun(job, self.engine)

    def run_batch(self, members: list[tuple[RemoteRun, Ticket]]) -> None:
        live = still_running(members)
        if not live:
            return
        for attempt in range(self.retries + 1):
            try:
                self._send(live)
                return
            except WorkerLost as e:
                if attempt == self.retries:
                    raise
                log.warning("%s; sending the batch (%s) again", e.message, ", ".join(r.job.id for r, _ in live))

    def _send(self, live: list[tuple[RemoteRun, Ticket]]) -> None:
        runs = {run.job.id: run for run, _ in live}
        tickets = {ticket.id: ticket for _, ticket in live}
        model = live[0][0].info.name
        with self._lock:
            for ticket in tickets.values():
                self._running[ticket.id] = (ticket, (False, False))
        finished: Finished | None = None
        worker = "a replica"
        try:
            stream = self.handle.options(stream=True, multiplexed_model_id=model).run.remote(
                [run.sent for run, _ in live], [run.batch_no for run, _ in live], self.signals)
            for event in stream:
                if isinstance(event, Step):
                    tickets[event.job_id].report(event.step, event.steps, event.batch_no, event.preview)
                elif isinstance(event, Started):
                    worker = event.worker
                    for run in runs.values():
                        run.worker = event.worker
                        run.workers.append(event.worker)
                elif isinstance(event, Finished):
                    finished = event
        except LOST as e:
            raise WorkerLost(f"the engine replica running this job ({worker}) stopped ({type(e).__name__}); "
                             "try again: another replica takes over", details={"worker": worker}) from None
        except ray.exceptions.RayError as e:
            raise GenerationFailed(f"generation failed on replica {worker}: {type(e).__name__}: {e}") from None
        finally:
            with self._lock:
                for job_id in tickets:
                    self._running.pop(job_id, None)
                self.signals.clear.remote(list(tickets))
            for run in runs.values():
                run.worker = None
        if finished is None:
            raise WorkerLost(f"the engine replica running this job ({worker}) ended its answer early",
                             details={"worker": worker})
        for job_id, run in runs.items():
            run.absorb(finished.outcomes.get(job_id) or Outcome(error=("GenerationFailed", "no answer", {})))
            # a skip ends one batch: the engine clears its control's switch after the batch, and here the
            # control is the replica's stand-in, so the ticket (what A1111's /progress shows) is cleared here
            tickets[job_id].skipped = False
        for listener in self.listeners:
            on_worker = getattr(listener, "on_worker", None)
            if on_worker is not None:
                on_worker(worker, finished.loads)

    def _push_switches(self) -> None:
        """Copy each running ticket's interrupt/skip switches to the signals actor when they change."""
        while not self._stop.wait(SWITCH_PUSH_S):
            with self._lock:  # held while sending: a batch's `clear` can never overtake a late `set`
                for job_id, (ticket, pushed) in self._running.items():
                    now = (bool(ticket.interrupted), bool(ticket.skipped))
                    if now != pushed:
                        self._running[job_id] = (ticket, now)
                        self.signals.set.remote(job_id, *now)

    def close(self) -> None:
        self._stop.set()
