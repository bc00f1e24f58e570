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
- `score(model, requests, ids, precision, max_len)`: for each (context ids, continuation ids) request
  the log-likelihood (nats) of the continuation's tokens given the context's, and whether each of
  them is the model's top choice: the quantities multiple-choice and cloze benchmarks compare
  (evaluate/tasks.py). Summed next-token log-probabilities (causal, batched with right padding),
  pseudo-log-likelihood with each continuation token masked in turn (encoder), or the continuation
  as the span the decoder writes after the context (encoder-decoder). Contexts longer than
  `max_len` tokens lose their start, as lm-eval-harness truncates.

A new family is one new file with a class and a SPEC, plus one line in registry.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch

    from kiln.models.base import TokenModel
    from kiln.models.config import ModelConfig
    from kiln.objectives.base import Objective
    from kiln.objectives.config import ObjectiveConfig

    # (model, tokenizer, special ids, prompt, sample config, seed, precision, use_cache) -> text; each family
    # takes its own model class, so the first argument is left open
    Sampler = Callable[..., str]


Request = tuple[list[int], list[int]]
"""(context ids, continuation ids): one continuation to score after one context."""


class Scored(NamedTuple):
    logprob: float
    """log p(continuation | context) in nats, summed over the continuation's tokens."""
    greedy: bool
    """Every continuation token was the model's most likely token (lm-eval's `is_greedy`)."""

    @classmethod
    def of(cls, logits: torch.Tensor, targets: torch.Tensor) -> Scored:
        """From the logits (k, vocab) that predict a continuation's k tokens `targets`."""
        logits = logits.float()
        logprob = logits.log_softmax(-1).gather(-1, targets[:, None]).sum().item()
        return cls(logprob, bool((logits.argmax(-1) == targets).all()))


def fit_request(context: list[int], continuation: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """A request cut to `max_len` tokens in all: the context loses its start first, then (only when
    the continuation alone is longer) the continuation its end."""
    continuation = continuation[:max_len]
    keep = max_len - len(continuation)
    return (context[max(0, len(context) - keep) :] if keep > 0 else []), continuation


@dataclass(frozen=True)
class FamilySpec:
    name: str
    """The value of model.family."""
    model: type[TokenModel]
    objective: type[Objective]
    flops_per_token: Callable[[ModelConfig, int, ObjectiveConfig], float]
    sample: Sampler
    score: Callable[..., list[Scored]]
    """(model, requests, special ids, precision, max_len) -> a Scored per request, in order."""
    summary: str
    """One line for --help and docs."""
    causal: bool = True
    """Predicts the next token: SFT and DPO train it, and it continues a prompt."""
    pooling: str = ""
    """What classification reads of its final hidden states (`hidden(tokens)`): "last" (the state at
    <|eos|>, which has seen the whole text), "mean" (over the text), or "" (none to classify from)."""
    reads_images: bool = False
    """Takes image patches in its input (`kiln generate --image`, image+text runs)."""
    exports: bool = False
    """A transformers class (and llama.cpp) computes it: `kiln export` takes it (transfer/hf.py
    refuses the options no exported class expresses)."""
    refuses: tuple[str, ...] = ()
    """ModelConfig options this family has no place for: set, they are refused in one line."""
    check: Callable[[ModelConfig], None] | None = None
    """What else its config must satisfy (a one-line KilnError otherwise)."""
    check_run: Callable[[Any], None] | None = None
    """What the whole run config (RunConfig) must satisfy for it, e.g. its objective's windows fitting
    the model (a one-line KilnError otherwise); `kiln run` asks before any stage."""


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
    return (2 if cfg.mlp == "relu2" else 3) * cfg.dim * cfg.hidden_dim


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
