"""Start or join the Ray cluster and deploy the engine replicas (`launch.py --ray [ADDRESS]`, `[ray]`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import ray
from ray import serve

from ..config import Config, ConfigError
from ..local.engine import LocalEngine
from .replica import EngineReplica
from .runner import RayRunner
from .signals import JobSignals

log = logging.getLogger(__name__)

APP = "sdgate"  # the Serve application's name
NAMESPACE = "sdgate"


def _deploy(app, timeout_s: float, each: str):
    """serve.run, bounded: replicas the cluster cannot place would otherwise keep the server from ever starting."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["handle"] = serve.run(app, name=APP, route_prefix=None)
        except Exception as e:  # noqa: BLE001 - said in one line below
            outcome["error"] = e

    thread = threading.Thread(target=run, name="sdgate-deploy", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "handle" in outcome:
        return outcome["handle"]
    if "error" in outcome:
        lines = [line for line in str(outcome["error"]).splitlines() if line.strip()]
        raise ConfigError(f"the engine replicas failed to start: {lines[-1] if lines else outcome['error']!r}")
    free = ", ".join(f"{ray.available_resources().get(kind, 0):g} {kind}" for kind in ("CPU", "GPU"))
    raise ConfigError(f"the engine replicas did not start within {timeout_s:.0f} s ([ray] start_timeout_s): the "
                      f"cluster has {free} free, each replica needs {each}")


class Cluster:
    """The deployed replicas and what the ingress needs of them."""

    def __init__(self, config: Config, engine: LocalEngine, listeners: Iterable[Any] = ()):
        settings = config.ray
        low, high = settings.counts()
        self.started_here = not settings.address
        try:
            if settings.address:
                ray.init(address=settings.address, namespace=NAMESPACE, log_to_driver=True)
            else:  # a cluster of this one machine, for as long as the server runs
                ray.init(namespace=NAMESPACE, include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise ConfigError(f"--ray {settings.address or ''}: cannot reach the Ray cluster: {e}") from None
        gpus = settings.num_gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        # Serve's own HTTP proxy is off: requests come in through this server, which keeps the queue and ids.
        serve.start(proxy_location="Disabled")
        options: dict[str, Any] = {
            "name": "engine",
            "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": gpus},
            "max_ongoing_requests": 1,  # one batch at a time per device; the ingress's queue holds the rest
            "health_check_period_s": 2,
            "graceful_shutdown_timeout_s": 5,
        }
        if settings.autoscales:
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                             "target_ongoing_requests": 1}
        else:
            options["num_replicas"] = low
        # The replicas' copy of the config: no keys or logins (they never leave this process), models by full path.
        shipped = replace(config, raw={}, api_auth=[], auth=[],
                          ray=replace(settings, models_dir=settings.models_dir or str(Path(config.models_dir).resolve())))
        app = serve.deployment(EngineReplica).options(**options).bind(shipped, engine.models.default,
                                                                      dict(engine.models.aliases))
        log.info("deploying %s engine replica(s) (%s CPU, %s GPU each) on Ray", low if low == high else f"{low}-{high}",
                 settings.num_cpus, gpus)
        handle = _deploy(app, settings.start_timeout_s, f"{settings.num_cpus} CPU and {gpus} GPU")
        self.signals = JobSignals.remote()
        self.runner = RayRunner(engine, handle, self.signals, settings.retries, listeners)
        self.workers = high  # batches in flight at once: one per replica the deployment may have

    def close(self) -> None:
        self.runner.close()
        try:
            serve.delete(APP)
            if self.started_here:
                serve.shutdown()
        except Exception as e:  # noqa: BLE001 - shutting down: say it, go on
            log.warning("could not remove the Serve application: %s", e)
        ray.shutdown()
