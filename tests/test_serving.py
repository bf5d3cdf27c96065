"""Many callers on one device, through the real server: batching, fairness, dropped callers, busy answers in each
style, per-owner caps and rate limits, jobs by id (GET/DELETE/POST /jobs) for every style, and 64 concurrent
requests (issue: "Many people and scripts on one device")."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from backends.config import Serving
from backends.job import Job
from backends.keys import owner_of_key
from tests.live import start_live_server

SMALL = {"width": 64, "height": 64, "steps": 2}
V1_ENGINE = "/v1/generation/stable-diffusion-v1-6/text-to-image"
# keys for two owners per style, and the hosted styles' quick settings (tiny sizes, few steps)
RAW = {"keys": {"stability": ["ks1", "ks2"], "openai": ["ko1", "ko2"], "modelslab": ["km1", "km2"]},
       "stability_v2": {"steps": 1, "turbo_steps": 1, "size_scale": 0.125, "sampler": "Euler", "schedule": None},
       "openai": {"quality": {"auto": 2}}}


class CallLog:
    """A queue listener that records every pipeline call's job ids, in order."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def on_call(self, tickets, images, seconds, steps):
        with self.lock:
            self.calls.append([t.id for t in tickets])

    def ran(self, job_id: str) -> bool:
        with self.lock:
            return any(job_id in call for call in self.calls)


def serve(tmp_path: Path, **serving) -> tuple:
    srv = start_live_server(tmp_path, serving=Serving(**serving), api_auth=[("alice", "a"), ("bob", "b")], raw=RAW)
    log = CallLog()
    srv.service.queue.listeners.append(log)
    return srv, log


def hold(srv, owner: str = "blocker"):
    """A long single-batch job that keeps the worker busy until `release`d (interrupt)."""
    ticket = srv.service.queue.submit(Job(prompt="blocker", width=512, height=512, steps=150, owner=owner, seed=1))
    deadline = time.time() + 30
    while ticket.state != "running" or ticket.progress.step < 1:
        assert time.time() < deadline, "the blocker never started"
        time.sleep(0.01)
    return ticket


def release(ticket) -> None:
    ticket.interrupt()
    ticket.result(timeout=60)


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def a1111(client: httpx.Client, user: str = "alice", **body) -> httpx.Response:
    auth = (user, user[0])
    return client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **SMALL, **body}, auth=auth)


@pytest.fixture()
def server(tmp_path):
    srv, log = serve(tmp_path)
    yield srv, log
    srv.stop()


# ------------------------------------------------------------------------------------------------ batching


def test_eight_concurrent_requests_share_pipeline_calls_and_match_the_serial_images(tmp_path):
    srv, log = serve(tmp_path, max_batch=4)
    try:
        client = httpx.Client(base_url=srv.url, timeout=120)
        seeds = list(range(100, 108))
        serial = [decode(a1111(client, seed=s).json()["images"][0]) for s in seeds]
        calls_before = srv.service.queue.calls
        blocker = hold(srv)  # so that all eight are waiting when the device frees up
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(a1111, client, "alice" if i % 2 else "bob", seed=s) for i, s in enumerate(seeds)]
            deadline = time.time() + 30
            while srv.service.queue.depth()["waiting"] < 8:
                assert time.time() < deadline
                time.sleep(0.01)
            release(blocker)
            answers = [f.result() for f in futures]
        assert all(a.status_code == 200 for a in answers)
        calls = srv.service.queue.calls - calls_before - 1  # the blocker's own call
        assert calls < 8, f"8 requests took {calls} pipeline calls"
        for s, answer, alone in zip(seeds, answers, serial):
            batched = decode(answer.json()["images"][0])
            # the documented tolerance for a batched image (README: Serving): at most 1 level of 255
            assert np.abs(batched - alone).max() <= 1, f"seed {s}"
    finally:
        srv.stop()


def test_interrupting_one_job_of_a_shared_batch_leaves_the_others_byte_identical(server):
    srv, log = server
    queue = srv.service.queue

    def batch(interrupt_one: bool) -> list:
        blocker = hold(srv)
        jobs = [Job(prompt=f"cat {i}", width=128, height=128, steps=30, seed=7 + i, owner=f"o{i}") for i in range(3)]
        tickets = [queue.submit(job) for job in jobs]
        release(blocker)
        if interrupt_one:
            deadline = time.time() + 30
            while tickets[1].progress.step < 3:
                assert time.time() < deadline
                time.sleep(0.005)
            tickets[1].interrupt()
        results = [t.result(timeout=60) for t in tickets]
        assert {r.batched for r in results} == {3}, "the three jobs did not share one call"
        return results

    calm = batch(False)
    disturbed = batch(True)
    assert disturbed[1].interrupted
    for i in (0, 2):
        assert not disturbed[i].interrupted
        assert disturbed[i].images[0].tobytes() == calm[i].images[0].tobytes()


# ------------------------------------------------------------------------------------------------ fairness


def test_a_second_owner_starts_within_one_job_of_the_first_owners_ten(tmp_path):
    srv, log = serve(tmp_path, max_batch=1)  # no batching: the order of calls is the order of service
    try:
        queue = srv.service.queue
        blocker = hold(srv, owner="key:A")
        a_jobs = [queue.submit(Job(prompt=f"A{i}", **SMALL, owner="key:A")) for i in range(10)]
        client = httpx.Client(base_url=srv.url, timeout=120)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            b = pool.submit(a1111, client, "bob", force_task_id="task(bob)")
            deadline = time.time() + 30
            while queue.get("task(bob)") is None:
                assert time.time() < deadline
                time.sleep(0.01)
            assert queue.get("task(bob)").progress.position == 1  # next after the running call
            release(blocker)
            assert b.result().status_code == 200
        for t in a_jobs:
            t.result(timeout=60)
        order = [ids[0] for ids in log.calls]
        started = order.index("task(bob)")
        a_ids = {t.id for t in a_jobs}
        assert sum(1 for i in order[:started] if i in a_ids) <= 1, order
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------------ callers that leave


def test_a_caller_that_disconnects_while_queued_never_reaches_the_pipeline(server):
    srv, log = server
    blocker = hold(srv)
    with httpx.Client(base_url=srv.url, timeout=1.0) as client:
        with pytest.raises(httpx.TimeoutException):
            a1111(client, force_task_id="task(gone)")
    deadline = time.time() + 10
    while srv.service.queue.get("task(gone)").state != "cancelled":
        assert time.time() < deadline, "the dropped job is still queued"
        time.sleep(0.05)
    release(blocker)
    # the next request runs; the dropped one never did
    assert a1111(httpx.Client(base_url=srv.url, timeout=60)).status_code == 200
    assert not log.ran("task(gone)")


# ------------------------------------------------------------------------------------------------ busy answers


def busy_answers(client: httpx.Client) -> dict[str, httpx.Response]:
    """One request of each style from an owner who already has a job waiting."""
    return {
        "a1111": a1111(client),
        "stability_v1": client.post(V1_ENGINE, headers={"Authorization": "Bearer ks1", "Accept": "application/json"},
                                    json={"text_prompts": [{"text": "x"}], "steps": 10}),
        "stability_v2": client.post("/v2beta/stable-image/generate/core", headers={"Authorization": "Bearer ks1",
                                    "Accept": "application/json"}, files={"prompt": (None, "x")}),
        "modelslab": client.post("/api/v6/realtime/text2img", json={"key": "km1", "prompt": "x", "width": 256,
                                                                     "height": 256}),
        "openai": client.post("/v1/images/generations", headers={"Authorization": "Bearer ko1"},
                              json={"prompt": "x", "size": "64x64"}),
    }


def check_busy_shapes(answers: dict[str, httpx.Response]) -> None:
    a = answers["a1111"]
    assert a.status_code == 503 and int(a.headers["Retry-After"]) >= 1 and "detail" in a.json()
    v1 = answers["stability_v1"]
    assert v1.status_code == 429 and v1.json()["name"] == "rate_limit_exceeded" and v1.headers["Retry-After"]
    v2 = answers["stability_v2"]
    assert v2.status_code == 429 and v2.json()["name"] == "rate_limit_exceeded" and v2.json()["errors"]
    ml = answers["modelslab"]
    assert ml.status_code == 429 and ml.json()["status"] == "error" and ml.json()["retry_after"] >= 1
    oa = answers["openai"]
    assert oa.status_code == 429 and oa.json()["error"]["code"] == "rate_limit_exceeded" and oa.headers["retry-after"]


def test_each_style_answers_busy_in_its_own_shape_past_the_per_owner_cap(tmp_path):
    srv, _ = serve(tmp_path)
    try:
        blocker = hold(srv)
        srv.service.queue.max_pending_per_owner = 0  # every caller already has all he may queue
        check_busy_shapes(busy_answers(httpx.Client(base_url=srv.url, timeout=60)))
        release(blocker)
    finally:
        srv.stop()


def test_a_rate_limit_per_owner_answers_busy_and_leaves_others_alone(tmp_path):
    srv, _ = serve(tmp_path, rate_limit="1/minute")
    try:
        client = httpx.Client(base_url=srv.url, timeout=60)
        assert a1111(client, "alice").status_code == 200
        second = a1111(client, "alice")
        assert second.status_code == 503 and "rate limit" in second.json()["detail"]
        assert 1 <= int(second.headers["Retry-After"]) <= 60
        assert a1111(client, "bob").status_code == 200  # another owner has his own window
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------------ jobs by id


def test_jobs_by_id_for_every_style_and_only_for_their_owner(server):
    srv, _ = server
    client = httpx.Client(base_url=srv.url, timeout=60)
    own = {"stability_v1": {"Authorization": "Bearer ks1"}, "stability_v2": {"Authorization": "Bearer ks1"},
           "openai": {"Authorization": "Bearer ko1"}, "a1111": {}, "modelslab": {"Authorization": "Bearer km1"}}
    other = {"stability_v1": {"Authorization": "Bearer ks2"}, "stability_v2": {"Authorization": "Bearer ks2"},
             "openai": {"Authorization": "Bearer ko2"}, "a1111": {}, "modelslab": {"Authorization": "Bearer km2"}}
    submits = {
        "a1111": ("txt2img", {"prompt": "x", **SMALL}, {}),
        "stability_v1": ("text-to-image", {"text_prompts": [{"text": "x"}], "width": 320, "height": 320, "steps": 10},
                         {"engine_id": "stable-diffusion-v1-6"}),
        "stability_v2": ("core", {"prompt": "x", "output_format": "png"}, {}),
        "modelslab": ("text2img", {"key": "km1", "model_id": "tiny-sd1", "prompt": "x", "width": 256, "height": 256,
                                   "samples": 1, "num_inference_steps": 2}, {}),
        "openai": ("generations", {"prompt": "x", "size": "64x64"}, {}),
    }
    for style, (operation, request, params) in submits.items():
        auth = ("alice", "a") if style == "a1111" else None
        r = client.post("/jobs", json={"style": style, "operation": operation, "request": request, "params": params},
                        headers=own[style], auth=auth)
        assert r.status_code == 202, (style, r.text)
        job_id = r.json()["id"]
        deadline = time.time() + 60
        while (status := client.get(f"/jobs/{job_id}", headers=own[style], auth=auth).json())["state"] in (
                "queued", "running"):
            assert time.time() < deadline, style
            time.sleep(0.05)
        assert status["state"] == "done" and status["style"] == style, (style, status)
        assert status["response_status"] == 200 and status["response"], style
        image = client.get(status["images"][0]["url"], headers=own[style], auth=auth)
        assert image.headers["content-type"] == "image/png"
        # another owner: as if it did not exist
        stranger = ("bob", "b") if style == "a1111" else None
        assert client.get(f"/jobs/{job_id}", headers=other[style], auth=stranger).status_code == 404
        assert client.delete(f"/jobs/{job_id}", headers=other[style], auth=stranger).status_code == 404


def test_delete_cancels_a_waiting_job_and_the_waiting_caller_gets_its_styles_answer(server):
    srv, log = server
    client = httpx.Client(base_url=srv.url, timeout=60)
    blocker = hold(srv)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.post, "/v1/images/generations", headers={"Authorization": "Bearer ko1"},
                              json={"prompt": "x", "size": "64x64"})
        deadline = time.time() + 10
        while not (mine := srv.service.queue.tickets_of(owner_of_key("ko1"))):
            assert time.time() < deadline
            time.sleep(0.01)
        job_id = mine[0].id
        gone = client.delete(f"/jobs/{job_id}", headers={"Authorization": "Bearer ko1"})
        assert gone.status_code == 200 and gone.json()["state"] == "cancelled"
        answer = waiting.result(timeout=30)
    assert answer.status_code == 409 and answer.json()["error"]["message"]
    release(blocker)
    assert not log.ran(job_id)


def test_a_running_job_deleted_stops_with_its_images_so_far(server):
    srv, _ = server
    client = httpx.Client(base_url=srv.url, timeout=60)
    r = client.post("/jobs", json={"style": "a1111", "operation": "txt2img",
                                   "request": {"prompt": "x", "width": 256, "height": 256, "steps": 150,
                                               "force_task_id": "task(long)"}}, auth=("alice", "a"))
    assert r.status_code == 202
    deadline = time.time() + 30
    while client.get("/jobs/task(long)", auth=("alice", "a")).json()["step"] < 2:
        assert time.time() < deadline
        time.sleep(0.02)
    assert client.delete("/jobs/task(long)", auth=("bob", "b")).status_code == 404  # not bob's
    client.delete("/jobs/task(long)", auth=("alice", "a"))
    while (status := client.get("/jobs/task(long)", auth=("alice", "a")).json())["state"] == "running":
        assert time.time() < deadline
        time.sleep(0.05)
    assert status["interrupted"] and len(status["images"]) == 1 and status["step"] < 150


def test_a1111_task_routes_show_the_callers_own_tasks(server):
    srv, _ = server
    client = httpx.Client(base_url=srv.url, timeout=60)
    blocker = hold(srv)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(a1111, client, "alice", force_task_id="task(mine)")
        deadline = time.time() + 10
        while client.get("/internal/pending-tasks", auth=("alice", "a")).json()["tasks"] != ["task(mine)"]:
            assert time.time() < deadline
            time.sleep(0.02)
        assert client.get("/internal/pending-tasks", auth=("bob", "b")).json() == {"size": 0, "tasks": []}
        progress = client.post("/internal/progress", json={"id_task": "task(mine)"}, auth=("alice", "a")).json()
        assert progress["queued"] and not progress["active"] and progress["eta"] > 0
        hidden = client.post("/internal/progress", json={"id_task": "task(mine)"}, auth=("bob", "b")).json()
        assert not hidden["queued"] and not hidden["completed"]
        # bob's interrupt does not touch the blocker or alice's job; /progress shows bob nothing of theirs
        client.post("/sdapi/v1/interrupt", auth=("bob", "b"))
        assert client.get("/sdapi/v1/progress", auth=("bob", "b")).json()["state"]["job_count"] == 0
        assert not blocker.interrupted
        release(blocker)
        assert future.result().status_code == 200
    done = client.post("/internal/progress", json={"id_task": "task(mine)"}, auth=("alice", "a")).json()
    assert done["completed"]
    taken = a1111(client, force_task_id="bad id with spaces")
    assert taken.status_code in (400, 422)


# ------------------------------------------------------------------------------------------------ load


def mixed_request(client: httpx.Client, i: int) -> tuple[str, httpx.Response]:
    kind = ["a1111", "stability_v1", "stability_v2", "modelslab", "openai"][i % 5]
    seed = 1000 + i
    if kind == "a1111":
        return kind, a1111(client, "alice" if i % 2 else "bob", seed=seed, save_images=True)
    if kind == "stability_v1":
        return kind, client.post(V1_ENGINE, headers={"Authorization": f"Bearer ks{1 + i % 2}",
                                                     "Accept": "application/json"},
                                 json={"text_prompts": [{"text": "x"}], "width": 320, "height": 320, "steps": 10,
                                       "seed": seed})
    if kind == "stability_v2":
        return kind, client.post("/v2beta/stable-image/generate/sd3", headers={"Authorization": f"Bearer ks{1 + i % 2}",
                                 "Accept": "application/json"}, files={"prompt": (None, "x"), "seed": (None, str(seed)),
                                                                       "model": (None, "sd3.5-flash")})
    if kind == "modelslab":
        return kind, client.post("/api/v6/realtime/text2img", json={"key": f"km{1 + i % 2}", "prompt": "x",
                                                                     "width": 256, "height": 256, "seed": seed,
                                                                     "base64": True})
    return kind, client.post("/v1/images/generations", headers={"Authorization": f"Bearer ko{1 + i % 2}"},
                             json={"prompt": "x", "size": "64x64", "seed": seed})


BUSY = {"a1111": 503, "stability_v1": 429, "stability_v2": 429, "modelslab": 429, "openai": 429}


@pytest.mark.parametrize("mix", [False, True], ids=["a1111", "all-styles"])
def test_64_concurrent_requests_get_an_answer_each_and_saved_images_equal_returned(tmp_path, mix):
    srv = start_live_server(tmp_path, max_pending=16, serving=Serving(max_pending_per_owner=16),
                            api_auth=[("alice", "a"), ("bob", "b")], raw=RAW)
    try:
        client = httpx.Client(base_url=srv.url, timeout=httpx.Timeout(300, connect=30),
                              limits=httpx.Limits(max_connections=64))
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda i: mixed_request(client, i if mix else 5 * i), range(64)))
        ok = 0
        for kind, answer in answers:
            assert answer.status_code in (200, BUSY[kind]), (kind, answer.status_code, answer.text[:300])
            ok += answer.status_code == 200
        assert ok >= 16, f"only {ok} of 64 were served"
        # every image A1111 returned is the one it saved (save_images) — nothing lost or mixed up
        saved = sorted((srv.outputs / "txt2img-images").rglob("*.png"))
        returned = [decode(a.json()["images"][0]) for kind, a in answers if kind == "a1111" and a.status_code == 200]
        assert len(saved) == len(returned)
        saved_pixels = {np.asarray(Image.open(p).convert("RGB"), dtype=np.int16).tobytes() for p in saved}
        assert {r.tobytes() for r in returned} == saved_pixels
        # the server still answers normally
        assert a1111(client).status_code == 200
    finally:
        srv.stop()
