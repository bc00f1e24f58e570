"""What an image+text model gets right about images: held-out caption accuracy per attribute,
image-caption retrieval, caption bits-per-byte; and captioning one image (`kiln generate --image`).

- Caption accuracy: the model writes a caption for each held-out image (greedy, after <|bos|> and
  the image); images/shapes.py's parser reads the colour, shape and count it names, compared with
  the image's own. Chance is one over the values the training split shows. Only sets whose items
  carry these attributes (the built-in shapes set) have it.
- Retrieval: for each of up to `retrieval_images` held-out images, every distinct held-out caption
  (up to 64) is scored as log p(caption | image); top-1 accuracy is the share of images whose own
  caption scores highest (chance: one over the number of captions). Any image+text set has it.
- Bits-per-byte and loss of the held-out captions: the validation loop over the image shards.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from kiln.device import autocast
from kiln.errors import KilnError
from kiln.images.shapes import ATTRIBUTES, parse_caption
from kiln.images.shards import ImageShardSet, ImageValidation, encode_doc, targets_of
from kiln.models.sampling import generate
from kiln.staging import write_whole
from kiln.tokenizer import SpecialIds

if TYPE_CHECKING:
    from kiln.models.decoder import Decoder

MAX_CAPTIONS = 64
"""Distinct captions each image is scored against in retrieval."""


def image_prompt(ids: SpecialIds, num_images: int, patches: int, prompt: list[int]) -> list[int]:
    """<|bos|>, each image's block, then the prompt's tokens: what captioning continues."""
    return [ids.bos] + ([ids.image_start] + [ids.image] * patches + [ids.image_end]) * num_images + prompt


def write_captions(
    model: Decoder,
    pixels: torch.Tensor,
    ids: SpecialIds,
    patches: int,
    prompt: list[int],
    max_new_tokens: int,
    precision: str,
    batch_size: int = 128,
) -> list[list[int]]:
    """Greedy captions (token ids, up to <|eos|>) of images (N, K, S, S, 3) uint8."""
    device = next(model.parameters()).device
    start = image_prompt(ids, pixels.shape[1], patches, prompt)
    out: list[list[int]] = []
    for i in range(0, len(pixels), batch_size):
        chunk = pixels[i : i + batch_size].to(device)
        tokens = torch.tensor([start] * len(chunk), device=device)
        rows = generate(
            model,
            tokens,
            max_new_tokens,
            temperature=0,
            eos_id=ids.eos,
            precision=precision,
            images=chunk,
            image_id=ids.image,
        )
        for row in rows[:, len(start) :].tolist():
            out.append(row[: row.index(ids.eos)] if ids.eos in row else row)
    return out


@torch.no_grad()
def caption_logprobs(model: nn.Module, batch: dict[str, torch.Tensor], ids: SpecialIds, precision: str) -> torch.Tensor:
    """Summed log p of each row's targets (the caption and <|eos|>) given its image: (B,) fp32."""
    with autocast(batch["inputs"].device, precision):
        logits = model(batch["inputs"], images=batch["pixels"], image_mask=batch["inputs"] == ids.image)
    targets = batch["targets"]
    logp = logits.float().log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (logp * (targets != -100)).sum(dim=1)


def retrieval(
    model: nn.Module, shards: ImageShardSet, tok: Any, ids: SpecialIds, precision: str, num_images: int, seed: int = 0
) -> dict[str, Any]:
    """Top-1 image-to-caption retrieval over held-out images and their distinct captions."""
    items = shards.items()
    texts = sorted({item["text"] for item in items})
    rng = random.Random(seed)
    if len(texts) > MAX_CAPTIONS:
        texts = sorted(rng.sample(texts, MAX_CAPTIONS))
    chosen = set(texts)
    picked = [i for i, item in enumerate(items) if item["text"] in chosen]
    picked = sorted(rng.sample(picked, min(num_images, len(picked))))
    m = shards.manifest
    patches = (m["image_size"] // m["patch_size"]) ** 2
    device = next(model.parameters()).device
    width = shards.width
    # captions that read the same once cut to max_text_tokens are one candidate: tied, they would all
    # count as found
    same: dict[tuple[int, ...], list[str]] = {}
    for text in texts:
        same.setdefault(tuple(encode_doc(text, 1, tok, ids, patches, m["max_text_tokens"])[0]), []).append(text)
    row_of = {text: j for j, row in enumerate(same) for text in same[row]}
    rows = np.full((len(same), width), ids.pad, dtype=np.int64)
    for j, row in enumerate(same):
        rows[j, : len(row)] = row
    candidates = torch.from_numpy(rows)
    targets = torch.from_numpy(np.stack([targets_of(row, ids) for row in rows]))
    correct = 0
    ranks = []
    for index in picked:
        image = shards.take([index], width - 1, ids)["pixels"]
        scores = []
        for start in range(0, len(rows), 64):
            n = min(64, len(rows) - start)
            batch = {
                "inputs": candidates[start : start + n, :-1].to(device),
                "targets": targets[start : start + n].to(device),
                "pixels": image.expand(n, *image.shape[1:]).to(device),
            }
            scores.append(caption_logprobs(model, batch, ids, precision).cpu())
        score = torch.cat(scores)
        own = row_of[items[index]["text"]]
        rank = int((score >= score[own]).sum()) - 1  # a tie counts against the image
        ranks.append(rank + 1)
        correct += rank == 0
    return {
        "retrieval_top1": correct / max(len(picked), 1),
        "retrieval_mean_rank": float(np.mean(ranks)) if ranks else None,
        "retrieval_images": len(picked),
        "retrieval_captions": len(rows),
        "retrieval_chance": 1 / max(len(rows), 1),
    }


def attribute_accuracy(
    model: nn.Module,
    shards: ImageShardSet,
    train_items: list[dict[str, Any]],
    tok: Any,
    ids: SpecialIds,
    precision: str,
    limit: int,
) -> dict[str, Any] | None:
    """Per-attribute accuracy of greedy captions on held-out images whose items carry the attributes."""
    items = shards.items()
    usable = [i for i, item in enumerate(items) if all(a in item.get("meta", {}) for a in ATTRIBUTES)]
    if not usable:
        return None
    usable = usable[:limit] if limit else usable
    m = shards.manifest
    patches = (m["image_size"] // m["patch_size"]) ** 2
    pixels = shards.take(usable, shards.width - 1, ids)["pixels"]
    written = write_captions(cast("Decoder", model), pixels, ids, patches, [], m["max_text_tokens"], precision)
    hits: dict[str, list[dict[str, bool]]] = {}  # group ("all", and each meta "pairs" value) -> per image
    examples: list[dict[str, str]] = []
    for index, caption_ids in zip(usable, written):
        text = tok.decode(caption_ids, skip_special_tokens=True).strip()
        said = parse_caption(text)
        truth = items[index]["meta"]
        hit = {a: said[a] == truth[a] for a in ATTRIBUTES}
        hit["all_attributes"] = all(hit.values())
        for group in ("all", truth.get("pairs")):
            if group:
                hits.setdefault(group, []).append(hit)
        if len(examples) < 12:
            group = f" ({truth['pairs']} pair)" if "pairs" in truth else ""
            examples.append({"key": items[index]["key"] + group, "truth": items[index]["text"], "caption": text})
    n = len(usable)

    def rates(group: list[dict[str, bool]]) -> dict[str, float]:
        return {k: sum(h[k] for h in group) / len(group) for k in (*ATTRIBUTES, "all_attributes")}

    chance = {
        a: 1 / max(1, len({item["meta"][a] for item in train_items if a in item.get("meta", {})})) for a in ATTRIBUTES
    }
    overall = rates(hits["all"])
    return {
        "images": n,
        "accuracy": {a: overall[a] for a in ATTRIBUTES},
        "all_attributes": overall["all_attributes"],
        "groups": {g: {"images": len(h), **rates(h)} for g, h in hits.items() if g != "all"},
        "chance": chance,
        "examples": examples,
    }


def evaluate_images(
    model: nn.Module,
    val_dir: Path,
    train_dir: Path,
    tok: Any,
    ids: SpecialIds,
    token_bytes: torch.Tensor,
    objective: Any,
    precision: str,
    seq_len: int,
    batch_size: int,
    limit: int = 0,
    retrieval_images: int = 256,
) -> dict[str, Any]:
    """Every image figure for a model on a run's held-out image shards."""
    from kiln.evaluate.loss import validation_loss

    if not (val_dir / "manifest.json").exists():
        raise KilnError(f"no image shards at {val_dir}; caption figures need a run made with images.source")
    shards = ImageShardSet(val_dir)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss = validation_loss(
        objective, model, ImageValidation(shards, ids).batches(seq_len, batch_size), token_bytes, device, precision
    )
    train_items = ImageShardSet(train_dir).items() if (train_dir / "manifest.json").exists() else []
    out: dict[str, Any] = {"caption_loss": loss["loss"], "caption_bpb": loss.get("bpb")}
    out.update(retrieval(model, shards, tok, ids, precision, retrieval_images))
    attributes = attribute_accuracy(model, shards, train_items, tok, ids, precision, limit)
    if attributes is not None:
        out["attributes"] = attributes
    model.train(was_training)
    return out


def captions_table(figures: dict[str, Any]) -> str:
    """Markdown: per-attribute accuracy against chance, retrieval, bits-per-byte, examples."""
    lines = []
    attributes = figures.get("attributes")
    if attributes:
        groups = attributes.get("groups", {})
        names = sorted(groups, reverse=True)  # "unseen", "seen"
        head = "".join(f" {g} pairs ({groups[g]['images']}) |" for g in names)
        lines += [
            f"Held-out caption accuracy ({attributes['images']} images, greedy captions):",
            "",
            f"| attribute | all |{head} chance |",
            "| --- | ---: |" + " ---: |" * len(names) + " ---: |",
        ]
        for a in (*ATTRIBUTES, "all_attributes"):
            value = attributes["accuracy"][a] if a in ATTRIBUTES else attributes["all_attributes"]
            cells = "".join(f" {groups[g][a]:.1%} |" for g in names)
            chance = f"{attributes['chance'][a]:.1%}" if a in ATTRIBUTES else ""
            lines.append(f"| {a.replace('_', ' ')} | {value:.1%} |{cells} {chance} |")
        lines.append("")
    lines += [
        f"Retrieval: top-1 {figures['retrieval_top1']:.1%} over {figures['retrieval_captions']} captions "
        f"(chance {figures['retrieval_chance']:.1%}), mean rank {figures['retrieval_mean_rank'] or 0:.2f}, "
        f"{figures['retrieval_images']} images.",
        "",
        f"Held-out captions: loss {figures['caption_loss']:.4f}, bits-per-byte {figures['caption_bpb']:.4f}.",
    ]
    if attributes and attributes["examples"]:
        lines += ["", "| image | its caption | the model's |", "| --- | --- | --- |"]
        lines += [f"| {e['key']} | {e['truth']} | {e['caption']} |" for e in attributes["examples"]]
    return "\n".join(lines) + "\n"


def write_image_report(figures: dict[str, Any], out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_whole(out / "captions.json", json.dumps(figures, indent=2) + "\n")
    write_whole(out / "captions.md", f"# {title}\n\n" + captions_table(figures))
