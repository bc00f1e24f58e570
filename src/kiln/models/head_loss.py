"""The output head and the cross-entropy over the vocabulary in one pass, without the logits tensor.

A causal LM's training step spends a large share of its memory traffic on the (tokens x vocabulary)
logits: written by the head's matmul, read and written again in fp32 by log-softmax, then its
gradient, as large again. `linear_cross_entropy` works through the tokens in chunks: for each chunk
it multiplies out that chunk's logits, takes the loss and, since the loss is the last thing computed,
its gradient at once (softmax minus the one-hot target, through the soft-cap and the logit scale),
then the chunk's contributions to the gradients of the hidden states and of the head. Only those two
gradients are kept (tokens x width, vocabulary x width, in fp32); backward scales them by the
incoming gradient. The FLOPs are the unfused path's (no recomputation); the logits never exist
whole. Under autocast the matmuls run in the autocast dtype and the softmax in fp32, as the unfused
path does.

The loss is the mean over the tokens whose target is not -100 (the masked-mean every causal
objective takes), so the gradient each chunk computes is final up to one scalar.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100
CHUNK_TOKENS = 1024
"""Tokens whose logits are computed at once (1,024 x an 8,192 vocabulary: 32 MB in fp32)."""


def _matmul_dtype(h: torch.Tensor) -> torch.dtype:
    device = h.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype


class LinearCrossEntropy(torch.autograd.Function):
    """mean over scored tokens of cross_entropy(cap(scale * h @ weight.T), targets)."""

    @staticmethod
    def forward(
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float, cap: float, chunk: int
    ) -> torch.Tensor:
        dtype = _matmul_dtype(h)
        w = weight.to(dtype)
        n = h.shape[0]
        scored = targets != IGNORE
        count = scored.sum().clamp(min=1).to(torch.float32)
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty((n, h.shape[1]), dtype=torch.float32, device=h.device) if grads else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if grads else None
        rows = torch.arange(min(chunk, n), device=h.device)
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            hc = h[start:end].to(dtype)
            z = (hc @ w.T).float()  # (c, V); fused into the passes below when compiled
            if scale != 1.0:
                z = z * scale
            if cap:
                t = torch.tanh(z / cap)
                z = cap * t
            tc, keep = targets[start:end], scored[start:end]
            safe = tc.clamp(min=0)
            lse = torch.logsumexp(z, dim=-1)
            z_target = z.gather(1, safe[:, None]).squeeze(1)
            total += ((lse - z_target) * keep).sum()
            if not grads:
                continue
            # d loss / d z = (softmax - one-hot) * keep / count: one elementwise pass over the chunk
            # writes the softmax part in the matmul dtype; the c target entries are then set from
            # their fp32 values (indexing inside that pass would keep it from vectorising)
            weight_row = (keep.to(torch.float32) / count)[:, None]
            p = torch.exp(z - lse[:, None]) * weight_row
            p_target = (torch.exp(z_target - lse) - 1.0) * weight_row[:, 0]
            if cap:
                p = p * (1.0 - t.square())
                p_target = p_target * (1.0 - t.gather(1, safe[:, None]).squeeze(1).square())
            if scale != 1.0:
                p, p_target = p * scale, p_target * scale
            g_low = p.to(dtype)
            g_low[rows[: end - start], safe] = p_target.to(dtype)
            assert grad_h is not None and grad_w is not None
            grad_h[start:end] = (g_low @ w).float()
            grad_w += (g_low.T @ hc).float()
        if grads:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.input_dtypes = (h.dtype, weight.dtype)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.input_dtypes
        gh = (grad_h * grad_out).to(h_dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_out).to(w_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    scale: float = 1.0,
    cap: float = 0.0,
    chunk: int = CHUNK_TOKENS,
) -> torch.Tensor:
    """The mean cross-entropy of `targets` (..., -100 left out) under logits cap(scale * h @ weight.T),
    h (..., C), weight (V, C); a scalar in fp32, its gradient computed chunk by chunk in the forward."""
    return LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1), scale, cap, chunk)
