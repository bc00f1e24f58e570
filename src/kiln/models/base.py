"""What every model family shares: the token embedding, the output head (tied to it by default), the
rotary tables, their initialisation and the parameter count. A family subclasses `TokenModel`,
adds its blocks, then calls `_add_head()`; `init_weights` starts with `_init_embedding()` and ends
with `_init_rotary()`."""

from __future__ import annotations

import torch
from torch import nn

from kiln.models.config import ModelConfig
from kiln.models.head_loss import linear_cross_entropy
from kiln.models.layers import rotary_tables


class TokenModel(nn.Module):
    head: nn.Linear
    cos: torch.Tensor  # rotary tables (max_seq_len, head_dim / 2), buffers
    sin: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)

    @staticmethod
    def layer_attends(cfg: ModelConfig, i: int) -> bool:
        """The layer plan: whether block i mixes with attention (else an SSM). All attend by default."""
        return True

    def repeated_blocks(self) -> list[nn.ModuleList]:
        """The block lists, the units FSDP shards and activation checkpointing wraps (every family
        names its own; tests check that none is left out)."""
        raise NotImplementedError

    def init_weights(self) -> None:
        raise NotImplementedError

    def _add_head(self) -> None:
        cfg = self.cfg
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def _init_embedding(self) -> None:
        cfg = self.cfg
        if cfg.tie_embeddings:  # to_empty() materialises each module's parameters apart: re-tie them
            self.head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if not cfg.tie_embeddings:
            nn.init.normal_(self.head.weight, std=0.0 if cfg.zero_init_head else cfg.init_std)

    @torch.no_grad()
    def _init_rotary(self) -> None:
        cfg = self.cfg
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The output head on final states; under muP the logits are scaled by 1 / width_mult."""
        out = self.head(h)
        m = self.cfg.width_mult
        out = out if m == 1.0 else out * (1.0 / m)
        cap = self.cfg.logit_softcap
        return out if not cap else cap * torch.tanh(out / cap)

    def head_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of `targets` (B, T; -100 left out) under the logits of the final
        states `h` (B, T, C), computed with the head in chunks (models/head_loss.py): what `logits`
        then a cross-entropy give, without the (B, T, vocabulary) tensor."""
        cfg = self.cfg
        return linear_cross_entropy(h, self.head.weight, targets, 1.0 / cfg.width_mult, cfg.logit_softcap)

    def num_params(self, non_embedding: bool = False) -> int:
        """All parameters; `non_embedding` leaves out the token tables (input and value embeddings)."""
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return n
        tables = self.get_submodule("value_embeds").parameters() if hasattr(self, "value_embeds") else ()
        return n - self.embed.weight.numel() - sum(p.numel() for p in tables)
