"""The AUTOMATIC1111 `/sdapi/v1` dialect (docs/reference/a1111_api.md): what every A1111 route does, in A1111's
terms. txt2img and img2img go through the contract's `parse` + `run` (the HTTP route and the UI tabs alike);
the other routes (options, progress, lists, extras, png-info) are methods here that webui/routes/a1111.py binds.

Behaviour that A1111 leaves undefined or silently drops (unknown samplers, unknown checkpoints in
override_settings, unknown option keys) gets a clear error here instead.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from ...config import REPO_ROOT
from ...images import encode_base64
from ...job import InvalidRequest, Job, ModelInfo, Result, SdgateError, Style
from ...keys import is_admin
from ...service import Service
from ...styles import StyleStore
from ...styles import styles_path as configured_styles_path
from ...upstream import UpstreamAnswer, UpstreamPlan
from ..base import Call, Dialect, Reply
from . import extras, listings, upstream
from .auth import authorize
from .errors import HttpError, RequestInvalid, UnknownOption, error_body
from .imaging import LATENT_UPSCALE_MODES, UPSCALERS
from .models import (
    ExtrasBatchImagesRequest,
    ExtrasSingleImageRequest,
    Img2ImgRequest,
    PNGInfoRequest,
    ProgressState,
    Txt2ImgRequest,
)
from .options import (
    CMD_FLAGS,
    OPTION_DEFAULTS,
    READ_ONLY_OPTIONS,
    REDACTED,
    RESTRICTED_OPTIONS,
    OptionsStore,
    coerce_option,
)
from .plan import prepare
from .replies import respond
from .scripts import check_alwayson, run_script, script_info, scripts_list

log = logging.getLogger(__name__)

REQUESTS = {"txt2img": Txt2ImgRequest, "img2img": Img2ImgRequest}
OUTPUT_KINDS = (("outdir_txt2img_samples", "txt2img-images"), ("outdir_img2img_samples", "img2img-images"),
                ("outdir_extras_samples", "extras-images"), ("outdir_txt2img_grids", "txt2img-grids"),
                ("outdir_img2img_grids", "img2img-grids"))


class A1111Dialect(Dialect):
    """The A1111 API over a Service: one per service, shared by the /sdapi/v1 routes and the A1111 tabs
    (one options store, one styles file)."""

    style = Style.A1111
    forward_spec = upstream.FORWARD_SPEC
    carries = upstream.CARRIES
    operations = tuple(REQUESTS)

    def __init__(self, service: Service, *, options_path: Path | None = None, styles_path: Path | None = None):
        super().__init__(service)
        self.config = service.config
        self.models = service.models
        self.queue = service.queue
        section = (self.config.raw or {}).get("a1111", {}) or {}
        self.outputs_dir = Path(self.config.outputs_dir)
        self.strict_scripts = bool(section.get("strict_scripts", False))
        defaults = dict(OPTION_DEFAULTS)
        for key, kind in OUTPUT_KINDS:
            defaults[key] = str(self.outputs_dir / kind)
        options_path = options_path or Path(section.get("options_file", self.outputs_dir / "a1111-options.json"))
        self.options = OptionsStore(options_path, defaults)
        self.styles = StyleStore(styles_path or configured_styles_path(service.config.raw))
        self._warned: set[str] = set()
        self._restore_saved_checkpoint()

    # ------------------------------------------------------------------ the contract

    def parse(self, operation: str, body: bytes | Mapping[str, Any], call: Call) -> Txt2ImgRequest | Img2ImgRequest:
        """A txt2img/img2img body (JSON bytes from the route, the fields from a tab) → its request model, or
        A1111's 422 (FastAPI's `{"detail": [...]}`)."""
        model = REQUESTS[operation]
        if isinstance(body, (bytes, bytearray)):
            if not body.strip():
                raise RequestInvalid.missing()
            try:
                body = json.loads(body)
            except json.JSONDecodeError as e:
                raise RequestInvalid.from_json(e) from None
            except (ValueError, RecursionError):  # not UTF-8/16/32, or nested too deep: FastAPI's 400
                raise HttpError(400, "There was an error parsing the body") from None
            if body is None:  # `null`: no body, as FastAPI reads it
                raise RequestInvalid.missing()
        try:
            return model.model_validate(body)
        except ValidationError as e:
            raise RequestInvalid.from_validation(e) from None

    async def run(self, operation: str, request: Txt2ImgRequest | Img2ImgRequest, call: Call) -> Reply:
        """Plan (off the event loop), run the jobs on `call.route` (hires fix's second pass is the engine's, in
        the same Job), and answer as A1111 does. A `script_name` hands the request to that script (scripts/),
        which runs its own copies of the request through `generate`."""
        check_alwayson(operation, request)
        if request.script_name:
            return await run_script(self, operation, request, call)
        body, results = await self.generate(operation, request, call)
        return Reply(body).traced(results)

    async def generate(self, operation: str, request: Txt2ImgRequest | Img2ImgRequest,
                       call: Call) -> tuple[dict[str, Any], list[Result]]:
        """One request without its script: the response body and the Results behind it."""
        plan = await asyncio.to_thread(prepare, self, request, call, time.time())
        results = await self._run_jobs(plan.jobs)
        body = await asyncio.to_thread(respond, request, plan, _merge(results), self.outputs_dir)
        return body, results

    def authorize(self, call: Call, body: Mapping[str, Any] | None = None) -> str | None:
        return authorize(self.config, call)

    def render_error(self, exc: BaseException, call: Call) -> Reply:
        status, body, headers = error_body(exc)
        return Reply(body, status=status, headers=headers)

    def to_upstream(self, job: Job) -> UpstreamPlan:
        return upstream.to_upstream(job)

    def from_upstream(self, job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
        return upstream.from_upstream(job, plan, answers)

    # ------------------------------------------------------------------ running

    async def _run_jobs(self, jobs: list[Job]) -> list[Result]:
        results = []
        for job in jobs:
            result = await self.service.run_async(job)
            results.append(result)
            if result.interrupted:  # interrupt stops the whole request, as in A1111
                break
        return results

    # ------------------------------------------------------------------ models and options

    def _restore_saved_checkpoint(self) -> None:
        """A checkpoint chosen through POST /options survives a restart, unless --model names one."""
        saved = self.options.saved("sd_model_checkpoint")
        if not saved or self.config.model:
            return
        try:
            self.models.default = self.models.resolve(saved).title
        except SdgateError as e:
            log.warning("saved sd_model_checkpoint %r is not available (%s); using the default", saved, e.message)

    def _current_model(self) -> ModelInfo | None:
        try:
            return self.models.resolve(None)
        except SdgateError:
            return None

    def _check_option(self, key: str, value: Any, call: Call | None = None) -> Any:
        """A value for option `key`, checked; a checkpoint is resolved (on the call's route, for a request's
        override_settings; locally for POST /options)."""
        if key not in OPTION_DEFAULTS:
            raise UnknownOption(f"unknown option {key!r}", details={"option": key})
        if key == "sd_model_checkpoint":
            if not value:
                raise InvalidRequest("option 'sd_model_checkpoint' must name a checkpoint")
            if call is not None:
                return self.resolve_model(str(value), call).title
            return self.models.resolve(str(value)).title  # every A1111 alias form; ModelNotFound otherwise
        if key in ("samples_format", "grid_format") and isinstance(value, str):
            value = value.strip().lower()
        return coerce_option(key, value, OPTION_DEFAULTS[key])

    def apply_options(self, values: dict[str, Any]) -> None:
        if "sd_model_checkpoint" in values:
            self.models.default = values["sd_model_checkpoint"]
        self.options.update(values)

    async def get_options(self) -> dict[str, Any]:
        values = self.options.values()
        current = await asyncio.to_thread(self._current_model)
        values["sd_model_checkpoint"] = current.title if current else None
        values["sd_checkpoint_hash"] = (current.sha256 or "") if current else ""
        return values

    async def set_options(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object of option names to values")
        checked = {}
        for key, value in body.items():
            if key in RESTRICTED_OPTIONS or key in READ_ONLY_OPTIONS:
                continue
            checked[key] = await asyncio.to_thread(self._check_option, key, value)
        self.apply_options(checked)
        return None

    def effective_options(self, override: dict[str, Any] | None, call: Call) -> tuple[dict[str, Any], dict]:
        """This request's options: stored values overlaid with `override_settings` (checked, not stored)."""
        overrides = {}
        for key, value in (override or {}).items():
            if key in RESTRICTED_OPTIONS or key in READ_ONLY_OPTIONS:
                continue
            if key not in OPTION_DEFAULTS:
                self.warn_once(f"override:{key}", "override_settings key %r is not an option here; ignored", key)
                continue
            overrides[key] = self._check_option(key, value, call)
        return {**self.options.values(), **overrides}, overrides

    def warn_once(self, tag: str, message: str, *args) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            log.warning(message, *args)

    # ------------------------------------------------------------------ extras and png-info

    async def extra_single_image(self, req: ExtrasSingleImageRequest) -> dict[str, Any]:
        extras.check_upscalers(req)
        encoded, text = await asyncio.to_thread(extras.extras_one, req.image, "image", req, self.options.values(),
                                                self.warn_once, self.service.config.limits)
        return {"html_info": extras.html_info(text), "image": encoded}

    async def extra_batch_images(self, req: ExtrasBatchImagesRequest) -> dict[str, Any]:
        extras.check_upscalers(req)
        images, text = [], ""
        for i, item in enumerate(req.imageList):
            encoded, text = await asyncio.to_thread(extras.extras_one, item.data, f"imageList[{i}].data", req,
                                                    self.options.values(), self.warn_once, self.service.config.limits)
            images.append(encoded)
        return {"html_info": extras.html_info(text), "images": images}

    async def png_info(self, req: PNGInfoRequest) -> dict[str, Any]:
        return await asyncio.to_thread(extras.png_info, req.image, self.service.config.limits)

    # ------------------------------------------------------------------ progress and control

    def own_tickets(self, call: Call) -> list:
        """The caller's own jobs, running first (an admin's: everyone's). A1111 let anyone watch and stop any job;
        here progress, previews, interrupt and skip reach only your own."""
        return self.queue.tickets_of(call.owner, admin=is_admin(call.owner, self.service.config.serving.admins))

    def progress(self, call: Call, skip_current_image: bool = False) -> dict[str, Any]:
        tickets = self.own_tickets(call)
        ticket = tickets[0] if tickets else None
        if ticket is None:
            return {"progress": 0, "eta_relative": 0, "state": ProgressState().model_dump(), "current_image": None,
                    "textinfo": None}
        p = ticket.progress
        job = ticket.job
        job_count = max(1, p.batch_count)
        running = p.state == "running"
        fraction = 0.0
        eta = 0.0
        if running:
            fraction = min(1.0, 0.01 + p.batch_no / job_count + (p.step / p.steps / job_count if p.steps else 0.0))
            elapsed = time.time() - (p.started_at or time.time())
            eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        task = job.extra.get("task") if job.style == Style.A1111 else None
        state = ProgressState(
            skipped=bool(ticket.skipped),
            interrupted=bool(ticket.interrupted),
            job=f"scripts_{task}" if task else (str(job.style) if job.style else "job"),
            job_count=job_count,
            job_timestamp=datetime.datetime.fromtimestamp(p.started_at or ticket.submitted_at).strftime("%Y%m%d%H%M%S"),
            job_no=p.batch_no,
            sampling_step=p.step if running else 0,
            sampling_steps=p.steps,
        )
        image = None
        if running and not skip_current_image and p.preview is not None:
            image = encode_base64(p.preview, "png")
        return {"progress": fraction, "eta_relative": eta, "state": state.model_dump(), "current_image": image,
                "textinfo": None}

    def interrupt(self, call: Call) -> dict:
        for ticket in self.own_tickets(call):
            if ticket.state == "running":
                ticket.interrupt()
        return {}

    def skip(self, call: Call) -> None:
        for ticket in self.own_tickets(call):
            if ticket.state == "running":
                ticket.skip()
        return None

    def pending_tasks(self, call: Call) -> dict[str, Any]:
        """A1111 1.10's `GET /internal/pending-tasks`: the ids of the caller's waiting jobs (`force_task_id`)."""
        waiting = [t.id for t in self.own_tickets(call) if t.state == "queued"]
        return {"size": len(waiting), "tasks": waiting}

    def internal_progress(self, call: Call, id_task: str | None, id_live_preview: int = -1,
                          live_preview: bool = True) -> dict[str, Any]:
        """A1111's `POST /internal/progress` for one task id (the caller's own; another's is unknown here)."""
        ticket = self.queue.get(id_task or "")
        admin = is_admin(call.owner, self.service.config.serving.admins)
        if ticket is None or not (admin or ticket.owner == call.owner):
            return {"active": False, "queued": False, "completed": False, "progress": None, "eta": None,
                    "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting..."}
        self.queue.refresh()
        p, state = ticket.progress, ticket.state
        preview = None
        if live_preview and state == "running" and p.preview is not None and p.preview_step != id_live_preview:
            preview = "data:image/png;base64," + encode_base64(p.preview, "png")
        return {
            "active": state == "running",
            "queued": state == "queued",
            "completed": state in ("done", "failed", "cancelled"),
            "progress": p.fraction if state == "running" else None,
            "eta": ticket.eta if state in ("running", "queued") else None,
            "live_preview": preview,
            "id_live_preview": p.preview_step if preview else id_live_preview,
            "textinfo": f"In queue, {p.position} ahead" if state == "queued" else None,
        }

    # ------------------------------------------------------------------ lists

    def samplers(self) -> list[dict[str, Any]]:
        return listings.a1111_samplers()

    def schedulers(self) -> list[dict[str, Any]]:
        return listings.a1111_schedulers()

    async def sd_models(self) -> list[dict[str, Any]]:
        return listings.sd_model_rows(await asyncio.to_thread(self.models.list))

    @property
    def _models_dir(self) -> Path:
        return Path(self.config.models_dir)

    async def sd_vae(self) -> list[dict[str, Any]]:
        return listings.sd_vae(await asyncio.to_thread(self.service.vae_files))

    def loras(self) -> list[dict[str, Any]]:
        return listings.loras(self._models_dir)

    async def embeddings(self) -> dict[str, Any]:
        """A1111's loaded/skipped for the current model (loading it, as A1111 always has it loaded)."""
        return await asyncio.to_thread(self.service.embedding_listing)

    def scripts(self) -> dict[str, list[str]]:
        return scripts_list()

    def script_info(self) -> list[dict[str, Any]]:
        return script_info()

    def upscalers(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for name in UPSCALERS
        ]

    def latent_upscale_modes(self) -> list[dict[str, Any]]:
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    def prompt_styles(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in self.styles.all()]

    def cmd_flags(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **CMD_FLAGS,
            "listen": cfg.host in ("0.0.0.0", "::"),
            "server_name": cfg.host,
            "port": cfg.port,
            "share": bool(cfg.share),
            "api_auth": REDACTED if cfg.api_auth else None,
            "gradio_auth": REDACTED if cfg.auth else None,
            "ckpt": cfg.model,
            "models_dir": str(cfg.models_dir),
            "ckpt_dir": str(Path(cfg.models_dir) / "Stable-diffusion"),
            "vae_dir": str(Path(cfg.models_dir) / "VAE"),
            "lora_dir": str(Path(cfg.models_dir) / "Lora"),
            "embeddings_dir": str(Path(cfg.models_dir) / "embeddings"),
            "data_dir": str(REPO_ROOT),
            "styles_file": [str(self.styles.path)],
            "device": self.service.device,
            "demo": bool(cfg.demo),
        }

    async def memory(self) -> dict[str, Any]:
        return await asyncio.to_thread(listings.memory)

    async def refresh_checkpoints(self) -> None:
        await asyncio.to_thread(self.models.refresh)

    async def unload_checkpoint(self) -> dict:
        await asyncio.to_thread(self.models.unload)
        return {}

    async def reload_checkpoint(self) -> dict:
        await asyncio.to_thread(self.models.get, None)
        return {}


def _merge(results: list[Result]) -> Result:
    """One request's Results (one per job) as one."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return replace(
        first,
        images=[im for r in results for im in r.images],
        seeds=[s for r in results for s in r.seeds],
        subseeds=[s for r in results for s in r.subseeds],
        notes=notes,
        not_applied={k: v for r in results for k, v in r.not_applied.items()},
        interrupted=any(r.interrupted for r in results),
        skipped=any(r.skipped for r in results),
        timings=timings,
        finished_at=results[-1].finished_at,
    )
