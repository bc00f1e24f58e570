"""Image+text curation: decode, filter by size and aspect, clean captions with kiln's text steps,
drop exact and near-duplicate images, split, and write WebDataset tars with a manifest and data card.

Near duplicates are found with a 64-bit difference hash (dHash: a 9x8 grey thumbnail, one bit per
horizontally adjacent pair, set where the right pixel is brighter), which survives re-encoding,
resizing and small colour changes. Two images whose hashes differ in at most `d` bits share at least
one of d + 1 bands of the hash exactly (pigeonhole), so an index of bands finds every candidate
without comparing all pairs.

Output (run_dir/curated_images): train_NNNNN.tar and val_NNNNN.tar (key.png per image, key.json with
the text and metadata), manifest.json, data_card.md/json.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from kiln.config import replace
from kiln.corpus import Document
from kiln.curate.config import CurateConfig
from kiln.curate.steps import Normalize, Quality, RedactPII, Step, StepStats
from kiln.errors import KilnError
from kiln.images.config import ImageConfig
from kiln.images.patches import fit_image
from kiln.images.readers import IMAGE_MARK, ImageDoc, ImageReadStats, read_image_docs
from kiln.images.shapes import shapes_set
from kiln.rundir import MANIFEST, listed_file
from kiln.staging import Publication, StagedFolder

FORMAT = "kiln-curated-images-v1"
DOCS_PER_TAR = 10_000


def dhash(image: Image.Image) -> int:
    """64-bit difference hash of an image."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


class NearImageIndex:
    """Hashes seen so far, banded so that any hash within `distance` bits is found."""

    def __init__(self, distance: int) -> None:
        self.distance = distance
        self.num_bands = distance + 1
        self.width = -(-64 // self.num_bands)
        self.bands: list[dict[int, list[int]]] = [{} for _ in range(self.num_bands)]

    def _keys(self, h: int) -> list[int]:
        mask = (1 << self.width) - 1
        return [(h >> (i * self.width)) & mask for i in range(self.num_bands)]

    def find(self, h: int) -> int | None:
        """A stored hash within the distance of `h`, if any."""
        for band, key in zip(self.bands, self._keys(h)):
            for other in band.get(key, ()):
                if bin(h ^ other).count("1") <= self.distance:
                    return other
        return None

    def add(self, h: int) -> None:
        for band, key in zip(self.bands, self._keys(h)):
            band.setdefault(key, []).append(h)


def caption_steps(curate: CurateConfig, cfg: ImageConfig) -> list[Step]:
    """kiln's text steps, with the quality thresholds sized for captions (a few words, one sentence)."""
    quality = replace(
        curate.quality,
        min_words=cfg.min_caption_words,
        min_mean_word_length=2.0,
        min_stop_words=0,
        min_sentences=0,  # alt-text and captions often end without punctuation
        min_punct_lines=0.0,
        max_short_lines=1.0,
    )
    steps: list[Step] = [Normalize(curate.normalize)] if curate.normalize.enabled else []
    if curate.pii:
        steps.append(RedactPII())
    if curate.quality.enabled:
        steps.append(Quality(quality))
    return steps


def is_val_key(key: str, fraction: float) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class _TarWriter:
    """One split's tars, written under staged names (published with the curation's manifest)."""

    def __init__(self, staging: StagedFolder, split: str) -> None:
        self.staging, self.split = staging, split
        self.files: list[dict[str, Any]] = []
        self.tar: tarfile.TarFile | None = None
        self.count = 0

    def _open(self) -> None:
        self.name = f"{self.split}_{len(self.files):05d}.tar"
        self.tar = tarfile.open(self.staging.path(self.name), "w")
        self.count = 0

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        assert self.tar is not None
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, key: str, pixels: list[np.ndarray], record: dict[str, Any]) -> None:
        if self.tar is None:
            self._open()
        # the tar's own index first: keys that differ only by "/" or "." against "_" (x/a, x_a) would
        # otherwise write the same member names, read back as one document (the key is in the .json)
        safe = f"{self.count:05d}_" + key.replace("/", "_").replace(".", "_")
        for i, image in enumerate(pixels):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            self._member(f"{safe}.png" if i == 0 else f"{safe}.{i}.png", buffer.getvalue())
        self._member(f"{safe}.json", json.dumps({**record, "key": key}).encode())
        self.count += 1
        if self.count >= DOCS_PER_TAR:
            self.close()

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        self.files.append({"file": self.name, "documents": self.count})
        self.tar = None


def source_docs(cfg: ImageConfig, stats: ImageReadStats, image_size: int) -> Iterator[ImageDoc]:
    if cfg.source == "shapes":
        for doc in shapes_set(cfg.num_train, cfg.num_val, image_size, cfg.seed):
            stats.num_read += 1
            yield doc
        return
    yield from read_image_docs(cfg.source, cfg.max_pixels, stats, cfg.paths_outside)


def curate_images(
    cfg: ImageConfig, curate: CurateConfig, out_dir: Path, image_size: int, publication: Publication | None = None
) -> dict[str, Any]:
    """Curate `cfg.source` into `out_dir`; returns the manifest (counts at every step). The last
    curation stays until this one has kept documents in both splits, and with a `publication` until
    it publishes (kiln/staging.py)."""
    t0 = time.perf_counter()
    staging = StagedFolder(out_dir)
    try:
        manifest = _curate_staged(cfg, curate, staging, image_size)
    except BaseException:
        staging.discard()
        raise
    manifest["wall_s"] = time.perf_counter() - t0
    write_image_card(manifest, staging.path)
    staging.publish_in(publication, ["*.tar"], manifest)
    return manifest


def _curate_staged(cfg: ImageConfig, curate: CurateConfig, staging: StagedFolder, image_size: int) -> dict[str, Any]:
    stats = ImageReadStats()
    steps = caption_steps(curate, cfg)
    step_stats = [StepStats(step.name) for step in steps]
    dropped: Counter = Counter()
    exact: set[bytes] = set()
    near = NearImageIndex(cfg.dedup_distance)
    writers = {split: _TarWriter(staging, split) for split in ("train", "val")}
    kept: Counter = Counter()
    caption_words: list[int] = []
    attributes: dict[str, Counter] = {}
    for doc in tqdm(
        source_docs(cfg, stats, image_size), desc="curate images", unit=" docs", dynamic_ncols=True, mininterval=0.5
    ):
        images = doc.images[: cfg.max_images]
        if len(doc.images) > cfg.max_images:
            dropped["images_past_max_images_cut"] += 1
            parts = doc.text.split(IMAGE_MARK)
            if len(parts) > 1:  # keep the text up to the last kept image's place, and what follows it
                doc.text = IMAGE_MARK.join(parts[: cfg.max_images + 1]) + "".join(parts[cfg.max_images + 1 :])
        sides = [(min(im.size), max(im.size)) for im in images]
        if any(short < cfg.min_side for short, _ in sides):
            dropped["too_small"] += 1
            continue
        if any(long > cfg.max_aspect * short for short, long in sides):
            dropped["aspect"] += 1
            continue
        text: Document | None = Document(id=doc.key, text=doc.text.replace(IMAGE_MARK, "\x00"), metadata=dict(doc.meta))
        for step, st in zip(steps, step_stats):
            assert text is not None
            text = step(text, st)
            if text is None:
                break
        if text is None:
            dropped["caption"] += 1
            continue
        pixels = [fit_image(im, image_size) for im in images]
        digest = hashlib.sha256(b"".join(p.tobytes() for p in pixels)).digest()
        if cfg.dedup_exact and digest in exact:
            dropped["duplicate_exact"] += 1
            continue
        h = dhash(images[0]) if cfg.dedup_near else 0
        if cfg.dedup_near and near.find(h) is not None:
            dropped["duplicate_near"] += 1
            continue
        exact.add(digest)
        if cfg.dedup_near:
            near.add(h)
        split = doc.meta.get("split") if cfg.source == "shapes" else None
        split = split or ("val" if is_val_key(doc.key, cfg.val_fraction) else "train")
        caption = text.text.replace("\x00", IMAGE_MARK)
        writers[split].add(doc.key, pixels, {"text": caption, "meta": doc.meta, "origin": doc.origin})
        kept[split] += 1
        caption_words.append(len(caption.split()))
        for name in ("colour", "shape", "count"):
            if name in doc.meta:
                attributes.setdefault(name, Counter())[f"{split}:{doc.meta[name]}"] += 1
    for writer in writers.values():
        writer.close()
    if not kept["train"] or not kept["val"]:
        raise KilnError(
            f"image curation kept {kept['train']} training and {kept['val']} held-out documents of "
            f"{stats.num_read} read ({stats.num_skipped} skipped: {dict(stats.skipped)}; dropped: {dict(dropped)}); "
            "both splits need some: add pairs or change images.val_fraction"
        )
    return {
        "format": FORMAT,
        "source": cfg.source,
        "image_size": image_size,
        "max_images": cfg.max_images,
        "read": stats.num_read,
        "skipped": dict(stats.skipped),
        "skipped_samples": stats.samples,
        "dropped": dict(dropped),
        "caption_steps": [st.as_dict() for st in step_stats],
        "kept": dict(kept),
        "caption_words_mean": float(np.mean(caption_words)) if caption_words else 0.0,
        "attributes": {k: dict(v) for k, v in attributes.items()},
        "files": {split: w.files for split, w in writers.items()},
    }


def write_image_card(manifest: dict[str, Any], at: Callable[[str], Path]) -> None:
    """data_card.md/json (each written where `at(name)` says): what came in, what was skipped or
    dropped and why, what was kept per split."""
    card = {
        k: manifest[k] for k in ("source", "read", "skipped", "dropped", "kept", "caption_words_mean", "attributes")
    }
    at("data_card.json").write_text(json.dumps(card, indent=2) + "\n")
    lines = [
        "# Data card: images",
        "",
        f"Source: `{manifest['source']}`; images fitted to {manifest['image_size']} x {manifest['image_size']} pixels, "
        f"at most {manifest['max_images']} per document.",
        "",
        "| | documents |",
        "| --- | ---: |",
        f"| read | {manifest['read']:,} |",
    ]
    lines += [f"| skipped: {reason} | {n:,} |" for reason, n in sorted(manifest["skipped"].items())]
    lines += [f"| dropped: {reason} | {n:,} |" for reason, n in sorted(manifest["dropped"].items())]
    lines += [f"| kept: {split} | {n:,} |" for split, n in sorted(manifest["kept"].items())]
    lines += ["", f"Mean caption length: {manifest['caption_words_mean']:.1f} words.", ""]
    for step in manifest["caption_steps"]:
        lines.append(
            f"- caption step `{step['step']}`: {step['in']:,} in, {step['dropped']:,} dropped "
            f"{step['dropped_by_reason'] or ''}"
        )
    if manifest["attributes"]:
        lines += ["", "Attributes (split:value -> images):", ""]
        for name, counts in manifest["attributes"].items():
            lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if manifest["skipped_samples"]:
        lines += ["", "First skips:", ""] + [f"- {s}" for s in manifest["skipped_samples"]]
    at("data_card.md").write_text("\n".join(lines) + "\n")


def curated_docs(out_dir: Path, split: str) -> Iterator[ImageDoc]:
    """The curated documents of one split, in order (read back through the WebDataset reader)."""
    manifest = read_manifest(out_dir)
    stats = ImageReadStats()
    for entry in manifest["files"][split]:
        yield from read_image_docs(listed_file(out_dir, entry.get("file"), out_dir / MANIFEST), 2**62, stats)
    if stats.num_skipped:
        raise KilnError(f"curated images in {out_dir} are damaged ({dict(stats.skipped)}); re-run `kiln curate`")


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if not path.exists():
        raise KilnError(f"no curated images at {out_dir}; run `kiln curate` with images.source set")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KilnError(f"{path} is corrupt ({e}); re-run `kiln curate`") from None
    if manifest.get("format") != FORMAT:
        raise KilnError(f"{path} is not a kiln curated-images manifest")
    return manifest
