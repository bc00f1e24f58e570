"""The data card: what went into the training mix, what was removed and why, and what it lacks.

Written as data_card.json (for tools) and data_card.md (for people) beside the curated documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.corpus import BUILTIN, CorpusConfig

if TYPE_CHECKING:
    from kiln.curate.config import CurateConfig

BUILTIN_GAPS = [
    "single genre: formal political addresses by one office",
    "single country (United States) and English only",
    "233 speakers' turns by 46 presidents, all of them men",
    "historical language: most text predates 1950; spelling and views of their eras",
    "numbers-heavy passages (budgets, tables) are over-represented relative to general prose",
]


def _date_range(manifest: dict) -> list[int] | None:
    """Years from the documents' metadata, else from the sources' stated dates."""
    if manifest.get("years"):
        return manifest["years"]
    years = [
        int(y)
        for s in manifest["sources"]
        for y in str(s.get("date", "")).replace("/", "-").split("-")
        if y.strip().isdigit() and len(y.strip()) == 4
    ]
    return [min(years), max(years)] if years else None


CUTOFF_SHARE = 0.25
"""A year has meaningful coverage when its training bytes reach this share of the median dated year's."""


def knowledge_cutoff(year_bytes: dict[str, int], undated_bytes: int = 0) -> dict[str, Any] | None:
    """The knowledge cutoff from training bytes per document year: the latest year whose text is at
    least CUTOFF_SHARE of the median year's, so a few stray late documents do not move it; with the
    latest dated document, the share of text that is dated, and the rule in words."""
    years = {int(y): n for y, n in year_bytes.items() if n > 0}
    if not years:
        return None
    volumes = sorted(years.values())
    median = volumes[len(volumes) // 2]
    covered = [y for y, n in years.items() if n >= CUTOFF_SHARE * median]
    dated = sum(years.values())
    return {
        "year": max(covered),
        "latest_dated_document": max(years),
        "dated_share": dated / (dated + undated_bytes),
        "rule": (
            f"the latest year whose training text is at least {CUTOFF_SHARE:.0%} of the median year's "
            f"({median:,} bytes over {len(years)} dated years)"
        ),
    }


def _step(manifest: dict, name: str) -> dict:
    return next((s for s in manifest["steps"] if s["step"] == name), {"notes": {}, "dropped_by_reason": {}})


def build_card(manifest: dict, data: CorpusConfig, cfg: CurateConfig) -> dict[str, Any]:
    sources = manifest["sources"]
    notes = _step(manifest, "language")["notes"]
    identified = {k.split(":", 1)[1]: v for k, v in notes.items() if k.startswith("lang:")}
    # what the language step kept (a set curated before kept_lang was counted: what it identified)
    langs = {k.split(":", 1)[1]: v for k, v in notes.items() if k.startswith("kept_lang:")} or identified
    ran = {s["step"] for s in manifest["steps"]}
    pii = dict(_step(manifest, "pii")["notes"])
    years = _date_range(manifest)
    cutoff = knowledge_cutoff(manifest.get("train_year_bytes") or {}, manifest.get("train_undated_bytes", 0))
    gaps = list(BUILTIN_GAPS) if any(s["path"] == BUILTIN for s in sources) else []
    total = sum(langs.values()) or 1
    top_lang = max(langs, key=lambda lang: langs[lang]) if langs else None
    if not gaps and top_lang and langs[top_lang] / total > 0.95:
        gaps.append(f"single language: {langs[top_lang] / total:.0%} of documents are '{top_lang}'")
    if not years:
        gaps.append("no dates in the metadata or the sources: the knowledge cutoff is unknown")
    gaps += [
        f"licence of source '{s['name']}' not stated: set curate.licence or the source's licence"
        for s in sources
        if not s["licence"]
    ]
    if len(sources) == 1 and not gaps[len(BUILTIN_GAPS) :] and sources[0]["path"] != BUILTIN:
        gaps.append("one source: the mix has a single origin and genre mix of its own")
    return {
        "sources": sources,
        "documents": {"before": manifest["documents_in"], "after": manifest["documents_out"]},
        "bytes": {"before": manifest["bytes_in"], "after": manifest["bytes_out"]},
        "steps": manifest["steps"],
        "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
        "languages_identified": dict(sorted(identified.items(), key=lambda kv: -kv[1])),
        "pii_redacted": pii if "pii" in ran else None,
        "largest_duplicate_clusters": manifest["largest_duplicate_clusters"] if "dedup" in ran else None,
        "date_range": years,
        "knowledge_cutoff": cutoff["year"] if cutoff else (years[1] if years else None),
        "knowledge_cutoff_derivation": cutoff["rule"]
        if cutoff
        else ("the latest date the sources state (the documents carry no dates)" if years else None),
        "dated_share": cutoff["dated_share"] if cutoff else 0.0,
        "group_terms": manifest.get("group_terms"),
        "mix": manifest["mix"],
        "read_problems": manifest["read"],
        "known_gaps_and_biases": gaps,
    }


def write_data_card(manifest: dict, data: CorpusConfig, cfg: CurateConfig, at: Callable[[str], Path]) -> dict[str, Any]:
    """data_card.json and data_card.md, each written where `at(name)` says (the curation's staged files)."""
    card = build_card(manifest, data, cfg)
    at("data_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "# Data card",
        "",
        "## Sources",
        "",
        "| source | path | licence | origin | date | documents in / out | bytes in / out |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in card["sources"]:
        lines.append(
            f"| {s['name']} | {s['path']} | {s['licence'] or 'not stated'} | {s['url'] or '-'} | "
            f"{s['date'] or '-'} | {s['documents_in']:,} / {s['documents_out']:,} | "
            f"{s['bytes_in']:,} / {s['bytes_out']:,} |"
        )
    lines += [
        "",
        "| | before | after |",
        "| --- | --- | --- |",
        f"| documents | {card['documents']['before']:,} | {card['documents']['after']:,} |",
        f"| bytes | {card['bytes']['before']:,} | {card['bytes']['after']:,} |",
        "",
        "## Steps",
        "",
        "| step | in | kept | changed | dropped | reasons |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in card["steps"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped_by_reason"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {s['step']} | {s['in']:,} | {s['kept']:,} | {s['changed']:,} | {s['dropped']:,} | {reasons} |")
    lines += ["", "Samples of every dropped document class are in `dropped/<step>.jsonl`.", ""]
    lines += ["## Languages (documents the language step kept)", ""]
    lines += [f"- {lang}: {n:,}" for lang, n in card["languages"].items()] or ["- (not identified)"]
    if card["languages_identified"] != card["languages"]:
        found = ", ".join(f"{lang} {n:,}" for lang, n in card["languages_identified"].items())
        lines += ["", f"Identified before it filtered: {found}."]
    lines += ["", "## PII redacted", ""]
    pii, clusters = card["pii_redacted"], card["largest_duplicate_clusters"]
    if pii is None:
        lines += ["- not run (curate.pii off): the text may hold e-mail addresses, phone numbers and the like"]
    else:
        lines += [f"- {kind}: {n:,}" for kind, n in pii.items()] or ["- none found"]
    lines += ["", "## Duplicates", ""]
    if clusters is None:
        lines += ["- not removed (curate.dedup exact and near off)"]
    else:
        lines += [f"- {doc}: {n} removed as its duplicates" for doc, n in clusters] or ["- none"]
    lines += [
        "",
        "## Training mix",
        "",
        "| source | weight | epochs | target share | achieved share |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in card["mix"].items():
        lines.append(
            f"| {name} | {m['weight'] or '-'} | {m['epochs']:.3f} | {m['target_share']:.1%} | "
            f"{m['achieved_share']:.1%} |"
        )
    problems = card["read_problems"]
    lines += [
        "",
        "## Unreadable input",
        "",
        f"{problems['skipped']:,} input(s) skipped (all listed in "
        f"`{problems['log']}`); {problems['invalid_utf8_bytes']:,} invalid UTF-8 bytes replaced.",
    ]
    lines += [f"- {x}" for x in problems["skipped_examples"][:10]]
    lines += ["", "## Dates", ""]
    if card["date_range"]:
        lines.append(
            f"Documents from {card['date_range'][0]} to {card['date_range'][1]}. Knowledge cutoff: "
            f"**{card['knowledge_cutoff']}**, {card['knowledge_cutoff_derivation']}; "
            f"{card['dated_share']:.0%} of the training text is dated."
        )
    else:
        lines.append("No dates in the metadata; the knowledge cutoff is unknown.")
    lines += _group_term_lines(card.get("group_terms"))
    lines += ["", "## Known gaps and biases", ""] + [f"- {g}" for g in card["known_gaps_and_biases"]]
    at("data_card.md").write_text("\n".join(lines) + "\n")
    return card


def _group_term_lines(terms: dict | None) -> list[str]:
    """The data side of the bias report: mentions of each group per axis in the training split."""
    if not terms:
        return []
    from kiln.curate.groupterms import GROUP_TERMS

    lines = [
        "",
        "## Groups the training text mentions",
        "",
        f"Whole-word mentions in the training split ({terms['words']:,} words) of a fixed lexicon per group "
        "(kiln/curate/groupterms.py); a mention says nothing of how the group is described, and some terms "
        "(white, black, old, young) also count their other senses.",
        "",
        "| axis | group | mentions | per million words | share of the axis | lexicon |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for axis, groups in terms["axes"].items():
        total = sum(groups.values()) or 1
        for group, n in groups.items():
            lexicon = ", ".join(GROUP_TERMS.get(axis, {}).get(group, ()))
            lines.append(
                f"| {axis} | {group} | {n:,} | {n / max(terms['words'], 1) * 1e6:,.0f} | {n / total:.0%} | {lexicon} |"
            )
    return lines
