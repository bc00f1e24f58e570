"""Hybrid attention / state-space decoder (Jamba-style).

A causal LM whose blocks interleave the two sequence mixers: one attention layer in every
`model.ssm.attn_every` (Jamba: 1 in 8, placed mid-group), the rest Mamba-style selective SSM layers
(ssm.py); with `model.moe.num_experts` set, every `moe.every`-th block (Jamba: every other) has a
mixture-of-experts MLP. As in Jamba the attention layers use no positional encoding: the SSM layers
carry order. Generation keeps keys/values for the attention layers and a recurrent state (conv
window + SSM state, constant size) for the SSM layers: `new_cache` builds both.

Everything else (embedding, blocks, head, cache handling) is the decoder's; only the layer plan
differs, so it is a decoder subclass.
"""

from __future__ import annotations

from kiln.models.decoder import Decoder


class Hybrid(Decoder):
    rotary = False
