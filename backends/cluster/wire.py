"""What travels between the ingress and a replica: the events of one batch's stream and the jobs' errors.

A batch is one Serve streaming call (replica.py `EngineReplica.run`): `Started` when a replica takes it, a
`Step` per denoising step and job (with a preview when the job asked for one), `Finished` with each job's
Outcome. Errors travel as (class name, message, details), not as pickled exceptions: the project's errors take
keyword arguments that unpickling would lose, and the ingress must answer them in the caller's style."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import job as contract
from ..job import GenerationFailed, QueueFull, Result, SdgateError


@dataclass
class Started:
    worker: str  # the replica's id (Serve's), shown in /jobs/{id} and the metrics


@dataclass
class Step:
    job_id: str
    step: int
    steps: int
    batch_no: int
    preview: Any = None  # a PIL image, when the job asked for previews


@dataclass
class Outcome:
    result: Result | None = None  # this batch's images and what the engine says of them (its `job` is dropped)
    error: tuple[str, str, dict] | None = None


@dataclass
class Finished:
    outcomes: dict[str, Outcome]  # by job id
    loads: dict[str, int] = field(default_factory=dict)  # model → times this replica has loaded it


def error_out(error: BaseException) -> tuple[str, str, dict]:
    if isinstance(error, SdgateError):
        return type(error).__name__, error.message, dict(error.details)
    return type(error).__name__, f"generation failed: {type(error).__name__}: {error}", {}


def error_in(sent: tuple[str, str, dict]) -> SdgateError:
    """The error a replica sent, as the contract's class (a 4xx stays a 4xx in the caller's style)."""
    name, message, details = sent
    cls = getattr(contract, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SdgateError)):
        return GenerationFailed(message)
    error = cls.__new__(cls)
    SdgateError.__init__(error, message, details=details)
    if isinstance(error, QueueFull):
        error.retry_after = int(details.get("retry_after", 5))
    return error
