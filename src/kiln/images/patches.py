"""Pixels in, patches out: images fitted to a square and cut into the flat patches a model embeds.

fit_image(image, size)          -> (size, size, 3) uint8: the long side scaled to `size`, the rest
                                   padded with mid-grey, so no part of an image is cropped away
patchify(pixels, patch)         -> (..., (size / patch)^2, patch * patch * 3) float in [-1, 1],
                                   in raster order (row by row), channels last within a patch
unpatchify(patches, size, patch) -> the pixels back (the inverse of patchify, for checks and plots)
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

PAD_VALUE = 127
"""Mid-grey: what the padding of a non-square image is filled with."""


def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8: aspect kept, centred, padded."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    x, y = (size - nw) // 2, (size - nh) // 2
    out[y : y + nh, x : x + nw] = np.asarray(image, dtype=np.uint8)
    return out


def num_patches(size: int, patch: int) -> int:
    return (size // patch) ** 2


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., (H / patch) * (W / patch), patch * patch * 3) float in [-1, 1]."""
    *lead, H, W, C = pixels.shape
    assert H % patch == 0 and W % patch == 0, f"image {H}x{W} does not divide into {patch}-pixel patches"
    x = pixels.reshape(*lead, H // patch, patch, W // patch, patch, C)
    x = x.movedim(-3, -4)  # (..., H/p, W/p, p, p, C)
    x = x.reshape(*lead, (H // patch) * (W // patch), patch * patch * C)
    return x.float() / 127.5 - 1.0


def unpatchify(patches: torch.Tensor, size: int, patch: int) -> torch.Tensor:
    """(..., N, patch * patch * 3) float in [-1, 1] -> (..., size, size, 3) uint8."""
    *lead, N, D = patches.shape
    side = size // patch
    assert N == side * side and D == patch * patch * 3, (patches.shape, size, patch)
    x = patches.reshape(*lead, side, side, patch, patch, 3).movedim(-4, -3)
    x = x.reshape(*lead, size, size, 3)
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
