"""The model config every family shares: width, depth, heads, vocabulary, plus MoE and SSM options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kiln.config import require
from kiln.models.layers import swiglu_hidden_dim
from kiln.models.moe import MoEConfig
from kiln.models.ssm import SSMConfig

Family = Literal["decoder", "encoder", "encdec", "hybrid"]


@dataclass
class ModelConfig:
    family: Family = "decoder"
    """decoder (causal LM, Llama-style; MoE with moe.num_experts), encoder (masked LM, BERT-style),
    encdec (span corruption, T5-style) or hybrid (attention + SSM layers with MoE, Jamba-style)."""
    vocab_size: int = 8192
    """Rows of the embedding table; must cover the tokenizer's vocabulary."""
    dim: int = 256
    """Model width C."""
    num_layers: int = 4
    """Blocks (encdec: encoder blocks)."""
    num_decoder_layers: int = 0
    """encdec only: decoder blocks; 0 uses num_layers."""
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
    moe: MoEConfig = field(default_factory=MoEConfig)
    ssm: SSMConfig = field(default_factory=SSMConfig)

    def __post_init__(self) -> None:
        require(self.family in ("decoder", "encoder", "encdec", "hybrid"),
                f"model.family={self.family!r} must be decoder, encoder, encdec or hybrid")
        require(self.dim % self.num_heads == 0, f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}")
        require((self.dim // self.num_heads) % 2 == 0, "model head_dim (dim / num_heads) must be even for rotary positions")
        require(self.num_heads % self.num_kv_heads == 0,
                f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads}")
        for name in ("vocab_size", "dim", "num_layers", "max_seq_len"):
            require(getattr(self, name) > 0, f"model.{name}={getattr(self, name)} must be positive")
        if self.family == "hybrid":
            require(self.ssm.attn_every > 0, "model.family=hybrid needs model.ssm.attn_every > 0 (e.g. 8)")
        if self.hidden_dim == 0:
            self.hidden_dim = swiglu_hidden_dim(self.dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    def is_moe_layer(self, i: int) -> bool:
        return self.moe.num_experts > 0 and i % self.moe.every == self.moe.every - 1

    def is_attention_layer(self, i: int) -> bool:
        """Hybrid: which layers attend (the middle one of each group of attn_every, as in Jamba)."""
        return self.family != "hybrid" or i % self.ssm.attn_every == self.ssm.attn_every // 2
