"""Supervised fine-tuning data: chat examples -> packed windows whose loss falls on the answers only.

An example is `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}` or
`{"prompt": ..., "response": ...}` (one user turn, one assistant turn). The chat template:

    <|bos|>User: {content}\nAssistant: {content}<|eos|>\nUser: ...

with the role names as plain text and kiln's <|bos|> and <|eos|> special tokens (CHAT_TEMPLATE is
the same as Jinja, which the Hugging Face export writes into tokenizer_config.json, so
`apply_chat_template` there gives these very tokens). The text is encoded at once; the tokens of
each assistant turn's content and its <|eos|> are the targets, every other target is -100 (left
out of the causal loss). Examples are packed greedily, in a fixed order, into windows of seq_len + 1
tokens (an example longer than a window is cut; the remainder of a window is padding with target
-100), so a window never splits an example and the masks travel with the tokens. Attention is
not masked between examples packed in one window (each example starts with <|bos|>).

The split between training and validation examples is by a hash of each example's text, so adding
examples never moves the old ones (or a held-out file, finetune.val_data). The windows are one-row
items for finetune/items.py's loader: deterministic, resumable, rank-sliced.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from kiln.errors import KilnError
from kiln.finetune.items import IGNORE, Rows, read_jsonl, split_items, string
from kiln.finetune.method import Method
from kiln.models.registry import build_objective
from kiln.tokenizer import BOS, EOS, SpecialIds

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def parse_example(rec: dict[str, Any]) -> list[dict[str, str]]:
    """One JSONL record -> its message list (messages, or a prompt/response pair)."""
    if "messages" in rec:
        messages = [{"role": string(m, "role"), "content": string(m, "content")} for m in rec["messages"]]
    else:
        messages = [
            {"role": "user", "content": string(rec, "prompt")},
            {"role": "assistant", "content": string(rec, "response")},
        ]
    if not any(m["role"] == "assistant" for m in messages) or any(m["role"] not in ROLES for m in messages):
        raise ValueError("roles must be system/user/assistant, with at least one assistant turn")
    return messages


def read_examples(path: Path, minimum: int = 2) -> list[list[dict[str, str]]]:
    """The file's examples as message lists; a malformed line is one error naming the line."""
    examples = read_jsonl(path, parse_example, "a chat example (messages, or prompt/response)")
    if len(examples) < minimum:
        raise KilnError(f"{path} holds {len(examples)} example(s); fine-tuning needs at least {minimum}")
    return examples


def render(messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The chat template's text for one example, and the character spans that are targets (each
    assistant turn's content and the <|eos|> after it)."""
    text, spans = BOS, []
    for m in messages:
        text += f"{ROLES[m['role']]}: "
        if m["role"] == "assistant":
            start = len(text)
            text += m["content"] + EOS
            spans.append((start, len(text)))
        else:
            text += m["content"]
        text += "\n"
    return text, spans


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ {'system': 'System', 'user': 'User', 'assistant': 'Assistant'}[m['role']] }}: {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)
"""render() as a Jinja chat template, for transformers' apply_chat_template (written by kiln export)."""


def encode_example(tok: Tokenizer, ids: SpecialIds, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of one example through the chat template (the whole text encoded at once, as
    apply_chat_template does), and for each whether it is a target: a token is one when it ends
    inside an assistant span (so a token straddling the start of an answer counts as the answer's)."""
    text, spans = render(messages)
    enc = tok.encode(text, add_special_tokens=False)
    targets = [any(lo < end <= hi for lo, hi in spans) for _, end in enc.offsets]
    return list(enc.ids), targets


def pack(encoded: list[tuple[list[int], list[bool]]], seq_len: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples -> windows (N, seq_len + 1) of tokens and of target flags, greedily, in order."""
    size = seq_len + 1
    windows, flags = [], []
    cur_t: list[int] = []
    cur_f: list[bool] = []
    for tokens, targets in encoded:
        tokens, targets = tokens[:size], targets[:size]
        if len(cur_t) + len(tokens) > size:
            windows.append(cur_t + [pad] * (size - len(cur_t)))
            flags.append(cur_f + [False] * (size - len(cur_f)))
            cur_t, cur_f = [], []
        cur_t, cur_f = cur_t + tokens, cur_f + targets
    if cur_t:
        windows.append(cur_t + [pad] * (size - len(cur_t)))
        flags.append(cur_f + [False] * (size - len(cur_f)))
    return np.array(windows, dtype=np.int64), np.array(flags, dtype=bool)


def window_rows(windows: tuple[np.ndarray, np.ndarray]) -> Rows:
    """Packed windows -> one-row items: inputs, and targets that are the next tokens (-100 where not
    an answer token)."""
    tokens, flags = windows
    targets = np.where(flags[:, 1:], tokens[:, 1:], IGNORE)
    return Rows(tokens[:, None, :-1].copy(), targets[:, None, :])


class SFTData:
    """A fine-tuning file (and optionally a held-out file), encoded and packed once."""

    def __init__(
        self, path: Path, tok: Tokenizer, ids: SpecialIds, seq_len: int, val_fraction: float, val_path: str = ""
    ) -> None:
        examples = read_examples(path)
        held = read_examples(Path(val_path), 1) if val_path else None
        train, val = split_items(examples, val_fraction, held, path)
        self.num_examples = {"train": len(train), "val": len(val)}
        packed = pack([encode_example(tok, ids, e) for e in train], seq_len, ids.pad)
        self.train = window_rows(packed)
        self.val = window_rows(pack([encode_example(tok, ids, e) for e in val], seq_len, ids.pad))
        self.answer_tokens = int(packed[1][:, 1:].sum())

    def describe(self) -> str:
        return (
            f"fine-tuning on {self.num_examples['train']} examples ({len(self.train)} windows, "
            f"{self.answer_tokens:,} answer tokens); {self.num_examples['val']} held out"
        )


def load_sft(cfg: RunConfig, tok: Tokenizer, ids: SpecialIds) -> SFTData:
    ft = cfg.finetune
    return SFTData(Path(ft.data), tok, ids, cfg.train.seq_len, ft.val_fraction, ft.val_data)


METHOD = Method(
    name="sft",
    help='every weight (or LoRA adapters) on the assistant\'s tokens; {"messages": [{"role", "content"}, ...]} '
    'or {"prompt", "response"}',
    fits=lambda spec: spec.causal,
    load=load_sft,
    objective=lambda cfg, ids, state: build_objective(cfg.model, cfg.objective, ids),
)
