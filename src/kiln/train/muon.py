"""Muon (Jordan et al. 2024) for the hidden weight matrices, with AdamW for the rest, as one optimizer.

For each matrix W with gradient G, Muon keeps a momentum M <- beta M + (1 - beta) G, takes the
Nesterov blend U = (1 - beta) G + beta M, replaces U by the nearest semi-orthogonal matrix (its
singular values pushed to ~1 by five Newton-Schulz iterations of a quintic tuned to converge fast,
not exactly), and steps W <- W - lr * sqrt(max(1, rows / cols)) * orth(U). Every direction of the
update then moves by about the same amount, which is what lets it take larger steps than Adam in
the matrices of a transformer's blocks. Embeddings, the output head, norms, biases and scalars stay
with AdamW (their own group's learning rate).

Fused projections (attention's q|k|v, SwiGLU's gate|up) are orthogonalised block by block, as if
they were the separate matrices they stand for. Experts' (E, n, m) weights are orthogonalised per
expert. Under FSDP2 a parameter is a DTensor sharded by rows: its momentum stays sharded, the blended
update is gathered whole (a matrix must be orthogonalised whole), orthogonalised on every rank, and
each rank applies its own rows. Under DDP gradients arrive averaged, so every rank computes the
same update. Newton-Schulz runs in fp32 on CPU (bf16 there is fast only on some CPUs) and in bf16 on
CUDA, as Muon's authors do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MOMENTUM_START = 0.85
"""Muon's momentum at step 0 when it warms up (train.muon_momentum_warmup), as modded-nanogpt does."""


def momentum_at(step: int, peak: float, warmup: int) -> float:
    """Muon's momentum at optimizer step `step`: linear from MOMENTUM_START to `peak` over `warmup`
    steps, then `peak` (a pure function of the step, so a resumed run continues exactly)."""
    if step >= warmup:
        return peak
    return MOMENTUM_START + (peak - MOMENTUM_START) * step / warmup


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with G's singular vectors: (..., n, m) -> (..., n, m).
    Singular values land in about [0.7, 1.2] after 5 steps (the quintic trades exactness for speed)."""
    a, b, c = NS_COEFFICIENTS
    dtype = torch.bfloat16 if G.device.type == "cuda" else torch.float32
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


def orthogonalize(update: torch.Tensor, layout: list[int] | None, steps: int) -> torch.Tensor:
    """Newton-Schulz per block, each scaled by sqrt(max(1, fan_out / fan_in)). `layout` is
    [in_first, split_dim, size, size, ...]: in_first = 1 for weights stored (..., in, out) (the
    experts), 0 for nn.Linear's (out, in); the sizes cut a fused matrix along split_dim (-2 or -1)."""
    in_first, dim, *sizes = layout if layout else [0, -2]
    blocks = update.split(sizes, dim=dim) if sizes else (update,)
    out = []
    for u in blocks:
        fan_out, fan_in = (u.size(-1), u.size(-2)) if in_first else (u.size(-2), u.size(-1))
        out.append(newton_schulz(u, steps) * max(1.0, fan_out / fan_in) ** 0.5)
    return torch.cat(out, dim=dim) if len(out) > 1 else out[0]


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as the parameter `like`: for a DTensor, this rank keeps its own rows of the
    update it computed (no communication: every rank computed the same update)."""
    if not hasattr(like, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor

    placements = like.placements  # type: ignore[attr-defined]
    return distribute_tensor(full, like.device_mesh, placements, src_data_rank=None)


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with "kind": "muon" (lr, momentum, nesterov, ns_steps, weight_decay, a layout per
    parameter: see `orthogonalize`) or "adamw" (lr, betas, eps, weight_decay). One optimizer, so the trainer, the
    checkpoints and the learning-rate schedule (each group's lr_scale) treat it like AdamW."""

    def __init__(self, groups: Iterable[dict[str, Any]]) -> None:
        defaults = dict(
            lr=1e-3, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5, betas=(0.9, 0.95), eps=1e-8
        )
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            if group["kind"] == "muon":
                self._muon(group)
            else:
                self._adamw(group)

    def _muon(self, group: dict[str, Any]) -> None:
        lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
        layouts = group.get("layouts") or [None] * len(group["params"])
        for p, layout in zip(group["params"], layouts):
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - beta)
            blended = p.grad.lerp(buf, beta) if group["nesterov"] else buf
            update = orthogonalize(_full(blended), layout, group["ns_steps"])
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(_like(update, p), alpha=-lr)

    def _adamw(self, group: dict[str, Any]) -> None:
        lr, wd, (beta1, beta2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = float(state["step"])
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(p.grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            if wd:
                p.mul_(1 - lr * wd)
            denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(eps)
            p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**t))
