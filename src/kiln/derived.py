"""Every value kiln derives from another, as small pure functions: the size dial's shape, the
learning rate for a width, fine-tuning's rate. The configs' `__post_init__` (through config.derive)
and the presets call these; nothing else computes a derived value.

Derived values stay derived: an override of what they follow from (`--model.depth 6`) re-derives
them, and an explicit value is never replaced (kiln/config.py).
"""

from __future__ import annotations

import math

HEAD_WIDTH = 64
"""Channels per attention head that the size dial derives heads from, and the width's rounding."""


def dial_width(depth: int, aspect: int) -> int:
    """The size dial's width: aspect x depth, rounded up to a multiple of HEAD_WIDTH (nanochat's)."""
    return HEAD_WIDTH * -(-aspect * depth // HEAD_WIDTH)


MIN_DIAL_HEADS = 2
"""Heads the dial gives a width that `head_width` would leave with one head wider than head_width
(192 channels at 128 a head: 2 heads of 96, not 1 of 192; 1 of 192 scored 0.005 bits-per-byte worse
on both seeds of the recipe benchmark's dev cut, 2026-12-07, docs/benchmarks.md)."""


def dial_heads(dim: int, head_width: int = HEAD_WIDTH) -> int:
    """One head per `head_width` channels, fewer where that count does not divide `dim` (320 channels
    at 128 a head: 2 heads of 160), and at least MIN_DIAL_HEADS where one head would be wider than
    `head_width` and the width splits into heads of an even width."""
    heads = max(1, dim // head_width)
    if heads < MIN_DIAL_HEADS and dim > head_width and dim % (2 * MIN_DIAL_HEADS) == 0:  # even heads (RoPE)
        return MIN_DIAL_HEADS
    while dim % heads:
        heads -= 1
    return heads


def swiglu_hidden_dim(dim: int, multiple_of: int = 64) -> int:
    """Llama's rule: 8/3 of the width, rounded up to a multiple (keeps params near a 4x GELU MLP)."""
    return multiple_of * math.ceil(int(8 * dim / 3) / multiple_of)


def mlp_hidden_dim(dim: int, mlp: str) -> int:
    """SwiGLU's 8/3 x width, or ReLU squared's 4 x width (the same parameters)."""
    return swiglu_hidden_dim(dim) if mlp == "swiglu" else 4 * dim


def expert_hidden_dim(hidden_dim: int, top_k: int) -> int:
    """Each expert at the dense width / top_k, so a token's active MLP compute matches the dense model's."""
    return max(1, hidden_dim // top_k)


def lr_for_width(dim: int) -> float:
    """Peak AdamW learning rate for a width: 1/width (as Adam's update size scales), from 4e-3 at width
    256, the rate tuned for the cpu preset (docs/experiments.md)."""
    return 4e-3 * 256 / dim


FINETUNE_LR_DIVISOR = 10
"""Full fine-tuning from pretrained weights trains at the checkpoint's rate / this."""


def finetune_lr(pretrain_lr: float, full_from_pretrained: bool) -> float:
    """Fine-tuning's rate: the checkpoint's / FINETUNE_LR_DIVISOR for full fine-tuning from its weights;
    its own for LoRA (whose update starts at zero) and for a random start."""
    return pretrain_lr / FINETUNE_LR_DIVISOR if full_from_pretrained else pretrain_lr
