"""The transfer demonstration's data, made offline and deterministically from the built-in corpus.

Every address in the built-in corpus carries its year, president and party. A hash of the year
holds out a quarter of the years (HELD_OUT) with their addresses; the sets are:

- instructions (SFT): for each year (one address, one president), "Who gave the State of the
  Union address of {year}?" -> the president, and "Which party ..." -> the party ("no party" for
  Washington's);
- preferences (DPO): the same prompts, the true answer chosen and a hard wrong one rejected (the
  answer of the nearest year whose answer differs), held out by the same addresses;
- passages (classification): up to 8 passages of ~600 characters spread through each address,
  labelled with the address's century (1700s, 1800s, 1900s, 2000s);
- held-out questions (evaluation): the held-out years' questions as multiple choice over every
  president (43) or every party, scored by the log-likelihood of the answer after the chat
  template, so a model fine-tuned any way (or not at all) is measured alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from kiln.corpus import CorpusConfig, read_documents
from kiln.evaluate.tasks import Item, Task
from kiln.finetune.sft import ROLES
from kiln.tokenizer import EOS

HELD_OUT = 0.25
"""Share of the addresses whose questions and passages are held out."""
PASSAGE_CHARS = 600
PASSAGES_PER_ADDRESS = 8


@dataclass(frozen=True)
class Address:
    id: str
    year: int
    president: str
    party: str
    text: str

    @property
    def held_out(self) -> bool:
        """By year, so a year's two addresses (Washington's of 1790) fall on the same side."""
        digest = hashlib.blake2b(f"transfer-demo:{self.year}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < HELD_OUT

    @property
    def century(self) -> str:
        return f"{self.year // 100}00s"


def question_years(years: list[Address]) -> list[Address]:
    """One address per year, leaving out years whose addresses two presidents gave (1961: Eisenhower
    and Kennedy), where "who gave the address of 1961" has no one answer."""
    by_year: dict[int, list[Address]] = {}
    for a in years:
        by_year.setdefault(a.year, []).append(a)
    return [group[0] for group in by_year.values() if len({a.president for a in group}) == 1]


def addresses() -> list[Address]:
    """The built-in corpus's addresses, in year order."""
    out = []
    for doc in read_documents(CorpusConfig(corpus="sotu")):
        m = doc.metadata
        party = "no party" if m["party"] == "none" else m["party"]
        out.append(Address(doc.id, int(m["year"]), m["president"], party, doc.text))
    return sorted(out, key=lambda a: (a.year, a.id))


QUESTIONS = {
    "president": "Who gave the State of the Union address of {year}?",
    "party": "Which party did the president who gave the {year} address belong to?",
}


def answer(a: Address, field: str) -> str:
    return a.president if field == "president" else a.party


def hard_negative(years: list[Address], i: int, field: str) -> str:
    """The answer of the nearest year (before or after) whose answer differs from year i's."""
    truth = answer(years[i], field)
    for step in range(1, len(years)):
        for j in (i - step, i + step):
            if 0 <= j < len(years) and answer(years[j], field) != truth:
                return answer(years[j], field)
    raise ValueError(f"every year has the answer {truth}")


def passages(text: str) -> list[str]:
    """Up to PASSAGES_PER_ADDRESS passages of whole sentences, ~PASSAGE_CHARS each, spread evenly."""
    sentences = [s.strip() + "." for s in text.replace("\n", " ").split(". ") if s.strip()]
    chunks, cur = [], ""
    for s in sentences:
        cur = f"{cur} {s}".strip()
        if len(cur) >= PASSAGE_CHARS:
            chunks.append(cur[: 2 * PASSAGE_CHARS])
            cur = ""
    if len(chunks) <= PASSAGES_PER_ADDRESS:
        return chunks
    stride = len(chunks) / PASSAGES_PER_ADDRESS
    return [chunks[int(k * stride)] for k in range(PASSAGES_PER_ADDRESS)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_sets(out: Path) -> dict[str, Path]:
    """Write the demonstration's files into `out`; returns their paths by name."""
    every = addresses()
    years = question_years(every)
    sft: dict[bool, list[dict]] = {False: [], True: []}
    prefs: dict[bool, list[dict]] = {False: [], True: []}
    labelled: dict[bool, list[dict]] = {False: [], True: []}
    for i, a in enumerate(years):
        for field, question in QUESTIONS.items():
            prompt = question.format(year=a.year)
            sft[a.held_out].append({"prompt": prompt, "response": answer(a, field)})
            prefs[a.held_out].append(
                {"prompt": prompt, "chosen": answer(a, field), "rejected": hard_negative(years, i, field)}
            )
    for a in every:
        labelled[a.held_out] += [{"text": p, "label": a.century} for p in passages(a.text)]
    return {
        "sft": write_jsonl(out / "instructions.jsonl", sft[False]),
        "sft_val": write_jsonl(out / "instructions_heldout.jsonl", sft[True]),
        "dpo": write_jsonl(out / "preferences.jsonl", prefs[False]),
        "dpo_val": write_jsonl(out / "preferences_heldout.jsonl", prefs[True]),
        "classify": write_jsonl(out / "passages.jsonl", labelled[False]),
        "classify_val": write_jsonl(out / "passages_heldout.jsonl", labelled[True]),
    }


def heldout_tasks() -> list[Task]:
    """The held-out years' questions as multiple-choice tasks, in the chat template's words."""
    every = addresses()
    years = question_years(every)
    tasks = []
    for field, question in QUESTIONS.items():
        names = sorted({answer(a, field) for a in every})
        items = []
        for a in years:
            if not a.held_out:
                continue
            context = f"{ROLES['user']}: {question.format(year=a.year)}\n{ROLES['assistant']}:"
            choices = tuple(f" {n}{EOS}" for n in names)
            items.append(Item((context,) * len(names), choices, names.index(answer(a, field))))
        tasks.append(Task(f"heldout_{field}", "choice", tuple(items), source="the built-in corpus's metadata"))
    return tasks
