"""The job queue on its own: order, bound, errors, cancel (the work function is a plain stand-in)."""

from __future__ import annotations

import threading

import pytest

from backends.job import GenerationFailed, InvalidRequest, Job, ModelInfo, QueueFull, Result
from backends.queue import JobQueue

INFO = ModelInfo(name="m", title="m", source="m", kind="folder")


class Worker:
    """Runs jobs one at a time, recording order and concurrency; `gate` holds a job until released."""

    def __init__(self):
        self.order: list[str] = []
        self.running = 0
        self.max_running = 0
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def __call__(self, job: Job, ticket) -> Result:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            self.gate.wait(10)
            if job.prompt == "bad":
                raise InvalidRequest("bad prompt")
            if job.prompt == "crash":
                raise RuntimeError("boom")
            self.order.append(job.prompt)
            return Result(job=job, images=[], seeds=[], model=INFO, sampler="Euler", schedule="Automatic",
                          scheduler_class="EulerDiscreteScheduler")
        finally:
            with self.lock:
                self.running -= 1


def test_jobs_run_one_at_a_time_in_order():
    work = Worker()
    work.gate.clear()
    queue = JobQueue(work)
    try:
        tickets = [queue.submit(Job(prompt=str(i))) for i in range(5)]
        assert [t.progress.position for t in tickets] == [0, 1, 2, 3, 4]
        work.gate.set()
        for t in tickets:
            t.result(timeout=10)
        assert work.order == ["0", "1", "2", "3", "4"]
        assert work.max_running == 1
        assert all(t.progress.state == "done" for t in tickets)
    finally:
        queue.close()


def test_a_full_queue_says_busy_instead_of_hanging():
    work = Worker()
    work.gate.clear()
    queue = JobQueue(work, max_pending=2)
    try:
        first = queue.submit(Job(prompt="running"))
        while queue.current is None:
            pass
        queue.submit(Job(prompt="a"))
        queue.submit(Job(prompt="b"))
        with pytest.raises(QueueFull):
            queue.submit(Job(prompt="c"))
        work.gate.set()
        first.result(timeout=10)
    finally:
        queue.close()


def test_errors_reach_the_caller_and_the_worker_survives():
    queue = JobQueue(Worker())
    try:
        with pytest.raises(InvalidRequest):
            queue.run(Job(prompt="bad"), timeout=10)
        with pytest.raises(GenerationFailed, match="RuntimeError: boom"):
            queue.run(Job(prompt="crash"), timeout=10)
        assert queue.run(Job(prompt="fine"), timeout=10).job.prompt == "fine"
    finally:
        queue.close()


def test_cancel_drops_a_waiting_job():
    work = Worker()
    work.gate.clear()
    queue = JobQueue(work)
    try:
        running = queue.submit(Job(prompt="running"))
        waiting = queue.submit(Job(prompt="waiting"))
        assert queue.cancel(waiting)
        assert waiting.future.cancelled()
        work.gate.set()
        running.result(timeout=10)
        assert work.order == ["running"]
    finally:
        queue.close()


def test_stopping_answers_waiting_jobs_and_interrupts_the_running_one():
    work = Worker()
    work.gate.clear()
    queue = JobQueue(work)
    try:
        running = queue.submit(Job(prompt="running"))
        while queue.current is None:
            pass
        waiting = queue.submit(Job(prompt="waiting"))
        queue.stop_accepting()
        assert running.interrupted
        with pytest.raises(QueueFull, match="shutting down"):
            waiting.result(timeout=1)
        with pytest.raises(QueueFull, match="shutting down"):
            queue.submit(Job(prompt="late"))
        work.gate.set()
        assert running.result(timeout=10).job.prompt == "running"
    finally:
        queue.close()
