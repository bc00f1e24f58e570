"""Build any family's model: on the meta device, materialised on the target device, initialised."""

from __future__ import annotations

import torch
from torch import nn

from kiln.models.config import ModelConfig
from kiln.models.decoder import Decoder
from kiln.models.encdec import EncoderDecoder
from kiln.models.encoder import Encoder
from kiln.models.hybrid import Hybrid

FAMILIES: dict[str, type[nn.Module]] = {"decoder": Decoder, "hybrid": Hybrid, "encoder": Encoder,
                                        "encdec": EncoderDecoder}


def build_on_meta(cfg: ModelConfig) -> nn.Module:
    """The model's structure without memory: for counting parameters and FLOPs of a shape."""
    with torch.device("meta"):
        return FAMILIES[cfg.family](cfg)


def build_model(cfg: ModelConfig, device: torch.device) -> nn.Module:
    """No memory is touched until `to_empty`; `init_weights` then fills every parameter."""
    model = build_on_meta(cfg)
    model.to_empty(device=device)
    model.init_weights()
    return model
