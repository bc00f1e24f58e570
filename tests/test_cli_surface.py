"""The command line's surface, frozen: every verb's own options and the config sections it takes.
A change here is a change users see (scripts break): make it on purpose, then update this list."""

import argparse

from kiln.cli import build_parser

ALL = ["adamw", "curate", "data", "energy", "eval", "finetune", "images", "model", "muon", "objective", "parallel",
       "sample", "shards", "tokenizer", "train"]  # fmt: skip
RUN_DIR = ["--budget_s", "--config", "--dry-run", "--preset", "--run-dir"]
SURFACE = {
    "run": (sorted([*RUN_DIR, "--budget", "--overwrite", "--resume"]), ALL),
    "curate": (RUN_DIR, ALL),
    "tokenizer": (RUN_DIR, ALL),
    "tokenize": (RUN_DIR, ALL),
    "train": (sorted([*RUN_DIR, "--budget", "--max-restarts", "--overwrite", "--resume"]), ALL),
    "eval": (["--bias", "--checkpoint", "--device", "--limit", "--out", "--run-dir", "--shards", "--tasks",
              "--tasks-dir", "--text", "--tokenizer"], []),
    "generate": (["--checkpoint", "--device", "--image", "--no-cache", "--prompt", "--run-dir"], ["sample"]),
    "convert": (["--checkpoint", "--out", "--to"], []),
    "finetune": (["--budget_s", "--checkpoint", "--data", "--dry-run", "--init", "--method", "--resume", "--run-dir"],
                 ALL),
    "plan": (["--device", "--emit-config", "--flops", "--gpu-hours", "--gpus", "--hours", "--json", "--mfu",
              "--parallel", "--price-per-hour", "--run-dir", "--seq-len", "--vocab-size"], []),
    "sweep": (["--aspects", "--budget_s", "--depths", "--executor", "--jobs", "--lrs", "--mup-base-dims", "--no-fit",
               "--run-dir", "--tokens"], ALL),
    "transfer-demo": (["--checkpoint", "--run-dir", "--steps-scale"], []),
    "export": (["--checkpoint", "--no-verify", "--to", "out"], []),
    "import": (["--from", "--run-dir", "dir"], []),
}  # fmt: skip


def surface() -> dict[str, tuple[list[str], list[str]]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, verb in sub.choices.items():
        options, sections = [], set()
        for action in verb._actions:
            for option in action.option_strings:
                if option in ("-h", "--help"):
                    continue
                if "." in option:
                    sections.add(option[2:].split(".")[0])
                else:
                    options.append(option)
            if not action.option_strings:
                options.append(action.dest)
        out[name] = (sorted(options), sorted(sections))
    return out


def test_the_command_line_surface_is_what_it_was():
    assert surface() == SURFACE
