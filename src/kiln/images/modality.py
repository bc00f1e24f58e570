"""Images as a modality (kiln/modality.py): the steps image+text runs add to every stage.

curate (images/curate.py: decode, fit, filter, deduplicate into WebDataset shards with a data card),
the captions for the tokenizer, image shards beside the text shards (images/shards.py), the trainer's
parts (images/parts.py: image rows with text windows mixed in), and the image figures after training
(images/evaluate.py: caption bits-per-byte, retrieval, per-attribute accuracy of greedy captions).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from kiln.config import require
from kiln.device import pick_device
from kiln.evaluate.load import LoadedCheckpoint, load_checkpoint
from kiln.images import stages as steps
from kiln.images.evaluate import captions_table, evaluate_images, write_image_report
from kiln.modality import Modality
from kiln.models.registry import family
from kiln.rundir import MANIFEST, RunDir


def check(cfg: Any) -> None:
    require(
        family(cfg.model.family).reads_images and cfg.tokenizer.image_tokens,
        "images.source needs a model that reads images and a tokenizer with image tokens: "
        "--model.family vlm --tokenizer.image_tokens true (or --preset cpu_vlm)",
    )


def eval_dir(checkpoint: Path) -> Path:
    from kiln.evaluate.verbs import eval_dir as where

    return where(checkpoint)


def evaluate_captions(
    checkpoint: Path, loaded: LoadedCheckpoint | None = None, device: torch.device | None = None, limit: int = 0
) -> dict[str, Any]:
    """An image+text checkpoint on its run's held-out image shards: caption loss and bits-per-byte,
    retrieval, caption accuracy per attribute (images/evaluate.py); written to eval_dir as
    captions.md/json."""
    device = device or pick_device("auto")
    loaded = loaded or load_checkpoint(checkpoint, device)
    run = RunDir.of_checkpoint(checkpoint)
    tc = loaded.cfg.train
    t0 = time.perf_counter()
    figures = evaluate_images(
        loaded.model,
        run.image_split("val"),
        run.image_split("train"),
        loaded.tokenizer,
        loaded.ids,
        loaded.token_bytes,
        loaded.objective,
        loaded.precision,
        tc.seq_len,
        tc.micro_batch_size,
        limit,
    )
    figures.update(checkpoint=str(checkpoint), step=loaded.step, wall_s=time.perf_counter() - t0)
    out = eval_dir(checkpoint)
    write_image_report(figures, out, f"Images: {checkpoint} (step {loaded.step})")
    figures["written_to"] = str(out / "captions.md")
    return figures


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """The image figures summary.json carries."""
    out = {k: figures[k] for k in ("caption_bpb", "retrieval_top1", "retrieval_chance")}
    if "attributes" in figures:
        out.update({f"caption_{a}_accuracy": v for a, v in figures["attributes"]["accuracy"].items()})
    return out


def _parts(cfg: Any) -> Any:
    from kiln.images.parts import ImageParts

    return ImageParts()


MODALITY = Modality(
    name="images",
    active=lambda cfg: cfg.images.enabled,
    check=check,
    curate=steps.curate,
    curated=lambda run: (run.curated_images / MANIFEST).exists(),
    texts=steps.captions,
    tokenize=steps.tokenize,
    tokenized=lambda run: (run.image_split("val") / MANIFEST).exists(),
    parts=_parts,
    evaluate=lambda checkpoint, loaded, device: evaluate_captions(checkpoint, loaded, device),
    summary=summary,
    table=captions_table,
    title="Images",
    data_card=lambda run: run.curated_images / "data_card.md",
    evaluate_s=30.0,  # retrieval and greedy captions of the held-out images
)
