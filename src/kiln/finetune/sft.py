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
examples never moves the old ones. The loader is the trainer's Loader: deterministic (a seeded
shuffle of the windows per epoch), resumable (its position is in the checkpoint), rank-sliced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from kiln.errors import KilnError
from kiln.shards.loader import EpochOrder
from kiln.tokenizer import BOS, EOS, SpecialIds

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
IGNORE = -100


def read_examples(path: Path) -> list[list[dict[str, str]]]:
    """The file's examples as message lists; a malformed line is one error naming the line."""
    path = Path(path)
    if not path.exists():
        raise KilnError(f"finetune.data={path} does not exist")
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if "messages" in rec:
                messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in rec["messages"]]
            else:
                messages = [
                    {"role": "user", "content": str(rec["prompt"])},
                    {"role": "assistant", "content": str(rec["response"])},
                ]
        except (ValueError, KeyError, TypeError) as e:
            raise KilnError(f"{path}:{n}: not a chat example ({e}); expected messages or prompt/response") from e
        if not any(m["role"] == "assistant" for m in messages) or any(m["role"] not in ROLES for m in messages):
            raise KilnError(f"{path}:{n}: roles must be system/user/assistant, with at least one assistant turn")
        examples.append(messages)
    if len(examples) < 2:
        raise KilnError(f"{path} holds {len(examples)} example(s); fine-tuning needs at least 2 (one held out)")
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


def is_validation(messages: list[dict[str, str]], fraction: float) -> bool:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


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


def split_windows(tokens: np.ndarray, flags: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) from windows: targets are the next tokens, -100 where not an answer token."""
    data = torch.from_numpy(tokens)
    targets = data[:, 1:].clone()
    targets[~torch.from_numpy(flags[:, 1:])] = IGNORE
    return data[:, :-1], targets


class SFTData:
    """A fine-tuning file, encoded and packed once: training windows and validation windows."""

    def __init__(self, path: Path, tok: Tokenizer, ids: SpecialIds, seq_len: int, val_fraction: float) -> None:
        examples = read_examples(path)
        val = [e for e in examples if is_validation(e, val_fraction)] or examples[-1:]
        train = [e for e in examples if e not in val]
        if not train:
            raise KilnError(f"{path}: every example fell into the validation split; add examples")
        self.num_examples = {"train": len(train), "val": len(val)}
        self.train = pack([encode_example(tok, ids, e) for e in train], seq_len, ids.pad)
        self.val = pack([encode_example(tok, ids, e) for e in val], seq_len, ids.pad)
        self.answer_tokens = int(self.train[1][:, 1:].sum())


class SFTLoader:
    """The trainer's Loader over packed windows: a seeded shuffle per epoch, resumable, rank-sliced."""

    def __init__(
        self, windows: tuple[np.ndarray, np.ndarray], batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.tokens, self.flags = windows
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.samples_seen = 0
        self.order = EpochOrder(len(self.tokens), seed)

    @property
    def num_windows(self) -> int:
        return len(self.tokens)

    @property
    def epoch(self) -> float:
        return self.samples_seen / self.num_windows

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.samples_seen + self.rank * self.batch_size
        rows = [self.order(first + i) for i in range(self.batch_size)]
        self.samples_seen += self.batch_size * self.world_size
        return split_windows(self.tokens[rows], self.flags[rows])

    def state_dict(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples_seen = int(state["samples_seen"])


class SFTValidation:
    """Validation windows for the trainer (the same interface as ShardValidation)."""

    def __init__(self, windows: tuple[np.ndarray, np.ndarray]) -> None:
        self.tokens, self.flags = windows

    def num_windows(self, seq_len: int, batch_size: int) -> int:
        return len(self.tokens)

    def batches(
        self, seq_len: int, batch_size: int, max_windows: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.tokens) if max_windows is None else min(max_windows, len(self.tokens))
        for start in range(0, n, batch_size):
            yield split_windows(
                self.tokens[start : min(start + batch_size, n)], self.flags[start : min(start + batch_size, n)]
            )
