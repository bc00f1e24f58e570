"""What a run leaves for a person: loss.png, samples.txt, summary.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln.config import format_config
from kiln.modality import active
from kiln.rundir import RunDir
from kiln.staging import write_whole, write_whole_with


def read_metrics(path: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """metrics.jsonl -> (training step records, validation records, task-score records). Events
    (skipped steps, spikes) are left out; a rollback drops the records of the steps it undid, which
    are then logged again; a line that is not a record (cut short by a crash) is passed over."""
    train: list[dict] = []
    val: list[dict] = []
    tasks: list[dict] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                continue
            if isinstance(rec.get("rollback_to"), int):
                for kept in (train, val, tasks):
                    kept[:] = [r for r in kept if r["step"] <= rec["rollback_to"]]
            elif "val_loss" in rec and "tokens" in rec:
                val.append(rec)
            elif isinstance(rec.get("tasks"), dict):
                tasks.append(rec)
            elif "loss" in rec and "lr" in rec and "tokens" in rec:
                train.append(rec)
    return train, val, tasks


def stage_seconds(figures: dict[str, Any]) -> float:
    """A stage's wall time as stages.json records it."""
    return figures.get("wall_s") or sum(v.get("wall_s", 0) for v in figures.values() if isinstance(v, dict))


def plot_loss(run: RunDir) -> Path:
    """Train and validation loss against tokens seen -> loss.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val, _ = read_metrics(run.metrics)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="validation", linewidth=2)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("kiln: loss against tokens")
    fig.tight_layout()
    write_whole_with(run.loss_plot, fig.savefig)
    plt.close(fig)
    return run.loss_plot


def plot_training(run: RunDir, mfu_per_token_s: float | None = None) -> Path:
    """Learning rate, gradient norm, throughput and MFU, and task scores against step -> training.png.
    With `mfu_per_token_s` (the summary's MFU over its tokens/s), MFU is each step's tokens/s against
    the run's closing ceiling, as the summary states it; else as logged, against the first short
    reading of the ceiling, which load can make low."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, _, tasks = read_metrics(run.metrics)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=110)
    steps = [r["step"] for r in train]
    panels = [
        (axes[0, 0], "lr", "learning rate"),
        (axes[0, 1], "grad_norm", "gradient norm (before clipping)"),
        (axes[1, 0], "tokens_per_s", "tokens/s"),
    ]
    for ax, key, title in panels:
        ax.plot(steps, [r.get(key) for r in train], linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if train:
        mfu = axes[1, 0].twinx()
        per_step = [r.get("tokens_per_s", 0) * mfu_per_token_s if mfu_per_token_s else r.get("mfu", 0) for r in train]
        mfu.plot(steps, [100 * m for m in per_step], color="tab:orange", linewidth=0.8, alpha=0.7)
        mfu.set_ylabel("MFU %", color="tab:orange")
        axes[1, 0].set_title("tokens/s (blue), MFU (orange)", fontsize=10)
    ax = axes[1, 1]
    names = sorted({name for r in tasks for name in r["tasks"]})  # the task set may change on a resume
    for name in names:
        scores = [r["tasks"].get(name, {}).get("centered", float("nan")) for r in tasks]
        ax.plot([r["step"] for r in tasks], scores, "o-", label=name)
    if tasks:
        ax.plot(
            [r["step"] for r in tasks],
            [float("nan") if r.get("tasks_core") is None else r["tasks_core"] for r in tasks],
            "k--",
            label="mean",
        )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.legend(fontsize=8)
    ax.set_title("task scores (centered accuracy; 0 = chance)", fontsize=10)
    ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    write_whole_with(run.training_plot, fig.savefig)
    plt.close(fig)
    return run.training_plot


def write_report(
    run: RunDir,
    summary: dict[str, Any],
    stages: dict[str, Any],
    samples: list[str],
    cfg: Any,
    evaluation: dict[str, Any] | None = None,
) -> None:
    """summary.json and report.md (figures, stage timings and energy, the plots, task scores, bias
    probes, samples, the resolved config)."""
    from kiln.evaluate.bias import bias_table
    from kiln.evaluate.tasks import results_table

    evaluation = evaluation or {}
    write_whole(run.summary, json.dumps(summary, indent=2) + "\n")
    write_whole(run.samples, "\n\n---\n\n".join(samples) + "\n")
    lines = [
        f"# kiln run: {run.root.name}",
        "",
        f"Preset `{summary['preset']}`, finished in {summary['wall_s']:.0f} s on {summary.get('device', '?')} "
        f"({summary.get('precision', '?')}).",
        *(
            [
                "",
                f"Resumed at step {summary['resumed_from_step']}: times, throughput, MFU and energy cover this "
                "session only.",
            ]
            if summary.get("resumed_from_step")
            else []
        ),
        "",
        "## Figures",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    for key, value in summary.items():
        if key == "energy":
            continue
        lines.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    energy = summary.get("energy", {}).get("stages", {})
    lines += [
        "",
        "## Stages",
        "",
        "| stage | seconds | energy (Wh) | g CO2e | how |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, figures in stages.items():
        e = energy.get(name)
        extra = f"{e['kwh'] * 1000:.3f} | {e['co2_g']:.3f} | {'; '.join(e['how'].values())}" if e else "- | - | -"
        lines.append(f"| {name} | {stage_seconds(figures):.1f} | {extra} |")
    if "eval" in energy:
        e = energy["eval"]
        lines.append(
            f"| eval + samples | {e['seconds']:.1f} | {e['kwh'] * 1000:.3f} | {e['co2_g']:.3f} | "
            f"{'; '.join(e['how'].values())} |"
        )
    card = run.curated / "data_card.md"
    if cfg.curate.enabled and card.exists():  # else the run read the raw corpus, whatever curated/ holds
        lines += [
            "",
            "## Data",
            "",
            f"Curated training data: see the [data card]({card.relative_to(run.root)}) "
            f"(sources, licences, what each step removed and why, languages, PII, duplicates, gaps).",
        ]
    for modality in active(cfg):
        other = modality.data_card(run) if modality.data_card else None
        if other is not None and other.exists():
            lines += [
                "",
                f"{modality.title}: see its [data card]({other.relative_to(run.root)}) (what was read, skipped with "
                "its reason, filtered, deduplicated, kept per split).",
            ]
    lines += ["", "## Loss", "", f"![loss]({run.loss_plot.name})", ""]
    if run.training_plot.exists():
        lines += ["## Training", "", f"![training]({run.training_plot.name})", ""]
    if evaluation.get("tasks"):
        lines += ["## Downstream tasks", "", results_table(evaluation["tasks"])]
    for modality in active(cfg):
        if evaluation.get(modality.name):
            lines += [f"## {modality.title}", "", modality.table(evaluation[modality.name])]
    if evaluation.get("bias"):
        lines += [
            "## Bias probes",
            "",
            "Share of paired sentences where the model prefers the stereotyped one (50 % = no preference; "
            "method and limits in docs/evaluation.md):",
            "",
            bias_table(evaluation["bias"]),
        ]
    if run.model_card.exists():
        lines += [f"Model card: [{run.model_card.name}]({run.model_card.name}).", ""]
    lines += ["## Samples", ""]
    for s in samples:
        lines += ["```text", s.strip(), "```", ""]
    lines += ["## Resolved config", "", "```text", format_config(cfg), "```", ""]
    write_whole(run.report, "\n".join(lines))
