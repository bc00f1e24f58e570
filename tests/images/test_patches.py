"""Fitting and patching: the round trip is exact, patches run in raster order, aspect is kept."""

import numpy as np
import torch
from PIL import Image

from kiln.images.patches import PAD_VALUE, fit_image, patchify, unpatchify


def test_patchify_round_trips_and_orders_patches_row_by_row():
    pixels = torch.randint(0, 256, (2, 3, 16, 24, 3), dtype=torch.uint8)
    patches = patchify(pixels, 8)
    assert patches.shape == (2, 3, 6, 8 * 8 * 3) and patches.min() >= -1 and patches.max() <= 1
    square = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    assert torch.equal(unpatchify(patchify(square, 4), 16, 4), square)
    # patch 1 is the top row's second block, patch 4 (of 4 per row) the second row's first
    p = patchify(square, 4)
    assert torch.equal(unpatchify(p, 16, 4)[:, 0:4, 4:8], square[:, 0:4, 4:8])
    assert torch.allclose(p[:, 1].reshape(-1, 4, 4, 3), square[:, 0:4, 4:8].float() / 127.5 - 1)
    assert torch.allclose(p[:, 4].reshape(-1, 4, 4, 3), square[:, 4:8, 0:4].float() / 127.5 - 1)


def test_fit_keeps_the_aspect_and_pads_with_grey():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    out = fit_image(wide, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[4:12, :, 0] > 200).all()  # the image: 16 x 8, centred
    assert (out[:4] == PAD_VALUE).all() and (out[12:] == PAD_VALUE).all()
