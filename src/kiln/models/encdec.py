"""Encoder-decoder transformer for span corruption (T5-style).

The encoder reads the corrupted text bidirectionally; the decoder writes the missing spans, attending
causally to what it has written and, in every block, across to the encoder's output. One embedding
is shared by encoder, decoder and output projection (T5). Rotary positions in both self-attentions
(T5 used relative position buckets); pre-norm SwiGLU blocks as elsewhere in kiln. Generation encodes
once, then decodes token by token with a key/value cache for the decoder's self-attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kiln.models.base import TokenModel
from kiln.models.block import Block
from kiln.models.config import ModelConfig
from kiln.models.decoder import ModelCache
from kiln.models.layers import (
    Attention,
    CrossAttention,
    KVCache,
    RMSNorm,
    SwiGLU,
)


class DecoderBlock(nn.Module):
    """x + self_attn(norm(x)) (causal) + cross_attn(norm(x), memory) + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.num_kv_heads, causal=True)
        self.cross_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.num_kv_heads)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.hidden_dim)

    def init_weights(self, std: float, out_std: float) -> None:
        for norm in (self.self_norm, self.cross_norm, self.mlp_norm):
            norm.init_weights()
        for layer in (self.self_attn, self.cross_attn, self.mlp):
            layer.init_weights(std, out_std)

    def forward(self, x, memory, cos, sin, kv: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.self_norm(x), cos, sin, kv, layer)
        x = x + self.cross_attn(self.cross_norm(x), memory)
        return x + self.mlp(self.mlp_norm(x))


class EncoderDecoder(TokenModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = nn.ModuleList(Block(cfg, i, causal=False) for i in range(cfg.num_layers))
        self.encoder_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.decoder_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self._add_head()

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        self._init_embedding()
        out_std = cfg.init_std / math.sqrt(2 * (cfg.num_layers + cfg.decoder_layers))
        for block in [*self.encoder, *self.decoder]:
            block.init_weights(cfg.init_std, out_std)
        self.encoder_norm.init_weights()
        self.decoder_norm.init_weights()
        self._init_rotary()

    def _check(self, length: int) -> None:
        if length > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {length} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """src (B, S) -> memory (B, S, C)."""
        S = src.shape[1]
        self._check(S)
        x = self.embed(src)
        for block in self.encoder:
            x = block(x, self.cos[:S], self.sin[:S])
        return self.encoder_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, cache: ModelCache | None = None) -> torch.Tensor:
        """tgt (B, T) decoder inputs (targets shifted right) -> logits (B, T, V)."""
        T = tgt.shape[1]
        start = cache.pos if cache is not None else 0
        self._check(start + T)
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        x = self.embed(tgt)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, cos, sin, cache.kv if cache is not None else None, i)
        if cache is not None:
            cache.advance(T)
        return self.head(self.decoder_norm(x))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt, self.encode(src))

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> ModelCache:
        cfg = self.cfg
        kv = KVCache(cfg.decoder_layers, batch, cfg.num_kv_heads, cfg.head_dim, max_len or cfg.max_seq_len,
                     self.embed.weight.device, dtype or self.embed.weight.dtype)
        return ModelCache(kv, {i: i for i in range(cfg.decoder_layers)})
