"""A batch: named tensors, what every loader gives and every objective reads (no heavier import)."""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]
"""Named tensors. A loader gives "inputs" and "targets" (B, T) int64 (targets: the inputs shifted by
one, -100 where nothing is scored) plus whatever else its data carry (image batches: "pixels" and
"num_images", images/shards.py); `make_batch` turns that into what the objective's loss reads."""


def text_batch(inputs: torch.Tensor, targets: torch.Tensor) -> Batch:
    """A loader's batch of token windows."""
    return {"inputs": inputs, "targets": targets}
