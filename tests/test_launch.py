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
