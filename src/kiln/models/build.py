"""Build any family's model: on the meta device, materialised on the target device, initialised."""

from __future__ import annotations

import torch

from kiln.models.base import TokenModel
from kiln.models.config import ModelConfig
from kiln.models.registry import checked


def build_on_meta(cfg: ModelConfig) -> TokenModel:
    """The model's structure without memory: for counting parameters and FLOPs of a shape. An option
    the family has no place for is refused here (models/registry.py's `checked`)."""
    with torch.device("meta"):
        return checked(cfg).model(cfg)


def build_model(cfg: ModelConfig, device: torch.device) -> TokenModel:
    """No memory is touched until `to_empty`; `init_weights` then fills every parameter."""
    model = build_on_meta(cfg)
    model.to_empty(device=device)
    model.init_weights()
    return model
