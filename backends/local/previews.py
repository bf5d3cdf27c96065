"""Live previews: a cheap linear map from the 4 latent channels to RGB, no VAE call.

The factors are the least-squares fits of latent → RGB that the community uses for SD1.x and SDXL
latents (A1111's "Approx cheap"); good enough to watch composition form, and free.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

LATENT_RGB_FACTORS = {
    "sd1": [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
    "sdxl": [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163], [-0.3730, -0.2499, -0.2088]],
}
LATENT_RGB_FACTORS["sd2"] = LATENT_RGB_FACTORS["sd1"]


def latent_preview(latents: torch.Tensor, family: str) -> Image.Image:
    """The first image of a latent batch as a small RGB picture (1/8 of the final size)."""
    factors = torch.tensor(LATENT_RGB_FACTORS.get(family, LATENT_RGB_FACTORS["sd1"]), dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0].detach().float().cpu(), factors)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))
