"""The engine on Ray Serve (`launch.py --ray ADDRESS`, backends/cluster/): a real local cluster (`ray start --head`,
2 CPUs), the real server started as a user starts it with two CPU replicas, driven over HTTP and gradio_client,
and compared with the single-process server for the same seeds. One cluster for the module: the tests run in
order (the replica kill last)."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from imaging import pixels
from live import start_live_server

REPO = Path(__file__).resolve().parents[1]
# Ray's token authentication, as the README tells cluster users to run it: every process of the cluster (head,
# server, the test's own driver) has the mode and the same token; an explicit address never enables it by itself.
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
RAY = Path(sys.executable).parent / "ray"
KEYS = {"stability": ["ks-ray"], "openai": ["ko-ray"], "modelslab": ["km-ray"]}
CONFIG = f"""
[ray]
replicas = 2
num_cpus = 1
models_per_replica = 1
retries = 1

[keys]
stability = {json.dumps(KEYS["stability"])}
"""
SMALL = {"width": 64, "height": 64, "steps": 3, "sampler_name": "Euler a"}
V1 = "/v1/generation/stable-diffusion-v1-6/text-to-image"
V1_BODY = {"text_prompts": [{"text": "a lighthouse"}], "width": 320, "height": 320, "steps": 10, "seed": 31,
           "sampler": "K_EULER"}
LONG = {"prompt": "a long one", "steps": 150, "sampler_name": "Euler"}  # seconds on a tiny model: time to steer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 120.0, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited ({proc.returncode}):\n{log.read_text()[-4000:] if log else ''}")
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{log.read_text()[-4000:]}" if log else ""))


def answered(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(ray address, the --ray server's URL, the single-process server for reference images)."""
    root = tmp_path_factory.mktemp("ray")
    env = {**os.environ, **RAY_ENV, "HF_HUB_OFFLINE": "1"}
    ray_port = free_port()
    address = f"127.0.0.1:{ray_port}"
    subprocess.run([str(RAY), "start", "--head", f"--port={ray_port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=120)
    (root / "sdgate.toml").write_text(CONFIG)
    port = free_port()
    log = root / "server.log"
    server = subprocess.Popen(
        [sys.executable, "launch.py", "--demo", "--ray", address, "--port", str(port), "--dtype", "fp32",
         "--config", str(root / "sdgate.toml"), "--models-dir", str(root / "models"), "--outputs-dir",
         str(root / "outputs")], cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    reference = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answered(url + "/sdapi/v1/sd-models"), "the --ray server", 180, server, log)
        reference = start_live_server(root / "single", models_dir=root / "models", raw={"keys": KEYS})
        yield address, url, reference, log
    finally:
        if reference is not None:
            reference.stop()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


def worker_metrics(url: str) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """({worker: batches run}, {(worker, model): loads}) from /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    calls = {m[1]: float(m[2]) for m in re.finditer(r'^sdgate_worker_calls_total\{worker="([^"]+)"\} (\S+)$', text,
                                                   re.M)}
    loads = {(m[2], m[1]): float(m[3]) for m in
             re.finditer(r'^sdgate_worker_model_loads\{model="([^"]+)",worker="([^"]+)"\} (\S+)$', text, re.M)}
    return calls, loads


def a1111(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=180)


def decoded(data: str | bytes) -> np.ndarray:
    """A base64 PNG (a JSON answer's) or PNG bytes, as RGB pixels."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    with Image.open(io.BytesIO(raw)) as image:
        return pixels(image.convert("RGB"))


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal images; within 1/255 allows only a CPU's rounding between processes (as batching allows)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_concurrent_requests_of_every_kind_use_both_replicas_and_match_one_process(cluster):
    _, url, reference, _ = cluster
    before, _ = worker_metrics(url)
    bodies = [{"prompt": f"a fox number {i}", "seed": 100 + i, **SMALL} for i in range(3)]
    v1_headers = {"Authorization": "Bearer ks-ray", "Accept": "application/json"}
    ui = Client(url, verbose=False)
    ref_ui = Client(reference.url, verbose=False)
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            posts = [pool.submit(a1111, url, **body) for body in bodies]
            v1 = pool.submit(httpx.post, url + V1, json=V1_BODY, headers=v1_headers, timeout=180)
            tab = pool.submit(ui.predict, prompt="a tab's lighthouse", steps=3, width=64, height=64, seed=77,
                              api_name="/a1111_txt2img")
            answers = [p.result() for p in posts]
            v1_answer, tab_answer = v1.result(), tab.result()
        ref_tab = ref_ui.predict(prompt="a tab's lighthouse", steps=3, width=64, height=64, seed=77,
                                 api_name="/a1111_txt2img")
    finally:
        ui.close()
        ref_ui.close()
    for body, answer in zip(bodies, answers):
        assert answer.status_code == 200, answer.text
        expected = a1111(reference.url, **body).json()
        assert json.loads(answer.json()["info"])["seed"] == body["seed"]
        assert same_pixels(decoded(answer.json()["images"][0]), decoded(expected["images"][0]))
    assert v1_answer.status_code == 200, v1_answer.text
    ref_v1 = httpx.post(reference.url + V1, json=V1_BODY, headers=v1_headers, timeout=180).json()
    assert v1_answer.json()["artifacts"][0]["seed"] == 31
    assert same_pixels(decoded(v1_answer.json()["artifacts"][0]["base64"]), decoded(ref_v1["artifacts"][0]["base64"]))
    (path,), (ref_path,) = ([item["image"] for item in g[1]] for g in (tab_answer, ref_tab))
    with Image.open(path) as got, Image.open(ref_path) as want:
        assert got.info["parameters"] == want.info["parameters"]
        assert same_pixels(pixels(got.convert("RGB")), pixels(want.convert("RGB")))
    after, _ = worker_metrics(url)
    served = {w for w, n in after.items() if n > before.get(w, 0)}
    assert len(served) == 2, after  # both replicas ran batches of these requests
    assert "ray" not in sys.modules  # the single-process server (this process) never imported Ray


def submit(url: str, body: dict) -> str:
    answer = httpx.post(url + "/jobs", json={"style": "a1111", "operation": "txt2img", "request": body}, timeout=30)
    assert answer.status_code in (200, 202), answer.text
    return answer.json()["id"]


def status(url: str, job_id: str, preview: bool = False) -> dict:
    answer = httpx.get(f"{url}/jobs/{job_id}", params={"preview": "true"} if preview else {}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def finished(url: str, job_id: str, timeout: float = 180) -> dict:
    return wait_for(lambda: (s := status(url, job_id))["state"] not in ("queued", "running") and s, f"job {job_id}",
                    timeout)


def test_jobs_by_id_and_an_interrupt_stops_only_its_own_job(cluster):
    _, url, reference, _ = cluster
    # different sizes: the two cannot share a batch, so each runs on its own replica at the same time
    first = {**LONG, "width": 256, "height": 256, "seed": 5}
    second = {**LONG, "width": 256, "height": 192, "seed": 6, "steps": 40}
    a, b = submit(url, first), submit(url, second)
    # A1111's default live previews (every 10 steps) come back from the replica with the steps
    running = wait_for(lambda: (s := status(url, a, preview=True))["state"] == "running" and s["preview"] and s,
                       "job a running, with a preview")
    assert running["worker"] and running["steps"] == 150 and running["step"] >= 10
    assert running["preview"].startswith("data:image/png;base64,")
    assert httpx.delete(f"{url}/jobs/{a}", timeout=30).status_code in (200, 202)
    done_a, done_b = finished(url, a), finished(url, b)
    assert done_a["state"] == "done" and done_a["interrupted"] and done_a["worker"], done_a
    assert done_b["state"] == "done" and not done_b["interrupted"] and done_b["worker"], done_b
    assert done_a["worker"] != done_b["worker"]  # they ran side by side
    assert done_b["images"][0]["seed"] == 6
    image = httpx.get(url + done_b["images"][0]["url"], timeout=30)
    expected = a1111(reference.url, **second).json()["images"][0]
    assert same_pixels(decoded(image.content), decoded(expected))
    # the interrupted job kept what it had: one image, stopped long before its 150 steps
    assert len(done_a["images"]) == 1 and done_a["step"] < 150


def test_skip_reaches_the_replica_and_the_next_batch_runs(cluster):
    _, url, reference, _ = cluster
    body = {**LONG, "width": 128, "height": 128, "seed": 21, "n_iter": 2}
    job = submit(url, body)
    wait_for(lambda: (s := status(url, job))["state"] == "running" and s["step"] >= 2 and s["batch"] == 0,
             "the first batch running")
    assert httpx.post(url + "/sdapi/v1/skip", timeout=30).status_code == 200
    done = finished(url, job)
    assert done["state"] == "done" and not done["interrupted"] and len(done["images"]) == 2, done
    assert [image["seed"] for image in done["images"]] == [21, 22]
    got = [decoded(httpx.get(url + image["url"], timeout=30).content) for image in done["images"]]
    expected = [decoded(b64) for b64 in a1111(reference.url, **body).json()["images"]]
    assert not same_pixels(got[0], expected[0])  # the skipped batch stopped early: a less denoised image
    assert same_pixels(got[1], expected[1])  # the next batch ran whole, unaffected


def test_two_models_on_two_replicas_reload_nothing_after_warm_up(cluster):
    _, url, _, log = cluster
    models = ["tiny-sd1", "tiny-sdxl"]

    def ask(model: str, seed: int) -> httpx.Response:
        answer = a1111(url, prompt="a model switch", seed=seed, override_settings={"sd_model_checkpoint": model},
                       **SMALL)
        assert answer.status_code == 200, answer.text
        return answer

    for seed, model in enumerate(models * 2):  # warm-up: each model finds its replica
        ask(model, seed)
    _, warm = worker_metrics(url)
    for seed in range(8):
        ask(models[seed % 2], 10 + seed)
    calls, loads = worker_metrics(url)
    assert loads == warm, (warm, loads)  # no replica loaded a model again
    holders = {model: {w for (w, m) in loads if m == model} for model in models}
    assert all(holders.values()), loads
    assert "loaded model tiny-sdxl" in log.read_text()  # the replicas' own log lines reach the server's log
    # A1111's current checkpoint, switched through /options, is what the replicas run
    options = url + "/sdapi/v1/options"
    assert httpx.post(options, json={"sd_model_checkpoint": "tiny-sdxl"}, timeout=60).status_code == 200
    try:
        answer = a1111(url, prompt="the current model", seed=1, **SMALL)
        assert json.loads(answer.json()["info"])["sd_model_name"] == "tiny-sdxl"
    finally:
        httpx.post(options, json={"sd_model_checkpoint": "tiny-sd1"}, timeout=60)


def kill_replica(address: str, worker: str) -> int:
    """SIGKILL the process of the replica `worker` (Serve names its actors ...#<replica id>)."""
    script = f"""
import os, signal, ray
ray.init(address={address!r}, log_to_driver=False)
actor = next(a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith("#" + {worker!r}))
handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
pid = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))
os.kill(pid, signal.SIGKILL)
print(pid)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **RAY_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_a_replica_killed_mid_job_retries_on_another_and_the_server_goes_on(cluster):
    address, url, reference, log = cluster
    body = {**LONG, "width": 256, "height": 256, "seed": 9, "steps": 60}
    job = submit(url, body)
    running = wait_for(lambda: (s := status(url, job))["state"] == "running" and s["worker"] and s["step"] >= 1 and s,
                       "the job running")
    kill_replica(address, running["worker"])
    done = finished(url, job)
    # retried once ([ray] retries = 1) on the other replica: the same seeds, so the same image
    assert done["state"] == "done" and not done["interrupted"], done
    assert running["worker"] in done["worker"] and len(done["worker"].split(", ")) == 2, done["worker"]
    image = httpx.get(url + done["images"][0]["url"], timeout=30).content
    expected = a1111(reference.url, **body).json()["images"][0]
    assert same_pixels(decoded(image), decoded(expected))
    assert "sending the batch" in log.read_text()
    # the next requests succeed, and Serve brings the replica count back to two
    for seed in range(2):
        assert a1111(url, prompt="after", seed=seed, **SMALL).status_code == 200

    def two_again() -> bool:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda s: a1111(url, prompt="again", seed=s, **SMALL), range(4)))
        assert all(a.status_code == 200 for a in answers)
        calls, _ = worker_metrics(url)
        return len([w for w in calls if w != running["worker"]]) >= 2

    wait_for(two_again, "a replacement replica", 120)


def test_a_job_whose_replicas_both_die_fails_clearly_and_the_next_request_succeeds(cluster):
    """Past `[ray] retries` the job fails in its caller's style (A1111: 503 with the reason and Retry-After)."""
    address, url, _, _ = cluster
    job = submit(url, {**LONG, "width": 256, "height": 256, "seed": 11, "steps": 100})
    first = wait_for(lambda: (s := status(url, job))["state"] == "running" and s["worker"] and s["step"] >= 1 and s,
                     "the job running")
    kill_replica(address, first["worker"])
    retry = wait_for(lambda: (s := status(url, job))["worker"] not in (None, first["worker"]) and s["step"] >= 1
                     and s, "the retry running")
    kill_replica(address, retry["worker"])
    done = finished(url, job)
    assert done["state"] == "failed" and done["response_status"] == 503, done
    assert done["response"]["error"] == "WorkerLost" and "replica" in done["response"]["detail"], done["response"]
    # every replica died; Serve starts new ones and the next request waits for them, then succeeds
    answer = a1111(url, prompt="after both", seed=3, **SMALL)
    assert answer.status_code == 200, answer.text
