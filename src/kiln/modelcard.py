"""The model card: model_card.json (for tools) and model_card.md (for people), in every run directory.

Assembled from what the run already wrote, never re-measured: the resolved config (architecture),
summary figures (parameters, tokens, compute), the data card (sources, licences, languages, the
knowledge cutoff and how it was derived, group-term counts), the energy records per stage, and the
evaluation (loss, bits-per-byte, downstream tasks, bias probes). Sections follow Mitchell et al.
(2019), "Model Cards for Model Reporting", as far as a pretraining run can fill them.
"""

from __future__ import annotations

import json
from typing import Any

from kiln.evaluate.bias import bias_table
from kiln.evaluate.tasks import results_table
from kiln.modality import active, modalities
from kiln.rundir import RunDir
from kiln.staging import write_whole

INTENDED_USE = (
    "A research artefact: a small language model {how} with kiln, for studying "
    "pretraining (data, scaling, objectives, evaluation) and as a starting point for fine-tuning. It is "
    "not instruction-tuned, has no safety training and is not meant for deployment or for decisions about people."
)
LIMITATIONS = (
    "It reproduces the language, views and errors of its training text (see the data card) and knows nothing "
    "after its knowledge cutoff. At this scale it writes fluent-looking but unreliable text: do not treat its "
    "output as fact. The bias probes measure likelihood preferences on a few dozen English template pairs per "
    "axis; they can reveal a skew but cannot show its absence, and they say nothing about languages other than English."
)


def build_model_card(run: RunDir, cfg: Any, summary: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """The card as a dict, from the run directory's records and `evaluation` (evaluate_tasks' result)."""
    data_card_path = run.curated / "data_card.json"
    # curated/ may hold an earlier run's set while this one trained on the raw corpus (curate.enabled off)
    curated = cfg.curate.enabled and data_card_path.exists()
    data = json.loads(data_card_path.read_text()) if curated else {}
    m = cfg.model
    energy = summary.get("energy", {})
    return {
        "model": {
            "family": m.family,
            "objective": summary.get("objective", m.family),
            "shape": summary.get("model"),
            "parameters": summary.get("params"),
            "parameters_non_embedding": summary.get("params_non_embedding"),
            "vocab_size": m.vocab_size,
            "context_length": cfg.train.seq_len,
            "precision": summary.get("precision"),
        },
        "training_data": {
            "sources": [
                {k: s.get(k) for k in ("name", "path", "licence", "url", "date", "documents_out", "bytes_out")}
                for s in data.get("sources", [])
            ]
            or [{"name": cfg.data.corpus or "(corpus)", "licence": None}],
            "languages": data.get("languages"),
            "date_range": data.get("date_range"),
            "knowledge_cutoff": data.get("knowledge_cutoff"),
            "knowledge_cutoff_derivation": data.get("knowledge_cutoff_derivation")
            or "unknown: the run was not curated, or its documents carry no dates",
            "dated_share": data.get("dated_share"),
            "group_terms": data.get("group_terms"),
            "known_gaps_and_biases": data.get("known_gaps_and_biases", []),
            "initialised_from": cfg.train.init_from or None,
            "tokens_trained": summary.get("train_tokens"),  # by this run (a base checkpoint's come before)
            "epochs": summary.get("epochs"),
        },
        "compute": {
            "covers": covers(summary),
            "device": summary.get("device"),
            "train_flops": summary.get("train_flops"),
            "device_hours": summary.get("device_hours"),
            "train_s": summary.get("train_s"),
            "wall_s": summary.get("wall_s"),
            "tokens_per_s": summary.get("tokens_per_s"),
            "mfu": summary.get("mfu"),
        },
        "energy": energy,
        "carbon_intensity_g_per_kwh": cfg.energy.carbon_intensity_g_per_kwh,
        "pue": cfg.energy.pue,
        "evaluation": {
            **{k: v for k, v in summary.items() if k.startswith("val_")},
            "tasks": evaluation.get("tasks", []),
            "tasks_core": evaluation.get("core"),
            "bias": evaluation.get("bias"),
            **{m.name: evaluation.get(m.name) for m in active(cfg)},
        },
        "intended_use": INTENDED_USE.format(
            how=f"trained on from the weights of {cfg.train.init_from} (see that run's card for its data)"
            if cfg.train.init_from
            else "pretrained from scratch"
        ),
        "limitations": LIMITATIONS,
    }


def covers(summary: dict[str, Any]) -> str:
    """What the time, throughput and energy figures cover: a resumed run measures its last session."""
    start, end = summary.get("resumed_from_step") or 0, summary.get("steps")
    if not start:
        return "the whole run"
    done = f"steps {start + 1}-{end}" if end is not None and end > start else "no training step"
    return f"this session only ({done}, resumed at step {start}): earlier sessions' time and energy are not counted"


def write_model_card(run: RunDir, cfg: Any, summary: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    card = build_model_card(run, cfg, summary, evaluation)
    write_whole(run.model_card.with_suffix(".json"), json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_whole(run.model_card, render(card))
    return card


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def render(card: dict[str, Any]) -> str:
    model, data, compute, ev = card["model"], card["training_data"], card["compute"], card["evaluation"]
    lines = ["# Model card", "", "## Model", "", "| | |", "| --- | --- |"]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in model.items()]
    lines += ["", "## Training data", ""]
    for s in data["sources"]:
        lines.append(f"- {s.get('name')}: licence {s.get('licence') or 'not stated'}, {_fmt(s.get('bytes_out'))} bytes")
    if data["languages"]:
        lines.append("- languages (documents kept): " + ", ".join(f"{k} {v:,}" for k, v in data["languages"].items()))
    lines.append(f"- tokens trained on: {_fmt(data['tokens_trained'])} ({_fmt(data['epochs'])} epochs)")
    if data.get("initialised_from"):
        lines.append(
            f"- initialised from {data['initialised_from']}: its own training data and tokens come before these"
        )
    cutoff = data["knowledge_cutoff"]
    lines += [
        "",
        f"**Knowledge cutoff: {cutoff if cutoff is not None else 'unknown'}**. Derived as "
        f"{data['knowledge_cutoff_derivation']}"
        + (f"; {data['dated_share']:.0%} of the training text is dated" if data.get("dated_share") else "")
        + ".",
    ]
    if data["known_gaps_and_biases"]:
        lines += ["", "Known gaps and biases of the data:"] + [f"- {g}" for g in data["known_gaps_and_biases"]]
    if data.get("group_terms"):
        axes = data["group_terms"]["axes"]
        lines += ["", "Mentions of social groups in the training text (data card for the lexicon):"]
        for axis, groups in axes.items():
            lines.append(f"- {axis}: " + ", ".join(f"{g} {n:,}" for g, n in groups.items()))
    lines += ["", "## Compute", "", "| | |", "| --- | --- |"]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in compute.items()]
    lines += ["", "## Energy and CO2", ""]
    if compute["covers"] != "the whole run":
        lines += [f"Covers {compute['covers']}.", ""]
    stages = card["energy"].get("stages", {})
    if stages:
        lines += ["| stage | seconds | kWh | g CO2e | how |", "| --- | ---: | ---: | ---: | --- |"]
        for name, r in stages.items():
            how = "; ".join(r["how"].values())
            lines.append(f"| {name} | {r['seconds']:.1f} | {r['kwh']:.6f} | {r['co2_g']:.3f} | {how} |")
        t = card["energy"]["total"]
        lines.append(
            f"| **total** | {t['seconds']:.1f} | {t['kwh']:.6f} | {t['co2_g']:.3f} | "
            f"{'measured' if t['measured'] else 'estimated (in part or whole)'} |"
        )
        lines += [
            "",
            f"CO2 at {card['carbon_intensity_g_per_kwh']:g} g/kWh (energy.carbon_intensity_g_per_kwh) and PUE "
            f"{card['pue']:g}.",
        ]
    else:
        lines.append("Not recorded (energy is metered by `kiln run`).")
    lines += ["", "## Evaluation", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in ev.items() if k.startswith("val_") and v is not None]
    if ev["tasks"]:
        lines += ["", results_table(ev["tasks"])]
    for modality in modalities().values():
        if ev.get(modality.name):
            lines += ["", modality.table(ev[modality.name])]
    if ev["bias"]:
        lines += ["", "Bias probes (share of pairs where the stereotyped sentence is preferred; 50 % = none):", ""]
        lines += [bias_table(ev["bias"])]
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Limitations", "", card["limitations"], ""]
    return "\n".join(lines)
