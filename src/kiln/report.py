"""What a run leaves for a person: loss.png, samples.txt, summary.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln.config import format_config
from kiln.rundir import RunDir


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl -> (training records, validation records)."""
    train: list[dict] = []
    val: list[dict] = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line:
                rec = json.loads(line)
                (val if "val_loss" in rec else train).append(rec)
    return train, val


def stage_seconds(figures: dict[str, Any]) -> float:
    """A stage's wall time as stages.json records it."""
    return figures.get("wall_s") or sum(v.get("wall_s", 0) for v in figures.values() if isinstance(v, dict))


def plot_loss(run: RunDir) -> Path:
    """Train and validation loss against tokens seen -> loss.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_metrics(run.metrics)
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
    fig.savefig(run.loss_plot)
    plt.close(fig)
    return run.loss_plot


def write_report(run: RunDir, summary: dict[str, Any], stages: dict[str, Any], samples: list[str], cfg: Any) -> None:
    """summary.json and report.md (figures, stage timings, the plot, samples, the resolved config)."""
    run.summary.write_text(json.dumps(summary, indent=2) + "\n")
    run.samples.write_text("\n\n---\n\n".join(samples) + "\n")
    lines = [
        f"# kiln run: {run.root.name}",
        "",
        f"Preset `{summary['preset']}`, finished in {summary['wall_s']:.0f} s on {summary.get('device', '?')} "
        f"({summary.get('precision', '?')}).",
        "",
        "## Figures",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    for key, value in summary.items():
        lines.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    lines += ["", "## Stages", "", "| stage | seconds |", "| --- | --- |"]
    for name, figures in stages.items():
        lines.append(f"| {name} | {stage_seconds(figures):.1f} |")
    card = run.curated / "data_card.md"
    if card.exists():
        lines += [
            "",
            "## Data",
            "",
            f"Curated training data: see the [data card]({card.relative_to(run.root)}) "
            f"(sources, licences, what each step removed and why, languages, PII, duplicates, gaps).",
        ]
    lines += ["", "## Loss", "", f"![loss]({run.loss_plot.name})", "", "## Samples", ""]
    for s in samples:
        lines += ["```text", s.strip(), "```", ""]
    lines += ["## Resolved config", "", "```text", format_config(cfg), "```", ""]
    run.report.write_text("\n".join(lines))
