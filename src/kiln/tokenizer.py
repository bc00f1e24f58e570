"""Train, save and load a byte-level BPE tokenizer (Hugging Face `tokenizers`).

Special tokens take the first ids, in a fixed layout every model family can rely on:
``<|pad|>`` 0, ``<|bos|>`` 1, ``<|eos|>`` 2, ``<|mask|>`` 3 (masked LM), ``<|fim_prefix|>`` 4,
``<|fim_middle|>`` 5, ``<|fim_suffix|>`` 6 (fill-in-the-middle), then ``<|sentinel_0|>`` ... for span
corruption, then (with `tokenizer.image_tokens`) ``<|image|>`` (one per image patch),
``<|image_start|>`` and ``<|image_end|>`` around each image. Text is split with the GPT-4
pre-tokenisation pattern and then mapped to bytes, so any string round-trips exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from kiln.config import require
from kiln.errors import KilnError

PAD, BOS, EOS, MASK = "<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"
FIXED_SPECIALS = [PAD, BOS, EOS, MASK, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]
IMAGE, IMAGE_START, IMAGE_END = "<|image|>", "<|image_start|>", "<|image_end|>"
IMAGE_SPECIALS = [IMAGE, IMAGE_START, IMAGE_END]
# GPT-4's split pattern (as in tiktoken cl100k), with numbers grouped by at most two digits.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


MAX_VOCAB = 1 << 24
"""The largest vocabulary kiln trains (16.8M tokens; the largest in use are ~256k): beyond it the BPE
trainer's tables alone outgrow any machine's memory."""


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    """Total vocabulary size, special tokens included."""
    num_sentinels: int = 32
    """Sentinel tokens reserved for span corruption (encoder-decoder families)."""
    max_train_bytes: int = 200_000_000
    """Stop feeding training text to the BPE trainer after this many bytes."""
    image_tokens: bool = False
    """Add <|image|>, <|image_start|> and <|image_end|> after the sentinels (image+text runs); off, the
    vocabulary is exactly a text-only one."""

    def __post_init__(self) -> None:
        require(
            self.vocab_size >= 256 + len(FIXED_SPECIALS) + self.num_sentinels + 1,
            f"tokenizer.vocab_size={self.vocab_size} is too small: it needs 256 byte tokens, {len(FIXED_SPECIALS)} "
            f"special tokens and {self.num_sentinels} sentinels; use at least "
            f"{256 + len(FIXED_SPECIALS) + self.num_sentinels + 1}",
        )
        require(
            self.vocab_size <= MAX_VOCAB,
            f"tokenizer.vocab_size={self.vocab_size} is over {MAX_VOCAB:,}, the most kiln trains",
        )


def special_tokens(num_sentinels: int, image_tokens: bool = False) -> list[str]:
    return (
        FIXED_SPECIALS + [f"<|sentinel_{i}|>" for i in range(num_sentinels)] + (IMAGE_SPECIALS if image_tokens else [])
    )


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, show_progress: bool = True) -> Tokenizer:
    """Train byte-level BPE on an iterator of texts."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=special_tokens(cfg.num_sentinels, cfg.image_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=show_progress,
    )

    def capped() -> Iterator[str]:
        seen = 0
        for text in texts:
            yield text
            seen += len(text)
            if seen >= cfg.max_train_bytes:
                return

    tok.train_from_iterator(capped(), trainer=trainer)
    return tok


def load_tokenizer(path: Path) -> Tokenizer:
    """Load tokenizer.json, with a clear error if it is missing or unreadable (the fix depends on
    where it sits: a run directory's is remade by `kiln tokenizer`, a checkpoint's is not)."""
    path = Path(path)
    in_checkpoint = (path.parent / "state.json").exists()
    fix = "use an earlier checkpoint" if in_checkpoint else "re-run `kiln tokenizer`"
    if not path.exists():
        where = "" if in_checkpoint else "; run `kiln tokenizer` first or pass the right run directory"
        raise KilnError(f"tokenizer {path} not found{where or '; ' + fix}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        what = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise KilnError(f"tokenizer {path} is corrupt or truncated ({what}); {fix}") from None
    for name in (PAD, BOS, EOS):
        if tok.token_to_id(name) is None:
            raise KilnError(f"tokenizer {path} lacks the special token {name}; train it with `kiln tokenizer`")
    return tok


def literal(tok: Tokenizer) -> Tokenizer:
    """A copy of `tok` that encodes a special token's text (`<|eos|>`, `<|sentinel_0|>`, `<|image|>`)
    found in a document as the ordinary text it is: a corpus quoting one must not place a real
    end-of-text, sentinel or image marker in the training data. Prompts and chat templates keep
    `tok`, where that text means the token."""
    copy = Tokenizer.from_str(tok.to_str())
    copy.encode_special_tokens = True
    return copy


def tokenizer_hash(path: Path) -> str:
    """sha256 of tokenizer.json: shards and checkpoints record it to catch mismatched tokenizers."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """Ids of the special tokens every stage needs."""
    ids = {name: tok.token_to_id(token) for name, token in (("pad", PAD), ("bos", BOS), ("eos", EOS))}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise KilnError(f"tokenizer lacks the special tokens {missing}; retrain it with `kiln tokenizer`")
    return {name: int(i) for name, i in ids.items() if i is not None}


@dataclass(frozen=True)
class SpecialIds:
    """The special token ids the training objectives use (looked up by name, never assumed)."""

    pad: int
    bos: int
    eos: int
    mask: int
    fim_prefix: int
    fim_middle: int
    fim_suffix: int
    sentinels: tuple[int, ...]
    num_special: int
    """Ids below this are special; text tokens start here."""
    vocab_size: int
    image: int = -1
    """<|image|>, the place of one image patch (-1: a text-only tokenizer)."""
    image_start: int = -1
    image_end: int = -1


def objective_ids(tok: Tokenizer) -> SpecialIds:
    """Every special id, checked present (a tokenizer from an older kiln lacks the FIM tokens)."""
    ids = {}
    for name in FIXED_SPECIALS:
        i = tok.token_to_id(name)
        if i is None:
            raise KilnError(f"tokenizer lacks the special token {name}; retrain it with `kiln tokenizer`")
        ids[name] = i
    sentinels: list[int] = []
    while (i := tok.token_to_id(f"<|sentinel_{len(sentinels)}|>")) is not None:
        sentinels.append(i)
    image = [tok.token_to_id(name) for name in IMAGE_SPECIALS]
    image_ids = [i for i in image if i is not None]
    num_special = max(list(ids.values()) + sentinels + image_ids) + 1
    return SpecialIds(
        ids[PAD],
        ids[BOS],
        ids[EOS],
        ids[MASK],
        ids[FIM_PREFIX],
        ids[FIM_MIDDLE],
        ids[FIM_SUFFIX],
        tuple(sentinels),
        num_special,
        tok.get_vocab_size(),
        *(i if i is not None else -1 for i in image),
    )


def bytes_per_token(tok: Tokenizer, texts: Iterable[str], batch_size: int = 64) -> float:
    """UTF-8 bytes per token over `texts` (higher means better compression); streams in batches."""
    num_bytes = num_tokens = 0
    batch: list[str] = []
    tok = literal(tok)  # as the shards will hold the text

    def flush() -> int:
        return sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False)) if batch else 0

    for text in texts:
        batch.append(text)
        num_bytes += len(text.encode("utf-8"))
        if len(batch) == batch_size:
            num_tokens += flush()
            batch = []
    num_tokens += flush()
    return num_bytes / max(num_tokens, 1)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte <-> printable-unicode table, inverted: {unicode char: byte value}."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_byte_lengths(tok: Tokenizer, pad_to: int = 0) -> list[int]:
    """UTF-8 bytes each token id stands for; 0 for special tokens (they are not text) and for the
    ids from the vocabulary's end up to `pad_to` (unused embedding rows).

    Bits-per-byte divides summed loss by the bytes of the predicted tokens, which makes it
    comparable across tokenizers.
    """
    inverse = _byte_level_alphabet()
    specials = {t.content for t in tok.get_added_tokens_decoder().values()}
    lengths = []
    for i in range(tok.get_vocab_size()):
        piece = tok.id_to_token(i)
        lengths.append(0 if piece is None or piece in specials else sum(1 for ch in piece if ch in inverse))
    return lengths + [0] * (pad_to - len(lengths))
