"""A1111's scripts through `script_name` / `script_args` (docs/reference/a1111_features.md §3), end to end on a
real server with the tiny model (64 px, 2-3 steps), through raw httpx and the `webuiapi` client; the value
parser, the stitcher and the UI block offline."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import webuiapi
from live import start_live_server
from PIL import Image

from backends.dialects.a1111.scripts import axes, sd_upscale
from backends.images import read_infotext
from backends.infotext import parse_generation_parameters
from tests.tiny_vae_embeddings import write_vaes

SIZE = 64
FAST = {"prompt": "a cat", "steps": 2, "width": SIZE, "height": SIZE, "sampler_name": "Euler"}
SEED, STEPS = 1, 4  # X/Y/Z axis indices on both tabs


def xyz_args(x_type=SEED, x_values="", y_type=0, y_values="", z_type=0, z_values="", *, legend=True, lone=True,
             sub_grids=False, margin=0) -> list:
    return [x_type, x_values, [], y_type, y_values, [], z_type, z_values, [], legend, lone, sub_grids, False,
            False, False, False, margin, False]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111_scripts")
    write_vaes(root / "models")  # for the VAE axis
    srv = start_live_server(root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url + "/sdapi/v1", timeout=300) as client:
        yield client


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def post(http, path: str, **body) -> tuple[dict, dict]:
    r = http.post(path, json={**FAST, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    return data, json.loads(data["info"])


def params(infotext: str) -> dict:
    return parse_generation_parameters(infotext)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


# ------------------------------------------------------------------------------------------- X/Y/Z plot


def test_xyz_seed_by_steps_grid_first_then_each_cell_with_its_infotext(http):
    data, info = post(http, "/txt2img", script_name="X/Y/Z plot",
                      script_args=xyz_args(SEED, "11, 12", STEPS, "2-3"))
    images = [decode(b) for b in data["images"]]
    assert len(images) == 5 and info["index_of_first_image"] == 1 and len(info["infotexts"]) == 5
    grid = images[0]
    assert grid.width > 2 * SIZE and grid.height > 2 * SIZE  # two columns, two rows, plus the axis labels
    expected = [(11, 2), (12, 2), (11, 3), (12, 3)]  # x fastest
    for image, text, (seed, steps) in zip(images[1:], info["infotexts"][1:], expected):
        p = params(text)
        assert (p["Seed"], p["Steps"]) == (str(seed), str(steps))
        assert image.size == (SIZE, SIZE) and read_infotext(image)[0] == text  # the image carries its own
    assert info["all_seeds"][1:] == [11, 12, 11, 12]
    grid_params = params(info["infotexts"][0])
    assert grid_params["Script"] == "X/Y/Z plot" and grid_params["X Type"] == "Seed"
    assert grid_params["X Values"] == "11, 12" and grid_params["Y Type"] == "Steps" and grid_params["Y Values"] == "2-3"
    # a cell is what a plain request with its settings gives
    plain, _ = post(http, "/txt2img", seed=12, steps=3)
    assert np.abs(pixels(decode(plain["images"][0])) - pixels(images[4])).max() <= 1
    assert np.abs(pixels(images[1]) - pixels(images[2])).mean() > 1  # the seeds differ


def test_xyz_through_webuiapi(server):
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    result = api.txt2img(prompt="a dog", seed=3, steps=2, width=SIZE, height=SIZE, sampler_name="Euler",
                         script_name="x/y/z plot", script_args=xyz_args(STEPS, "2,3", SEED, "5, 6"))
    assert len(result.images) == 5 and result.info["index_of_first_image"] == 1
    cells = [params(t) for t in result.info["infotexts"][1:]]
    assert [(c["Steps"], c["Seed"]) for c in cells] == [("2", "5"), ("3", "5"), ("2", "6"), ("3", "6")]
    assert all(c["Prompt"] == "a dog" for c in cells)


def test_xyz_ranges_floats_choices_prompt_sr_and_no_lone_images(http):
    # X: CFG 5-7 [2] → 5.0, 7.0; Y: Prompt S/R cat → cat, dog; Z: sampler from its text
    data, info = post(http, "/txt2img", seed=9, script_name="x/y/z plot",
                      script_args=xyz_args(6, "5-7 [2]", 7, "cat, dog", 9, "Euler, DDIM", lone=False,
                                           sub_grids=True, margin=4))
    # main grid + 2 sub-grids; infotexts still name every cell (A1111 keeps them all)
    assert len(data["images"]) == 3 and len(info["infotexts"]) == 3 + 8
    cells = [params(t) for t in info["infotexts"][3:]]
    assert [c["CFG scale"] for c in cells[:2]] == ["5.0", "7.0"]
    assert [c["Prompt"] for c in cells[:4]] == ["a cat", "a cat", "a dog", "a dog"]
    assert [c["Sampler"] for c in cells[::4]] == ["Euler", "DDIM"]
    assert {c["Seed"] for c in cells} == {"9"}  # the seed is fixed once for every cell
    main, sub = decode(data["images"][0]), decode(data["images"][1])
    assert main.width > 2 * sub.width and sub.width >= 2 * SIZE + 4


def test_xyz_on_img2img_uses_its_own_axis_indices(http):
    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (120, 80, 40)).save(buf, "PNG")
    data, info = post(http, "/img2img", init_images=[base64.b64encode(buf.getvalue()).decode()], seed=2,
                      script_name="x/y/z plot", script_args=xyz_args(24, "0.3, 0.6"))  # img2img's Denoising
    assert len(data["images"]) == 3
    assert [params(t)["Denoising strength"] for t in info["infotexts"][1:]] == ["0.3", "0.6"]


def test_xyz_errors(http):
    bad = [
        (xyz_args(13, "1, 2"), "not supported"),  # Sigma Churn
        (xyz_args(99, "1"), "out of range"),
        (xyz_args(STEPS, "1-5 (2)"), "not a valid int"),  # a step needs its sign
        (xyz_args(7, "horse, dog"), "did not find horse"),
        (xyz_args(9, "Euler z"), "unknown sampler"),
    ]
    for args, detail in bad:
        r = http.post("/txt2img", json={**FAST, "script_name": "x/y/z plot", "script_args": args})
        assert r.status_code in (400, 422) and detail.lower() in r.text.lower(), (args, r.text)


def test_axis_value_parsing():
    steps, cfg, sampler = (axes.axis_at("txt2img", i, "x") for i in (STEPS, 6, 9))
    assert axes.read_values(steps, "1-5 (+2), 8", [], False) == [1, 3, 5, 8]
    assert axes.read_values(steps, "1-10 [5]", [], False) == [1, 3, 5, 7, 10]
    assert axes.read_values(steps, "5-1 (-1)", [], False) == [5, 4, 3]  # A1111's end is b+1
    assert axes.read_values(steps, "5-1", [], False) == []
    assert axes.read_values(cfg, "1-2 (+0.3)", [], False) == [1.0, 1.3, 1.6, 1.9, 2.2]  # arange may overshoot
    assert axes.read_values(cfg, "1-2 [3]", [], False) == [1.0, 1.5, 2.0]
    assert axes.read_values(sampler, '"DPM++ 2M", Euler', [], False) == ["DPM++ 2M", "Euler"]
    assert axes.read_values(sampler, "ignored", ["DDIM"], False) == ["DDIM"]
    assert axes.read_values(sampler, "Euler", ["DDIM"], True) == ["Euler"]  # csv_mode reads the text
    # the tabs' index lists (§3.1)
    labels = {task: [a.label for a in axes.axes_for(task)] for task in ("txt2img", "img2img")}
    assert len(labels["txt2img"]) == 42 and labels["txt2img"][29] == "VAE" and labels["txt2img"][41] == "Size"
    assert len(labels["img2img"]) == 41 and labels["img2img"][28] == "VAE" and labels["img2img"][24] == "Denoising"
    assert labels["img2img"][6] == "Image CFG Scale" and labels["img2img"][27] == "Cond. Image Mask Weight"


# --------------------------------------------------------------------------- prompt matrix, prompts from file


def test_prompt_matrix(http, server):
    data, info = post(http, "/txt2img", prompt="a cat|red|blue", seed=21, script_name="Prompt matrix",
                      script_args=[False, False, "positive", "comma", 0], save_images=True)
    assert len(data["images"]) == 5 and info["index_of_first_image"] == 1
    texts = info["infotexts"]
    assert texts[0] == texts[1]  # the grid is described by the first image
    prompts = [params(t)["Prompt"] for t in texts[1:]]
    assert prompts == ["a cat", "a cat, red", "a cat, blue", "a cat, red, blue"]
    assert {params(t)["Seed"] for t in texts[1:]} == {"21"}
    grid = decode(data["images"][0])
    assert grid.width > 2 * SIZE and grid.height > 2 * SIZE  # 2 × 2 plus the labels
    saved = list((server.outputs / "txt2img-grids").rglob("grid-*-21.png"))  # save_images: the grid too
    assert len(saved) == 1 and read_infotext(Image.open(saved[0]))[0] == texts[0]
    assert len(list((server.outputs / "txt2img-images").rglob("*-21.png"))) == 4


def test_prompts_from_file_one_run_per_line_with_overrides(http):
    lines = (
        "red apple\n"
        "\n"
        "--prompt a green pear --steps 3 --seed 77\n"
        '--negative_prompt "ugly, blurry" --cfg_scale 5.5 --sampler_name ddim'
    )
    data, info = post(http, "/txt2img", prompt="photo", seed=100, script_name="prompts from file or textbox",
                      script_args=[True, False, "start", lines])
    assert len(data["images"]) == 3 and info["index_of_first_image"] == 0
    first, second, third = (params(t) for t in info["infotexts"])
    assert first["Prompt"] == "red apple photo" and first["Seed"] == "100" and first["Steps"] == "2"
    assert second["Prompt"] == "a green pear photo" and second["Steps"] == "3" and second["Seed"] == "77"
    assert third["Negative prompt"] == "ugly, blurry" and third["CFG scale"] == "5.5"
    assert third["Sampler"] == "DDIM" and third["Seed"] == "102"  # iterate: +batch_size×n_iter per line
    assert info["seed"] == 103 and info["all_seeds"] == [103]  # A1111's final seed


# ------------------------------------------------------------------------------------------- SD upscale


def _gradient(size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 128)], -1).astype(np.uint8)
    return Image.fromarray(rgb)


def _column_steps(image: np.ndarray) -> np.ndarray:
    """Mean absolute difference between each column and the next (index c: between c and c + 1)."""
    return np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))


def test_sd_upscale_scaled_size_and_no_seams(http):
    buf = io.BytesIO()
    _gradient(SIZE).save(buf, "PNG")
    overlap = 16
    data, info = post(http, "/img2img", init_images=[base64.b64encode(buf.getvalue()).decode()], seed=5,
                      denoising_strength=0.4, script_name="SD upscale", script_args=["", overlap, "Lanczos", 2.0])
    assert len(data["images"]) == 1
    image = decode(data["images"][0])
    assert image.size == (2 * SIZE, 2 * SIZE)
    p = params(info["infotexts"][0])
    assert p["SD upscale overlap"] == str(overlap) and p["SD upscale upscaler"] == "Lanczos"
    assert (p["Size-1"], p["Size-2"]) == (str(SIZE), str(SIZE)) and p["Seed"] == "5"  # the first tile's
    tiling = sd_upscale.plan_tiles(2 * SIZE, 2 * SIZE, SIZE, SIZE, overlap)
    assert tiling.xs == [0, 32, 64]
    array = pixels(image)
    for steps in (_column_steps(array), _column_steps(array.transpose(1, 0, 2))):
        # where a tile starts blending in and where it takes over
        borders = sorted({x - 1 for x in tiling.xs[1:]} | {x + overlap - 1 for x in tiling.xs[1:]})
        inside = np.delete(steps, borders).mean()
        for b in borders:
            assert steps[b] <= 1.5 * inside + 2, (b, steps[b], inside)
            # and against the columns right around it (a plain paste fails this: about 1.6× its neighbours)
            nearby = np.concatenate([steps[b - 4 : b], steps[b + 1 : b + 5]]).mean()
            assert steps[b] <= 1.25 * nearby + 1, (b, steps[b], nearby)


def test_stitch_blends_linearly_across_the_overlap():
    tiling = sd_upscale.plan_tiles(96, 32, 32, 32, 16)
    colours = [0, 200, 40, 120, 250]
    assert tiling.xs == [0, 16, 32, 48, 64]
    tiles = [Image.new("RGB", (32, 32), (c, c, c)) for c in colours]
    row = pixels(sd_upscale.stitch(tiles, tiling))[0, :, 0]
    assert row[0] == 0 and row[-1] == 250
    assert np.abs(np.diff(row)).max() <= 200 / 15 + 1  # no jump larger than one ramp step


def test_sd_upscale_is_img2img_only_and_unknown_scripts_are_422(http):
    r = http.post("/txt2img", json={**FAST, "script_name": "sd upscale", "script_args": []})
    assert r.status_code == 422 and "Script 'sd upscale' not found" in r.text
    r = http.post("/txt2img", json={**FAST, "script_name": "No Such Script"})
    assert r.status_code == 422 and r.json()["detail"] == "Script 'No Such Script' not found"
    r = http.post("/txt2img", json={**FAST, "alwayson_scripts": {"X/Y/Z Plot": {"args": []}}})
    assert r.status_code == 422 and "selectable script" in r.text


# ------------------------------------------------------------------------------------------- listings


def test_scripts_listings(http):
    listed = http.get("/scripts").json()
    assert listed == {"txt2img": ["prompt matrix", "prompts from file or textbox", "x/y/z plot"],
                      "img2img": ["prompt matrix", "prompts from file or textbox", "sd upscale", "x/y/z plot"]}
    info = http.get("/script-info").json()
    counts = {(e["name"], e["is_img2img"]): len(e["args"]) for e in info}
    assert counts == {("prompt matrix", False): 5, ("prompts from file or textbox", False): 4,
                      ("x/y/z plot", False): 18, ("prompt matrix", True): 5, ("prompts from file or textbox", True): 4,
                      ("sd upscale", True): 4, ("x/y/z plot", True): 18}
    for entry in info:
        assert entry["is_alwayson"] is False
        for arg in entry["args"]:
            assert set(arg) == {"label", "value", "minimum", "maximum", "step", "choices"}
    xyz_img2img = next(e for e in info if e["name"] == "x/y/z plot" and e["is_img2img"])
    assert xyz_img2img["args"][0]["choices"][28] == "VAE"


def test_xyz_vae_axis(http):
    """Last: the VAE axis goes through override_settings.sd_vae, as a client sends it (the VAE is part D's)."""
    data, info = post(http, "/txt2img", seed=4, script_name="x/y/z plot",
                      script_args=xyz_args(29, "None, tiny-other.safetensors"))
    none, other = (decode(b) for b in data["images"][1:])
    assert "VAE: tiny-other" in info["infotexts"][2] and "VAE:" not in info["infotexts"][1]
    assert np.abs(pixels(none) - pixels(other)).mean() > 1


# ------------------------------------------------------------------------------------------- the UI block


def test_ui_block_builds_offline_and_sends_script_fields():
    import gradio as gr

    from webui.tabs.scripts import script_block

    with gr.Blocks():
        block = script_block("img2img")
    assert block.dropdown.choices[0][0] == "None" and len(block.groups) == 4
    values = [c.value for c in block.inputs]
    assert block.request_fields(*values) == {"script_name": None, "script_args": []}
    values[0] = "X/Y/Z plot"
    body = block.request_fields(*values)
    assert body["script_name"] == "x/y/z plot" and len(body["script_args"]) == 18
    values[0] = "SD upscale"
    body = block.request_fields(*values)
    assert body["script_name"] == "sd upscale" and body["script_args"][1:] == [64, "None", 2.0]
