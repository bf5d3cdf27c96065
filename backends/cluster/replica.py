"""One engine replica: a Ray Serve deployment owning one device, its LocalEngine and its own model cache.

A request is one batch the ingress's fair queue picked (runner.py): its jobs, each with the batch index to run,
and the ingress's switches actor. The replica makes each job's run afresh (the ingress drew the seeds, so batch
`n` has the seeds it would have in one process), runs the batch through `LocalEngine.run_batch` on its one device
thread (the same batching and batch invariance as the single-process server) and streams the steps back, then
each job's images. It keeps nothing of a job between requests: the next batch of the same job may run on
another replica.

Models are Serve-multiplexed: the request's `multiplexed_model_id` is the job's model, Serve routes it to a
replica that holds that model when one is free, and evicts a replica's least recently used model past
`[ray] models_per_replica` (the engine's own cache has the same bound)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import AsyncIterator

import ray
import torch
from ray import serve

from ..config import Config
from ..job import Job
from ..local.devices import cpu_engine, pick_device, pick_dtype
from ..local.engine import LocalEngine
from ..local.models import ModelManager
from .wire import Finished, Outcome, Started, Step, error_out

log = logging.getLogger("sdgate.replica")

SWITCH_READ_S = 0.05  # how stale a replica's view of the interrupt/skip switches may be (one read per step at most)


class Held:
    """A model Serve's multiplexing counts as loaded here; Serve calls `__del__` when it evicts it."""

    def __init__(self, models: ModelManager, name: str):
        self.models, self.name, self.released = models, name, False

    def __del__(self):
        if not self.released:  # once: Serve calls it on eviction, then Python again on collection
            self.released = True
            try:
                self.models.unload(self.name)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass


class Switches:
    """The ingress's interrupt/skip switches of one batch's jobs, read from the JobSignals actor (signals.py) at
    most every SWITCH_READ_S; a failed read keeps the last view (the batch must not fail for it)."""

    def __init__(self, signals, job_ids: list[str]):
        self.signals, self.job_ids = signals, job_ids
        self.values: dict[str, tuple[bool, bool]] = {}
        self.read_at = 0.0

    def of(self, job_id: str) -> tuple[bool, bool]:
        now = time.monotonic()
        if now - self.read_at > SWITCH_READ_S:
            self.read_at = now
            try:
                self.values = ray.get(self.signals.get.remote(self.job_ids), timeout=5)
            except Exception as e:  # noqa: BLE001
                log.warning("could not read the interrupt switches: %s", e)
        return self.values.get(job_id, (False, False))


class RemoteControl:
    """The engine's Control (engine.py) for one job of the batch: switches from the ingress, steps to the stream."""

    def __init__(self, job_id: str, switches: Switches, emit):
        self.job_id, self.switches, self.emit = job_id, switches, emit
        self.skip_done = False  # the engine clears `skipped` after the batch it skipped

    @property
    def interrupted(self) -> bool:
        return self.switches.of(self.job_id)[0]

    @property
    def skipped(self) -> bool:
        return self.switches.of(self.job_id)[1] and not self.skip_done

    @skipped.setter
    def skipped(self, value: bool) -> None:
        self.skip_done = not value

    def report(self, step: int, steps: int, batch_no: int, preview=None) -> None:
        self.emit(Step(self.job_id, step, steps, batch_no, preview))


class EngineReplica:
    def __init__(self, config: Config, default: str | None, aliases: dict[str, str]):
        # the engine's own lines (model loads, failures) in this worker's log, which Ray shows the driver
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        cluster = config.ray
        threads = config.threads or max(1, int(cluster.num_cpus))
        torch.set_num_threads(threads)
        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        models_dir = Path(cluster.models_dir or config.models_dir)
        if config.demo:  # a replica on another machine has no tiny models yet; they are made, not downloaded
            from ..local.tiny import write_tiny_models

            write_tiny_models(models_dir)
        self.models = ModelManager(models_dir, default=default, aliases=aliases, device=device, dtype=dtype,
                                   cache_size=cluster.models_per_replica, cpu_offload=config.offload,
                                   compile=config.compile)
        self.engine = LocalEngine(self.models, config.limits, cpu_engine=cpu_engine(config, device), threads=threads,
                                  features=config.features)
        self.worker = serve.get_replica_context().replica_id.unique_id
        self.device = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sdgate-device")

        async def hold(model_id: str) -> Held:  # a closure: Serve's multiplexing keeps its state on the function
            await asyncio.get_running_loop().run_in_executor(self.device, self.models.get, model_id or None)
            return Held(self.models, model_id)

        self.hold = serve.multiplexed(max_num_models_per_replica=max(1, cluster.models_per_replica))(hold)
        log.info("replica %s on node %s: %s, %s, %d thread(s), models from %s", self.worker,
                 ray.get_runtime_context().get_node_id()[:8], device, dtype, threads, models_dir)

    async def run(self, jobs: list[Job], batch_nos: list[int], signals) -> AsyncIterator:
        """Run batch `batch_nos[i]` of each job in one batch; yields Started, Steps, then Finished."""
        yield Started(self.worker)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        try:
            await self.hold(serve.get_multiplexed_model_id())
        except Exception as e:  # noqa: BLE001 - the model cannot load here: each job gets the error
            yield Finished({job.id: Outcome(error=error_out(e)) for job in jobs}, dict(self.models.loads))
            return

        def emit(event) -> None:  # from the device thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        work = loop.run_in_executor(self.device, self._run_batch, jobs, batch_nos, signals, emit)
        work.add_done_callback(lambda _: events.put_nowait(None))  # after every emit: both go through the loop
        while (event := await events.get()) is not None:
            yield event
        yield Finished(await work, dict(self.models.loads))

    def _run_batch(self, jobs: list[Job], batch_nos: list[int], signals, emit) -> dict[str, Outcome]:
        switches = Switches(signals, [job.id for job in jobs])
        outcomes: dict[str, Outcome] = {}
        members = []
        for job, batch_no in zip(jobs, batch_nos):
            try:
                run = self.engine.start(job)
            except Exception as e:  # noqa: BLE001 - this job's own problem: it alone fails
                outcomes[job.id] = Outcome(error=error_out(e))
                continue
            run.batch_no = batch_no
            members.append((run, RemoteControl(job.id, switches, emit)))
        try:
            if members:
                self.engine.run_batch(members)
        except Exception as e:  # noqa: BLE001 - the call failed: every job in it fails, the replica goes on
            log.exception("batch of %s failed", ", ".join(job.id for job in jobs))
            return {**outcomes, **{run.job.id: Outcome(error=error_out(e)) for run, _ in members}}
        for run, _ in members:
            result = run.result()
            result.job = None  # the ingress has it (and its init image need not travel back)
            outcomes[run.job.id] = Outcome(result=result)
        return outcomes
