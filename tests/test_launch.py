"""launch.py as a user runs it: flags, the demo server answering on its port, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_launch(*args, cwd, timeout=60):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "abc"],
        ["--port", "70000"],
        ["--device", "tpu"],
        ["--dtype", "fp8"],
        ["--api-auth", "nopassword"],
        ["--no-such-flag"],
        ["--config", "missing.toml"],
        ["--model", "no/such/model.safetensors", "--models-dir", "m"],
    ],
)
def test_bad_flags_give_one_line_and_exit_2(tmp_path, args):
    proc = run_launch(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch.py: error:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_starts_answers_and_stops_cleanly(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--demo", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.time() + 60
        lines = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Running on local URL" in line:
                break
        assert any(f"http://127.0.0.1:{port}/" in l for l in lines), "".join(lines)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        assert health["demo"] is True and health["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        assert (tmp_path / "models" / "Stable-diffusion" / "tiny-sd1.safetensors").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        rest = proc.stdout.read()
        assert "Traceback" not in rest and "demo model: random weights" in "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_mid_generation_returns_the_partial_image_and_exits_cleanly(tmp_path):
    import threading

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--demo", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "Running on local URL" not in proc.stdout.readline():
            pass
        answer = {}

        def long_job():
            answer["r"] = httpx.post(base + "/sdapi/v1/txt2img", timeout=120,
                                     json={"prompt": "x", "steps": 150, "width": 512, "height": 512, "seed": 5})

        client = threading.Thread(target=long_job)
        client.start()
        while httpx.get(base + "/sdapi/v1/progress", timeout=10).json()["state"]["sampling_step"] < 2:
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        client.join(30)
        response = answer["r"]
        assert response.status_code == 200
        assert len(response.json()["images"]) == 1  # the partial image, interrupted
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_gpu_flags_reach_the_config():
    from launch import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--compile", "--offload", "--cpu-engine", "openvino"]))
    assert cfg.compile and cfg.offload and cfg.cpu_engine == "openvino"
    plain = config_from_args(build_parser().parse_args([]))
    assert not plain.compile and not plain.offload and plain.cpu_engine == "torch"


def test_ray_flag_and_section_reach_the_config(tmp_path):
    from launch import build_parser, config_from_args

    plain = config_from_args(build_parser().parse_args([]))
    assert not plain.ray.enabled
    local = config_from_args(build_parser().parse_args(["--ray"]))
    assert local.ray.enabled and local.ray.address is None  # a Ray instance of this machine
    (tmp_path / "c.toml").write_text('[ray]\naddress = "auto"\nmin_replicas = 1\nmax_replicas = 4\nnum_gpus = 1\n')
    joined = config_from_args(build_parser().parse_args(["--ray", "10.0.0.5:6379", "--config", str(tmp_path / "c.toml")]))
    assert joined.ray.address == "10.0.0.5:6379" and joined.ray.counts() == (1, 4) and joined.ray.num_gpus == 1
    from_file = config_from_args(build_parser().parse_args(["--config", str(tmp_path / "c.toml")]))
    assert not from_file.ray.enabled and from_file.ray.address == "auto"


@pytest.mark.parametrize("section", ["[ray]\nmin_replicas = 3\nmax_replicas = 1\n", "[ray]\nreplica = 2\n"])
def test_bad_ray_settings_give_one_line_before_ray_starts(tmp_path, section):
    (tmp_path / "c.toml").write_text(section)
    proc = run_launch("--demo", "--ray", "--config", "c.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch.py: error:") and "ray" in lines[0], proc.stderr


def test_replicas_the_cluster_cannot_place_stop_the_start_with_one_error(tmp_path):
    """A GPU replica on a CPU-only Ray instance never starts: the server says why and exits, it does not hang."""
    (tmp_path / "c.toml").write_text("[ray]\nnum_gpus = 1\nstart_timeout_s = 5\n")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--demo", "--ray", "--config", "c.toml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("launch.py: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]  # (Ray's own shutdown lines may follow it)
    assert errors[0].startswith("launch.py: error: the engine replicas did not start within 5 s"), errors
    assert "0 GPU free" in errors[0] and "needs 1.0 CPU and 1 GPU" in errors[0] and "Traceback" not in proc.stderr
