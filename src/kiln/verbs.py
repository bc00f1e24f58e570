"""A verb of the command line, and the option groups verbs share.

Each stage package defines its verbs beside the code they run (`VERB = Verb(name, help, arguments,
run)`: the data stages in stages.py, `train` and `convert` in train/verb.py, `eval` and `generate` in
evaluate/verbs.py, ...); cli.py is the table of them. A verb's `arguments(parser)` declares its
options, `run(args)` does the work and returns what it printed (for tests). The helpers here are the
options several verbs take, and `overrides(args)`, the one place `--section.field VALUE` options are
collected.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.config import apply_overrides, iter_fields, load_config
from kiln.errors import KilnError
from kiln.freshstart import restore
from kiln.runconfig import RunConfig
from kiln.rundir import RunDir


@dataclass(frozen=True)
class ExitCode:
    """What a verb returns when its process should exit with a code of its own (a supervised child's)."""

    code: int


@dataclass(frozen=True)
class Verb:
    name: str
    """What follows `kiln` on the command line."""
    help: str
    """One line for `kiln --help` (and the verb's own description)."""
    arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the verb's options to its parser."""
    run: Callable[[argparse.Namespace], Any]
    """Does the work; raises KilnError for anything the user can fix."""


def config_options(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    """`--section.field VALUE` for every field of RunConfig (of `sections` only, when given), with
    the field's docstring as its help."""
    group = parser.add_argument_group("config overrides (defaults come from the preset)")
    for name, tp, doc in iter_fields(RunConfig):
        if name == "preset" or (sections and name.split(".")[0] not in sections):
            continue
        kind = getattr(tp, "__name__", str(tp).replace("typing.", ""))
        group.add_argument(f"--{name}", dest=name, default=None, metavar=kind.upper(), help=doc)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `--section.field VALUE` options given on the command line, by dotted name."""
    return {name: getattr(args, name) for name, _, _ in iter_fields(RunConfig) if getattr(args, name, None) is not None}


def split_list(text: str | None) -> list[str]:
    """A comma-separated command-line list ('a,b') -> ['a', 'b'] (None or '' -> [])."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def run_dir_options(parser: argparse.ArgumentParser) -> None:
    """--run-dir, --preset, --config, --dry-run: where a stage reads and writes, what it starts from."""
    from kiln.presets import PRESETS

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
"""--resume (continue the newest checkpoint) and --resume auto (or start fresh when there is none)."""


def resume_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--resume", nargs="?", const="yes", default=None, choices=list(RESUME_MODES), help=help_text)


def resume_mode(args: argparse.Namespace) -> bool | str:
    return RESUME_MODES.get(args.resume, False)


def fresh_start_options(parser: argparse.ArgumentParser, budget_of: str) -> None:
    """--resume, --overwrite and --budget: the verbs that train (run, train)."""
    resume_option(
        parser,
        "continue from the newest complete checkpoint (checked against its manifest; a corrupt one is skipped "
        "for the one before); `--resume auto` starts fresh if none",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if the run directory has checkpoints (they are deleted once training has checked "
        "everything it reads)",
    )
    budget_option(parser, budget_of)


def guard_fresh_start(args: argparse.Namespace, run: RunDir) -> None:
    """A fresh start over checkpoints needs --overwrite (which deletes them only once training has
    checked everything it reads: train/build.py)."""
    from kiln.train.checkpoint import checkpoint_dirs

    if args.resume and args.overwrite:
        raise KilnError("give --resume or --overwrite, not both")
    if not args.resume and not args.overwrite and checkpoint_dirs(run.checkpoints):
        raise KilnError(
            f"{run.root} already holds checkpoints; pass --resume to continue, --overwrite to start "
            "afresh, or choose another --run-dir"
        )


def whole_count(text: str) -> int:
    """A whole number >= 0 (a count of restarts, of items)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return value


def parse_duration(text: str) -> float:
    """'10m', '90s', '1.5h' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 10m, 90s, 1.5h or 600") from None
    if not 0 < seconds < math.inf:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: a budget must be a positive, finite duration")
    return seconds


def budget_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--budget",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help=f"wall-clock budget for {what}, e.g. 10m, 90s, 1.5h: the trainer measures this machine and plans "
        "the steps (and with train.size_from_budget the model size) to fit",
    )


def resolve_config(args: argparse.Namespace, budget_key: str = "") -> tuple[RunConfig, RunDir]:
    """The run-directory verbs' config: --preset, else --config, else the run directory's saved
    config.json, else the cpu preset; then every override (and --budget as `budget_key`); validated.
    The run directory must be new, empty, or kiln's (RunDir.check_ours)."""
    from kiln.models.registry import family
    from kiln.presets import get_preset

    run_dir = args.run_dir or Path("runs") / (args.preset or ("plan" if getattr(args, "config", None) else "cpu"))
    run = RunDir(run_dir)
    run.check_ours()
    restore(run)  # what a crash left aside (rank 0 of a torchrun job)
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
    given = overrides(args)
    if "data.corpus" in given and "data.sources" not in given:
        given["data.sources"] = ""  # naming a corpus replaces sources a saved config may list
    if budget_key and getattr(args, "budget", None) is not None:
        given[budget_key] = args.budget
    cfg = apply_overrides(cfg, given)
    family(cfg.model.family)  # a known family, or one line naming them
    return cfg, run


def checkpoint_option(parser: argparse.ArgumentParser, required: bool = False, latest: bool = False) -> None:
    """--checkpoint (a checkpoints/step_N directory); with `latest`, --run-dir for its newest one."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=required,
        default=None,
        help="a checkpoints/step_N directory" + (" (default: the newest in --run-dir)" if latest else ""),
    )
    if latest:
        parser.add_argument("--run-dir", type=Path, default=None, help="take the newest checkpoint of this run")


def checkpoint_of(args: argparse.Namespace) -> Path:
    """--checkpoint, or the newest checkpoint of --run-dir (default runs/cpu)."""
    from kiln.train.checkpoint import latest_checkpoint

    if args.checkpoint is not None:
        return args.checkpoint
    run = RunDir(args.run_dir or Path("runs") / "cpu")
    found = latest_checkpoint(run.checkpoints)
    if found is None:
        raise KilnError(f"no checkpoint in {run.checkpoints}; pass --checkpoint DIR or the --run-dir of a trained run")
    return found


def print_config(cfg: RunConfig) -> RunConfig:
    """--dry-run: the resolved config, one field a line."""
    from kiln.config import format_config

    print(format_config(cfg))
    return cfg
