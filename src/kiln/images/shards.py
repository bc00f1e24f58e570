"""Image+text shards: fixed-width token rows with their images' pixels, memory-mapped, and the
trainer's Loader and ValidationData over them.

A document becomes one row of `width` tokens: <|bos|>, its text with each image as <|image_start|>
<|image|> x patches <|image_end|> (a caption: the image first), <|eos|>, then padding. Targets are
the next tokens where those are text or <|eos|>; image tokens, markers and padding are never
targets. A split's directory holds, per shard file of `shard_docs` documents:

    tokens_NNNNN.npy   (n, width) int32       the rows
    pixels_NNNNN.npy   (n, max_images, size, size, 3) uint8, zeros where a document has fewer images
    images_NNNNN.npy   (n,) int8              images per document

plus items.jsonl (each document's key, text and metadata, for evaluation) and manifest.json (counts,
shapes, tokenizer hash, sha256 per file). Shards are read with np.load(mmap_mode="r"): memory stays
bounded by a batch, however large the set.

Training batches mix rows: `text_rows` of every batch are windows of the run's text shards (its
PackedLoader), the rest image documents in a seeded per-epoch order; both positions are the loader's
state, so a resumed run makes the same batches, and rank r takes its slice of every global batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from kiln.batch import Batch
from kiln.config import whole
from kiln.errors import KilnError
from kiln.images.patches import num_patches
from kiln.images.readers import IMAGE_MARK, ImageDoc
from kiln.rundir import MANIFEST, listed_file
from kiln.shards.loader import EpochOrder, PackedLoader
from kiln.staging import Publication, StagedFolder
from kiln.tokenizer import SpecialIds, literal

KINDS = ("tokens", "pixels", "images")
"""The arrays of each image shard, one .npy file each."""

FORMAT = "kiln-image-shards-v1"
IGNORE = -100
SHARD_BYTES = 64_000_000
"""Pixels per shard file, about: bounds what one shard buffers while it is written."""


def row_width(max_images: int, patches: int, max_text_tokens: int) -> int:
    """Tokens in one document's row: bos, each image with its two markers, the text, eos."""
    return 1 + max_images * (patches + 2) + max_text_tokens + 1


def encode_doc(
    doc_text: str, num_images: int, tok: Tokenizer, ids: SpecialIds, patches: int, max_text: int
) -> tuple[list[int], int]:
    """A document's token row (without padding) and how many text tokens were cut past `max_text`."""
    parts = doc_text.split(IMAGE_MARK)
    if len(parts) == 1:  # a caption: the images come first
        parts = [""] * num_images + parts
    image = [ids.image_start] + [ids.image] * patches + [ids.image_end]
    row, budget, cut = [ids.bos], max_text, 0
    for i, part in enumerate(parts):
        if part:
            text = tok.encode(part, add_special_tokens=False).ids
            cut += max(0, len(text) - budget)
            row += text[:budget]
            budget -= min(budget, len(text))
        if i < len(parts) - 1:
            row += image
    return row + [ids.eos], cut


def targets_of(row: np.ndarray, ids: SpecialIds) -> np.ndarray:
    """Next-token targets of a row (len - 1), IGNORE where the next token is no text."""
    nxt = row[1:].astype(np.int64)
    no_text = np.isin(nxt, [ids.image, ids.image_start, ids.image_end, ids.pad, ids.bos])
    return np.where(no_text, IGNORE, nxt)


class _Shard:
    def __init__(self) -> None:
        self.tokens: list[np.ndarray] = []
        self.pixels: list[np.ndarray] = []
        self.counts: list[int] = []


def write_image_shards(
    docs: Iterable[tuple[ImageDoc, list[np.ndarray]]],
    tok: Tokenizer,
    tokenizer_sha256: str,
    ids: SpecialIds,
    out_dir: Path,
    image_size: int,
    patch_size: int,
    max_images: int,
    max_text_tokens: int,
    publication: Publication | None = None,
) -> dict[str, Any]:
    """Write one split's documents (each with its fitted (size, size, 3) pixels); returns the manifest.
    The split's last shards stay until the new ones are complete, and with a `publication` until it
    publishes (kiln/staging.py)."""
    if ids.image < 0:
        raise KilnError("the tokenizer has no image tokens; train it with tokenizer.image_tokens=true")
    if image_size % patch_size:
        raise KilnError(
            f"model.vision.image_size={image_size} is not a multiple of model.vision.patch_size={patch_size}"
        )
    staging = StagedFolder(out_dir)
    try:
        manifest = _write_staged(
            docs, literal(tok), tokenizer_sha256, ids, staging, image_size, patch_size, max_images, max_text_tokens
        )
    except BaseException:
        staging.discard()
        raise
    staging.publish_in(publication, ["*.npy", "items.jsonl"], manifest)
    return manifest


def _write_staged(
    docs: Iterable[tuple[ImageDoc, list[np.ndarray]]],
    tok: Tokenizer,
    tokenizer_sha256: str,
    ids: SpecialIds,
    staging: StagedFolder,
    image_size: int,
    patch_size: int,
    max_images: int,
    max_text_tokens: int,
) -> dict[str, Any]:
    patches = num_patches(image_size, patch_size)
    width = row_width(max_images, patches, max_text_tokens)
    per_shard = max(1, SHARD_BYTES // (max_images * image_size * image_size * 3))
    files: list[dict[str, Any]] = []
    shard = _Shard()
    num_docs = cut_docs = 0
    items = staging.path("items.jsonl").open("w")

    def flush() -> None:
        nonlocal shard
        if not shard.counts:
            return
        name = f"{len(files):05d}"
        arrays = {  # KINDS
            "tokens": np.stack(shard.tokens),
            "pixels": np.stack(shard.pixels),
            "images": np.asarray(shard.counts, dtype=np.int8),
        }
        entry: dict[str, Any] = {"num_docs": len(shard.counts)}
        for kind, array in arrays.items():
            file = f"{kind}_{name}.npy"
            path = staging.path(file)
            with path.open("wb") as f:
                np.save(f, array)
            entry[kind] = {"file": file, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        files.append(entry)
        shard = _Shard()

    for doc, pixels in tqdm(
        docs, desc=f"image shards {staging.folder.name}", unit=" docs", dynamic_ncols=True, mininterval=0.5
    ):
        row, cut = encode_doc(doc.text, len(pixels), tok, ids, patches, max_text_tokens)
        cut_docs += cut > 0
        padded = np.full(width, ids.pad, dtype=np.int32)
        padded[: len(row)] = row
        stack = np.zeros((max_images, image_size, image_size, 3), dtype=np.uint8)
        for i, p in enumerate(pixels[:max_images]):
            stack[i] = p
        shard.tokens.append(padded)
        shard.pixels.append(stack)
        shard.counts.append(min(len(pixels), max_images))
        items.write(json.dumps({"key": doc.key, "text": doc.text, "meta": doc.meta}) + "\n")
        num_docs += 1
        if len(shard.counts) >= per_shard:
            flush()
    flush()
    items.close()
    return {
        "format": FORMAT,
        "tokenizer_sha256": tokenizer_sha256,
        "vocab_size": tok.get_vocab_size(),
        "image_size": image_size,
        "patch_size": patch_size,
        "max_images": max_images,
        "max_text_tokens": max_text_tokens,
        "width": width,
        "num_docs": num_docs,
        "docs_with_text_cut": cut_docs,
        "files": files,
    }


class ImageShardSet:
    """A split written by `write_image_shards`, memory-mapped."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.exists():
            raise KilnError(f"no image shards at {self.directory}; run `kiln tokenize` with images.source set")
        try:
            self.manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KilnError(f"image shard manifest {path} is corrupt ({e}); re-run `kiln tokenize`") from None
        m = self.manifest if isinstance(self.manifest, dict) else {}
        sizes_ok = all(whole(m.get(k), least=1) for k in ("width", "max_images", "image_size"))
        if m.get("format") != FORMAT or not sizes_ok or not isinstance(m.get("files"), list) or not m["files"]:
            raise KilnError(f"{path} is not a kiln image shard manifest (format, sizes and a list of files)")
        self.tokens, self.pixels, self.counts = [], [], []
        K, S = m["max_images"], m["image_size"]
        try:
            for entry in self.manifest["files"]:
                file = {kind: listed_file(self.directory, entry[kind]["file"], path) for kind in KINDS}
                tokens = np.load(file["tokens"], mmap_mode="r")
                pixels = np.load(file["pixels"], mmap_mode="r")
                counts = np.load(file["images"], mmap_mode="r")
                shaped = (
                    tokens.ndim == 2
                    and tokens.shape[1] == m["width"]
                    and tokens.dtype.kind in "iu"
                    and pixels.shape == (len(tokens), K, S, S, 3)
                    and pixels.dtype == np.uint8
                    and counts.shape == (len(tokens),)
                    and counts.dtype.kind in "iu"
                )
                if not shaped:
                    raise ValueError(f"{entry['tokens']['file']} and its pixels and counts disagree with the manifest")
                self.tokens.append(tokens)
                self.pixels.append(pixels)
                self.counts.append(counts)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KilnError(
                f"image shards in {self.directory} are missing or damaged ({e}); re-run `kiln tokenize`"
            ) from None
        sizes = [len(t) for t in self.tokens]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer_sha256"]

    def verify(self) -> None:
        for entry in self.manifest["files"]:
            for kind in KINDS:
                data = listed_file(self.directory, entry[kind]["file"], self.directory / MANIFEST).read_bytes()
                if hashlib.sha256(data).hexdigest() != entry[kind]["sha256"]:
                    raise KilnError(f"{entry[kind]['file']} fails its checksum; re-run `kiln tokenize`")

    def items(self) -> list[dict[str, Any]]:
        """Each document's key, text and metadata, in order."""
        lines = (self.directory / "items.jsonl").read_text(errors="replace").splitlines()
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as e:
            raise KilnError(f"{self.directory / 'items.jsonl'} is damaged ({e}); re-run `kiln tokenize`") from None

    def take(self, indices: list[int], seq_len: int, ids: SpecialIds) -> Batch:
        """Documents as a batch: inputs/targets (n, seq_len) int64, pixels (n, K, S, S, 3) uint8, num_images (n,)."""
        if self.width - 1 > seq_len:
            raise KilnError(
                f"image rows are {self.width} tokens but train.seq_len={seq_len}; set train.seq_len >= {self.width - 1}"
            )
        rows = np.full((len(indices), seq_len + 1), ids.pad, dtype=np.int64)
        K, S = self.manifest["max_images"], self.manifest["image_size"]
        pixels = np.zeros((len(indices), K, S, S, 3), dtype=np.uint8)
        counts = np.zeros(len(indices), dtype=np.int64)
        for r, index in enumerate(indices):
            shard = int(np.searchsorted(self._starts, index, side="right")) - 1
            offset = index - int(self._starts[shard])
            rows[r, : self.width] = self.tokens[shard][offset]
            pixels[r] = self.pixels[shard][offset]
            counts[r] = self.counts[shard][offset]
        targets = np.stack([targets_of(row, ids) for row in rows])
        return {
            "inputs": torch.from_numpy(rows[:, :-1].copy()),
            "targets": torch.from_numpy(targets),
            "pixels": torch.from_numpy(pixels),
            "num_images": torch.from_numpy(counts),
        }


def text_rows_of(batch_size: int, share: float) -> int:
    """Text-only rows in a batch of `batch_size` (at least one image row)."""
    return min(batch_size - 1, round(batch_size * share))


class ImageLoader:
    """The trainer's Loader: each batch `text_rows` text windows (PackedLoader) + image documents."""

    def __init__(
        self,
        images: ImageShardSet,
        text: PackedLoader | None,
        ids: SpecialIds,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.text, self.ids, self.seq_len = images, text, ids, seq_len
        self.num_text = text.batch_size if text is not None else 0
        self.per_batch = batch_size - self.num_text
        if self.per_batch < 1:
            raise KilnError(
                f"train.micro_batch_size={batch_size} leaves no row for images; raise it or lower images.text_rows"
            )
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.samples_seen = 0
        self.order = EpochOrder(len(images), seed)

    @property
    def epoch(self) -> float:
        return self.samples_seen / len(self.images)

    def next_batch(self) -> Batch:
        first = self.samples_seen + self.rank * self.per_batch
        batch = self.images.take([self.order(first + i) for i in range(self.per_batch)], self.seq_len, self.ids)
        self.samples_seen += self.per_batch * self.world_size
        if self.text is None:
            return batch
        text = self.text.next_batch()
        no_images = torch.zeros((self.num_text, *batch["pixels"].shape[1:]), dtype=torch.uint8)
        return {
            "inputs": torch.cat([text["inputs"], batch["inputs"]]),
            "targets": torch.cat([text["targets"], batch["targets"]]),
            "pixels": torch.cat([no_images, batch["pixels"]]),
            "num_images": torch.cat([torch.zeros(self.num_text, dtype=torch.int64), batch["num_images"]]),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "samples_seen": self.samples_seen,
            "seed": self.seed,
            "text": self.text.state_dict() if self.text else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        seen = state["samples_seen"]
        if not whole(seen, least=0):
            raise ValueError(f"samples_seen must be a count of documents, not {seen!r}")
        self.samples_seen = seen
        if self.text is not None and state.get("text"):
            self.text.load_state_dict(state["text"])


class ImageValidation:
    """Held-out image documents in order: the trainer's ValidationData (caption loss and bits-per-byte)."""

    def __init__(self, images: ImageShardSet, ids: SpecialIds) -> None:
        self.images, self.ids = images, ids

    def num_windows(self, seq_len: int, batch_size: int) -> int:
        return len(self.images)

    def batches(self, seq_len: int, batch_size: int, max_windows: int | None = None) -> Iterator[Batch]:
        n = len(self.images)
        indices = (
            np.arange(n) if max_windows is None or max_windows >= n else np.linspace(0, n - 1, max_windows).round()
        )
        for start in range(0, len(indices), batch_size):
            yield self.images.take([int(i) for i in indices[start : start + batch_size]], seq_len, self.ids)


def image_data(
    train_dir: Path,
    val_dir: Path,
    text: Any,
    ids: SpecialIds,
    tokenizer_sha256: str,
    tc: Any,
    text_rows: float,
    rank: int,
    world_size: int,
) -> tuple[ImageLoader, ImageValidation]:
    """The trainer's loader and validation data for an image+text run: image shards of both splits,
    with `text_rows` of each batch from the text shard set `text` (a ShardSet)."""
    train, val = ImageShardSet(train_dir), ImageShardSet(val_dir)
    for shards in (train, val):
        if shards.tokenizer_sha256 != tokenizer_sha256:
            raise KilnError(
                f"image shards in {shards.directory} were made with another tokenizer; re-run `kiln tokenize`"
            )
    num_text = text_rows_of(tc.micro_batch_size, text_rows)
    packed = (
        PackedLoader(text, tc.seq_len, num_text, rank=rank, world_size=world_size, seed=tc.seed) if num_text else None
    )
    loader = ImageLoader(train, packed, ids, tc.seq_len, tc.micro_batch_size, tc.seed, rank, world_size)
    return loader, ImageValidation(val, ids)
