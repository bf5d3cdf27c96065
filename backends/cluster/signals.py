"""Interrupt and skip, ingress → replica. A Serve handle cannot address the replica that runs a given request,
so the ingress writes each running job's switches into one small Ray actor and the replica reads them at each
denoising step (replica.py `Switches`), the moment the engine looks at them in the single-process server too.
Progress and images go the other way in the batch's own stream (wire.py)."""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0, max_restarts=-1)
class JobSignals:
    def __init__(self):
        self.flags: dict[str, tuple[bool, bool]] = {}  # job id → (interrupted, skipped)

    def set(self, job_id: str, interrupted: bool, skipped: bool) -> None:
        self.flags[job_id] = (interrupted, skipped)

    def clear(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.flags.pop(job_id, None)

    def get(self, job_ids: list[str]) -> dict[str, tuple[bool, bool]]:
        return {job_id: self.flags.get(job_id, (False, False)) for job_id in job_ids}
