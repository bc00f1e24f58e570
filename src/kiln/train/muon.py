"""Muon (Jordan et al. 2024) for the hidden weight matrices, with AdamW for the rest, as one optimizer.

For each matrix W with gradient G, Muon keeps a momentum M <- beta M + (1 - beta) G, takes the
Nesterov blend U = (1 - beta) G + beta M, replaces U by the nearest semi-orthogonal matrix (its
singular values pushed to ~1 by five Newton-Schulz iterations of a quintic tuned to converge fast,
not exactly), and steps W <- W - lr * sqrt(max(1, rows / cols)) * orth(U). Every direction of the
update then moves by about the same amount, which is what lets it take larger steps than Adam in
the matrices of a transformer's blocks. Embeddings, the output head, norms, biases and scalars stay
with AdamW (their own group's learning rate).

Two refinements, each an option: `polar_express` replaces the fixed quintic by Polar Express's
per-iteration coefficients (Amsel et al. 2025), which land the singular values closer to 1 in the
same five steps; `normalize` is NorMuon (Li et al. 2025): after orthogonalising, each neuron (the
matrix's longer side) is divided by the root of a running mean of its squared update (beta2), and
the whole update rescaled back to its Frobenius norm, so the rows that Muon moves most get no more
than their share.

Fused projections (attention's q|k|v, SwiGLU's gate|up) are orthogonalised block by block, as if
they were the separate matrices they stand for. Experts' (E, n, m) weights are orthogonalised per
expert. Under FSDP2 a parameter is a DTensor sharded by rows: its momentum stays sharded, the blended
update is gathered whole (a matrix must be orthogonalised whole), orthogonalised on every rank, and
each rank applies its own rows. Under DDP gradients arrive averaged, so every rank computes the
same update. Newton-Schulz runs in the training precision (bf16 where the plan measured bf16 fast:
on CUDA, as Muon's authors do, and on CPUs with AMX or AVX-512 BF16; fp32 elsewhere), and every
block of the same shape in a step goes through it together, as one batched product per iteration
(a 4-layer model's 28 blocks are 2 batches).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
"""Polar Express's coefficients for five iterations (the ones nanochat and modded-nanogpt use); the
input is scaled to a norm slightly above 1 (x 1.02), as they tuned them for."""
MOMENTUM_START = 0.85
"""Muon's momentum at step 0 when it warms up (muon.momentum_warmup), as modded-nanogpt does."""


def momentum_at(step: int, peak: float, warmup: int) -> float:
    """Muon's momentum at optimizer step `step`: linear from MOMENTUM_START to `peak` over `warmup`
    steps, then `peak` (a pure function of the step, so a resumed run continues exactly)."""
    if step >= warmup:
        return peak
    return MOMENTUM_START + (peak - MOMENTUM_START) * step / warmup


def newton_schulz(
    G: torch.Tensor,
    steps: int = 5,
    eps: float = 1e-7,
    polar_express: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with G's singular vectors: (..., n, m) -> (..., n, m),
    each matrix of the batch on its own. Singular values land in about [0.7, 1.2] after 5 steps (the
    quintic trades exactness for speed); with `polar_express`, its per-step coefficients (at most 5
    steps). Computed in `dtype` (default: bf16 on CUDA, fp32 elsewhere)."""
    dtype = dtype or (torch.bfloat16 if G.device.type == "cuda" else torch.float32)
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * (1.02 if polar_express else 1.0) + eps)
    for a, b, c in POLAR_EXPRESS[:steps] if polar_express else [NS_COEFFICIENTS] * steps:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


def orthogonalize(
    update: torch.Tensor,
    layout: list[int] | None,
    steps: int,
    polar_express: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Newton-Schulz per block, each scaled by sqrt(max(1, fan_out / fan_in)). `layout` is
    [in_first, split_dim, size, size, ...]: in_first = 1 for weights stored (..., in, out) (the
    experts), 0 for nn.Linear's (out, in); the sizes cut a fused matrix along split_dim (-2 or -1)."""
    return orthogonalize_all([update], [layout], steps, polar_express, dtype)[0]


def orthogonalize_all(
    updates: list[torch.Tensor],
    layouts: list[list[int] | None],
    steps: int,
    polar_express: bool = False,
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """`orthogonalize` for many updates at once: their blocks grouped by shape, each group one batched
    Newton-Schulz (the same result per block as alone, up to the summation order of a batched product)."""
    blocks: list[tuple[int, torch.Tensor, float]] = []  # (update index, block, scale)
    cuts: list[tuple[int, list[int]]] = []  # per update: (split_dim, block sizes)
    for i, (update, layout) in enumerate(zip(updates, layouts)):
        in_first, dim, *sizes = layout if layout else [0, -2]
        cuts.append((dim, sizes))
        for u in update.split(sizes, dim=dim) if sizes else (update,):
            fan_out, fan_in = (u.size(-1), u.size(-2)) if in_first else (u.size(-2), u.size(-1))
            blocks.append((i, u, max(1.0, fan_out / fan_in) ** 0.5))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, (_, u, _) in enumerate(blocks):
        by_shape.setdefault(tuple(u.shape), []).append(k)
    done: list[torch.Tensor | None] = [None] * len(blocks)
    for members in by_shape.values():
        orth = newton_schulz(
            torch.stack([blocks[k][1] for k in members]), steps, polar_express=polar_express, dtype=dtype
        )
        for k, o in zip(members, orth.unbind(0)):
            done[k] = o * blocks[k][2]
    out: list[list[torch.Tensor]] = [[] for _ in updates]
    for (i, _, _), orthogonal in zip(blocks, done):
        assert orthogonal is not None
        out[i].append(orthogonal)
    return [torch.cat(parts, dim=cuts[i][0]) if len(parts) > 1 else parts[0] for i, parts in enumerate(out)]


def neuron_dim(shape: torch.Size) -> int:
    """NorMuon's reduction dimension: the shorter side, so the statistics are per neuron of the longer."""
    return -1 if shape[-2] >= shape[-1] else -2


def normalize_neurons(update: torch.Tensor, second: torch.Tensor, beta2: float) -> torch.Tensor:
    """NorMuon: `second` (the running mean of each neuron's squared update, updated in place) divides
    the neurons by its root; the result keeps the update's Frobenius norm."""
    u = update.float()
    mean_sq = u.square().mean(dim=neuron_dim(u.shape), keepdim=True)
    second.lerp_(mean_sq, 1 - beta2)
    scaled = u * second.clamp_min(1e-10).rsqrt()
    norm = u.norm(dim=(-2, -1), keepdim=True) / scaled.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-10)
    return (scaled * norm).to(update.dtype)


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
    """Param groups with "kind": "muon" (lr, momentum, nesterov, ns_steps, weight_decay, polar_express,
    normalize with betas[1], a layout per parameter: see `orthogonalize`) or "adamw" (lr, betas, eps,
    weight_decay). One optimizer, so the trainer, the
    checkpoints and the learning-rate schedule (each group's lr_scale) treat it like AdamW."""

    def __init__(self, groups: Iterable[dict[str, Any]]) -> None:
        defaults = dict(
            lr=1e-3,
            weight_decay=0.0,
            momentum=0.95,
            nesterov=True,
            ns_steps=5,
            betas=(0.9, 0.95),
            eps=1e-8,
            polar_express=False,
            normalize=False,
        )
        super().__init__(list(groups), defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The saved state and settings, except Newton-Schulz's precision: that follows this run's
        `train.precision` (a resume may go on in fp32 where the checkpoint was trained in bf16)."""
        ns_dtypes = [group.get("ns_dtype") for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, ns_dtype in zip(self.param_groups, ns_dtypes):
            if ns_dtype is not None:
                group["ns_dtype"] = ns_dtype

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
        params, blended, used = [], [], []
        for p, layout in zip(group["params"], layouts):
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - beta)
            params.append(p)
            blended.append(_full(p.grad.lerp(buf, beta) if group["nesterov"] else buf))
            used.append(layout)
        dtype = torch.bfloat16 if group.get("ns_dtype") == "bf16" else None
        updates = orthogonalize_all(blended, used, group["ns_steps"], group["polar_express"], dtype)
        for p, update in zip(params, updates):
            state = self.state[p]
            update = update.to(p.dtype)
            if group["normalize"]:  # per-neuron statistics of the whole matrix, the same on every rank
                if "second_moment" not in state:  # one value per neuron: the shorter side reduced to 1
                    shape = list(update.shape)
                    shape[neuron_dim(update.shape)] = 1
                    state["second_moment"] = torch.zeros(shape, device=update.device)
                update = normalize_neurons(update, state["second_moment"], group["betas"][1])
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(_like(update, p), alpha=-lr)

    def _adamw(self, group: dict[str, Any]) -> None:
        """AdamW on every parameter of the group at once: torch's fused kernel where the group shares
        one device and dtype, else its foreach kernels (one call per operation, not per parameter)."""
        lr, wd, (beta1, beta2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
        grads = [p.grad for p in params]
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        if len({(p.device, p.dtype) for p in params}) == 1 and params[0].device.type in ("cpu", "cuda"):
            # torch's fused kernel: one pass over each tensor instead of eight (2.4x faster on the cpu
            # preset's embeddings and head), the same update within float rounding
            steps = [self.state[p]["step"] for p in params]
            torch._fused_adamw_(
                params, grads, exp_avg, exp_avg_sq, [], steps,
                lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps, amsgrad=False, maximize=False,
            )  # fmt: skip
            return
        t = float(self.state[params[0]]["step"])  # one step count for the whole group
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        denom = torch._foreach_div(exp_avg_sq, 1 - beta2**t)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-lr / (1 - beta1**t))
