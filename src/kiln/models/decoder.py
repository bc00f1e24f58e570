"""Llama-style decoder-only transformer: pre-norm blocks of causal attention and SwiGLU.

Built on the meta device, moved with `to_empty`, then `init_weights()`:

    with torch.device("meta"):
        model = Decoder(cfg)
    model.to_empty(device=device)
    model.init_weights()

No parallelism or precision logic lives here; the trainer applies those from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kiln.config import require
from kiln.models.layers import (
    Attention,
    KVCache,
    RMSNorm,
    SwiGLU,
    rotary_tables,
    swiglu_hidden_dim,
)


@dataclass
class DecoderConfig:
    vocab_size: int = 8192
    """Rows of the embedding table; must cover the tokenizer's vocabulary."""
    dim: int = 256
    """Model width C."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Query heads; head_dim = dim / num_heads."""
    num_kv_heads: int = 4
    """Key/value heads (grouped-query attention); must divide num_heads."""
    hidden_dim: int = 0
    """SwiGLU hidden width; 0 derives Llama's 8/3 * dim rounded to 64."""
    max_seq_len: int = 512
    """Longest sequence the rotary tables cover."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    tie_embeddings: bool = True
    """Share the input embedding with the output projection."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections use init_std / sqrt(2 * num_layers)."""

    def __post_init__(self) -> None:
        require(self.dim % self.num_heads == 0, f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}")
        require((self.dim // self.num_heads) % 2 == 0, "model head_dim (dim / num_heads) must be even for rotary positions")
        require(self.num_heads % self.num_kv_heads == 0,
                f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads}")
        for name in ("vocab_size", "dim", "num_layers", "max_seq_len"):
            require(getattr(self, name) > 0, f"model.{name}={getattr(self, name)} must be positive")
        if self.hidden_dim == 0:
            self.hidden_dim = swiglu_hidden_dim(self.dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.num_kv_heads, causal=True)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)  # (B, T, C)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter and buffer; call after `to_empty`."""
        cfg = self.cfg
        if cfg.tie_embeddings:  # to_empty() materialises each module's parameters apart: re-tie them
            self.head.weight = self.embed.weight
        out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if not cfg.tie_embeddings:
            nn.init.normal_(self.head.weight, std=cfg.init_std)
        for block in self.blocks:
            block.attn_norm.init_weights()
            block.mlp_norm.init_weights()
            block.attn.init_weights(cfg.init_std, out_std)
            block.mlp.init_weights(cfg.init_std, out_std)
        self.norm.init_weights()
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        cfg = self.cfg
        return KVCache(cfg.num_layers, batch, cfg.num_kv_heads, cfg.head_dim, max_len or cfg.max_seq_len,
                       self.embed.weight.device, dtype or self.embed.weight.dtype)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, vocab_size). With `cache`, continue from cache.pos."""
        T = tokens.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        x = self.embed(tokens)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.head(self.norm(x))  # (B, T, V)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel()
        return n


def build_decoder(cfg: DecoderConfig, device: torch.device) -> Decoder:
    """Build on the meta device (no memory touched), materialise on `device`, then initialise."""
    with torch.device("meta"):
        model = Decoder(cfg)
    model.to_empty(device=device)
    model.init_weights()
    return model
