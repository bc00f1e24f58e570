"""A training recipe at issue 16's fixed shape, chosen on a development slice, reported on a held-out one.

    python benchmarks/recipe.py --recipe default --seed 0        # the cpu preset's flags as shipped
    python benchmarks/recipe.py --ablation default+softcap --seed 1   # one row of ABLATIONS
    python benchmarks/recipe.py --recipe default --cut test      # the reported figure: train on 90 %
    python benchmarks/recipe.py --recipe adamw --set model.qk_norm=true   # an ad-hoc change

The data: the State of the Union addresses in date order, cut by bytes. `--cut dev` (the default,
what choices are made on) trains on the first 80 % with a BPE trained there, and scores the 80-90 %
tenth (dev, the 1970s-1991 addresses) and, for the record only, the last tenth (test); `--cut test`
trains on the first 90 % (the BPE too) and scores the last tenth, 1992-2021 (the protocol's final
step: select on dev, then retrain on everything but the test). Both are prepared once under --root
and reused by every run. The shape: 4 layers x 256 wide (heads as the recipe sets them: 2 of 128 by
default), sequence 256, 32 sequences (8,192 tokens) per step, 156 steps, in the precision kiln picks
here. Bits-per-byte over every 256-token window of each scored slice, tokens/s and wall time are
printed and appended as one JSON line to ROOT/results.jsonl with the seed and the CPU it ran on.
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
from kiln.evaluate.verbs import evaluate_checkpoint
from kiln.presets import cpu
from kiln.rundir import RunDir
from kiln.shards.config import ShardConfig
from kiln.shards.writer import write_shards
from kiln.tokenizer import TokenizerConfig, tokenizer_hash, train_tokenizer
from kiln.train.checkpoint import latest_checkpoint

SHAPE = {
    "model.depth": "4",
    "train.seq_len": "256",
    "train.micro_batch_size": "32",
    "train.max_steps": "156",
    "train.size_from_budget": "false",
    "train.eval_every": "0",
    "eval.every": "0",
    "train.checkpoint_every": "0",
    "budget_s": "0",
}
PLAIN = {
    "train.optimizer": "adamw",
    "model.qk_norm": "false",
    "model.tie_embeddings": "true",
    "model.norm_params": "true",
    "adamw.embed_lr": "0",
    "train.warmup_steps": "30",
    "train.min_lr_ratio": "0.1",
    "adamw.weight_decay": "0.1",
    "adamw.beta1": "0.9",
    "model.head_width": "64",
}
"""kiln before issue 16: AdamW at the width's rate, warmup 30, WSD to 10 %, Llama's blocks (4 heads of 64)."""
RECIPES: dict[str, dict[str, str]] = {
    "default": {},  # the cpu preset's flags: kiln's recipe, exportable (presets.recipe_model / recipe_train)
    "adamw": PLAIN,
    "muon": {**PLAIN, "train.optimizer": "muon"},  # Muon for the blocks' matrices, nothing else changed
}
ABLATIONS: dict[str, tuple[str, dict[str, str]]] = {
    # one change at a time against the default recipe (docs/benchmarks.md's table), each run with 2+ seeds
    "default+softcap": ("default", {"model.logit_softcap": "15"}),  # issue 16's recipe had it; Qwen3 has none
    "default+value_embeds": ("default", {"model.value_embeds": "true"}),  # export refuses them
    "default-qk_norm": ("default", {"model.qk_norm": "false"}),
    "default-untied": ("default", {"model.tie_embeddings": "true", "adamw.embed_lr": "0"}),
    "default-norm_gains": ("default", {"model.norm_params": "false"}),  # issue 16's parameter-free norms
    "default+relu2": ("default", {"model.mlp": "relu2"}),
    "default+warmup_0": ("default", {"train.warmup_steps": "0"}),  # the recipe's own; the planner needs 2
    "default+normuon": ("default", {"muon.normalize": "true"}),
    "default+polar_express": ("default", {"muon.polar_express": "true"}),
    "default+muon_lr_0.03": ("default", {"muon.lr": "0.03"}),
    "default+decay_0.5": ("default", {"train.decay_fraction": "0.5"}),
    "default+heads_64": ("default", {"model.head_width": "64"}),  # 4 heads of 64 (every row before issue 27)
    "default-compile": ("default", {"train.compile": "false"}),  # the eager step: same bits, slower
}
CUTS = {"dev": 0.8, "test": 0.9}
"""Where the training text ends, by bytes in date order, for each cut."""


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


def cut_points(sizes: list[int], shares: tuple[float, ...]) -> list[int]:
    """The document index where each byte share of the corpus is first passed."""
    total, running, points = sum(sizes), 0, []
    for i, n in enumerate(sizes):
        running += n
        while len(points) < len(shares) and running > shares[len(points)] * total:
            points.append(i)
    return points + [len(sizes)] * (len(shares) - len(points))


def prepare(root: Path, cut: str, vocab: int = 8192) -> RunDir:
    """Tokenizer and shards of one cut, once: train, val (what training validates on: the scored
    slice) and, for the dev cut, test (scored for the record)."""
    data = RunDir(root / (f"data_{cut}" if vocab == 8192 else f"data_{cut}_v{vocab}"))
    if (data.split("val") / "manifest.json").exists():
        return data
    docs = list(read_documents(CorpusConfig()))  # in date order, 1790 first
    dev_start, test_start = cut_points([len(d.text.encode()) for d in docs], (0.8, 0.9))
    train_end = dev_start if cut == "dev" else test_start
    slices = {"train": range(0, train_end), "val": range(train_end, test_start if cut == "dev" else len(docs))}
    if cut == "dev":
        slices["test"] = range(test_start, len(docs))
    split = {docs[i].id: name for name, indices in slices.items() for i in indices}
    data.root.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer((d.text for d in docs[:train_end]), TokenizerConfig(vocab_size=vocab))
    tok.save(str(data.tokenizer))
    write_shards(
        iter(docs),
        tok,
        tokenizer_hash(data.tokenizer),
        {name: data.split(name) for name in slices},
        ShardConfig(),
        route=lambda doc: split[doc.id],
    )
    print(", ".join(f"{name}: {docs[r.start].id}..{docs[r.stop - 1].id}" for name, r in slices.items()))
    return data


def run_recipe(
    root: Path, name: str, overrides: dict[str, str], seed: int = 0, cut: str = "dev", vocab: int = 8192
) -> dict:
    data = prepare(root, cut, vocab)
    run = RunDir(root / f"{name}_s{seed}_{cut}")
    if run.root.exists():
        shutil.rmtree(run.root)
    run.root.mkdir(parents=True)
    for part in (data.tokenizer, data.shards):  # every recipe reads the same prepared data
        os.symlink(part.resolve(), run.root / part.name)
    vocab_size = {"model.vocab_size": str(vocab), "tokenizer.vocab_size": str(vocab)}  # the model fits the BPE
    cfg = apply_overrides(cpu(), {**SHAPE, **vocab_size, **RECIPES[name], **overrides, "train.seed": str(seed)})
    t0 = time.perf_counter()
    figures = stages.train(cfg, run)
    scored = {cut if cut == "test" else "dev": figures["val_bpb"]}
    if cut == "dev":  # the last tenth, scored for the record; choices are made on dev
        final = latest_checkpoint(run.checkpoints)
        assert final is not None, "training ends with a checkpoint"
        scored["test"] = evaluate_checkpoint(final, None, data.split("test"), None)["bpb"]
    result = {
        "recipe": name,
        "overrides": overrides,
        "settings": {**RECIPES[name], **overrides},  # everything it set on top of SHAPE and the cpu preset
        "seed": seed,
        "cut": cut,
        "vocab": vocab,
        **{f"{k}_bpb": v for k, v in scored.items()},
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
    parser.add_argument("--recipe", default="default", choices=list(RECIPES))
    parser.add_argument("--root", type=Path, default=Path("runs/recipe"), help="prepared data and the runs")
    parser.add_argument("--name", default="", help="run directory name (default: the recipe's)")
    parser.add_argument("--ablation", default="", choices=["", *ABLATIONS], help="run one row of ABLATIONS")
    parser.add_argument("--seed", type=int, default=0, help="train.seed: weight init and data order")
    parser.add_argument("--cut", choices=list(CUTS), default="dev", help="dev: choose on 80-90 %%; test: report")
    parser.add_argument("--vocab", type=int, default=8192, help="the BPE vocabulary trained on the cut")
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
    result = run_recipe(args.root, args.name or args.recipe, overrides, args.seed, args.cut, args.vocab)
    scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("dev_bpb", "test_bpb") if k in result)
    print(
        f"{result['recipe']} seed {args.seed} {overrides or ''}: {scores}, {result['tokens_per_s']:,.0f} "
        f"tokens/s, {result['wall_s']:.0f} s ({result['steps']} steps, {result['precision']}, {result['cpu']})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
