"""The pipeline's image steps, called by stages.py when `images.source` is set: curate the pairs,
give the tokenizer their captions, write image shards beside the text shards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.images.curate import curate_images, curated_docs
from kiln.images.readers import IMAGE_MARK, ImageDoc
from kiln.images.shards import write_image_shards
from kiln.tokenizer import objective_ids

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.runconfig import RunConfig
    from kiln.rundir import RunDir
    from kiln.staging import Publication


def curate(cfg: RunConfig, run: RunDir, publication: Publication) -> dict[str, Any]:
    """Curate images.source into run_dir/curated_images (published with the stage's `publication`);
    the figures for stages.json."""
    manifest = curate_images(cfg.images, cfg.curate, run.curated_images, cfg.model.vision.image_size, publication)
    print(
        f"curate images: kept {manifest['kept'].get('train', 0):,} training and {manifest['kept'].get('val', 0):,} "
        f"held-out of {manifest['read']:,} read in {manifest['wall_s']:.1f} s; skipped {manifest['skipped'] or 0}, "
        f"dropped {manifest['dropped'] or 0}; data card {run.curated_images / 'data_card.md'}"
    )
    return {k: manifest[k] for k in ("read", "skipped", "dropped", "kept", "wall_s")}


def captions(run: RunDir) -> Iterator[str]:
    """The training split's texts (image marks removed), for the tokenizer."""
    for doc in curated_docs(run.curated_images, "train"):
        yield doc.text.replace(IMAGE_MARK, " ")


def _fitted(docs: Iterator[ImageDoc]) -> Iterator[tuple[ImageDoc, list[np.ndarray]]]:
    for doc in docs:  # curated images are already fitted to model.vision.image_size
        yield doc, [np.asarray(im, dtype=np.uint8) for im in doc.images]


def tokenize(cfg: RunConfig, run: RunDir, tok: Tokenizer, sha: str, publication: Publication) -> dict[str, Any]:
    """Image shards of both splits (published with the stage's `publication`); the figures for stages.json."""
    ids = objective_ids(tok)
    figures = {}
    for split in ("train", "val"):
        manifest = write_image_shards(
            _fitted(curated_docs(run.curated_images, split)),
            tok,
            sha,
            ids,
            run.image_split(split),
            cfg.model.vision.image_size,
            cfg.model.vision.patch_size,
            cfg.images.max_images,
            cfg.images.max_text_tokens,
            publication,
        )
        figures[f"images_{split}"] = {"documents": manifest["num_docs"], "text_cut": manifest["docs_with_text_cut"]}
        print(f"tokenize images {split}: {manifest['num_docs']:,} documents, rows of {manifest['width']} tokens")
    return figures
