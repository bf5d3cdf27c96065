"""The web UI in a real browser: Playwright driving Debian's chromium against a real server (the demo tiny
models). Skipped only when /usr/bin/chromium is missing (test.sh installs it when run as root).

Screenshots go to $SDGATE_UI_SCREENSHOTS (default: <tmp>/sdgate-ui-screenshots) so a person can look at them.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                             "(apt-get install chromium; test.sh does it as root)")

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from gradio_client import Client  # noqa: E402

from live import start_live_server  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = Path(os.environ.get("SDGATE_UI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "sdgate-ui-screenshots")
TABS = ["A1111 txt2img", "A1111 img2img", "Stability v1", "Stability v2beta", "ModelsLab", "History", "PNG Info",
        "Settings"]
SEED = re.compile(r"Seed: (\d+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("ui_browser"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


class Page:
    """A browser page on the server that records every uncaught error and console error."""

    def __init__(self, browser, url: str, **context):
        self.url = url
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        host = urlparse(url).netloc
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

        def console(msg):
            # Console errors about requests to other hosts would be the network's fault, not ours, and are the
            # only kind let through; the Gradio 6 page makes none (all its assets are served locally).
            where = (msg.location or {}).get("url") or ""
            if msg.type == "error" and (not where or urlparse(where).netloc in ("", host)):
                self.errors.append(f"console: {msg.text} ({where})")

        self.page.on("console", console)

    def open(self):
        self.page.goto(self.url, wait_until="domcontentloaded")
        expect(self.page.locator("#a1111_txt2img_prompt textarea")).to_be_visible()
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser, server):
    p = Page(browser, server.url, viewport={"width": 1280, "height": 900})
    yield p.open()
    errors = list(p.errors)
    p.close()
    assert not errors, errors


def shot(page, name: str, full_page: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def set_number(page, elem_id: str, value) -> None:
    """A slider's (or number field's) number box: type the value and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_tabs_generate_see_seed_and_reload(page, server):
    for name in TABS:
        expect(page.get_by_role("tab", name=name, exact=True)).to_be_visible()
    expect(page.locator("#demo_note")).to_contain_text("images are noise")
    page.locator("#a1111_txt2img_prompt textarea").fill("a red fox in the snow")
    set_number(page, "a1111_txt2img_steps", 3)
    set_number(page, "a1111_txt2img_width", 64)
    set_number(page, "a1111_txt2img_height", 64)
    page.locator("#a1111_txt2img_generate").click()
    info = page.locator("#a1111_txt2img_info textarea")
    expect(info).to_have_value(re.compile(r"^a red fox in the snow\nSteps: 3, .*Seed: \d+"))
    expect(page.locator("#a1111_txt2img_gallery img").first).to_be_visible()
    seed = SEED.search(info.input_value()).group(1)
    # the real seed: the one in the saved file's name, not -1
    assert list((server.outputs / "txt2img-images").glob(f"*/*-{seed}.png"))
    expect(page.locator("#a1111_txt2img_progress")).to_contain_text("1 image in")
    shot(page, "desktop-a1111-txt2img")

    page.reload(wait_until="domcontentloaded")
    expect(page.locator("#a1111_txt2img_prompt textarea")).to_have_value("a red fox in the snow")
    expect(page.locator("#a1111_txt2img_steps input[type=number]")).to_have_value("3")

    # Settings: the models list refreshes; "reset" forgets this browser's fields
    open_tab(page, "Settings")
    page.locator("#settings_refresh_models").click()
    expect(page.locator("#settings_models_note")).to_contain_text("4 models found")
    page.locator("#settings_reset_fields").click()
    expect(page.locator("#a1111_txt2img_prompt textarea")).to_have_value("")
    expect(page.locator("#a1111_txt2img_steps input[type=number]")).to_have_value("20")


def pick(page, elem_id: str, option: str) -> None:
    """Choose a dropdown option as a keyboard user does: type to filter, Enter to take it."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(option)
    box.press("Enter")
    expect(box).to_have_value(option)


def listed(page, elem_id: str) -> list[str]:
    """The options a dropdown shows when opened."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    options = page.locator(f"[id='{box.get_attribute('aria-controls')}'] [role=option]")
    expect(options.first).to_be_visible()
    texts = [t.strip().splitlines()[-1].strip() for t in options.all_inner_texts()]  # minus the ✓ mark
    page.keyboard.press("Escape")
    return texts


def test_stability_v1_engine_shows_only_its_sizes(page):
    open_tab(page, "Stability v1")
    pick(page, "stability_v1_engine", "stable-diffusion-v1-6")
    sides = [str(n) for n in range(320, 1537, 64)]  # SD 1.6: each side 320..1536 in steps of 64
    assert listed(page, "stability_v1_width") == sides and listed(page, "stability_v1_height") == sides
    pick(page, "stability_v1_engine", "stable-diffusion-xl-1024-v1-0")
    expect(page.locator("#stability_v1_width input")).to_have_value("1024")
    expect(page.locator("#stability_v1_height input")).to_have_value("1024")
    sdxl = {(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344), (1536, 640),
            (640, 1536)}
    widths = listed(page, "stability_v1_width")
    assert sorted(map(int, widths)) == sorted(w for w, _ in sdxl)  # nine widths, each with its one height
    seen = set()
    for w in widths:
        pick(page, "stability_v1_width", w)
        heights = listed(page, "stability_v1_height")
        assert len(heights) == 1
        expect(page.locator("#stability_v1_height input")).to_have_value(heights[0])
        seen.add((int(w), int(heights[0])))
    assert seen == sdxl
    shot(page, "desktop-stability-v1")
    for name, key in (("Stability v2beta", "stability_v2beta"), ("ModelsLab", "modelslab"), ("Settings", "settings")):
        open_tab(page, name)
        shot(page, f"desktop-{key}")


def test_queue_position_live_preview_and_interrupt_of_your_own_job(page, server):
    """Someone else's job runs while ours waits (we see our place); a third caller queues behind us; our
    Interrupt stops our job (with its partial image) and neither of theirs."""
    queue = server.service.queue
    page.locator("#a1111_txt2img_prompt textarea").fill("a long one")
    set_number(page, "a1111_txt2img_steps", 150)
    set_number(page, "a1111_txt2img_width", 128)
    set_number(page, "a1111_txt2img_height", 128)
    before, after = Client(server.url, verbose=False), Client(server.url, verbose=False)
    first = before.submit(prompt="someone before", steps=80, width=64, height=64, api_name="/a1111_txt2img")
    deadline = time.time() + 30
    while queue.current is None:
        assert time.time() < deadline, "the other job did not start"
        time.sleep(0.05)
    first_ticket = queue.current
    page.locator("#a1111_txt2img_generate").click()
    progress = page.locator("#a1111_txt2img_progress")
    expect(progress).to_contain_text("Waiting in the queue: 1 job ahead")
    last = after.submit(prompt="someone after", steps=20, width=64, height=64, api_name="/a1111_txt2img")
    while len(queue.pending()) < 2:
        assert time.time() < deadline, "the third job was not queued"
        time.sleep(0.05)
    last_ticket = queue.pending()[-1]
    expect(progress).to_contain_text(re.compile(r"Step \d+/150"), timeout=60_000)
    ours = queue.current
    expect(page.locator("#a1111_txt2img_progress img.sdg-preview")).to_be_visible()  # the live preview
    page.locator("#a1111_txt2img_interrupt").click()
    expect(progress).to_contain_text("interrupted", timeout=60_000)
    expect(page.locator("#a1111_txt2img_gallery img").first).to_be_visible()  # the partial image
    expect(page.locator("#a1111_txt2img_info textarea")).to_have_value(re.compile(r"^a long one\nSteps: 150, .*Seed"))
    assert ours.interrupted and ours.progress.step < 150
    for job, ticket, steps in ((first, first_ticket, 80), (last, last_ticket, 20)):
        progress_html, _, info, _ = job.result(timeout=60)
        assert "interrupted" not in progress_html and f"Steps: {steps}," in info
        assert not ticket.interrupted and ticket.progress.step == steps
    before.close()
    after.close()


def test_history_and_png_info_send_every_field_back(page, server):
    client = Client(server.url, verbose=False)
    fields = {"prompt_1": "a castle", "weight_1": 1.5, "prompt_2": "fog", "weight_2": -0.5, "engine_id":
              "stable-diffusion-v1-6", "width": 384, "height": 320, "sampler": "K_EULER", "steps": 10, "cfg_scale": 9,
              "seed": 4242, "style_preset": "anime"}
    _, gallery, v1_info, _ = client.predict(**fields, api_name="/stability_v1")
    _, gallery, a1111_info, _ = client.predict(prompt="a tower", negative_prompt="rain", steps=2, width=64,
                                               height=64, seed=777, cfg_scale=5, api_name="/a1111_txt2img")
    client.close()

    open_tab(page, "History")
    thumbs = page.locator("#history_gallery .thumbnail-item")
    expect(thumbs.first).to_be_visible()
    expect(page.locator("#history_summary")).to_contain_text("images")
    thumbs.nth(0).click()  # newest first: the A1111 image
    expect(page.locator("#history_info textarea")).to_have_value(a1111_info)
    page.locator("#history_send_a1111_txt2img").click()
    expect(page.locator("#a1111_txt2img_prompt textarea")).to_have_value("a tower")
    expect(page.locator("#a1111_txt2img_negative_prompt textarea")).to_have_value("rain")
    expect(page.locator("#a1111_txt2img_seed input")).to_have_value("777")
    expect(page.locator("#a1111_txt2img_cfg_scale input[type=number]")).to_have_value("5")

    open_tab(page, "History")
    thumbs.nth(1).click()  # the Stability v1 image: its tab gets every field back
    expect(page.locator("#history_info textarea")).to_have_value(v1_info)
    shot(page, "desktop-history")
    page.locator("#history_send_stability_v1").click()
    expect(page.locator("#stability_v1_prompt textarea")).to_have_value("a castle")
    expect(page.locator("#stability_v1_weight_1 input")).to_have_value("1.5")
    expect(page.locator("#stability_v1_prompt_2 textarea")).to_have_value("fog")
    expect(page.locator("#stability_v1_engine input")).to_have_value("stable-diffusion-v1-6")
    expect(page.locator("#stability_v1_width input")).to_have_value("384")
    expect(page.locator("#stability_v1_height input")).to_have_value("320")
    expect(page.locator("#stability_v1_sampler input")).to_have_value("K_EULER")
    expect(page.locator("#stability_v1_style_preset input")).to_have_value("anime")
    expect(page.locator("#stability_v1_seed input")).to_have_value("4242")

    open_tab(page, "PNG Info")
    saved = sorted((server.outputs / "txt2img-images").glob("*/*-777.png"))[0]
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved))
    expect(page.locator("#pnginfo_info textarea")).to_have_value(a1111_info)
    shot(page, "desktop-pnginfo")
    open_tab(page, "A1111 txt2img")
    page.locator("#a1111_txt2img_prompt textarea").fill("something else")
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_send_a1111_txt2img").click()
    expect(page.locator("#a1111_txt2img_prompt textarea")).to_have_value("a tower")


def test_phone_layout(browser, server):
    p = Page(browser, server.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
             device_scale_factor=2)
    page = p.open()
    prompt, generate = page.locator("#a1111_txt2img_prompt textarea"), page.locator("#a1111_txt2img_generate")
    for box in (prompt.bounding_box(), generate.bounding_box()):
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] >= 0 and box["y"] + box["height"] <= 844
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "phone-390x844", full_page=False)
    prompt.fill("a phone picture")
    set_number(page, "a1111_txt2img_steps", 2)
    set_number(page, "a1111_txt2img_width", 64)
    set_number(page, "a1111_txt2img_height", 64)
    generate.click()
    image = page.locator("#a1111_txt2img_gallery img").first
    expect(image).to_be_visible()
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "phone-390x844-result", full_page=False)
    errors = list(p.errors)
    p.close()
    assert not errors, errors


def test_auth_asks_for_a_login_and_rejects_a_wrong_password(browser, tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("ui_auth"), auth=[("alice", "wonderland")])
    try:
        p = Page(browser, srv.url, viewport={"width": 1280, "height": 900})
        page = p.page
        page.goto(srv.url, wait_until="domcontentloaded")
        username, password = page.get_by_label("username"), page.get_by_label("password")
        expect(username).to_be_visible()
        expect(page.locator("#a1111_txt2img_prompt")).to_have_count(0)
        username.fill("alice")
        password.fill("not-the-password")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect Credentials")).to_be_visible()
        expect(page.locator("#a1111_txt2img_prompt")).to_have_count(0)
        shot(page, "desktop-login-rejected")
        username.fill("alice")  # the form clears the user name after a failed attempt
        password.fill("wonderland")
        page.get_by_role("button", name="Login").click()
        expect(page.locator("#a1111_txt2img_prompt textarea")).to_be_visible()
        # the refused login's 400 (and a 401 for the app config before logging in) are the point of this test
        errors = [e for e in p.errors if not re.search(r"status of 40[01] .*/(login|config)", e)]
        p.close()
        assert not errors, errors
    finally:
        srv.stop()
