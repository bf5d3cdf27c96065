#!/usr/bin/env python3
"""What the relay adds: an upstream (this server, --demo) and a relay routing A1111 to it, both on loopback.

    python bench/relay.py [--cheap 300] [--gen 15] [--seconds 3] [--concurrency 8]

For each request kind, direct and relayed calls alternate (so drift hits both alike); the added latency is
relayed − direct per pair, reported as p50 and p99. Then requests per second, direct and relayed, from
`--concurrency` client threads for `--seconds` each. Everything is bounded and stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from backends.config import Config  # noqa: E402
from backends.assembly import create_service  # noqa: E402
from webui.app import create_app  # noqa: E402
from webui.server import serve_in_thread  # noqa: E402

GENERATION = {"prompt": "bench", "seed": 1, "steps": 2, "width": 64, "height": 64}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(client: httpx.Client, method: str, url: str, **kw) -> float:
    started = time.perf_counter()
    reply = client.request(method, url, **kw)
    took = time.perf_counter() - started
    reply.raise_for_status()
    return took


def pairs(client: httpx.Client, direct: str, relayed: str, method: str, path: str, runs: int, **kw) -> dict:
    d, r = [], []
    for _ in range(runs):
        d.append(timed(client, method, direct + path, **kw))
        r.append(timed(client, method, relayed + path, **kw))
    added = [b - a for a, b in zip(d, r)]
    return {"direct_p50": statistics.median(d), "relayed_p50": statistics.median(r),
            "added_p50": percentile(added, 50), "added_p99": percentile(added, 99)}


def throughput(url: str, seconds: float, concurrency: int) -> float:
    done = [0] * concurrency
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=30) as c:
            while time.perf_counter() < stop:
                c.get(url).raise_for_status()
                done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cheap", type=int, default=300, help="pairs of GET /sdapi/v1/samplers")
    ap.add_argument("--gen", type=int, default=15, help="pairs of a 64x64, 2-step txt2img")
    ap.add_argument("--seconds", type=float, default=3.0, help="per throughput run")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sdgate-bench-relay-"))
    upstream_service = create_service(Config(demo=True, models_dir=tmp / "models", outputs_dir=tmp / "up", threads=1))
    upstream = serve_in_thread(create_app(upstream_service))
    raw = {"gateways": [{"name": "up", "base_url": upstream.url, "styles": ["a1111"], "auth": "none",
                         "max_concurrency": args.concurrency}], "routing": {"a1111": "up"}}
    relay_service = create_service(Config(demo=True, models_dir=tmp / "models", outputs_dir=tmp / "relay",
                                          threads=1, raw=raw))
    relay = serve_in_thread(create_app(relay_service))
    try:
        with httpx.Client(timeout=120) as client:
            for url in (upstream.url, relay.url):  # warm up: connections, the model load
                timed(client, "POST", url + "/sdapi/v1/txt2img", json=GENERATION)
                timed(client, "GET", url + "/sdapi/v1/samplers")
            cheap = pairs(client, upstream.url, relay.url, "GET", "/sdapi/v1/samplers", args.cheap)
            gen = pairs(client, upstream.url, relay.url, "POST", "/sdapi/v1/txt2img", args.gen, json=GENERATION)
        rps_direct = throughput(upstream.url + "/sdapi/v1/samplers", args.seconds, args.concurrency)
        rps_relayed = throughput(relay.url + "/sdapi/v1/samplers", args.seconds, args.concurrency)
    finally:
        relay.stop()
        upstream.stop()
        relay_service.close()
        upstream_service.close()

    ms = 1000.0
    print(f"relay overhead on loopback (upstream and relay in one process, {os.cpu_count()} CPUs)")
    for name, row, n in (("GET /sdapi/v1/samplers", cheap, args.cheap), ("txt2img 64x64, 2 steps", gen, args.gen)):
        print(f"  {name:24s} n={n:<4d} direct p50 {row['direct_p50'] * ms:7.2f} ms   relayed p50 "
              f"{row['relayed_p50'] * ms:7.2f} ms   added p50 {row['added_p50'] * ms:6.2f} ms   "
              f"added p99 {row['added_p99'] * ms:6.2f} ms")
    print(f"  requests/s (GET samplers, {args.concurrency} clients, {args.seconds:g} s): direct {rps_direct:.0f}, "
          f"relayed {rps_relayed:.0f} ({rps_relayed / rps_direct:.2f}x)")


if __name__ == "__main__":
    main()
