"""Layers shared by the model families: RMSNorm, rotary positions, attention with a KV cache, SwiGLU.

Shapes: B batch, T query positions, S key positions, H query heads, K key/value heads, D head dim,
C model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kiln.models.attend import attend


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, with a learned gain (`affine`) or without one."""

    weight: nn.Parameter | None

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps, self.dim = eps, dim
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the gain in the input's dtype: a bf16 input with an fp32 gain misses the fused kernel on GPUs
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, (self.dim,), weight, self.eps)

    def init_weights(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)


def rotary_tables(
    head_dim: int, max_len: int, theta: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_len, head_dim), in the rotate-half layout Llama uses."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, D) by position tables cos/sin (T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache:
    """Keys and values of every layer for incremental decoding: (layers, B, K, max_len, D)."""

    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_kv_heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, K, T, D) at the current position; return all keys/values so far (B, K, S, D)."""
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.pos += num_tokens


class Attention(nn.Module):
    """Multi-head attention with grouped-query heads and rotary positions, via SDPA."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        causal: bool = True,
        rotary: bool = True,
        qk_norm: bool = False,
        value_gate: bool = False,
        norm_eps: float = 1e-5,
        norm_params: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.causal, self.rotary, self.qk_norm = causal, rotary, qk_norm
        self.wqkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=False)
        self.wo = nn.Linear(num_heads * self.head_dim, dim, bias=False)
        if qk_norm:  # per head, over head_dim (Qwen3's q_norm / k_norm; a gain only with model.norm_params)
            self.q_norm = RMSNorm(self.head_dim, norm_eps, norm_params)
            self.k_norm = RMSNorm(self.head_dim, norm_eps, norm_params)
        if value_gate:  # a value embedding's per-head weight, read from the first channels of x
            self.ve_gate = nn.Linear(min(VALUE_GATE_CHANNELS, dim), num_kv_heads, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C); `ve` (B, T, K * D), a value embedding added to the values through the gate."""
        B, T, _ = x.shape
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * D, K * D, K * D], dim=-1)
        q, k = q.view(B, T, H, D).transpose(1, 2), k.view(B, T, K, D).transpose(1, 2)  # (B, H|K, T, D)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        v = v.view(B, T, K, D)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate.in_features]))  # (B, T, K), 1 at init
            v = v + gate.unsqueeze(-1) * ve.view(B, T, K, D)
        v = v.transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.update(layer, k, v)  # (B, K, S, D)
        mask = None
        is_causal = self.causal and past == 0 and T > 1
        if self.causal and past > 0 and T > 1:
            # chunked prefill after earlier tokens: query i sees keys up to past + i
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = attend(q, k, v, is_causal, mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.wqkv.weight, std=std)
        nn.init.normal_(self.wo.weight, std=out_std)
        if self.qk_norm:
            self.q_norm.init_weights()
            self.k_norm.init_weights()
        if hasattr(self, "ve_gate"):
            nn.init.zeros_(self.ve_gate.weight)


VALUE_GATE_CHANNELS = 32
"""model.value_embeds: the gate reads this many leading channels of the block's input (nanochat's)."""


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoder's output; no mask, no rotation."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        norm_params: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.qk_norm = num_heads, num_kv_heads, qk_norm
        self.head_dim = dim // num_heads
        self.wq = nn.Linear(dim, num_heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * num_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(num_heads * self.head_dim, dim, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, norm_eps, norm_params)
            self.k_norm = RMSNorm(self.head_dim, norm_eps, norm_params)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) attends over memory (B, S, C)."""
        B, T, _ = x.shape
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.wq(x).view(B, T, H, D).transpose(1, 2)
        k, v = self.wkv(memory).view(B, -1, 2 * K, D).transpose(1, 2).chunk(2, dim=1)  # (B, K, S, D) each
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        y = attend(q, k, v, causal=False)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.wq.weight, std=std)
        nn.init.normal_(self.wkv.weight, std=std)
        nn.init.normal_(self.wo.weight, std=out_std)
        if self.qk_norm:
            self.q_norm.init_weights()
            self.k_norm.init_weights()


class SwiGLU(nn.Module):
    """Gated MLP: w_down(silu(x w_gate) * x w_up), gate and up fused into one matmul."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w_gate_up = nn.Linear(dim, 2 * hidden_dim, bias=False)
        self.w_down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.w_gate_up.weight, std=std)
        nn.init.normal_(self.w_down.weight, std=out_std)


class ReLU2(nn.Module):
    """w_down(relu(x w_up)^2) (Primer's squared ReLU; nanochat's MLP): two matrices, so 4 x width
    hidden matches SwiGLU's parameters at 8/3 x width."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w_up = nn.Linear(dim, hidden_dim, bias=False)
        self.w_down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.relu(self.w_up(x)).square())

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.w_up.weight, std=std)
        nn.init.normal_(self.w_down.weight, std=out_std)
