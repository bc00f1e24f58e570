"""The pre-norm residual block every family stacks: a sequence mixer (attention or SSM), then an MLP
(dense SwiGLU or ReLU squared, or mixture-of-experts), and the builders every family's layers come
from, so each family honours the same options (norm gains, QK-norm, the MLP kind, experts)."""

from __future__ import annotations

import math

import torch
from torch import nn

from kiln.models.config import ModelConfig
from kiln.models.layers import Attention, KVCache, ReLU2, RMSNorm, SwiGLU
from kiln.models.moe import MoE
from kiln.models.ssm import Mamba, SSMState


def make_norm(cfg: ModelConfig) -> RMSNorm:
    """An RMSNorm over the width, with a learned gain when model.norm_params."""
    return RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_params)


def make_attention(cfg: ModelConfig, causal: bool = True, rotary: bool = True, value_gate: bool = False) -> Attention:
    """Self-attention as the config asks: heads, grouped key/value heads, QK-norm (with its gain under
    model.norm_params), a value-embedding gate."""
    return Attention(
        cfg.dim,
        cfg.num_heads,
        cfg.num_kv_heads,
        causal=causal,
        rotary=rotary,
        qk_norm=cfg.qk_norm,
        value_gate=value_gate,
        norm_eps=cfg.norm_eps,
        norm_params=cfg.norm_params,
    )


def make_mlp(cfg: ModelConfig, i: int) -> MoE | SwiGLU | ReLU2:
    """Layer i's MLP: mixture-of-experts on the MoE layers (moe.every), else SwiGLU or ReLU squared."""
    if cfg.is_moe_layer(i):
        return MoE(cfg.dim, cfg.moe.expert_hidden_dim, cfg.moe)
    return (ReLU2 if cfg.mlp == "relu2" else SwiGLU)(cfg.dim, cfg.hidden_dim)


def out_std(cfg: ModelConfig, num_layers: int) -> float:
    """Init std of the residual output projections of a stack of `num_layers` (GPT-2's 1/sqrt(2L)
    scaling), or 0 under model.zero_init_out."""
    return 0.0 if cfg.zero_init_out else cfg.hidden_init_std / math.sqrt(2 * num_layers)


class Block(nn.Module):
    """x + mixer(norm(x)), then + mlp(norm(x)). The family's layer plan says whether layer `i` attends
    (else an SSM mixes); `cfg` whether its MLP is dense or MoE (moe.every); `value_embed` whether its
    attention takes a value embedding (model.value_embeds)."""

    def __init__(
        self,
        cfg: ModelConfig,
        i: int,
        causal: bool = True,
        rotary: bool = True,
        attends: bool = True,
        value_embed: bool = False,
    ) -> None:
        super().__init__()
        self.attends = attends
        self.mixer_norm = make_norm(cfg)
        self.mixer = (
            make_attention(cfg, causal, rotary, value_embed) if self.attends else Mamba(cfg.dim, cfg.ssm, cfg.norm_eps)
        )
        self.mlp_norm = make_norm(cfg)
        self.mlp = make_mlp(cfg, i)

    def init_weights(self, std: float, out_std: float) -> None:
        self.mixer_norm.init_weights()
        self.mlp_norm.init_weights()
        self.mixer.init_weights(std, out_std)
        self.mlp.init_weights(std, out_std)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv: KVCache | None = None,
        kv_layer: int = 0,
        state: SSMState | None = None,
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`ve`: this layer's value embedding of the tokens (model.value_embeds), for attention."""
        h = self.mixer_norm(x)
        x = x + (self.mixer(h, cos, sin, kv, kv_layer, ve) if self.attends else self.mixer(h, state))
        return x + self.mlp(self.mlp_norm(x))


def aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the MoE layers' auxiliary losses from the last forward (None without MoE)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoE) and m.aux_loss is not None]
    return torch.stack(losses).sum() if losses else None


def expert_load(model: nn.Module) -> list[list[float]]:
    """Per MoE layer, the share of routing assignments each expert got in the last forward."""
    return [m.load.tolist() for m in model.modules() if isinstance(m, MoE) and m.load is not None]
