"""The limits one job may ask for (`[limits]`, backends/config.py `Limits`): every style's jobs are checked here
before they queue, and each dialect renders the InvalidRequest in its own 4xx shape."""

from __future__ import annotations

from .config import Limits
from .job import InvalidRequest, Job


def check_job(job: Job, lim: Limits) -> None:
    problems = []
    for side, value, most in (("width", job.width, lim.max_width), ("height", job.height, lim.max_height)):
        if not 64 <= value <= most or value % 8:
            problems.append(f"{side} must be a multiple of 8 between 64 and {most} (got {value})")
    if not 1 <= job.steps <= lim.max_steps:
        problems.append(f"steps must be between 1 and {lim.max_steps} (got {job.steps})")
    if not 1 <= job.batch_size <= lim.max_batch_size:
        problems.append(f"batch_size must be between 1 and {lim.max_batch_size} (got {job.batch_size})")
    if job.n_iter < 1 or job.image_count > lim.max_images:
        problems.append(f"batch_size × n_iter must be between 1 and {lim.max_images} (got {job.image_count})")
    pixels = job.width * job.height * max(1, job.image_count)
    if pixels > lim.max_pixels:
        problems.append(f"width × height × images must be at most {lim.max_pixels} pixels "
                        f"(got {job.width}×{job.height}×{job.image_count} = {pixels})")
    for name, text in (("prompt", job.prompt), ("negative_prompt", job.negative_prompt)):
        if len(text or "") > lim.max_prompt_length:
            problems.append(f"{name} must be at most {lim.max_prompt_length} characters (got {len(text)})")
    if job.init_image is not None and not 0.0 <= job.denoising_strength <= 1.0:
        problems.append(f"denoising_strength must be between 0 and 1 (got {job.denoising_strength})")
    if job.mask is not None and job.init_image is None:
        problems.append("a mask needs an init image")
    if job.hires is not None:
        hr = job.hires
        if job.init_image is not None:
            problems.append("a second (hires) pass is for text-to-image jobs only")
        for side, value, most in (("hires width", hr.width, lim.max_width), ("hires height", hr.height, lim.max_height)):
            if not 64 <= value <= most or value % 8:
                problems.append(f"{side} must be a multiple of 8 between 64 and {most} (got {value})")
        if hr.cover is not None and (hr.cover[0] > 2 * lim.max_width or hr.cover[1] > 2 * lim.max_height):
            problems.append(f"the hires cover size {hr.cover[0]}×{hr.cover[1]} is too large")
        if hr.width * hr.height * max(1, job.image_count) > lim.max_pixels:
            problems.append(f"the hires size {hr.width}×{hr.height}×{job.image_count} images is past "
                            f"{lim.max_pixels} pixels")
        if not 0.0 <= hr.denoising_strength <= 1.0:
            problems.append(f"hires denoising_strength must be between 0 and 1 (got {hr.denoising_strength})")
        if not 0 <= hr.steps <= lim.max_steps:
            problems.append(f"hires steps must be between 0 and {lim.max_steps} (got {hr.steps})")
    if not 1 <= job.clip_skip <= 12:
        problems.append(f"clip_skip must be between 1 and 12 (got {job.clip_skip})")
    if problems:
        raise InvalidRequest("; ".join(problems), details={"problems": problems})
