"""The Gradio Blocks UI. Presentation only: every tab builds a Job and runs it through the service queue."""

from __future__ import annotations

import gradio as gr

from backends.job import Job, SdgateError
from backends.local.samplers import a1111_samplers
from backends.service import DEMO_NOTE, Service


def build_ui(service: Service) -> gr.Blocks:
    sampler_names = [s["name"] for s in a1111_samplers()]

    def generate(prompt, negative, sampler, steps, cfg, width, height, seed, batch_size):
        job = Job(
            prompt=prompt, negative_prompt=negative, sampler=sampler, steps=int(steps), cfg_scale=float(cfg),
            width=int(width), height=int(height), seed=int(seed), batch_size=int(batch_size), source="ui",
        )
        try:
            result = service.run(job)
        except SdgateError as e:
            raise gr.Error(e.message) from None
        info = f"Seeds: {', '.join(map(str, result.seeds))}; sampler: {result.sampler} ({result.schedule}); model: {result.model.name}"
        return result.images, info

    with gr.Blocks(title="sdgate") as blocks:
        if service.demo:
            gr.Markdown(f"**{DEMO_NOTE.capitalize()}.**")
        with gr.Tab("A1111 txt2img"):
            prompt = gr.Textbox(label="Prompt", lines=3)
            negative = gr.Textbox(label="Negative prompt", lines=2)
            with gr.Row():
                sampler = gr.Dropdown(sampler_names, value="Euler a", label="Sampler")
                steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
                cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG scale")
            with gr.Row():
                width = gr.Slider(64, 2048, value=512, step=8, label="Width")
                height = gr.Slider(64, 2048, value=512, step=8, label="Height")
                seed = gr.Number(value=-1, precision=0, label="Seed")
                batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size")
            go = gr.Button("Generate", variant="primary")
            gallery = gr.Gallery(label="Images", format="png")
            info = gr.Textbox(label="Info", interactive=False)
        go.click(
            generate,
            [prompt, negative, sampler, steps, cfg, width, height, seed, batch_size],
            [gallery, info],
            api_name="txt2img",
        )
    blocks.queue(default_concurrency_limit=16)
    return blocks
