"""Encoder-only transformer for masked language modelling (BERT / RoBERTa-style).

Bidirectional attention (every position sees every other), rotary positions, pre-norm SwiGLU blocks,
and a masked-LM head: a dense layer with GELU and a norm (BERT's prediction-head transform), then the
output projection tied to the embedding. The objective (objectives/masked.py) chooses the positions
to predict; the model returns logits at every position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kiln.models.base import TokenModel
from kiln.models.block import Block
from kiln.models.config import ModelConfig
from kiln.models.layers import RMSNorm


class Encoder(TokenModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.blocks = nn.ModuleList(Block(cfg, i, causal=False) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.transform = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.transform_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self._add_head()

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        self._init_embedding()
        for block in self.blocks:
            block.init_weights(cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.num_layers))
        self.norm.init_weights()
        nn.init.normal_(self.transform.weight, std=cfg.init_std)
        self.transform_norm.init_weights()
        self._init_rotary()

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> contextual states (B, T, C), each position seeing the whole sequence."""
        T = tokens.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos[:T], self.sin[:T])
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> masked-LM logits (B, T, vocab_size)."""
        h = F.gelu(self.transform(self.hidden(tokens)))
        return self.head(self.transform_norm(h.to(self.transform_norm.weight.dtype)))  # fused norm: dtypes match
