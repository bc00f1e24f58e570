"""The pipeline's stages, each `stage(cfg, run) -> figures`, reading and writing one run directory.

curate -> tokenizer -> tokenize -> train. `kiln run` calls them in order (see run.py), then the
checkpoint tools of evaluate/verbs.py (eval, generate); the CLI exposes each as a verb.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from kiln.config import save_config
from kiln.corpus import (
    ReadStats,
    read_documents,
    split_of,
)
from kiln.curate.curated import CuratedSet, curated_set, heldout_documents, read_split
from kiln.curate.pipeline import curate as curate_corpus
from kiln.errors import KilnError
from kiln.freshstart import FreshStart
from kiln.modality import active
from kiln.report import stage_seconds
from kiln.runconfig import RunConfig
from kiln.rundir import MANIFEST, RunDir
from kiln.shards.writer import write_shards
from kiln.staging import STAGED, Publication, recover, rename_synced, write_whole
from kiln.tokenizer import (
    bytes_per_token,
    load_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from kiln.train.build import build_trainer
from kiln.train.parts import Parts, ShardParts
from kiln.train.signals import stop_on_signals
from kiln.train.supervise import supervise
from kiln.verbs import (
    ExitCode,
    Verb,
    config_options,
    fresh_start_options,
    guard_fresh_start,
    print_config,
    resolve_config,
    resume_mode,
    run_dir_options,
    whole_count,
)


def record(run: RunDir, stage: str, figures: dict[str, Any]) -> None:
    """Merge one stage's figures into stages.json."""
    data = json.loads(run.stages.read_text()) if run.stages.exists() else {}
    data[stage] = figures
    write_whole(run.stages, json.dumps(data, indent=2) + "\n")  # every later stage reads it


def _report_read_stats(stats: ReadStats) -> dict[str, Any]:
    if stats.num_invalid_bytes:
        print(
            f"replaced {stats.num_invalid_bytes} invalid UTF-8 bytes in {stats.num_documents_with_invalid_utf8} "
            "documents with U+FFFD"
        )
    for line in stats.skipped[:10]:
        print(f"skipped {line}")
    if stats.num_skipped > 10:
        print(f"... and {stats.num_skipped - 10} more skipped")
    return {
        "documents": stats.num_documents,
        "bytes": stats.num_bytes,
        "invalid_utf8_bytes": stats.num_invalid_bytes,
        "skipped": stats.num_skipped,
    }


def curate(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """Curate the corpus into run_dir/curated (documents, manifest, dropped samples, data card), and
    each active modality's data (kiln/modality.py) into its own curated set."""
    run.root.mkdir(parents=True, exist_ok=True)
    with Publication() as publication:  # every curated set replaces the last one, or none does
        others = {m.name: m.curate(cfg, run, publication) for m in active(cfg)}
        manifest = curate_corpus(cfg.data, cfg.curate, run.curated, publication) if cfg.curate.enabled else None
    if manifest is None:  # other modalities only (curate.enabled=false leaves the text as it is)
        save_config(cfg, run.config)
        record(run, "curate", {**others, "wall_s": sum(f["wall_s"] for f in others.values())})
        return others
    save_config(cfg, run.config)  # each stage saves the config it ran with, once it has succeeded
    print(
        f"curate: kept {manifest['documents_out']:,} of {manifest['documents_in']:,} documents "
        f"({manifest['bytes_out'] / 1e6:.1f} of {manifest['bytes_in'] / 1e6:.1f} MB) in {manifest['wall_s']:.1f} s; "
        f"data card {run.curated / 'data_card.md'}"
    )
    for step in manifest["steps"]:
        if step["dropped"] or step["changed"]:
            print(
                f"  {step['step']}: dropped {step['dropped']:,} {step['dropped_by_reason'] or ''} "
                f"changed {step['changed']:,}"
            )
    figures = {
        "documents_in": manifest["documents_in"],
        "documents_out": manifest["documents_out"],
        "bytes_in": manifest["bytes_in"],
        "bytes_out": manifest["bytes_out"],
        "wall_s": manifest["wall_s"],
        "mb_per_s": manifest["bytes_in"] / 1e6 / manifest["wall_s"],
    }
    for name, more in others.items():
        figures[name] = more
        figures["wall_s"] += more["wall_s"]
    record(run, "curate", figures)
    return figures


def tokenizer(cfg: RunConfig, run: RunDir, fresh: bool = False) -> dict[str, Any]:
    """Train byte-level BPE on the training split; save tokenizer.json; report bytes/token on validation.
    A tokenizer other than the one the run's checkpoints were trained with is refused (they could no
    longer resume) unless the run starts afresh (`fresh`: kiln run --overwrite)."""
    run.root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stats = ReadStats()
    texts: Iterator[str] = (d.text for d in read_split(cfg, run, "train", stats))
    for modality in active(cfg):  # its text (captions) is the tokenizer's to learn too
        texts = itertools.chain(texts, modality.texts(run))
    seen = 0

    def counted(texts: Iterator[str]) -> Iterator[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    tok = train_tokenizer(counted(texts), cfg.tokenizer)
    if not seen:  # the last tokenizer.json stays: shards and checkpoints name it by its hash
        raise KilnError(
            f"no training text to learn a tokenizer from ({stats.num_documents} document(s) read); check "
            "data.corpus, data.val_fraction and what curation kept"
        )
    staged = run.tokenizer.with_name(f"{STAGED}{run.tokenizer.name}")
    staged.unlink(missing_ok=True)  # a new file, never written through a link left at its name
    tok.save(str(staged))
    if not fresh and _trained_on_another(run, staged):
        staged.unlink()
        raise KilnError(
            f"{run.root}'s checkpoints were trained with another tokenizer than this one (their --resume would be "
            "refused); train it in another --run-dir, or move the run's checkpoints/ aside first (kiln run "
            "--overwrite starts the whole run afresh)"
        )
    rename_synced(staged, run.tokenizer)  # whole or not at all
    save_config(cfg, run.config)
    bpt = bytes_per_token(tok, (d.text for d in read_split(cfg, run, "val")))
    figures = {
        "vocab_size": tok.get_vocab_size(),
        "val_bytes_per_token": bpt,
        "wall_s": time.perf_counter() - t0,
        "corpus": _report_read_stats(stats),
    }
    print(f"tokenizer: {tok.get_vocab_size()} tokens, {bpt:.3f} bytes/token on validation -> {run.tokenizer}")
    record(run, "tokenizer", figures)
    return figures


def _trained_on_another(run: RunDir, new: Path) -> bool:
    """Whether the run's newest checkpoint was trained with a tokenizer other than `new`."""
    from kiln.train.checkpoint import checkpoint_dirs, read_state

    found = checkpoint_dirs(run.checkpoints)
    return bool(found) and read_state(found[-1]).get("tokenizer_sha256") != tokenizer_hash(new)


def tokenize(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """Encode the corpus in one pass into train and val shards, each with a manifest."""
    tok = load_tokenizer(run.tokenizer)
    sha = tokenizer_hash(run.tokenizer)
    t0 = time.perf_counter()
    curated = curated_set(cfg, run)
    stats = ReadStats()

    def every_split_has_documents(manifests: dict[str, dict]) -> None:
        for split, manifest in manifests.items():
            if manifest["num_documents"] == 0:
                raise KilnError(
                    f"no document of {sum(m['num_documents'] for m in manifests.values())} fell into the "
                    f"{split} split; use a corpus with "
                    "more documents, or change data.val_fraction or data.split_seed"
                )

    with Publication() as publication:  # the text's and every other modality's shards replace the last ones together
        manifests = write_shards(
            curated.documents(cfg.data, stats) if curated else read_documents(cfg.data, stats),
            tok,
            sha,
            {"train": run.split("train"), "val": run.split("val")},
            cfg.shards,
            route=lambda doc: split_of(doc.id, cfg.data),
            check=every_split_has_documents,
            publication=publication,
        )
        others = {m.name: m.tokenize(cfg, run, tok, sha, publication) for m in active(cfg)}
    wall_s = time.perf_counter() - t0
    _report_read_stats(stats)
    save_config(cfg, run.config)
    num_bytes = sum(m["num_bytes"] for m in manifests.values())
    figures: dict[str, Any] = {
        split: {"documents": m["num_documents"], "tokens": m["num_tokens"], "bytes": m["num_bytes"]}
        for split, m in manifests.items()
    }
    figures.update(wall_s=wall_s, mb_per_s=num_bytes / 1e6 / wall_s)
    for more in others.values():
        figures.update(more)
    for split, m in manifests.items():
        print(f"tokenize {split}: {m['num_documents']} docs, {m['num_tokens']:,} tokens")
    print(f"tokenize: {num_bytes / 1e6:.1f} MB at {num_bytes / 1e6 / wall_s:.1f} MB/s")
    record(run, "tokenize", figures)
    return figures


def curated(cfg: RunConfig, run: RunDir) -> bool:
    """Whether curation's outputs (text when curate.enabled, each active modality's) are all there
    (a publication a crash interrupted is finished first: staging.recover)."""
    recover(run.curated)  # finishes the whole set it was published with
    text = not cfg.curate.enabled or CuratedSet.exists(run.curated)
    return text and all(m.curated(run) for m in active(cfg))


def tokenized(cfg: RunConfig, run: RunDir) -> bool:
    """Whether every split's shards are there (an interrupted publication of them finished first)."""
    recover(run.split("train")) or recover(run.split("val"))
    return (run.split("val") / MANIFEST).exists() and all(m.tokenized(run) for m in active(cfg))


def prepare(
    cfg: RunConfig,
    run: RunDir,
    resume: bool = False,
    after: Callable[[str], None] | None = None,
    fresh: bool = False,
) -> None:
    """The data stages in order: curate (when on), tokenizer, tokenize; with `resume`, each stage
    whose output the run directory already holds is skipped. `after(name)` follows each stage run.
    `fresh` (kiln run --overwrite) lets a new tokenizer replace the one earlier checkpoints used."""
    todo: list[tuple[str, Callable[[RunConfig, RunDir], dict[str, Any]], bool]] = [
        ("curate", curate, (cfg.curate.enabled or bool(active(cfg))) and not (resume and curated(cfg, run))),
        ("tokenizer", partial(tokenizer, fresh=fresh), not (resume and run.tokenizer.exists())),
        ("tokenize", tokenize, not (resume and tokenized(cfg, run))),
    ]
    for name, stage, due in todo:
        if due:
            stage(cfg, run)
            if after is not None:
                after(name)


AFTER_TRAIN_S = 15.0
"""`kiln run`'s allowance after training besides the tasks: bias probes, samples, plots, report, model card."""
TASK_ITEM_S = 0.02
"""...and per task item scored (the default run's model is sized to the machine, so about the same on
every CPU: docs/benchmarks.md); a task without a limit is counted as 1,000 items."""


def after_train_s(cfg: RunConfig) -> float:
    """The seconds `kiln run` keeps for the stages after training (eval.tasks, images, samples, report)."""
    from kiln.evaluate.suites import expand

    items = sum(limit or 1000 for _, limit in expand(cfg.eval.tasks, cfg.eval.limit))
    return AFTER_TRAIN_S + TASK_ITEM_S * items + sum(m.evaluate_s for m in active(cfg))


DATA_STAGES = ("curate", "tokenizer", "tokenize")


def training_budget_s(cfg: RunConfig, run: RunDir, elapsed_s: float | None = None) -> float:
    """The training stage's wall-clock budget: train.time_budget_s when set; else what the run's budget
    (`budget_s`) leaves after `elapsed_s` (default: the data stages' recorded seconds) and the
    stages after training; else 0 (none)."""
    if cfg.train.time_budget_s > 0 or cfg.budget_s <= 0:
        return cfg.train.time_budget_s
    if elapsed_s is None:
        recorded = json.loads(run.stages.read_text()) if run.stages.exists() else {}
        elapsed_s = sum(stage_seconds(recorded.get(name, {})) for name in DATA_STAGES)
    left = cfg.budget_s - elapsed_s - after_train_s(cfg)
    if left <= 0 and elapsed_s == 0:  # checked before the data stages: a refusal that changes nothing
        raise KilnError(
            f"the {cfg.budget_s:.0f} s budget (budget_s) does not cover the {after_train_s(cfg):.0f} s kept for "
            "evaluation after training; raise the budget (--budget) or score fewer tasks (eval.tasks, eval.limit)"
        )
    if left <= 0:
        raise KilnError(
            f"the data stages took {elapsed_s:.0f} s of the {cfg.budget_s:.0f} s budget (budget_s), "
            "leaving nothing to train in; raise the budget (--budget) or shrink the corpus"
        )
    return left


def parts_for(cfg: RunConfig) -> Parts:
    """What the kind of training `cfg` asks for brings the trainer (train/parts.py): fine-tuning's
    (finetune.data names a file), an active modality's, or pretraining on the run's shards."""
    if cfg.finetune.data:
        from kiln.finetune.parts import FinetuneParts

        return FinetuneParts(cfg)
    for modality in active(cfg):
        return modality.parts(cfg)
    return ShardParts()


def train(
    cfg: RunConfig,
    run: RunDir,
    resume: bool | str = False,
    time_budget_s: float | None = None,
    fresh: FreshStart | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Train the model on the run's shards; checkpoints, metrics.jsonl, summary figures. The run's
    config.json is written only once the trainer has accepted the config (a refused resume leaves it);
    a `fresh` start (--overwrite) is accepted, deleting the earlier checkpoints, only then too."""
    budget_s = training_budget_s(cfg, run) if time_budget_s is None else time_budget_s
    with stop_on_signals() as stop:  # SIGTERM while the trainer measures the machine is honoured too
        trainer = build_trainer(
            cfg,
            run,
            parts_for(cfg),
            resume=resume,
            time_budget_s=budget_s,
            stop=stop,
            heldout_docs=lambda: heldout_documents(cfg, run),
            fresh=fresh,
            clock=clock,
        )
        if trainer.rank == 0:
            save_config(cfg, run.config)
        try:
            figures = trainer.fit()
        finally:
            trainer.par.close()
    if trainer.rank == 0:
        record(run, "train", figures)
    return figures


def _stage_verb(name: str, help_text: str, stage: Callable[[RunConfig, RunDir], dict[str, Any]]) -> Verb:
    def run(args: argparse.Namespace) -> Any:
        cfg, run_dir = resolve_config(args)
        return print_config(cfg) if args.dry_run else stage(cfg, run_dir)

    def arguments(parser: argparse.ArgumentParser) -> None:
        run_dir_options(parser)
        config_options(parser)

    return Verb(name, help_text, arguments, run)


CURATE = _stage_verb(
    "curate",
    "normalise, filter, language-ID, deduplicate, decontaminate and redact the corpus; write a data card",
    curate,
)
TOKENIZER = _stage_verb(
    "tokenizer", "train a byte-level BPE tokenizer on the corpus; report bytes per token", tokenizer
)


def _tokenize_alone(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """`kiln tokenize`: refused where the run's checkpoints were trained on the shards it would replace
    (a resume would go on over other documents, or the validation split's)."""
    from kiln.train.checkpoint import checkpoint_dirs

    if checkpoint_dirs(run.checkpoints) and tokenized(cfg, run):
        raise KilnError(
            f"{run.root}'s checkpoints were trained on its shards; tokenize into another --run-dir, or start the "
            "run afresh (kiln run --overwrite)"
        )
    return tokenize(cfg, run)


TOKENIZE = _stage_verb("tokenize", "encode the corpus into token shards with a manifest", _tokenize_alone)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    run_dir_options(parser)
    fresh_start_options(parser, "training (sets train.time_budget_s)")
    parser.add_argument(
        "--max-restarts",
        type=whole_count,
        default=0,
        metavar="K",
        help="supervise: run training in a child process and restart it with --resume auto up to K times if it "
        "crashes (not after Ctrl-C or SIGTERM)",
    )
    config_options(parser)


def _train(args: argparse.Namespace) -> Any:
    cfg, run = resolve_config(args, budget_key="train.time_budget_s")
    if args.max_restarts > 0 and not args.dry_run:
        return ExitCode(supervise(args.argv, args.max_restarts, run.checkpoints if args.overwrite else None))
    if args.dry_run:
        return print_config(cfg)
    guard_fresh_start(args, run)
    resume = resume_mode(args)
    with nullcontext() if resume else FreshStart(run, keep=("plan.json",)) as fresh:  # the planner writes it first
        return train(cfg, run, resume=resume, fresh=fresh)


TRAIN = Verb("train", "pretrain the model on the run directory's shards", _train_arguments, _train)
