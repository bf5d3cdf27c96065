"""The safety checker (backends/local/features/safety.py) through a tiny random-weight StableDiffusionSafetyChecker
built offline (tests/tiny_safety.py) and loaded by the real `from_pretrained` code: one that flags every image and
one that flags none. Engine level on tiny-sd1 at 64px; then the Stability answers a real server gives
(docs/reference/hosted_apis.md A.8 item 20, B.6 item 16) with and without a checker installed, and the relay's
reading of a gateway's CONTENT_FILTERED."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from live import start_live_server
from PIL import Image

from backends.config import Features
from backends.dialects import stability_v1 as v1
from backends.dialects import stability_v2 as v2
from backends.job import Job, Style
from backends.local.engine import LocalEngine
from backends.upstream import UpstreamAnswer, UpstreamPlan
from tests.tiny_safety import write_tiny_checker

SIZE = 64
KEY = "sk-test-safety"
AUTH = {"Authorization": f"Bearer {KEY}"}
V1_T2I = "/v1/generation/stable-diffusion-xl-beta-v2-2-2/text-to-image"
V1_BODY = {"text_prompts": [{"text": "a cat"}], "width": 128, "height": 128, "steps": 10, "seed": 42,
           "sampler": "K_EULER"}
V2_CORE = "/v2beta/stable-image/generate/core"
V2_FIELDS = [("prompt", (None, "a cat")), ("seed", (None, "7"))]


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def is_black(image: Image.Image) -> bool:
    return not np.asarray(image.convert("RGB")).any()


def job(**kw) -> Job:
    base = dict(prompt="a cat on the moon", width=SIZE, height=SIZE, steps=2, seed=5, sampler="Euler",
                model="tiny-sd1", safety_check=True)
    return Job(**{**base, **kw})


@pytest.fixture(scope="module")
def flag_all_dir(tmp_path_factory):
    return write_tiny_checker(tmp_path_factory.mktemp("checker-all"), flag_all=True)


@pytest.fixture(scope="module")
def flagging(model_manager, flag_all_dir):
    return LocalEngine(model_manager, features=Features(safety_checker=str(flag_all_dir)))


@pytest.fixture(scope="module")
def passing(model_manager, tmp_path_factory):
    folder = write_tiny_checker(tmp_path_factory.mktemp("checker-none"), flag_all=False)
    return LocalEngine(model_manager, features=Features(safety_checker=str(folder)))


# ------------------------------------------------------------------------------------------------------ the engine

def test_which_jobs_are_checked(engine, model_manager):
    """Job.safety_check, or the Stability styles by default; A1111 only when configured."""
    assert engine.wanted(job())[-1].name == "safety"
    for style, checked in ((Style.STABILITY_V1, True), (Style.STABILITY_V2, True), (Style.A1111, False), (None, False)):
        assert any(f.name == "safety" for f in engine.wanted(job(safety_check=False, style=style))) is checked
    a1111 = LocalEngine(model_manager, features=Features(safety_styles=["a1111"]))
    assert any(f.name == "safety" for f in a1111.wanted(job(safety_check=False, style=Style.A1111)))
    engine.validate(job())  # never refused, checker or not


def test_flagged_image_comes_back_black(flagging, engine):
    result = flagging.generate(job())
    assert result.nsfw == [True]
    assert result.images[0].size == (SIZE, SIZE) and is_black(result.images[0])
    assert "safety_check" not in result.not_applied
    # the next job without the check, on the same engine, is what an engine without the feature makes
    plain = flagging.generate(job(safety_check=False))
    assert plain.nsfw is None and not is_black(plain.images[0])
    assert png_bytes(plain.images[0]) == png_bytes(engine.generate(job(safety_check=False)).images[0])


def test_passed_image_is_unchanged(passing, engine):
    checked = passing.generate(job())
    assert checked.nsfw == [False] and "safety_check" not in checked.not_applied
    assert png_bytes(checked.images[0]) == png_bytes(engine.generate(job(safety_check=False)).images[0])


def test_no_checker_says_no_check_ran(engine):
    result = engine.generate(job())
    assert result.nsfw is None  # never a silent "safe"
    note = result.not_applied["safety_check"]
    assert "no safety check ran" in note and "safety-checker" in note
    assert not is_black(result.images[0])


def test_verdicts_per_image_and_per_job_in_a_shared_call(flagging):
    two = flagging.generate(job(batch_size=2))
    assert two.nsfw == [True, True] and len(two.images) == 2 and all(map(is_black, two.images))
    assert flagging.generate(job(n_iter=2)).nsfw == [True, True]
    # two jobs batched into one pipeline call: each gets its own images' verdicts only
    a, b = job(batch_size=2), job(seed=9)
    assert flagging.batch_key(a) == flagging.batch_key(b)
    runs = [flagging.start(a), flagging.start(b)]
    flagging.run_batch([(run, _Control()) for run in runs])
    ra, rb = (run.result() for run in runs)
    assert ra.batched == rb.batched == 3
    assert (ra.nsfw, rb.nsfw) == ([True, True], [True]) and len(ra.images) == 2 and len(rb.images) == 1


class _Control:
    interrupted = False
    skipped = False

    def report(self, *args, **kwargs):
        pass


# ------------------------------------------------------------------------------------ the Stability answers, served

def _server(root, features: Features):
    raw = {"keys": {"stability": [KEY]},
           "stability_v2": {"steps": 1, "size_scale": 0.125, "sampler": "Euler", "schedule": None}}
    return start_live_server(root, raw=raw, features=features)


@pytest.fixture(scope="module")
def filtering(tmp_path_factory, flag_all_dir):
    srv = _server(tmp_path_factory.mktemp("safety-on"), Features(safety_checker=str(flag_all_dir)))
    with httpx.Client(base_url=srv.url, timeout=300, headers=AUTH) as client:
        yield client
    srv.stop()


@pytest.fixture(scope="module")
def unchecked(tmp_path_factory):
    srv = _server(tmp_path_factory.mktemp("safety-off"), Features())
    with httpx.Client(base_url=srv.url, timeout=300, headers=AUTH) as client:
        yield client
    srv.stop()


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_v1_content_filtered(filtering):
    """A.8 item 20: 200, the image still there (black), CONTENT_FILTERED in JSON and in PNG mode."""
    r = filtering.post(V1_T2I, json=V1_BODY, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    (art,) = r.json()["artifacts"]
    assert art["finishReason"] == "CONTENT_FILTERED" and art["seed"] == 42
    image = _image(base64.b64decode(art["base64"]))
    assert image.size == (128, 128) and is_black(image)
    assert r.headers["X-Sdgate-Safety-Check"] == "filtered"
    r = filtering.post(V1_T2I, json=V1_BODY, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["Finish-Reason"] == "CONTENT_FILTERED" and r.headers["X-Sdgate-Safety-Check"] == "filtered"
    assert is_black(_image(r.content))


def test_v2_content_filtered(filtering):
    """B.6 item 16: 200 with finish_reason / finish-reason CONTENT_FILTERED, the image black."""
    r = filtering.post(V2_CORE, files=V2_FIELDS, headers={"accept": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["finish_reason"] == "CONTENT_FILTERED" and body["seed"] == 7
    assert is_black(_image(base64.b64decode(body["image"])))
    assert "finish-reason" not in r.headers and r.headers["x-sdgate-safety-check"] == "filtered"
    r = filtering.post(V2_CORE, files=V2_FIELDS, headers={"accept": "image/*"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["finish-reason"] == "CONTENT_FILTERED" and r.headers["x-sdgate-safety-check"] == "filtered"
    assert is_black(_image(r.content))


def test_no_checker_says_not_run(unchecked):
    """Without a checker SUCCESS means "generated", and every answer says no check ran."""
    r = unchecked.post(V1_T2I, json=V1_BODY, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["artifacts"][0]["finishReason"] == "SUCCESS"
    assert r.headers["X-Sdgate-Safety-Check"] == "not-run"
    r = unchecked.post(V1_T2I, json=V1_BODY, headers={"Accept": "image/png"})
    assert r.headers["Finish-Reason"] == "SUCCESS" and r.headers["X-Sdgate-Safety-Check"] == "not-run"
    assert not is_black(_image(r.content))
    r = unchecked.post(V2_CORE, files=V2_FIELDS, headers={"accept": "application/json"})
    assert r.json()["finish_reason"] == "SUCCESS" and r.headers["x-sdgate-safety-check"] == "not-run"
    r = unchecked.post(V2_CORE, files=V2_FIELDS, headers={"accept": "image/*"})
    assert r.headers["finish-reason"] == "SUCCESS" and r.headers["x-sdgate-safety-check"] == "not-run"


# ----------------------------------------------------------------------------------- a gateway's CONTENT_FILTERED

def _b64png(color) -> str:
    return base64.b64encode(png_bytes(Image.new("RGB", (8, 8), color))).decode()


def test_relayed_v1_verdicts():
    arts = [{"base64": _b64png("red"), "finishReason": "SUCCESS", "seed": 1},
            {"base64": _b64png("black"), "finishReason": "CONTENT_FILTERED", "seed": 2}]
    json_headers = {"Content-Type": "application/json"}

    def relayed(artifacts, headers=json_headers):
        body = json.dumps({"artifacts": artifacts}).encode()
        return v1.from_upstream(Job(), UpstreamPlan([]), [UpstreamAnswer(200, headers, body)])

    assert relayed(arts).nsfw == [False, True]
    assert relayed(arts[:1]).nsfw is None  # SUCCESS alone is no verdict: the gateway may not filter at all
    assert relayed(arts[:1], {**json_headers, "x-sdgate-safety-check": "passed"}).nsfw == [False]
    png = png_bytes(Image.new("RGB", (8, 8)))
    answer = UpstreamAnswer(200, {"content-type": "image/png", "finish-reason": "CONTENT_FILTERED"}, png)
    result = v1.from_upstream(Job(), UpstreamPlan([]), [answer])
    assert result.nsfw == [True] and v1.finish_reasons(result) == ["CONTENT_FILTERED"]


def test_relayed_v2_verdicts():
    png = png_bytes(Image.new("RGB", (8, 8)))
    plan = v2.plan_upstream(Job(prompt="a cat"))

    def relayed(headers):
        image = v2.read_answer(UpstreamAnswer(200, {"content-type": "image/png", **headers}, png))
        return v2.images_to_result(Job(prompt="a cat"), plan, [image])

    filtered = relayed({"finish-reason": "CONTENT_FILTERED"})
    assert filtered.nsfw == [True] and v2.finish_reason(filtered) == "CONTENT_FILTERED"
    assert relayed({"finish-reason": "SUCCESS"}).nsfw is None
    assert relayed({"finish-reason": "SUCCESS", "X-Sdgate-Safety-Check": "passed"}).nsfw == [False]
