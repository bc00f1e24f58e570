"""The fine-tuning methods kiln knows: one line each (a method is its file's METHOD, see method.py)."""

from __future__ import annotations

from typing import Any

from kiln.errors import KilnError
from kiln.finetune import classify, dpo, sft
from kiln.finetune.method import Method

METHODS: dict[str, Method] = {m.name: m for m in (sft.METHOD, dpo.METHOD, classify.METHOD)}
LORA_RANK = 8
"""`--method lora`'s adapter rank: SFT through LoRA adapters (any method takes --finetune.lora_rank)."""
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {"lora": ("sft", {"finetune.lora_rank": LORA_RANK})}
"""Command-line names for a method with settings."""


def method(name: str) -> Method:
    if name not in METHODS:
        raise KilnError(f"finetune.objective={name!r} is not a fine-tuning method; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_help() -> str:
    """--method's help, from the registry."""
    lines = [f"{m.name}: {m.help}" for m in METHODS.values()]
    lines += [
        f"{alias}: {base} with " + ", ".join(f"--{k} {v}" for k, v in settings.items())
        for alias, (base, settings) in ALIASES.items()
    ]
    return "; ".join(lines)
