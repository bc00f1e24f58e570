"""Scaled dot-product attention for training: torch's SDPA, or on a CPU in bf16 at short lengths the
same product written as batched matmuls.

torch's CPU flash kernel works through small blocks, and its backward pass recomputes the scores
from them: at a training shape of the cpu preset (32 x 2 heads x 256 x 128, bf16) it takes ~47 ms
per layer forward and backward on an AMX Xeon, of which ~40 backward, while the same FLOPs as six
full batched matmuls (one scores product, one with the values, four in the backward) run at the
machine's matmul rate: ~23-28 ms. `MatmulAttention` keeps the (T, T) probabilities (B * H * T^2 *
2 bytes: 8 MB a layer at that shape) instead of recomputing them, so it is used only where that
pays, as measured on that CPU (2026-12-06, docs/benchmarks.md): bf16 inputs on a CPU, lengths up to
MAX_MATMUL_LEN, gradients wanted, no mask or cache. In fp32 and at 1,024 tokens flash is faster
(fp32 at 256 x 128: 52 vs 55 ms; bf16 at 1,024: 72 vs 85), so it stays there, on GPUs and in
inference.

Numerics: the scores come out of the matmul rounded to bf16 (the product itself accumulates in
fp32) and the softmax runs in fp32 on them, as torch's math SDPA does under bf16; flash keeps them
in fp32. At the shape above the relative error against fp64 is 4.2e-3 (flash 3.2e-3) in the
output and 4.2-5.6e-3 (flash 4.3-5.0e-3) in the gradients; the recipe's bits-per-byte is unchanged
(docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

MAX_MATMUL_LEN = 512
"""The longest sequence attended with batched matmuls (bf16, CPU): 2x faster than flash at 256 and
512 tokens on the AMX Xeon, slower at 1,024."""


class MatmulAttention(torch.autograd.Function):
    """softmax(q @ k^T * scale + causal bias) @ v over (B, H, T, D) inputs with as many heads in k, v,
    multiplied in bf16 (whatever the inputs' dtype: it runs where autocast or the inputs chose bf16);
    the output and the gradients come back in the inputs' dtypes."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        B, H, T, D = q.shape
        scale = D**-0.5
        ctx.input_dtypes = (q.dtype, k.dtype, v.dtype)
        qf, kf, vf = (x.to(torch.bfloat16).reshape(B * H, T, D) for x in (q, k, v))  # copies only if strided
        if causal:  # -inf above the diagonal, added by the scores' matmul
            bias = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
            scores = torch.baddbmm(bias, qf, kf.transpose(1, 2), alpha=scale)
        else:
            scores = torch.bmm(qf, kf.transpose(1, 2)).mul_(scale)
        p = torch.softmax(scores, dim=-1)  # reduced in fp32, stored in q's dtype
        ctx.save_for_backward(qf, kf, vf, p)
        ctx.scale = scale
        return torch.bmm(p, vf).view(B, H, T, D).to(q.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        qf, kf, vf, p = ctx.saved_tensors
        B, H, T, D = grad_out.shape
        go = grad_out.to(torch.bfloat16).reshape(B * H, T, D)
        grad_v = torch.bmm(p.transpose(1, 2), go)
        grad_p = torch.bmm(go, vf.transpose(1, 2))
        grad_s = torch._softmax_backward_data(grad_p, p, -1, p.dtype)  # p * (grad_p - rowsum(grad_p * p))
        grad_q = torch.bmm(grad_s, kf).mul_(ctx.scale)
        grad_k = torch.bmm(grad_s.transpose(1, 2), qf).mul_(ctx.scale)
        grads = (g.view(B, H, T, D).to(dtype) for g, dtype in zip((grad_q, grad_k, grad_v), ctx.input_dtypes))
        return (*grads, None)


def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype


def uses_matmul_path(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether `attend` takes MatmulAttention for these inputs (see the module docstring)."""
    return (
        q.device.type == "cpu"
        and _compute_dtype(q) == torch.bfloat16
        and mask is None
        and q.shape == k.shape
        and q.shape[2] <= MAX_MATMUL_LEN
        and torch.is_grad_enabled()
        and q.requires_grad
    )


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention of q (B, H, T, D) over k, v (B, K, S, D), K dividing H; `mask` (T, S) True where a
    query may look, or `causal` for the lower triangle. Returns (B, H, T, D)."""
    if uses_matmul_path(q, k, mask):
        return MatmulAttention.apply(q, k, v, causal)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1]
    )
