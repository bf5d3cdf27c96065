"""The job queue on its own: order, fairness between owners, batching, bounds, errors, cancel. The runner is a
plain stand-in that records each pipeline call (the real engine's batching is tested in tests/test_serving.py)."""

from __future__ import annotations

import threading
import time

import pytest

from backends.job import GenerationFailed, InvalidRequest, Job, JobCancelled, ModelInfo, QueueFull, Result
from backends.queue import JobQueue

INFO = ModelInfo(name="m", title="m", source="m", kind="folder")


class FakeRun:
    def __init__(self, job: Job):
        self.job = job
        self.batch_no = 0
        self.interrupted = False

    @property
    def done(self) -> bool:
        return self.interrupted or self.batch_no >= self.job.n_iter

    def result(self) -> Result:
        return Result(job=self.job, images=[], seeds=[], model=INFO, sampler="Euler", schedule="Automatic",
                      scheduler_class="EulerDiscreteScheduler", interrupted=self.interrupted)


class Runner:
    """Records every call as [(prompt, batch_no), ...]; `gate` holds a call until released. Jobs whose
    `extra["key"]` match may share a call."""

    def __init__(self):
        self.calls: list[list[tuple[str, int]]] = []
        self.running = 0
        self.max_running = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def batch_key(self, job: Job):
        return job.extra.get("key")

    def start(self, job: Job) -> FakeRun:
        if job.prompt == "bad":
            raise InvalidRequest("bad prompt")
        return FakeRun(job)

    def run_batch(self, members) -> None:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.entered.set()
        try:
            self.gate.wait(10)
            if any(run.job.prompt == "crash" for run, _ in members):
                raise RuntimeError("boom")
            self.calls.append([(run.job.prompt, run.batch_no) for run, _ in members])
            for run, control in members:
                run.batch_no += 1
                run.interrupted = run.interrupted or control.interrupted
        finally:
            with self.lock:
                self.running -= 1

    def order(self) -> list[str]:
        return [prompt for call in self.calls for prompt, _ in call]


def hold(runner: Runner, queue: JobQueue, job: Job):
    """Submit `job` and wait until the worker is inside its call (held by the closed gate)."""
    runner.gate.clear()
    runner.entered.clear()
    ticket = queue.submit(job)
    assert runner.entered.wait(10)
    return ticket


def test_jobs_run_one_at_a_time_in_order():
    work = Runner()
    queue = JobQueue(work)
    try:
        first = hold(work, queue, Job(prompt="0"))
        tickets = [first] + [queue.submit(Job(prompt=str(i))) for i in range(1, 5)]
        assert [t.progress.position for t in tickets] == [0, 1, 2, 3, 4]
        assert [t.state for t in tickets] == ["running"] + ["queued"] * 4
        work.gate.set()
        for t in tickets:
            t.result(timeout=10)
        assert work.order() == ["0", "1", "2", "3", "4"]
        assert work.max_running == 1
        assert all(t.progress.state == "done" and t.state == "done" for t in tickets)
        assert queue.get(tickets[2].id) is tickets[2]
    finally:
        queue.close()


def test_owners_take_turns_and_a_long_job_yields_between_batches():
    work = Runner()
    queue = JobQueue(work)
    try:
        long = hold(work, queue, Job(prompt="A-long", n_iter=4, owner="A"))
        a_jobs = [queue.submit(Job(prompt=f"A{i}", owner="A")) for i in range(10)]
        b_job = queue.submit(Job(prompt="B", owner="B"))
        c_job = queue.submit(Job(prompt="C", owner="C", n_iter=2))
        assert b_job.progress.position == 1 and c_job.progress.position == 2  # right after A's running batch
        work.gate.set()
        for t in [long, *a_jobs, b_job, c_job]:
            t.result(timeout=10)
        order = work.order()
        # B and C go right after A's first batch; A's long job goes on before A's other jobs, and C's second
        # batch takes its turn among them
        assert order[:5] == ["A-long", "B", "C", "A-long", "C"]
        assert order.count("A-long") == 4 and order.index("A0") > order.index("B")
    finally:
        queue.close()


def test_compatible_jobs_share_a_call_up_to_max_batch():
    work = Runner()
    queue = JobQueue(work, max_batch=3)
    try:
        first = hold(work, queue, Job(prompt="first"))
        same = [queue.submit(Job(prompt=f"s{i}", owner=f"o{i % 2}", extra={"key": "k"})) for i in range(4)]
        other = queue.submit(Job(prompt="other", extra={"key": "j"}))
        work.gate.set()
        for t in [first, *same, other]:
            t.result(timeout=10)
        sizes = sorted(len(call) for call in work.calls)
        assert sizes == [1, 1, 1, 3] and queue.calls == 4
        shared = next(call for call in work.calls if len(call) == 3)
        assert {p for p, _ in shared} <= {f"s{i}" for i in range(4)}
    finally:
        queue.close()


def test_a_full_queue_says_busy_instead_of_hanging():
    work = Runner()
    queue = JobQueue(work, max_pending=2, max_pending_per_owner=5)
    try:
        first = hold(work, queue, Job(prompt="running"))
        queue.submit(Job(prompt="a"))
        queue.submit(Job(prompt="b"))
        with pytest.raises(QueueFull) as busy:
            queue.submit(Job(prompt="c"))
        assert busy.value.retry_after >= 1
        work.gate.set()
        first.result(timeout=10)
    finally:
        queue.close()


def test_one_owner_cannot_fill_the_queue():
    work = Runner()
    queue = JobQueue(work, max_pending_per_owner=2)
    try:
        first = hold(work, queue, Job(prompt="running", owner="A"))
        queue.submit(Job(prompt="a1", owner="A"))
        queue.submit(Job(prompt="a2", owner="A"))
        with pytest.raises(QueueFull, match="the most one caller may queue"):
            queue.submit(Job(prompt="a3", owner="A"))
        queue.submit(Job(prompt="b1", owner="B"))  # somebody else still gets in
        work.gate.set()
        first.result(timeout=10)
    finally:
        queue.close()


def test_errors_reach_the_caller_and_the_worker_survives():
    queue = JobQueue(Runner())
    try:
        with pytest.raises(InvalidRequest):
            queue.run(Job(prompt="bad"), timeout=10)
        with pytest.raises(GenerationFailed, match="RuntimeError: boom"):
            queue.run(Job(prompt="crash"), timeout=10)
        assert queue.run(Job(prompt="fine"), timeout=10).job.prompt == "fine"
    finally:
        queue.close()


def test_a_job_id_given_twice_while_the_first_waits_is_refused():
    work = Runner()
    queue = JobQueue(work)
    try:
        first = hold(work, queue, Job(prompt="x", id="task-1"))
        with pytest.raises(InvalidRequest, match="already"):
            queue.submit(Job(prompt="y", id="task-1"))
        work.gate.set()
        first.result(timeout=10)
        queue.run(Job(prompt="z", id="task-1"), timeout=10)  # a finished id may be reused
    finally:
        queue.close()


def test_cancel_drops_a_waiting_job_and_stops_a_running_one_between_batches():
    work = Runner()
    queue = JobQueue(work)
    try:
        running = hold(work, queue, Job(prompt="running", n_iter=3))
        waiting = queue.submit(Job(prompt="waiting"))
        assert queue.cancel(waiting)
        assert waiting.state == "cancelled"
        with pytest.raises(JobCancelled):
            waiting.result(timeout=1)
        assert not queue.cancel(running)  # running: interrupted, keeps what it made
        work.gate.set()
        result = running.result(timeout=10)
        assert result.interrupted and work.order() == ["running"]
    finally:
        queue.close()


def test_a_dropped_waiting_job_never_reaches_the_runner():
    work = Runner()
    queue = JobQueue(work)
    try:
        first = hold(work, queue, Job(prompt="first"))
        gone = queue.submit(Job(prompt="gone"))
        queue.drop(gone)
        work.gate.set()
        first.result(timeout=10)
        time.sleep(0.1)
        assert work.order() == ["first"] and gone.state == "cancelled"
    finally:
        queue.close()


def test_stopping_answers_waiting_jobs_and_interrupts_the_running_one():
    work = Runner()
    queue = JobQueue(work)
    try:
        running = hold(work, queue, Job(prompt="running"))
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
