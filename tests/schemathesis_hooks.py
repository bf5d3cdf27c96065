"""Schemathesis hooks for tests/test_schemathesis.py (loaded by the `st run` it starts, through the config's
`hooks`). The A1111 generation bodies have no bounds in their schema (A1111 declares none), so a valid body
generated from it almost always asks for more steps, pixels or images than the test server's limits allow and is
refused. Valid (positive) cases get small values for exactly those fields, so they reach the engine and their 200
answers are checked against the schema; invalid (negative) cases are sent as generated."""

from __future__ import annotations

import schemathesis
from schemathesis import GenerationMode

A1111_GENERATION = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")
# field → (smallest, largest) the test server accepts, and the value used outside that range
SMALL = {"steps": (1, 2, 2), "width": (8, 128, 64), "height": (8, 128, 64), "batch_size": (1, 2, 1),
         "n_iter": (1, 1, 1)}


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if (meta is None or meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict)
            or not case.operation.path.endswith(A1111_GENERATION)):
        return case
    body = dict(case.body)
    for name, (low, high, fallback) in SMALL.items():
        value = body.get(name)
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            body[name] = fallback
    body["enable_hr"] = False  # hires fix's second pass would double the steps and the size
    case.body = body
    return case
