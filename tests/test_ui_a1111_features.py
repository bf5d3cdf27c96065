"""The A1111 tabs' issue-10 controls: the seed row's "Extra" (variation seed, strength, seed resize), Tiling,
Restore faces, the hires pass's own checkpoint/sampler/schedule/prompts, the Refiner and the "SD VAE" choice.
The body the tab builds carries each as the A1111 request field a client would send; a live server generates with
them through `gradio_client`; "send to txt2img" puts them back from an image's infotext."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio_client import Client
from live import start_live_server
from PIL import Image
from tiny_vae_embeddings import write_vaes

from backends.dialects import a1111 as d
from backends.job import ModelNotFound
from webui.tabs import a1111 as tab
from webui.tabs.common import ResultFiles

VAE_FILE = "tiny-other.safetensors"  # tiny_vae_embeddings.write_vaes


# ----------------------------------------------------------------------------- the body the tab builds


def ui_values(**changes):
    """A txt2img tab's values as the page sends them, defaults as the controls start."""
    values = {"prompt": "a fox", "negative_prompt": "", "styles": [], "sampler_name": "Euler a",
              "scheduler": "Automatic", "steps": 2, "width": 64, "height": 64, "n_iter": 1, "batch_size": 1,
              "cfg_scale": 7, "seed": 5, "seed_enable_extras": False, "subseed": -1, "subseed_strength": 0,
              "seed_resize_from_w": 0, "seed_resize_from_h": 0, "restore_faces": False, "tiling": False,
              "enable_hr": False, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "denoising_strength": 0.7,
              "hr_scale": 2, "hr_resize_x": 0, "hr_resize_y": 0, **{n: v for n, v in tab.UNSET_CHOICES.items()},
              "hr_prompt": "", "hr_negative_prompt": "", "refiner_switch_at": 0.8, "model": "tiny-sd1",
              "sd_vae": "Automatic", "backend": "local"}
    return {**values, **changes}


def test_the_body_carries_every_new_field_as_a1111_names_it():
    body = tab.request_body("txt2img", ui_values(
        seed_enable_extras=True, subseed=22, subseed_strength=0.4, seed_resize_from_w=96, seed_resize_from_h=0,
        tiling=True, restore_faces=True, sd_vae=VAE_FILE, enable_hr=True, hr_upscaler="Latent (bicubic antialiased)",
        hr_second_pass_steps=3, denoising_strength=0.55, hr_scale=1.5, hr_resize_x=128, hr_resize_y=96,
        hr_checkpoint_name="tiny-sdxl", hr_sampler_name="Euler", hr_scheduler="Karras", hr_prompt="a wolf",
        hr_negative_prompt="fog", refiner_checkpoint="tiny-sdxl", refiner_switch_at=0.6))
    expected = {"subseed": 22, "subseed_strength": 0.4, "seed_resize_from_w": 96, "seed_resize_from_h": -1,
                "tiling": True, "restore_faces": True, "override_settings": {"sd_vae": VAE_FILE}, "enable_hr": True,
                "hr_upscaler": "Latent (bicubic antialiased)", "hr_second_pass_steps": 3, "denoising_strength": 0.55,
                "hr_scale": 1.5, "hr_resize_x": 128, "hr_resize_y": 96, "hr_checkpoint_name": "tiny-sdxl",
                "hr_sampler_name": "Euler", "hr_scheduler": "Karras", "hr_prompt": "a wolf",
                "hr_negative_prompt": "fog", "refiner_checkpoint": "tiny-sdxl", "refiner_switch_at": 0.6}
    assert {k: body[k] for k in expected} == expected
    for ui_only in ("backend", "seed_enable_extras", "sd_vae"):
        assert ui_only not in body
    # the route's own request model reads every field back unchanged
    request = d.Txt2ImgRequest.model_validate(body)
    assert {k: getattr(request, k) for k in expected} == expected


def test_extra_off_sends_no_variation_and_same_choices_send_null():
    body = tab.request_body("txt2img", ui_values(subseed=22, subseed_strength=0.4, seed_resize_from_w=96))
    for name in tab.SEED_EXTRAS:  # A1111: the row counts only while "Extra" is on
        assert name not in body
    for name in tab.UNSET_CHOICES:  # "Use same checkpoint/sampler/scheduler", refiner "None": as the first pass
        assert body[name] is None
    assert body["override_settings"] == {"sd_vae": "Automatic"}
    request = d.Txt2ImgRequest.model_validate(body)
    assert request.subseed_strength == 0 and request.refiner_checkpoint is None


def test_send_to_maps_the_dialects_fields_onto_the_controls(monkeypatch):
    """Whatever the dialect reads from an infotext lands on the control of the same name; the VAE option on "SD
    VAE"; the "Extra" row opens for a variation seed; new fields the infotext lacks go back to "off"."""
    read = {"prompt": "a fox", "seed": 5, "subseed": 22, "subseed_strength": 0.4, "seed_resize_from_w": -1,
            "seed_resize_from_h": -1, "tiling": True, "hr_sampler_name": "Euler",
            "override_settings": {"sd_vae": VAE_FILE, "CLIP_stop_at_last_layers": 2}}
    monkeypatch.setattr(d, "fields_from_infotext", lambda text, task, resolve: dict(read))

    class Models:
        def resolve(self, name):
            raise ModelNotFound(name)

    class Service:
        models = Models()

    data = tab.fields_from_infotext(Service(), "ignored", "txt2img")
    assert data["seed_enable_extras"] is True and data["sd_vae"] == VAE_FILE
    assert (data["subseed"], data["subseed_strength"], data["tiling"]) == (22, 0.4, True)
    assert (data["seed_resize_from_w"], data["seed_resize_from_h"]) == (0, 0)
    assert data["restore_faces"] is False and data["hr_checkpoint_name"] == "Use same checkpoint"
    assert data["refiner_checkpoint"] == "None" and data["hr_prompt"] == ""
    read.update(subseed_strength=0, seed_resize_from_w=64, seed_resize_from_h=64)
    assert tab.fields_from_infotext(Service(), "", "txt2img")["seed_enable_extras"] is True  # a seed resize alone
    read.update(seed_resize_from_w=-1, seed_resize_from_h=-1)
    assert tab.fields_from_infotext(Service(), "", "txt2img")["seed_enable_extras"] is False


# ----------------------------------------------------------------------------------------- live server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_a1111_features")
    write_vaes(root / "models")
    srv = start_live_server(root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    c = Client(server.url, verbose=False)
    yield c
    c.close()


def generate(client, **fields):
    progress, gallery, info, _ = client.predict(**{"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64,
                                                   "seed": 31, **fields}, api_name="/a1111_txt2img")
    path = gallery[0]["image"] if isinstance(gallery[0], dict) else gallery[0]
    with Image.open(path) as image:
        return image.convert("RGB"), info, progress


def test_the_endpoint_takes_the_new_fields_by_name(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for endpoint in ("/a1111_txt2img", "/a1111_img2img"):
        params = {p["parameter_name"] for p in named[endpoint]["parameters"]}
        assert {"seed_enable_extras", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
                "tiling", "restore_faces", "refiner_checkpoint", "refiner_switch_at", "sd_vae"} <= params
    params = {p["parameter_name"] for p in named["/a1111_txt2img"]["parameters"]}
    assert {"hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"} <= params


def test_txt2img_with_the_new_controls_writes_them_into_the_infotext(client):
    _, plain_info, _ = generate(client)
    image, info, progress = generate(
        client, seed_enable_extras=True, subseed=77, subseed_strength=0.5, tiling=True, restore_faces=True,
        sd_vae=VAE_FILE, enable_hr=True, hr_upscaler="Latent (nearest)", hr_scale=2, hr_second_pass_steps=2,
        denoising_strength=0.5, hr_sampler_name="Euler")
    assert image.size == (128, 128)  # the hires pass at 2×
    for part in ("Seed: 31", "Denoising strength: 0.5", "Hires upscale: 2", "Hires steps: 2",
                 "Hires upscaler: Latent (nearest)", "Variation seed: 77", "Variation seed strength: 0.5",
                 "Tiling: True", f"VAE: {VAE_FILE}"):
        assert part in info, (part, info)
    assert "restore" in progress.lower() or "Face restoration" in info  # said, never silently dropped
    assert "Variation seed" not in plain_info and "Tiling" not in plain_info and f"VAE: {VAE_FILE}" not in plain_info


def test_extra_off_leaves_the_image_as_without_variation(client):
    plain, _, _ = generate(client)
    same, info, _ = generate(client, seed_enable_extras=False, subseed=77, subseed_strength=0.9)
    varied, _, _ = generate(client, seed_enable_extras=True, subseed=77, subseed_strength=0.9)
    assert same.tobytes() == plain.tobytes() and "Variation seed" not in info
    assert varied.tobytes() != plain.tobytes()


def test_send_to_txt2img_restores_the_new_fields(client, server):
    first, info, _ = generate(client, seed_enable_extras=True, subseed=78, subseed_strength=0.25, tiling=True,
                          sd_vae=VAE_FILE, enable_hr=True, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=2,
                          denoising_strength=0.45, hr_sampler_name="Euler")
    with gr.Blocks() as blocks:
        txt2img = tab.build_a1111_tab(blocks, server.service, "txt2img", ResultFiles())
    # the "send to" handler: fields from the infotext → the tab's controls (history.wire_send)
    data = tab.fields_from_infotext(server.service, info, "txt2img")
    restored = dict(zip(txt2img.fields.names, txt2img.fields.updates(data)))
    expected = {"seed": 31, "seed_enable_extras": True, "subseed": 78, "subseed_strength": 0.25, "tiling": True,
                "restore_faces": False, "sd_vae": VAE_FILE, "enable_hr": True, "hr_upscaler": "Latent (bicubic)",
                "hr_second_pass_steps": 2, "denoising_strength": 0.45, "hr_sampler_name": "Euler",
                "hr_checkpoint_name": "Use same checkpoint", "refiner_checkpoint": "None"}
    assert {k: restored[k] for k in expected} == expected
    # and sending it again generates the same image (the round trip of issue 10)
    values = {k: v for k, v in restored.items() if not isinstance(v, type(gr.skip()))}
    again, again_info, _ = generate(client, **{k: values[k] for k in expected}, width=64, height=64, steps=2)
    assert again_info == info and again.tobytes() == first.tobytes()


def test_send_to_reads_a1111s_own_infotext_keys(server):
    """An infotext as A1111 writes it (refiner, hires checkpoint/schedule/prompts, seed resize, face restoration)
    fills the txt2img controls; img2img gets the fields it has and no hires ones."""
    models = tab.model_choices(server.service)
    sdxl = next(m for m in models if "sdxl" in m)
    text = ("a fox\nNegative prompt: rain\nSteps: 3, Sampler: Euler, Schedule type: Karras, CFG scale: 6, Seed: 9, "
            "Face restoration: CodeFormer, Size: 64x64, Denoising strength: 0.4, Variation seed: 12, "
            "Variation seed strength: 0.3, Seed resize from: 96x64, Tiling: True, "
            f"Hires checkpoint: {sdxl} [0123456789], Hires sampler: Euler, Hires schedule type: Karras, "
            'Hires prompt: "a wolf", Hires negative prompt: "fog", Hires upscale: 1.5, Hires steps: 2, '
            f"Hires upscaler: Latent (antialiased), Refiner: {sdxl} [0123456789], Refiner switch at: 0.6, "
            f"VAE: {VAE_FILE}")
    expected = {"seed": 9, "seed_enable_extras": True, "subseed": 12, "subseed_strength": 0.3,
                "seed_resize_from_w": 96, "seed_resize_from_h": 64, "tiling": True, "restore_faces": True,
                "refiner_checkpoint": sdxl, "refiner_switch_at": 0.6, "sd_vae": VAE_FILE}
    hires = {"enable_hr": True, "hr_checkpoint_name": sdxl, "hr_sampler_name": "Euler", "hr_scheduler": "Karras",
             "hr_prompt": "a wolf", "hr_negative_prompt": "fog", "hr_scale": 1.5, "hr_second_pass_steps": 2,
             "hr_upscaler": "Latent (antialiased)", "denoising_strength": 0.4}
    with gr.Blocks() as blocks:
        tabs = {task: tab.build_a1111_tab(blocks, server.service, task, ResultFiles()) for task in ("txt2img",
                                                                                                  "img2img")}
    for task, wanted in (("txt2img", {**expected, **hires}), ("img2img", expected)):
        fields = tabs[task].fields
        restored = dict(zip(fields.names, fields.updates(tab.fields_from_infotext(server.service, text, task))))
        assert {k: restored[k] for k in wanted} == wanted, task
    assert not any(name.startswith("hr_") for name in tabs["img2img"].fields.names)


def test_the_script_dropdown_sends_script_name_and_args(server):
    """The Script block's controls are tab fields; the body gets A1111's `script_name` / `script_args` for the
    chosen script only, and none for "None"."""
    with gr.Blocks() as blocks:
        txt2img = tab.build_a1111_tab(blocks, server.service, "txt2img", ResultFiles())
    script = txt2img.script
    assert script.names[0] == "script" and "x_y_z_plot_x_values" in script.names
    start = {name: txt2img.fields.components[name].value for name in script.names}
    assert tab.request_body("txt2img", ui_values(**start), script)["script_name"] is None
    chosen = {**start, "script": "X/Y/Z plot", "x_y_z_plot_x_type": 4, "x_y_z_plot_x_values": "1,2"}
    body = tab.request_body("txt2img", ui_values(**chosen), script)
    assert body["script_name"] == "x/y/z plot" and body["script_args"][:2] == [4, "1,2"]
    assert not set(script.names) & set(body)  # the UI-only names never reach the request


def test_txt2img_runs_an_xyz_plot_from_the_script_dropdown(client):
    _, gallery, info, _ = client.predict(
        prompt="a fox", steps=2, width=64, height=64, seed=3, script="X/Y/Z plot", x_y_z_plot_x_type="Steps",
        x_y_z_plot_x_values="1,2", x_y_z_plot_include_sub_images=True, api_name="/a1111_txt2img")
    assert len(gallery) == 3  # the grid, then one image per cell
    assert "Steps: 1" in info and "Seed: 3" in info  # the first cell's own infotext
