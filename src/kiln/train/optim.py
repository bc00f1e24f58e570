"""AdamW with decoupled weight decay on matrices only, Muon beside it, and learning-rate schedules as
pure functions. `make_optimizer` builds the one a TrainConfig names."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig
    from kiln.train.config import AdamWConfig, MuonConfig


def make_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer train.optimizer names, from the adamw and muon sections, at train.lr."""
    lr = cfg.train.lr
    if cfg.train.optimizer == "muon":
        # Newton-Schulz in the training precision: bf16 where the plan measured bf16 fast
        return build_muon(model, lr, cfg.adamw, cfg.muon, "bf16" if cfg.train.precision == "bf16" else "fp32")
    return build_optimizer(model, lr, cfg.adamw, device, cfg.model.width_mult)


def build_optimizer(
    model: nn.Module, lr: float, adamw: AdamWConfig, device: torch.device, width_mult: float = 1.0
) -> torch.optim.AdamW:
    """AdamW; weight decay applies to parameters with 2+ dims (matmul weights, embeddings), not to
    norms or biases. Each group carries `lr_scale` (the trainer sets lr x lr_scale every step): under
    muP (`width_mult` m != 1) the blocks' matrices train at lr / m, everything else at lr."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    weight_decay, betas = adamw.weight_decay, (adamw.beta1, adamw.beta2)
    if width_mult == 1.0:  # the standard parametrisation: matrices with decay, the rest without
        params = [p for _, p in named]
        return torch.optim.AdamW(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, "lr_scale": 1.0},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": 1.0},
            ],
            lr=lr,
            betas=betas,
            fused=device.type in ("cpu", "cuda"),
        )
    outer = {id(p) for n, p in named if n.split(".", 1)[0] in ("embed", "head")}
    hidden = [p for _, p in named if p.ndim >= 2 and id(p) not in outer]
    groups = [
        {"params": hidden, "weight_decay": weight_decay, "lr_scale": 1.0 / width_mult},
        {"params": [p for _, p in named if p.ndim >= 2 and id(p) in outer], "weight_decay": weight_decay},
        {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("lr_scale", 1.0)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))


OUTER = ("embed", "head", "value_embeds", "vision.proj", "vision.pos")
"""Parameters that map tokens or patches in and out: AdamW even under Muon (as in Muon's recipe)."""
SCALARS = ("resid_scales", "x0_scales")
"""The decoder's per-layer mixing scalars (model.residual_scalars): AdamW at adamw.scalar_lr."""


def muon_layouts(model: nn.Module) -> dict[int, list[int]]:
    """How Muon cuts fused or expert matrices into the matrices they stand for (train/muon.py)."""
    from kiln.models.layers import Attention, CrossAttention, SwiGLU
    from kiln.models.moe import MoE

    out: dict[int, list[int]] = {}
    for m in model.modules():
        if isinstance(m, Attention):
            q, kv = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
            out[id(m.wqkv.weight)] = [0, -2, q, kv, kv]
        elif isinstance(m, CrossAttention):
            kv = m.num_kv_heads * m.head_dim
            out[id(m.wkv.weight)] = [0, -2, kv, kv]
        elif isinstance(m, SwiGLU):
            out[id(m.w_gate_up.weight)] = [0, -2, m.hidden_dim, m.hidden_dim]
        elif isinstance(m, MoE):
            hidden = m.w_down.shape[1]
            out[id(m.w_gate_up)] = [1, -1, hidden, hidden]
            out[id(m.w_down)] = [1, -1]
    return out


def build_muon(
    model: nn.Module, lr: float, adamw: AdamWConfig, muon: MuonConfig, ns_precision: str = "fp32"
) -> torch.optim.Optimizer:
    """Muon for the blocks' matrices (and experts), AdamW for the rest: embeddings and head with
    weight decay, norms, biases, scalars and convolutions without. The Muon group's lr_scale is
    muon.lr / lr, so the trainer's schedule moves both together; the untied input embedding and the
    value embeddings (adamw.embed_lr) and the residual scalars (adamw.scalar_lr) may have their own
    rates; with muon.momentum_warmup the trainer raises Muon's momentum over the first steps
    (muon.momentum_at); muon.polar_express and muon.normalize are its two refinements (train/muon.py)."""
    from kiln.train.muon import MuonAdamW

    weight_decay, betas, embed_lr, scalar_lr = (
        adamw.weight_decay,
        (adamw.beta1, adamw.beta2),
        adamw.embed_lr,
        adamw.scalar_lr,
    )

    layouts = muon_layouts(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = dict(named)
    tied = "head.weight" not in params  # named_parameters lists a shared tensor once, as embed.weight
    embed = [params["embed.weight"]] if embed_lr and not tied and "embed.weight" in params else []
    embed += [p for n, p in named if n.startswith("value_embeds.")] if embed_lr else []
    scalars = [p for n, p in named if n in SCALARS] if scalar_lr else []
    outer = [p for n, p in named if n.startswith(OUTER) and not any(p is e for e in embed)]
    seen = {id(p) for p in outer + embed + scalars}
    matrices = [(n, p) for n, p in named if id(p) not in seen and (p.ndim == 2 or id(p) in layouts)]
    seen |= {id(p) for _, p in matrices}
    rest = [p for _, p in named if id(p) not in seen]
    groups: list[dict] = [
        {
            "kind": "muon",
            "params": [p for _, p in matrices],
            "layouts": [layouts.get(id(p)) for _, p in matrices],
            "lr": muon.lr,
            "lr_scale": muon.lr / lr,
            "momentum": muon.momentum,
            "momentum_peak": muon.momentum,
            "momentum_warmup": muon.momentum_warmup,
            "weight_decay": muon.weight_decay,
            "polar_express": muon.polar_express,
            "normalize": muon.normalize,
            "betas": (adamw.beta1, muon.beta2),  # NorMuon's second moment decays at muon.beta2
            "ns_dtype": ns_precision,
        },
        {"kind": "adamw", "params": embed, "lr": embed_lr, "lr_scale": embed_lr / lr, "weight_decay": weight_decay},
        {"kind": "adamw", "params": scalars, "lr": scalar_lr, "lr_scale": scalar_lr / lr, "weight_decay": 0.0},
        {"kind": "adamw", "params": [p for p in outer if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
        {"kind": "adamw", "params": [p for p in outer if p.ndim < 2] + rest, "lr": lr, "weight_decay": 0.0},
    ]
    for g in groups:
        g.setdefault("lr_scale", 1.0)
        g.setdefault("betas", betas)
    return MuonAdamW([g for g in groups if g["params"]])


def lr_at(
    step: int, max_steps: int, warmup_steps: int, schedule: str, decay_fraction: float, min_lr_ratio: float
) -> float:
    """Learning-rate multiplier in [min_lr_ratio, 1] at optimizer step `step` (0-based).

    cosine: linear warmup, then cosine decay to min_lr_ratio at max_steps.
    wsd:    linear warmup, constant, then linear decay over the last decay_fraction of steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    decay_steps = max(1, round(decay_fraction * max_steps))
    decay_start = max_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = (step - decay_start) / decay_steps
    return 1.0 - (1 - min_lr_ratio) * min(progress, 1.0)
