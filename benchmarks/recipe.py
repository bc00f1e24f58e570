"""A training recipe at issue 16's fixed shape, scored on the newest tenth of the built-in corpus.

    python benchmarks/recipe.py --recipe adamw            # kiln's AdamW recipe before Muon
    python benchmarks/recipe.py --recipe muon             # one named recipe (see RECIPES)
    python benchmarks/recipe.py --recipe muon --set model.qk_norm=true   # an ablation: one change
    python benchmarks/recipe.py --ablation nl-qk_norm                     # one row of ABLATIONS

The data: the State of the Union addresses in date order, cut by bytes into the first 90 % (training)
and the last 10 % (1.08 MB, the newest speeches, scored), an 8,192-token BPE trained on the first
part (prepared once under --root, reused by every recipe). The shape: 4 layers x 256 wide, 4 heads,
sequence 256, 32 sequences (8,192 tokens) per step, 156 steps, in the precision kiln picks here.
Prints the scored tenth's bits-per-byte (every window of 256 tokens), tokens/s and wall time, and
appends them as one JSON line to ROOT/results.jsonl with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from kiln import stages
from kiln.config import apply_overrides
from kiln.corpus import CorpusConfig, read_documents
from kiln.presets import cpu
from kiln.rundir import RunDir
from kiln.shards.config import ShardConfig
from kiln.shards.writer import write_shards
from kiln.tokenizer import TokenizerConfig, tokenizer_hash, train_tokenizer

SHAPE = {
    "model.depth": "4",
    "model.num_heads": "4",
    "train.seq_len": "256",
    "train.micro_batch_size": "32",
    "train.max_steps": "156",
    "train.size_from_budget": "false",
    "train.eval_every": "0",
    "train.eval_tasks": "",
    "train.checkpoint_every": "0",
    "budget_s": "0",
}
RECIPES: dict[str, dict[str, str]] = {
    # kiln before issue 16: AdamW at the width's derived rate, warmup 30, warmup-stable-decay (last 30 %)
    "adamw": {"train.warmup_steps": "30"},
    # Muon for the blocks' matrices, AdamW for the rest
    "muon": {"train.optimizer": "muon", "train.warmup_steps": "30"},
    # Muon plus nanochat's architecture and schedule choices, each a kiln option (docs/benchmarks.md)
    "nanochat_like": {
        "train.optimizer": "muon",
        "model.qk_norm": "true",
        "model.mlp": "relu2",
        "model.tie_embeddings": "false",
        "train.embed_lr": "0.1",
        "model.logit_softcap": "15",
        "model.zero_init_out": "true",
        "model.norm_params": "false",
        "train.warmup_steps": "0",
        "train.decay_fraction": "0.3",
        "train.min_lr_ratio": "0",
        "train.weight_decay": "0",
        "train.beta1": "0.8",
    },
}
# nanochat_like with kiln's SwiGLU MLP in place of ReLU squared; kiln_v1: that, with the output
# projections initialised as usual, not at zero; kiln's recipe: kiln_v1 with value embeddings
# (the ablations below)
RECIPES["nl_swiglu"] = {**RECIPES["nanochat_like"], "model.mlp": "swiglu"}
RECIPES["kiln_v1"] = {**RECIPES["nl_swiglu"], "model.zero_init_out": "false"}
RECIPES["kiln"] = {**RECIPES["kiln_v1"], "model.value_embeds": "true"}
# nanochat's norm after the embedding, residual / embedding mixing scalars and Muon momentum warm-up
SKIPS = {
    "model.embed_norm": "true",
    "model.residual_scalars": "true",
    "train.scalar_lr": "0.02",
    "train.muon_momentum_warmup": "50",
}
ABLATIONS: dict[str, tuple[str, dict[str, str]]] = {
    # one change at a time against nanochat_like (nl) or kiln's recipe: docs/benchmarks.md's table
    "nl-qk_norm": ("nanochat_like", {"model.qk_norm": "false"}),
    "nl-relu2": ("nanochat_like", {"model.mlp": "swiglu"}),
    "nl+warmup_30": ("nanochat_like", {"train.warmup_steps": "30"}),
    "nl+decay_0.5": ("nanochat_like", {"train.decay_fraction": "0.5"}),
    "nl+muon_wd_0.1": ("nanochat_like", {"train.muon_weight_decay": "0.1"}),
    "nl+lr_0.008": ("nanochat_like", {"train.lr": "0.008"}),  # the head's (and AdamW rest's) rate x2
    "nl+zero_init_head": ("nanochat_like", {"model.zero_init_head": "true"}),
    "nl+embed_norm+residual_scalars+momentum_warmup": ("nanochat_like", SKIPS),
    "nl_swiglu-untied": ("nl_swiglu", {"model.tie_embeddings": "true"}),
    "nl_swiglu-softcap": ("nl_swiglu", {"model.logit_softcap": "0"}),
    "nl_swiglu-zero_init_out": ("nl_swiglu", {"model.zero_init_out": "false"}),  # = kiln_v1
    "nl_swiglu-param_free_norms": ("nl_swiglu", {"model.norm_params": "true"}),
    "kiln_v1+embed_lr_0.2": ("kiln_v1", {"train.embed_lr": "0.2"}),
    "kiln_v1+grad_clip_0": ("kiln_v1", {"train.grad_clip": "0"}),  # no clipping, as nanochat
    "kiln_v1+value_embeds": ("kiln_v1", {"model.value_embeds": "true"}),  # = kiln
    "kiln+normuon": ("kiln", {"train.muon_normalize": "true"}),
    "kiln+polar_express": ("kiln", {"train.muon_polar_express": "true"}),
    # the same steps compiled (measured on the embed-norm row above): its compile time counts
    "nl+embed_norm+...+compile": ("nanochat_like", {**SKIPS, "train.compile": "true"}),
}
CUT = 0.9


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
                wanted = [f for f in flags.split()[2:] if f.startswith(("avx512", "amx", "avx2"))]
                return f"{line.split(':', 1)[1].strip()} ({', '.join(sorted(set(wanted)))})"
    except (OSError, StopIteration):
        pass
    return platform.processor() or platform.machine()


def prepare(root: Path) -> RunDir:
    """Tokenizer and shards of the date-ordered 90 / 10 cut, once."""
    data = RunDir(root / "data")
    if (data.split("val") / "manifest.json").exists():
        return data
    docs = list(read_documents(CorpusConfig()))  # in date order, 1790 first
    sizes = [len(d.text.encode()) for d in docs]
    total, running, cut = sum(sizes), 0, len(docs)
    for i, n in enumerate(sizes):
        running += n
        if running > CUT * total:
            cut = i
            break
    split = {d.id: ("train" if i < cut else "val") for i, d in enumerate(docs)}
    data.root.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer((d.text for d in docs[:cut]), TokenizerConfig(vocab_size=8192))
    tok.save(str(data.tokenizer))
    write_shards(
        iter(docs),
        tok,
        tokenizer_hash(data.tokenizer),
        {"train": data.split("train"), "val": data.split("val")},
        ShardConfig(),
        route=lambda doc: split[doc.id],
    )
    print(f"prepared: {cut} training documents (to {docs[cut - 1].id}), {len(docs) - cut} scored (from {docs[cut].id})")
    return data


def run_recipe(root: Path, name: str, overrides: dict[str, str]) -> dict:
    data = prepare(root)
    run = RunDir(root / name)
    if run.root.exists():
        shutil.rmtree(run.root)
    run.root.mkdir(parents=True)
    for part in (data.tokenizer, data.shards):  # every recipe reads the same prepared data
        os.symlink(part.resolve(), run.root / part.name)
    cfg = apply_overrides(cpu(), {**SHAPE, **RECIPES[name], **overrides})
    t0 = time.perf_counter()
    figures = stages.train(cfg, run)
    result = {
        "recipe": name,
        "overrides": overrides,
        "settings": {**RECIPES[name], **overrides},  # everything it set on top of SHAPE and the cpu preset
        "bpb": figures["val_bpb"],
        "loss": figures["val_loss"],
        "tokens_per_s": figures["tokens_per_s"],
        "train_s": figures["train_s"],
        "wall_s": time.perf_counter() - t0,
        "steps": figures["steps"],
        "precision": figures["precision"],
        "params": figures["params"],
        "cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d"),
    }
    with (root / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="muon", choices=list(RECIPES))
    parser.add_argument("--root", type=Path, default=Path("runs/recipe"), help="prepared data and the runs")
    parser.add_argument("--name", default="", help="run directory name (default: the recipe's)")
    parser.add_argument("--ablation", default="", choices=["", *ABLATIONS], help="run one row of ABLATIONS")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override key=value (repeatable)"
    )
    args = parser.parse_args()
    if bad := [o for o in args.overrides if "=" not in o]:
        parser.error(f"--set takes key=value, got {bad[0]!r}")
    overrides = dict(o.split("=", 1) for o in args.overrides)
    if args.ablation:
        args.recipe, fixed = ABLATIONS[args.ablation]
        args.name, overrides = args.ablation, {**fixed, **overrides}
    if args.name:  # the recipe's settings under the run's own name
        RECIPES[args.name] = RECIPES[args.recipe]
    result = run_recipe(args.root, args.name or args.recipe, overrides)
    print(
        f"{result['recipe']} {overrides or ''}: last-10 % bpb {result['bpb']:.4f}, {result['tokens_per_s']:,.0f} "
        f"tokens/s, {result['wall_s']:.0f} s ({result['steps']} steps, {result['precision']}, {result['cpu']})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
