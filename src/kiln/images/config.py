"""Image+text settings: the `images` section (no heavy imports, so reading a config never loads Pillow)."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.config import require


@dataclass
class ImageConfig:
    source: str = ""
    """Image+text pairs to train on: "shapes" (the built-in set, images/shapes.py), or a path: a folder
    (images with key.txt/key.json beside them, *.jsonl, *.tar), a JSONL file of {"image", "text"} or
    {"images", "text"} records, or a WebDataset .tar shard (key.jpg + key.txt/key.json). Empty: a
    text-only run."""
    max_images: int = 1
    """Most images one document may carry (interleaved documents); documents with more are cut."""
    max_text_tokens: int = 32
    """Caption tokens kept per image+text document; longer captions are cut (and counted)."""
    val_fraction: float = 0.1
    """Share of a user's pairs held out, by a hash of the key (the shapes set has its own held-out split)."""
    text_rows: float = 0.25
    """Share of each training batch's rows that are text-only windows from the run's text shards, so
    the model keeps its language."""
    num_train: int = 8000
    """shapes: training images (attribute combinations of the training split)."""
    num_val: int = 512
    """shapes: held-out images (colour-shape combinations never seen in training)."""
    seed: int = 0
    """shapes: seeds the rendering (the set is the same on every machine)."""
    min_side: int = 8
    """Drop images narrower or shorter than this (pixels)."""
    max_pixels: int = 64_000_000
    """Refuse to decode images with more pixels than this (decompression bombs), counted as a skip."""
    max_aspect: float = 4.0
    """Drop images whose long side exceeds this multiple of the short side."""
    dedup_exact: bool = True
    """Drop images whose fitted pixels were seen before."""
    dedup_near: bool = True
    """Drop near-duplicate images (a 64-bit grey-level difference hash within dedup_distance bits:
    re-encoded, resized, recoloured copies). The shapes set turns it off: its images differ by colour
    and a few pixels of place, which a grey-level hash is built not to see."""
    dedup_distance: int = 4
    """Near duplicates: 64-bit difference hashes at most this many bits apart."""
    min_caption_words: int = 1
    """Drop pairs whose normalised caption has fewer words."""
    paths_outside: bool = False
    """JSONL sources: allow image paths outside the JSONL's folder (absolute, '..', '~'); off, such a
    record is skipped and counted as 'outside' (a file you are handed cannot read the rest of the disk)."""

    def __post_init__(self) -> None:
        require(self.max_images >= 1, "images.max_images must be >= 1")
        require(self.max_text_tokens >= 4, "images.max_text_tokens must be >= 4")
        require(0 < self.val_fraction < 1, "images.val_fraction must be in (0, 1)")
        require(0 <= self.text_rows < 1, "images.text_rows must be in [0, 1)")
        require(self.num_train > 0 and self.num_val > 0, "images.num_train and images.num_val must be positive")
        require(self.max_aspect >= 1, "images.max_aspect must be >= 1")
        require(0 <= self.dedup_distance < 64, "images.dedup_distance must be in [0, 64)")

    @property
    def enabled(self) -> bool:
        return bool(self.source)
