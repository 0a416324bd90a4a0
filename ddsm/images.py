"""Turning sample tensors into pictures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ddsm.io import atomic_path


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] to (N, H, W, C) uint8."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(x: torch.Tensor, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images into one (rows*H, cols*W, C) uint8 array."""
    imgs = to_uint8(x)
    n, h, w, c = imgs.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(imgs):
        r, q = divmod(i, ncols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = im
    return out


def save_grid(path: str | Path, x: torch.Tensor, ncols: int | None = None, scale: int = 4) -> None:
    """Write a PNG grid of the images, upscaled ``scale`` times (nearest) so small images stay legible."""
    from PIL import Image

    g = grid(x, ncols)
    g = g.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
