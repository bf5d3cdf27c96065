"""The Stability v1 dialect (docs/reference/hosted_apis.md §A): text-to-image, image-to-image and masking for the
v1 engines, the engines/account/balance endpoints, v1's `{id, name, message}` errors, and the reverse pair the
relay uses to speak v1 to a gateway. webui/routes/stability_v1.py and webui/tabs/stability_v1.py both call
`parse` then `run` here.

- The answer order is v1's: 401 (authorize) before 404 (the engine, looked up before the body is read) before
  400 (the body).
- The Authorization header is always required (401 "missing authorization header", as upstream); with no keys
  configured any key is accepted from loopback clients (backends/keys.py).
- A full queue answers 429 `rate_limit_exceeded` with Retry-After (errors.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ...job import Job, ModelInfo, ModelNotFound, Result, Style
from ...keys import bearer_token
from ...service import Service
from ...styles import StyleStore
from ...styles import styles_path as configured_styles_path
from ...upstream import UpstreamAnswer, UpstreamPlan
from ..base import Call, Dialect, Reply
from . import upstream
from .replies import encode_pngs, to_reply
from .engines import engine_listing
from .errors import engine_not_found, render_error, unauthorized
from .options import LOCAL_CREDITS
from .plan import Planned, Settings, plan_image_to_image, plan_text_to_image

TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"
MASKING = "masking"


class StabilityV1Dialect(Dialect):
    """What each v1 route does, over a Service (the routes and the UI tab share one instance)."""

    style = Style.STABILITY_V1
    forward_spec = upstream.FORWARD_SPEC
    operations: ClassVar[tuple[str, ...]] = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, MASKING)

    def __init__(self, service: Service, *, styles_path: Path | None = None):
        super().__init__(service)
        config = service.config
        limits = config.limits
        self.settings = Settings(
            lenient=bool((config.raw.get("stability_v1") or {}).get("lenient", False)),
            max_side=min(limits.max_width, limits.max_height),
            styles=StyleStore(styles_path or configured_styles_path(config.raw, "stability_v1")),
            limits=limits,
        )

    @property
    def lenient(self) -> bool:
        return self.settings.lenient

    @property
    def max_side(self) -> int:
        return self.settings.max_side

    # ------------------------------------------------------------------ auth, errors and engines

    def authorize(self, call: Call, body: Mapping[str, Any] | None = None) -> None:
        """The bearer key (a bare key too). A UI tab's person passed the UI's own login."""
        if call.ui:
            return
        authorization = call.header("authorization")
        if not authorization or not authorization.strip():
            raise unauthorized("missing authorization header")
        keys = self.service.keys
        if not keys.allows(self.style, bearer_token(authorization), call.client_host):
            if keys.configured(self.style):
                raise unauthorized("invalid API key")
            raise unauthorized("this server has no Stability API keys configured and answers loopback clients only")
        return

    def render_error(self, exc: BaseException, call: Call) -> Reply:
        return render_error(exc)

    def resolve_engine(self, engine_id: str, call: Call) -> ModelInfo:
        """The model an engine id names on the call's route (a gateway's: passed on as it came), or v1's 404."""
        try:
            return self.resolve_model(engine_id, call)
        except ModelNotFound:
            raise engine_not_found(engine_id) from None

    async def engines(self, call: Call) -> Reply:
        """GET /v1/engines/list: the v1 engines this route can serve (--demo maps them all)."""

        def listing() -> list[dict[str, str]]:
            rows = []
            for row in engine_listing():
                try:
                    self.resolve_model(row["id"], call)
                except ModelNotFound:
                    continue
                rows.append(row)
            return rows

        return Reply(await asyncio.to_thread(listing))

    def upscale(self, call: Call) -> Reply:
        raise engine_not_found(call.params.get("engine_id", ""))  # no upscaler engines are served here

    def account(self) -> dict[str, Any]:
        return {
            "id": "user-local",
            "email": "local@sdgate.invalid",
            "profile_picture": None,
            "organizations": [{"id": "org-local", "name": "sdgate (local)", "role": "OWNER", "is_default": True}],
        }

    def balance(self) -> dict[str, float]:
        return {"credits": LOCAL_CREDITS}

    # ------------------------------------------------------------------ request → Job → answer

    def parse(self, operation: str, body: bytes | str | Mapping[str, Any] | list[tuple[str, Any]],
              call: Call) -> Planned:
        """`body`: text-to-image's JSON (bytes, or the same fields as a dict); image-to-image's and masking's
        multipart items (a list of (name, value) pairs, files as bytes, or a dict). The engine is looked up
        first (404 before any 400)."""
        if operation not in self.operations:
            raise ValueError(f"unknown Stability v1 operation {operation!r}")
        engine_id = call.params.get("engine_id", "")
        info = self.resolve_engine(engine_id, call)
        accept = call.header("accept")
        if operation == TEXT_TO_IMAGE:
            planned = plan_text_to_image(self.settings, engine_id, info, body, accept)
        else:
            items = list(body.items()) if isinstance(body, Mapping) else list(body)
            planned = plan_image_to_image(self.settings, engine_id, info, items, accept, operation == MASKING)
        self.job_for_route(planned.job, call)
        self.service.validate(planned.job)
        return planned

    async def run(self, operation: str, request: Planned, call: Call) -> Reply:
        result = await self.service.run_async(request.job)
        pngs = await asyncio.to_thread(encode_pngs, request.job, result, request.engine_id, request.composite)
        return to_reply(pngs, result, request.png).traced([result])

    # ------------------------------------------------------------------ relay: Job ⇄ v1 upstream

    def to_upstream(self, job: Job) -> UpstreamPlan:
        return upstream.to_upstream(job)

    def from_upstream(self, job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
        return upstream.from_upstream(job, plan, answers)

