"""`kiln sweep`: a grid of training runs on one run directory's shards, collected, plotted and fitted.

The grid is depths on the size dial x token budgets (x learning rates). Every point is a normal run
directory under RUN/sweep/ (its config, checkpoints, metrics, stages.json), reading the run's own
tokenizer and shards through links, so the data is tokenized once. A point whose stages.json holds
its training figures is never rerun; one that has a checkpoint but did not finish resumes from it.

Points run through submitit (Slurm on a cluster; its LocalExecutor on one machine, `--jobs` at a
time as a pool (a new point starts when one ends), each with cores / jobs threads; its DebugExecutor
in-process), or in this process without it
(`--executor inline`). Then: sweep.json / sweep.md (one row per point), loss_vs_compute.png with the
frontier (the lowest loss reached at each compute), and, with at least five points of more than one
size and token count, the fit of L(N, D) with bootstrap intervals and its prediction of the largest
run from the others (scaling/fit.py) in RUN/scaling/fit.json, which `kiln plan --run-dir RUN` uses.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.config import load_config, replace, save_config
from kiln.errors import KilnError
from kiln.rundir import RunDir
from kiln.staging import write_whole, write_whole_with

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig

MICRO_BATCH = 8
"""Sequences per step at every point (one batch size across the grid)."""


@dataclass(frozen=True)
class Point:
    depth: int
    tokens: int
    lr: float
    aspect: int = 0
    """Width per layer on the dial (dim = aspect x depth); 0 keeps the run's."""
    mup: int = 0
    """muP's base width (model.mup_base_dim); 0 is the standard parametrisation."""

    @property
    def name(self) -> str:
        extra = (f"_a{self.aspect}" if self.aspect else "") + (f"_mup{self.mup}" if self.mup else "")
        return f"d{self.depth}_t{self.tokens}_lr{self.lr:g}{extra}"


def grid(
    depths: list[int],
    tokens: list[float],
    lrs: list[float],
    aspects: tuple[int, ...] | list[int] = (0,),
    mups: tuple[int, ...] | list[int] = (0,),
) -> list[Point]:
    return [Point(d, int(t), lr, a, m) for d in depths for t in tokens for lr in lrs for a in aspects for m in mups]


def point_config(base: RunConfig, point: Point) -> RunConfig:
    """A point's config: the run's own with the point's depth, step count and learning rate, no time
    budget, validation and a checkpoint only at the end."""
    tc = base.train
    steps = max(2, math.ceil(point.tokens / (tc.seq_len * MICRO_BATCH)))
    return replace(
        base,
        preset="sweep",
        budget_s=0.0,
        eval=replace(base.eval, every=0),
        model=replace(
            base.model,
            depth=point.depth,
            dim=0,  # the dial sets width and layers
            num_layers=0,
            aspect=point.aspect or base.model.aspect,
            mup_base_dim=point.mup,
        ),
        train=replace(
            tc,
            max_steps=steps,
            micro_batch_size=MICRO_BATCH,
            lr=point.lr,
            warmup_steps=max(1, min(tc.warmup_steps, steps // 10)),
            time_budget_s=0.0,
            size_from_budget=False,
            eval_every=steps,
            checkpoint_every=steps,
            tensorboard=False,
        ),
    )


def prepare_point(run: RunDir, base: RunConfig, point: Point) -> RunDir:
    """RUN/sweep/<point>: its config, and links to the run's tokenizer and shards."""
    root = run.root / "sweep" / point.name
    for folder in (root.parent, root):  # a run from someone else: never trained into a folder elsewhere
        if folder.is_symlink():
            raise KilnError(f"{folder} is a link; kiln sweep trains its points in folders of its own: move it away")
    root.mkdir(parents=True, exist_ok=True)
    pr = RunDir(root)
    pr.check_ours()
    for target, link in ((run.tokenizer, pr.tokenizer), (run.shards, pr.shards)):
        want = os.path.relpath(target, root)
        if link.is_symlink() and os.readlink(link) == want:
            continue
        if link.exists() or link.is_symlink():
            raise KilnError(f"{link} is in the way of the sweep's link to {target}: move it away")
        link.symlink_to(want)
    if not pr.config.exists():
        save_config(point_config(base, point), pr.config)
    return pr


def finished(pr: RunDir) -> dict[str, Any] | None:
    if not pr.stages.exists():
        return None
    return json.loads(pr.stages.read_text()).get("train")


def run_point(root: str, threads: int = 0) -> dict[str, Any]:
    """Train one point to its end (resuming it if it has a checkpoint); its training figures. A
    module-level function, so submitit can run it in another process."""
    from kiln import stages
    from kiln.runconfig import RunConfig
    from kiln.train.checkpoint import latest_checkpoint

    pr = RunDir(Path(root))
    done = finished(pr)
    if done is not None:
        return done
    cfg = load_config(RunConfig, pr.config)
    if threads:
        cfg = replace(cfg, train=replace(cfg.train, threads=threads))
    return stages.train(cfg, pr, resume="auto" if latest_checkpoint(pr.checkpoints) else False)


def run_points(roots: list[str], executor: str, jobs: int, log_dir: Path) -> None:
    """Run the unfinished points: through submitit (`local`, `slurm`, `debug`, `auto`) `jobs` at a
    time, or one after another here (`inline`). `log_dir` is submitit's folder, made here and refused
    if it exists: submitit unpickles the jobs and results it finds there."""
    todo = [r for r in roots if finished(RunDir(Path(r))) is None]
    if not todo:
        return
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    if executor == "inline":
        for i, root in enumerate(todo, 1):
            print(f"sweep point {i}/{len(todo)}: {root}")
            run_point(root)
        return
    try:
        import submitit
    except ImportError:
        raise KilnError('kiln sweep --executor submits through submitit: pip install -e ".[scaling]"') from None
    kinds = {
        "local": submitit.LocalExecutor,
        "debug": submitit.DebugExecutor,
        "slurm": submitit.SlurmExecutor,
        "auto": submitit.AutoExecutor,
    }
    log_dir.mkdir(parents=True, mode=0o700)  # new, and this user's alone: submitit unpickles what is in it
    ex = kinds[executor](folder=str(log_dir))
    if executor == "local":
        ex.update_parameters(timeout_min=24 * 60)
    cluster = executor in ("slurm", "auto")
    limit = len(todo) if cluster else max(jobs, 1)  # the scheduler queues; here `jobs` run at once
    if executor == "debug":  # in this process, when asked for its result
        for root in todo:
            ex.submit(run_point, root).result()
        return
    waiting, done = list(todo), 0
    running: list[tuple[Any, str]] = []
    while waiting or running:
        while waiting and len(running) < limit:
            root = waiting.pop(0)
            running.append((ex.submit(run_point, root, 0 if cluster else threads), root))
            print(f"sweep: submitted {root} through submitit {executor} ({len(running)} running)")
        for job, root in [r for r in running if r[0].done()]:
            running.remove((job, root))
            done += 1
            try:
                job.result()
                print(f"sweep: {done}/{len(todo)} finished ({root})")
            except Exception as e:  # one failed point is reported, the others still count
                last = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                print(f"sweep point {root} failed: {last}")
        time.sleep(0.5)


def collect(run: RunDir, points: list[Point]) -> list[dict[str, Any]]:
    from kiln.runconfig import RunConfig

    rows = []
    for p in points:
        pr = RunDir(run.root / "sweep" / p.name)
        figures = finished(pr)
        if figures is None:
            continue
        rows.append(
            {
                "point": p.name,
                "depth": p.depth,
                "dim": load_config(RunConfig, pr.config).model.dim,
                "mup": p.mup,
                "lr": p.lr,
                "params": figures["params"],
                "params_non_embedding": figures["params_non_embedding"],
                "tokens": figures["train_tokens"],
                "flops": figures["train_flops"],
                "val_loss": figures["val_loss"],
                "val_bpb": figures.get("val_bpb"),
                "train_s": figures["train_s"],
            }
        )
    return rows


def frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no cheaper point beats: the lowest loss reached at or below each compute."""
    best, out = math.inf, []
    for r in sorted(rows, key=lambda r: r["flops"]):
        if r["val_loss"] < best:
            best = r["val_loss"]
            out.append(r)
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for depth in sorted({r["depth"] for r in rows}):
        mine = sorted((r for r in rows if r["depth"] == depth), key=lambda r: r["flops"])
        ax.plot([r["flops"] for r in mine], [r["val_loss"] for r in mine], "o-", label=f"depth {depth}")
    front = frontier(rows)
    ax.plot([r["flops"] for r in front], [r["val_loss"] for r in front], "k--", lw=1, label="frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_whole_with(path, lambda staged: fig.savefig(staged, dpi=120))
    plt.close(fig)
    return path


def plot_lr_transfer(rows: list[dict[str, Any]], path: Path) -> Path:
    """Validation loss against learning rate, a line per width, a panel per parametrisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["mup"] for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.8), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for dim in sorted({r["dim"] for r in rows}):
            mine = sorted((r for r in rows if r["mup"] == kind and r["dim"] == dim), key=lambda r: r["lr"])
            if mine:
                ax.plot([r["lr"] for r in mine], [r["val_loss"] for r in mine], "o-", label=f"width {dim}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(f"muP, base width {kind}" if kind else "standard parametrisation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation loss")
    fig.tight_layout()
    write_whole_with(path, lambda staged: fig.savefig(staged, dpi=120))
    plt.close(fig)
    return path


def best_lrs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best learning rate at each (parametrisation, width, tokens)."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["mup"], r["dim"], r["tokens"])
        if key not in best or r["val_loss"] < best[key]["val_loss"]:
            best[key] = r
    return [best[k] for k in sorted(best)]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| point | depth | parameters | tokens | FLOPs | lr | val loss | val bpb | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["depth"], r["tokens"], r["lr"])):
        bpb = f"{r['val_bpb']:.4f}" if r["val_bpb"] is not None else "-"
        lines.append(
            f"| {r['point']} | {r['depth']} | {r['params']:,} | {r['tokens']:,} | {r['flops']:.3g} | {r['lr']:g} | "
            f"{r['val_loss']:.4f} | {bpb} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def sweep(
    run: RunDir,
    points: list[Point],
    executor: str = "local",
    jobs: int = 1,
    fit: bool = True,
    base: RunConfig | None = None,
) -> dict[str, Any]:
    """Run the grid on `run`'s shards (they must exist), then collect, plot and fit."""
    from kiln.runconfig import RunConfig
    from kiln.scaling.fit import fit_with_checks

    if not (run.split("train") / "manifest.json").exists() or not run.tokenizer.exists():
        raise KilnError(f"{run.root} has no tokenizer and shards; run `kiln tokenize --run-dir {run.root}` first")
    if base is None:
        base = load_config(RunConfig, run.config) if run.config.exists() else None
    if base is None:
        raise KilnError(
            f"{run.root} has no config.json; the sweep takes the run's tokenizer and model settings from it"
        )
    t0 = time.perf_counter()
    roots = [str(prepare_point(run, base, p).root) for p in points]
    run_points(
        roots,
        executor,
        jobs,
        run.root / "sweep" / "submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}",
    )
    rows = collect(run, points)
    out = run.root / "scaling"
    out.mkdir(exist_ok=True)
    result: dict[str, Any] = {"points": rows, "missing": len(points) - len(rows), "wall_s": time.perf_counter() - t0}
    if rows:
        plot(rows, out / "loss_vs_compute.png")
    if len({r["lr"] for r in rows}) > 1 and len({r["dim"] for r in rows}) > 1:
        plot_lr_transfer(rows, out / "lr_transfer.png")
        result["best_lr"] = [{k: r[k] for k in ("mup", "dim", "tokens", "lr", "val_loss")} for r in best_lrs(rows)]
    fitted = None
    # the law is fitted to the best run at each (N, D): the frontier over learning rates
    best: dict[tuple, float] = {}
    for r in rows:
        key = (r["params"], r["tokens"])
        best[key] = min(best.get(key, math.inf), r["val_loss"])
    if fit and len(best) >= 5:
        try:
            fitted = fit_with_checks([(n, d, loss) for (n, d), loss in best.items()])
        except KilnError as e:
            result["fit_error"] = str(e)
    if fitted is not None:
        result["fit"] = fitted.as_dict()
        write_whole(out / "fit.json", json.dumps(fitted.as_dict(), indent=2) + "\n")
    write_whole(out / "sweep.json", json.dumps(result, indent=2) + "\n")
    write_whole(out / "sweep.md", report(result))
    return result


def report(result: dict[str, Any]) -> str:
    lines = ["# Sweep", "", table(result["points"])]
    if result.get("best_lr"):
        lines += ["Best learning rate per width:", "", "| parametrisation | width | tokens | best lr | val loss |"]
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        for r in result["best_lr"]:
            kind = f"muP (base {r['mup']})" if r["mup"] else "standard"
            lines.append(f"| {kind} | {r['dim']} | {r['tokens']:,} | {r['lr']:g} | {r['val_loss']:.4f} |")
        lines.append("")
    if result["missing"]:
        lines.append(f"{result['missing']} point(s) did not finish; rerun `kiln sweep` to finish them.\n")
    fit = result.get("fit")
    if fit:
        law, iv = fit["law"], fit["intervals"]
        lines.append("Fitted L(N, D) = E + A/N^alpha + B/D^beta (N parameters, D tokens; 95 % bootstrap intervals):\n")
        for k in ("E", "A", "B", "alpha", "beta"):
            lo, hi = iv.get(k, (float("nan"), float("nan")))
            lines.append(f"- {k} = {law[k]:.4g} ({lo:.4g} to {hi:.4g})")
        held = fit["held_out"]
        if held:
            lines.append(
                f"\nThe largest run ({held['params']:,.0f} parameters, {held['tokens']:,.0f} tokens) predicted by "
                f"the fit without it: {held['predicted']:.4f} against {held['loss']:.4f} measured "
                f"({held['relative_error']:+.2%})."
            )
    return "\n".join(lines) + "\n"
