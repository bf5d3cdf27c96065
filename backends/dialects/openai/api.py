"""The OpenAI Images dialect (docs/reference/openai_images.md): `POST /v1/images/generations` (JSON),
`/v1/images/edits` and `/v1/images/variations` (multipart), `GET /v1/models[/{id}]`, answered as
`{created, data: [...]}` and failing as `{"error": {message, type, param, code}}`. The HTTP routes
(webui/routes/openai.py) read the body; the UI tab (webui/tabs/openai.py) builds the same fields; both call
`parse` then `run`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Mapping

from ...job import Job, ModelInfo, ModelNotFound, Style
from ...keys import bearer_token
from ...service import Service
from ...styles import StyleStore
from ...upstream import Gateway, UpstreamAnswer, UpstreamPlan
from ..base import Call, Dialect, Reply
from . import plan as planning
from .errors import error_reply, invalid_key, model_not_found, new_request_id
from .files import ImageFiles
from .models import ImageRequest, parse_request
from .options import MODEL_NAMES, OPERATIONS, Settings
from .replies import result_to_reply
from .upstream import FORWARD_SPEC, answer_urls, answers_to_result, plan_upstream, upstream_model

CREATED = 1_700_000_000  # `created` of the listed models (the list must carry an int; nothing here has a date)


class OpenAIDialect(Dialect):
    """The Images API over a Service: operations "generations", "edits", "variations"."""

    style = Style.OPENAI
    forward_spec = FORWARD_SPEC
    operations = OPERATIONS

    def __init__(self, service: Service, settings: Settings | None = None):
        super().__init__(service)
        self.settings = s = settings or Settings.from_config(service.config.raw)
        self.styles = StyleStore(Path(s.styles_file))
        self.files = ImageFiles(service.config.outputs_dir, s)

    # ---------------------------------------------------------------- the caller

    def _key(self, call: Call) -> str | None:
        return bearer_token(call.header("authorization"))

    def authorize(self, call: Call, body: Mapping[str, Any] | None = None) -> str | None:
        """A bearer key from `[keys] openai` (none configured: loopback callers only, whatever key they hold:
        the SDK needs some key to build a client). The owner: a hash of the key when keys are configured."""
        if call.ui:
            return None
        key = self._key(call)
        keys = self.service.keys
        if not keys.allows(self.style, key, call.client_host):
            if keys.configured(self.style):
                raise invalid_key("Incorrect API key provided. You can find your API key in the server's "
                                  "[keys] openai config." if key else
                                  "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
            raise invalid_key("This server answers loopback clients only until OpenAI API keys are configured "
                              "([keys] openai or SDGATE_OPENAI_KEYS).")
        return self._owner(call)

    def _owner(self, call: Call) -> str | None:
        """The caller's key (or login); else None, and the request's `user` names the owner."""
        owner = call.owner or ""
        return owner if owner.startswith(("key:", "user:")) else None

    def render_error(self, exc: BaseException, call: Call) -> Reply:
        return error_reply(exc)

    # ---------------------------------------------------------------- requests

    def parse(self, operation: str, body: bytes | Mapping[str, Any], call: Call) -> ImageRequest:
        """A JSON body (generations) or the form's fields (edits, variations; str, bytes for files, a list for
        `image[]`) → the operation's request model, or OpenAI's 400."""
        return parse_request(operation, body)

    async def run(self, operation: str, request: ImageRequest, call: Call) -> Reply:
        request_id = new_request_id()
        job = await asyncio.to_thread(self.to_job, operation, request, call, request_id)
        await asyncio.to_thread(self.service.validate, job)  # fail before queueing
        result = await self.service.run_async(job)
        reply = await asyncio.to_thread(
            result_to_reply, result, request, default_format=self.settings.default_response_format,
            files=self.files, base_url=call.base_url, request_id=request_id)
        return reply.traced([result])

    def to_job(self, operation: str, req: ImageRequest, call: Call, request_id: str) -> Job:
        """Off the event loop: resolving a model may scan the models folder, images are decoded here."""
        model = self.model_for(req.model, call)
        job = planning.to_job(operation, req, model, req.model, self.settings, self.styles,
                              self.service.config.limits, request_id,
                              owner=self._owner(call))
        return self.job_for_route(job, call)

    def model_for(self, name: str | None, call: Call) -> ModelInfo:
        """The local model `name` maps to (`[models.aliases]`, or a local model's own name). An OpenAI model name
        that nothing maps runs the server's default model, as does a request naming none (clients such as Open
        WebUI always send one); any other unknown name is a 404 model_not_found. On a gateway route the name is
        the gateway's to read."""
        try:
            return self.resolve_model(name or None, call)
        except ModelNotFound:
            if name in MODEL_NAMES:
                return self.resolve_model(None, call)
            raise model_not_found(name or "") from None

    # ---------------------------------------------------------------- GET /v1/models, the url files

    def model_names(self) -> list[str]:
        """The names this server answers to: the OpenAI names, the aliases, the local models."""
        local = [m.name for m in self.service.models.list()]
        return list(dict.fromkeys([*MODEL_NAMES, *sorted(self.service.models.aliases), *local]))

    @staticmethod
    def model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": CREATED, "owned_by": "sdgate"}

    async def list_models(self, call: Call) -> Reply:
        names = await asyncio.to_thread(self.model_names)
        return Reply({"object": "list", "data": [self.model_object(n) for n in names]},
                     headers={"x-request-id": new_request_id()})

    async def get_model(self, model_id: str, call: Call) -> Reply:
        names = await asyncio.to_thread(self.model_names)
        if model_id not in names:
            raise model_not_found(model_id)
        return Reply(self.model_object(model_id), headers={"x-request-id": new_request_id()})

    def image_file(self, name: str):
        """(path, media type) of a `url` answer's file, or None when unknown or expired."""
        return self.files.find(name)

    # ---------------------------------------------------------------- the relay's reverse pair

    def to_upstream(self, job: Job) -> UpstreamPlan:
        return plan_upstream(job)

    def from_upstream(self, job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]):
        return answers_to_result(job, plan, answers)

    async def call_upstream(self, job: Job, gateway: Gateway):
        """Send the calls, download any `url` answers through the gateway, then read them all."""
        plan = self.to_upstream(job)
        answers = [await gateway.send(request) for request in plan.requests]
        urls = await self.read_upstream(gateway, answer_urls, answers)
        for url in urls:
            plan.context.downloads[url] = await gateway.download(url)
        result = await self.read_upstream(gateway, self.from_upstream, job, plan, answers)
        result.model = upstream_model(plan.context.model, gateway.name)
        result.dropped = list(plan.dropped)
        result.notes += plan.notes
        return result
