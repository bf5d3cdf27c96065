"""Property-based checks of every operation in the server's OpenAPI document: a bounded `schemathesis run` (its CLI,
in a subprocess) against a real --demo server on loopback. Tiny models and tiny limits keep generation quick; the
run is deterministic (the same cases every time). It fails on any 5xx (`not_a_server_error`) and on any answer that
breaks the schema the document declares for its status code and media type (`response_schema_conformance`).
tests/schemathesis_hooks.py keeps valid A1111 generation bodies within the limits, so their 200s are checked too.

`status_code_conformance` is not run: the styles answer the status codes of the APIs they imitate (A1111's 400 and
404, the hosted APIs' 400/401/404/429), which FastAPI's generated document does not list for most routes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backends.config import Limits
from live import start_live_server

TESTS = Path(__file__).resolve().parent
# A fuzzer cannot turn these into slow jobs: at most 2 images of 128×128 in 2 steps.
LIMITS = Limits(max_width=128, max_height=128, max_steps=2, max_batch_size=2, max_images=2)
RAW = {
    # v2beta has no steps or size fields: its sizes (up to 1792 px) scaled to ≤ 112 px, 2 steps; no rate limit
    # (the run sends far more than 150 requests in 10 s).
    "stability_v2": {"steps": 2, "turbo_steps": 2, "size_scale": 0.0625, "rate_limit": 0},
}
CHECKS = "not_a_server_error,response_schema_conformance"
ARGS = [
    "--checks", CHECKS,
    "--phases", "examples,coverage,fuzzing",  # stateful: the document declares no links
    "--max-examples", "5",  # cases per operation in the fuzzing phase (coverage enumerates its own from the schema)
    "--generation-deterministic",  # the same cases every run (no seed, no example database)
    "--workers", "1",
    "--request-timeout", "60",
    # No keys are configured, so the Stability and OpenAI routes let loopback callers in with any bearer key.
    "--header", "Authorization: Bearer sk-schemathesis",
    "--no-color",
]
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("schemathesis"), limits=LIMITS, raw=RAW)
    yield srv
    srv.stop()


def test_openapi_operations_have_no_server_errors_and_keep_their_schemas(server, tmp_path):
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "SCHEMATHESIS_HOOKS": "schemathesis_hooks"}
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", *ARGS],
        cwd=tmp_path,  # its .hypothesis / .schemathesis folders go there
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis run failed (exit {run.returncode}):\n{report}"
    assert "Tested:" in report, report  # it ran the operations, not only loaded the document


def test_a1111_body_that_is_not_text_gets_fastapis_400(server):
    """Found by the run (a 500 before): a txt2img body that is not UTF-8 JSON gets what A1111's FastAPI answers,
    400 "There was an error parsing the body" in A1111's `{error, detail, body, errors}` shape."""
    r = httpx.post(f"{server.url}/sdapi/v1/txt2img", content=b"\xd6'0\xff\\", timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"error": "HTTPException", "detail": "There was an error parsing the body", "body": "",
                        "errors": ""}
