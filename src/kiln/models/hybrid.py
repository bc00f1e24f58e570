"""Hybrid attention / state-space decoder (Jamba-style).

A causal LM whose blocks interleave the two sequence mixers: one attention layer in every
`model.ssm.attn_every` (Jamba: 1 in 8, placed mid-group), the rest Mamba-style selective SSM layers
(ssm.py); with `model.moe.num_experts` set, every `moe.every`-th block (Jamba: every other) has a
mixture-of-experts MLP. As in Jamba the attention layers use no positional encoding: the SSM layers
carry order. Generation keeps keys/values for the attention layers and a recurrent state (conv
window + SSM state, constant size) for the SSM layers: `new_cache` builds both.

Everything else (embedding, blocks, head, cache handling) is the decoder's; only the layer plan
(`layer_attends`) and the positions differ, so it is a decoder subclass.
"""

from __future__ import annotations

from functools import partial

from kiln.config import require
from kiln.models.config import ModelConfig
from kiln.models.decoder import Decoder, causal_lm_flops, continue_prompt, score_causal
from kiln.models.spec import FamilySpec
from kiln.objectives.causal import CausalLM


class Hybrid(Decoder):
    rotary = False

    @staticmethod
    def layer_attends(cfg: ModelConfig, i: int) -> bool:
        """The middle layer of each group of ssm.attn_every attends, as in Jamba; the others are SSMs."""
        return i % cfg.ssm.attn_every == cfg.ssm.attn_every // 2


def check_hybrid(cfg: ModelConfig) -> None:
    """At least one attending layer and one SSM layer, or the model is not a hybrid (and options for
    attention would go unread)."""
    every = cfg.ssm.attn_every
    require(every > 0, "model.family=hybrid needs model.ssm.attn_every > 0 (e.g. 8)")
    require(
        every > 1 and cfg.num_layers > every // 2,
        f"model.ssm.attn_every={every} with {cfg.num_layers} layers gives "
        f"{'no SSM layer' if every == 1 else 'no attending layer'}: use 2..{2 * cfg.num_layers - 1}",
    )


SPEC = FamilySpec(
    name="hybrid",
    model=Hybrid,
    objective=CausalLM,
    flops_per_token=partial(causal_lm_flops, Hybrid),
    sample=continue_prompt,
    score=score_causal,
    summary="causal LM over attention + SSM layers with MoE (Jamba-style)",
    pooling="last",
    refuses=("rope_theta",),  # no rotary positions: the SSM layers carry order
    check=check_hybrid,
)
