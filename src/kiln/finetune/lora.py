"""LoRA (Hu et al. 2021): low-rank adapters on chosen linear layers, the base weights frozen.

`apply_lora` replaces each targeted nn.Linear by a LoRALinear that keeps the base `weight` under
the same name (so a checkpoint of the base loads unchanged) and adds `lora_a` (rank x in, small
random) and `lora_b` (out x rank, zero): at initialisation the adapted model computes exactly the
base model. The forward is `x W^T + scale * dropout(x) A^T B^T` with scale = alpha / rank.
`merged_weights` folds the adapters into plain weights (what a checkpoint's model.safetensors,
eval, generate and export read); `adapter_weights` keeps only the adapters (a small file).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from kiln.errors import KilnError


class LoRALinear(nn.Linear):
    lora_scale: torch.Tensor

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        # built on meta (nothing allocated), then given the base's own weight and bias
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        self.register_buffer("lora_scale", torch.tensor(alpha / rank), persistent=True)
        self.dropout = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype))
        return F.linear(x, self.weight.to(x.dtype)) + self.lora_scale.to(x.dtype) * update


def apply_lora(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float) -> int:
    """Freeze every parameter of `model`, wrap the targeted linear layers; returns how many."""
    names = {t.strip() for t in targets if t.strip()}
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in names and type(child) is nn.Linear:
                setattr(parent, name, LoRALinear(child, rank, alpha, dropout))
                wrapped += 1
    if not wrapped:
        raise KilnError(f"finetune.lora_targets={targets!r} names no linear layer of this model")
    return wrapped


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Within the block `model` computes its base function (every adapter's scale set to 0): DPO's
    reference for a LoRA policy, without a second copy of the weights."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    scales = [m.lora_scale.clone() for m in layers]
    with torch.no_grad():
        for m in layers:
            m.lora_scale.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for m, scale in zip(layers, scales):
                m.lora_scale.copy_(scale)


def merged_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with adapters -> plain weights W + scale * B A (adapter tensors dropped)."""
    out = {k: v for k, v in weights.items() if not k.rsplit(".", 1)[-1].startswith("lora_")}
    for key in weights:
        if key.endswith(".lora_a"):
            prefix = key[: -len("lora_a")]
            a, b, scale = weights[key], weights[prefix + "lora_b"], weights[prefix + "lora_scale"]
            w = weights[prefix + "weight"]
            out[prefix + "weight"] = (w.float() + scale.float() * (b.float() @ a.float())).to(w.dtype)
    return out


def adapter_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the adapters (and their scales) of a state dict."""
    return {k: v for k, v in weights.items() if k.rsplit(".", 1)[-1].startswith("lora_")}
