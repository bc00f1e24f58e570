"""A model family in one object (torchtitan's ModelSpec in spirit), and the FLOPs every family counts.

Each family file (decoder.py, hybrid.py, encoder.py, encdec.py) ends with its `SPEC`; registry.py
lists them. A spec names what the rest of kiln needs and may not guess:

- `model`: the nn.Module class (built on meta by models/build.py). Its `repeated_blocks()` returns the
  block lists that FSDP shards and activation checkpointing wraps, and `layer_attends(cfg, i)` its
  layer plan (attention or SSM);
- `objective`: the training objective class, built with (objective config, special ids);
- `flops_per_token(cfg, seq_len, objective)`: training FLOPs per window token from the config alone,
  so a planner sizes runs without building a model;
- `sample(model, tokenizer, ids, prompt, sample cfg, seed, precision, use_cache)`: how it writes
  text for a prompt (continue it, fill its masks, or write its sentinels' spans);
- `score(model, context, continuation, ids, precision)`: the log-likelihood (nats) of a continuation's
  tokens given a context's, the quantity multiple-choice benchmarks compare: summed next-token
  log-probabilities (causal), pseudo-log-likelihood with each continuation token masked in turn
  (encoder), or the continuation as the span the decoder writes after the context (encoder-decoder).

A new family is one new file with a class and a SPEC, plus one line in registry.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.models.base import TokenModel
    from kiln.models.config import ModelConfig
    from kiln.objectives.base import Objective
    from kiln.objectives.config import ObjectiveConfig

    # (model, tokenizer, special ids, prompt, sample config, seed, precision, use_cache) -> text; each family
    # takes its own model class, so the first argument is left open
    Sampler = Callable[..., str]


@dataclass(frozen=True)
class FamilySpec:
    name: str
    """The value of model.family."""
    model: type[TokenModel]
    objective: type[Objective]
    flops_per_token: Callable[[ModelConfig, int, ObjectiveConfig], float]
    sample: Sampler
    score: Callable[..., float]
    """(model, context ids, continuation ids, special ids, precision) -> log p(continuation | context), nats."""
    summary: str
    """One line for --help and docs."""


# Matmul weights each token multiplies by once in a forward pass, from the config alone. These mirror
# the modules in layers.py, moe.py and ssm.py; tests/models/test_spec.py checks them against a built
# model's nn.Linear and expert weights.


def attention_params(cfg: ModelConfig) -> int:
    """Self- or cross-attention: query, key/value (grouped) and output projections."""
    q = cfg.num_heads * cfg.head_dim
    return cfg.dim * (q + 2 * cfg.num_kv_heads * cfg.head_dim) + q * cfg.dim


def mlp_params(cfg: ModelConfig, i: int) -> float:
    """Layer i's MLP: dense SwiGLU, or MoE (the router, plus top_k of the experts)."""
    if cfg.is_moe_layer(i):
        return cfg.dim * cfg.moe.num_experts + cfg.moe.top_k * 3 * cfg.dim * cfg.moe.expert_hidden_dim
    return 3 * cfg.dim * cfg.hidden_dim


def ssm_params(cfg: ModelConfig) -> int:
    """Mamba-2-style mixer: the input projection (z, x, B, C, dt) and the output projection."""
    inner = cfg.ssm.expand * cfg.dim
    return cfg.dim * (2 * inner + 2 * cfg.ssm.state_dim + inner // cfg.ssm.head_dim) + inner * cfg.dim


def stack_flops(cfg: ModelConfig, plan: list[bool], seq_len: float, extra_params: float) -> float:
    """PaLM's training FLOPs per token for one stack of blocks whose layer i attends when plan[i]:
    6 x matmul weights + 12 x attention layers x width x seq_len (scores counted in full). The SSM
    scan and convolution are left out (a few % at these widths)."""
    params = extra_params + sum(
        (attention_params(cfg) if attends else ssm_params(cfg)) + mlp_params(cfg, i) for i, attends in enumerate(plan)
    )
    return 6 * params + 12 * sum(plan) * cfg.dim * seq_len
