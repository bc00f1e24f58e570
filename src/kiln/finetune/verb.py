"""`kiln finetune`: a checkpoint, a file of examples, a method (finetune/methods.py) and the one trainer.

The run directory gets the checkpoint's tokenizer and the config presets.finetune derives from the
checkpoint's own (its model, objective and tokenizer unchanged; the fine-tuning schedule), with the
command line's overrides on top. A method whose rows hold one example each (DPO's pairs, labelled
texts) sets train.seq_len to the longest row. Everything else (checkpoints, resume, distributed
modes, metrics.jsonl) is the trainer's; a method with a report after training (classification's
confusion matrix) writes it beside the run.
"""

from __future__ import annotations

import argparse
import math
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from kiln.config import apply_overrides, from_dict, replace, save_config
from kiln.errors import KilnError
from kiln.finetune.methods import ALIASES, METHODS, method, method_help
from kiln.freshstart import FreshStart, restore
from kiln.models.registry import FAMILIES, family
from kiln.runconfig import RunConfig
from kiln.rundir import TOKENIZER, RunDir
from kiln.staging import STAGED, rename_synced
from kiln.train.parallel import launch_rank
from kiln.verbs import Verb, config_options, overrides, print_config, resume_mode, resume_option


def finetune_config(
    checkpoint: Path, data: Path, method_name: str, given: dict[str, Any], init: str = "checkpoint"
) -> RunConfig:
    """The fine-tuning config for `checkpoint` on `data` with `method_name` (a method or an alias) and
    the `given` overrides; `init` "random" keeps the architecture and tokenizer but not the weights."""
    from kiln.presets import finetune
    from kiln.train.checkpoint import read_config

    checkpoint = Path(checkpoint)
    base = from_dict(RunConfig, read_config(checkpoint))
    if not Path(data).is_file():  # before the run directory is made
        raise KilnError(f"--data {data} is not a file; pass a JSONL of examples")
    name, settings = ALIASES.get(method_name, (method_name, {}))
    chosen = method(name)
    if not chosen.fits(family(base.model.family)):
        fitting = [f for f, spec in FAMILIES.items() if chosen.fits(spec)]
        raise KilnError(
            f"kiln finetune --method {method_name} trains {', '.join(fitting)} models; this checkpoint is "
            f"{base.model.family}"
        )
    given = {**settings, **given}
    lora_rank = _number(given.pop("finetune.lora_rank", 0) or 0, int, "finetune.lora_rank")
    cfg = finetune(base, str(data), name, str(checkpoint) if init == "checkpoint" else "", lora_rank)
    if "train.lr" in given:  # a rate given outright replaces the preset's, not re-derived
        cfg = replace(cfg, train=replace(cfg.train, lr=_number(given.pop("train.lr"), float, "train.lr")))
    cfg = apply_overrides(cfg, given)
    return fit_rows(cfg, checkpoint, "train.seq_len" in given) if chosen.rows_of_one else cfg


def _number(raw: Any, kind: type, name: str) -> Any:
    """`raw` as an int or float, or one line naming the option."""
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise KilnError(f"--{name} {raw!r}: expected a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise KilnError(f"--{name} {raw!r}: expected a finite number")
    return value


def fit_rows(cfg: RunConfig, checkpoint: Path, seq_len_given: bool) -> RunConfig:
    """Rows of one example each: train.seq_len becomes the longest row (rounded up to 8, at most the
    checkpoint's), and labels the data names are fixed in the config (finetune.labels)."""
    from kiln.tokenizer import load_tokenizer, objective_ids

    tokenizer = load_tokenizer(Path(checkpoint) / TOKENIZER)
    data = method(cfg.finetune.objective).load(cfg, tokenizer, objective_ids(tokenizer))
    ft, tc = cfg.finetune, cfg.train
    labels = list(getattr(data, "labels", ft.labels))
    width = int(getattr(data, "width", tc.seq_len))  # a method's rows of one example have a width
    seq_len = tc.seq_len if seq_len_given else min(tc.seq_len, -(-width // 8) * 8)
    return replace(cfg, finetune=replace(ft, labels=labels), train=replace(tc, seq_len=seq_len))


KEPT_BY_FINETUNE = ("config.json", "tokenizer.json", "plan.json")
"""What `prepare_run` and the planner write in a fine-tuning run directory before training accepts it."""


def prepare_run(cfg: RunConfig, checkpoint: Path, run: RunDir) -> None:
    """The fine-tuning run directory: the checkpoint's tokenizer beside the config. Under torchrun only
    rank 0 writes them (the others would write over what its fresh start keeps aside); the trainer
    reads them once every rank has joined the process group (train/build.py)."""
    if launch_rank() != 0:
        return
    run.root.mkdir(parents=True, exist_ok=True)
    staged = run.tokenizer.with_name(f"{STAGED}{TOKENIZER}")
    staged.unlink(missing_ok=True)  # a new file: never written through a link at either name
    shutil.copyfile(Path(checkpoint) / TOKENIZER, staged)
    rename_synced(staged, run.tokenizer)
    save_config(cfg, run.config)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="the checkpoints/step_N to start from")
    parser.add_argument(
        "--method",
        choices=[*METHODS, *ALIASES],
        default="sft",
        help=method_help() + ". Each takes --finetune.lora_rank N",
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a JSONL of the method's records (above). Held out: finetune.val_fraction by hash, or a file in "
        "--finetune.val_data",
    )
    parser.add_argument(
        "--init",
        choices=["checkpoint", "random"],
        default="checkpoint",
        help="random: the checkpoint's architecture and tokenizer with fresh weights (does pretraining help?)",
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="the fine-tuning run directory")
    resume_option(parser, "continue the fine-tuning run from its newest checkpoint (bitwise, as `kiln train --resume`)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    config_options(parser)


def _finetune(args: argparse.Namespace) -> Any:
    from kiln import stages
    from kiln.train.checkpoint import checkpoint_dirs, latest_checkpoint

    cfg = finetune_config(args.checkpoint, args.data, args.method, overrides(args), args.init)
    run = RunDir(args.run_dir)
    run.check_ours()
    restore(run)  # what a fresh start a crash stopped had kept aside
    if args.dry_run:
        return print_config(cfg)
    if not args.resume and checkpoint_dirs(run.checkpoints):
        raise KilnError(
            f"{run.root} already holds checkpoints; pass --resume to continue the fine-tuning run that wrote "
            "them, or choose another --run-dir"
        )
    with nullcontext() if args.resume else FreshStart(run, keep=KEPT_BY_FINETUNE) as fresh:
        if not args.resume:
            prepare_run(cfg, args.checkpoint, run)
        figures = stages.train(cfg, run, resume=resume_mode(args), fresh=fresh)
    after = method(cfg.finetune.objective).after
    last = latest_checkpoint(run.checkpoints)
    if after is not None and last is not None and launch_rank() == 0:
        figures["after"] = after(last, run.root)
        print(figures["after"]["summary"])
    return figures


VERB = Verb(
    "finetune",
    "fine-tune a checkpoint (SFT, LoRA, DPO or a classification head) with the same trainer",
    _arguments,
    _finetune,
)
