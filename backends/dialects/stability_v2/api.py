"""The Stability AI v2beta Stable Image dialect (docs/reference/hosted_apis.md §B): `POST
/v2beta/stable-image/generate/{core,ultra,sd3}` with a multipart/form-data body, answered with the image bytes
(`accept: image/*`) or `{image, finish_reason, seed}` (`accept: application/json`), and errors as
`{id, name, errors}`. The HTTP route (webui/routes/stability_v2.py) reads the form; the UI tab
(webui/tabs/stability_v2.py) builds the same fields; both call `parse` then `run`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from ...job import Job, ModelInfo, ModelNotFound, Style
from ...keys import bearer_token
from ...service import Service
from ...styles import StyleStore
from ...upstream import Gateway, UpstreamAnswer, UpstreamPlan
from ..base import Call, Dialect, Reply
from . import plan as planning
from .errors import V2Error, bad_request, error_reply, new_request_id, not_found
from .guards import Moderation, RateLimiter
from .models import V2Request, parse_request
from .options import CLIENT_HEADERS, ENDPOINTS, MAX_CLIENT_HEADER
from .replies import result_to_reply, wants_json
from .settings import Settings
from .upstream import FORWARD_SPEC, answers_to_result, plan_upstream, upstream_model


class StabilityV2Dialect(Dialect):
    """The v2beta generate endpoints over a Service: operations "core", "ultra", "sd3"."""

    style = Style.STABILITY_V2
    forward_spec = FORWARD_SPEC
    operations = ENDPOINTS

    def __init__(self, service: Service, settings: Settings | None = None):
        super().__init__(service)
        self.settings = s = settings or Settings.from_config(service.config.raw)
        self.styles = StyleStore(Path(s.styles_file))
        self.limiter = RateLimiter(s.rate_limit, s.rate_window_s, s.rate_timeout_s)
        self.moderation = Moderation(s.blocked_terms, s.english_only)

    # ---------------------------------------------------------------- the caller (before the body is read)

    def authorize(self, call: Call, body: Mapping[str, Any] | None = None) -> str | None:
        """Auth (bearer key; none configured → loopback only), then the per-caller rate limit, then the client
        headers' lengths. The caller's identity for the rate limit: a hash of its key, else its address."""
        key = bearer_token(call.header("authorization"))
        if not self.service.keys.allows(self.style, key, call.client_host):
            text = ("authorization: missing or invalid API key" if self.service.keys.configured(self.style)
                    else "authorization: this server answers loopback clients only until API keys are configured")
            raise V2Error(401, "unauthorized", [text])
        caller = "key:" + hashlib.sha256(key.encode()).hexdigest()[:16] if key else f"host:{call.client_host}"
        if not self.limiter.allow(caller):
            s = self.settings
            raise V2Error(429, "rate_limit_exceeded", [
                f"You have exceeded the rate limit of {s.rate_limit} requests within {s.rate_window_s:g} seconds; "
                f"you have been timed out for {s.rate_timeout_s:g} seconds."
            ])
        for name in CLIENT_HEADERS:
            if len(call.header(name) or "") > MAX_CLIENT_HEADER:
                raise bad_request(f"{name}: must be at most {MAX_CLIENT_HEADER} characters")
        return caller if key else None

    def render_error(self, exc: BaseException, call: Call) -> Reply:
        return error_reply(exc)

    # ---------------------------------------------------------------- requests

    def parse(self, operation: str, body: bytes | Mapping[str, Any], call: Call) -> V2Request:
        """The form's fields (str, or bytes for file parts) → the endpoint's request model, checked against the
        moderation rules. v2beta takes multipart forms only: the route reads the form, a tab builds the fields."""
        if operation not in ENDPOINTS:
            raise not_found(operation)
        if isinstance(body, (bytes, bytearray)):
            raise bad_request("content-type: must be multipart/form-data")
        req = parse_request(operation, body)
        self.moderation.check(req.prompt, req.negative_prompt)
        return req

    async def run(self, operation: str, request: V2Request, call: Call) -> Reply:
        """One generate call on `call.route`; the answer in the form the caller's `accept` asks for."""
        request_id = new_request_id()
        job = self.to_job(operation, request, call, request_id)
        self.service.validate(job)  # fail before queueing
        result = await self.service.run_async(job)
        reply = result_to_reply(result, request, accept_json=wants_json(call.header("accept")), request_id=request_id,
                                jpeg_quality=self.settings.jpeg_quality)
        return reply.traced([result])

    def to_job(self, endpoint: str, req: V2Request, call: Call, request_id: str) -> Job:
        model = self._model(endpoint, req, call)
        job = planning.to_job(endpoint, req, model, self.settings, self.styles, request_id, self.service.config.limits)
        return self.job_for_route(job, call)

    def _model(self, endpoint: str, req: V2Request, call: Call) -> ModelInfo:
        """The first of the endpoint's model names that resolves on the call's route (--demo maps them all)."""
        names = planning.model_names(endpoint, req)
        for name in names:
            try:
                return self.resolve_model(name, call)
            except ModelNotFound:
                continue
        raise V2Error(404, "not_found", [
            f"model: no local model is mapped to {names[0]!r}; map it in the config, e.g. "
            f"[models.aliases] {names[-1]} = \"<checkpoint>\""
        ])

    # ---------------------------------------------------------------- the relay's reverse pair

    def to_upstream(self, job: Job) -> UpstreamPlan:
        return plan_upstream(job)

    def from_upstream(self, job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]):
        return answers_to_result(job, plan, answers)

    async def call_upstream(self, job: Job, gateway: Gateway):
        result = await super().call_upstream(job, gateway)
        result.model = upstream_model(result.model.name, gateway.name)  # the model as "<name> (… @ gateway)"
        return result
