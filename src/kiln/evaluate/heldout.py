"""kiln's own downstream tasks, made from any held-out text in any language (no extra package).

Both are built deterministically from the validation split's documents (never the training split),
so a user's own domain gets a downstream score that training cannot have seen:

- `kiln_cloze` (LAMBADA-style last-word prediction): a passage of whole sentences (at least
  CLOZE_MIN_WORDS words) whose final word is a content word (CLOZE_MIN_CHARS+ letters, not a
  common English function word) that already occurs earlier in the passage, outside its last
  sentence: LAMBADA kept passages where people needed the wider context to guess the word, and a
  word the passage introduced earlier is the cheap, language-independent proxy for that. The model
  must write the word greedily (acc, as lm-eval scores LAMBADA); bpb is its bits per byte.
- `kiln_choice` (continuation choice, HellaSwag/StoryCloze-style): CHOICE_SENTENCES sentences of a
  document, then its true next sentence against CHOICE_DISTRACTORS sentences drawn from other
  held-out documents, of similar length so that length alone does not give the answer away.
  Scored per character (acc_norm); chance 1/(1 + distractors).

The same documents and seed give the same items, in the same order, on every machine.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Iterable

from kiln.evaluate.tasks import Item, Task

CLOZE_MIN_WORDS = 40
CLOZE_MAX_WORDS = 160
CLOZE_MIN_CHARS = 4
CHOICE_SENTENCES = 3
CHOICE_DISTRACTORS = 3
SEED = 20240901
"""Seeds the order of documents and the distractors; fixed, so items never change between runs."""

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
FUNCTION_WORDS = frozenset(
    "about above after again against also because been before being below between both could does doing down "
    "during each either from further have having here hers herself himself into itself just more most much must "
    "neither only other ought ours ourselves over same shall should some such than that their theirs them "
    "themselves then there these they this those through under until upon very were what when where which while "
    "whom whose will with within without would your yours yourself yourselves".split()
)


def sentences(text: str) -> list[str]:
    """A document's sentences: split after . ! ? (and their CJK forms) followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _shuffled(docs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    ordered = sorted(docs)
    random.Random(SEED).shuffle(ordered)
    return ordered


def cloze_task(docs: Iterable[tuple[str, str]], limit: int = 500) -> Task:
    """`kiln_cloze` from (document id, text) pairs of the validation split: non-overlapping passages
    from each document, taken round-robin over the documents (every document's first passage, then
    every second one...), at most `limit` items (0: all)."""
    per_doc = [_cloze_items(sentences(text)) for _, text in _shuffled(docs)]
    items = _round_robin(per_doc, limit)
    return Task(
        "kiln_cloze",
        "cloze",
        tuple(items),
        "acc",
        "kiln: last word of held-out passages (the validation split, or eval --text)",
    )


def _round_robin(per_doc: list[list[Item]], limit: int) -> list[Item]:
    items = [doc[k] for k in range(max((len(d) for d in per_doc), default=0)) for doc in per_doc if k < len(doc)]
    return items[:limit] if limit else items


def _cloze_items(sents: list[str]) -> list[Item]:
    """Passages of whole sentences that end on a usable word, each starting after the last one ended."""
    items: list[Item] = []
    first = 0
    for end in range(len(sents)):
        passage = sents[first : end + 1]
        words = sum(len(_WORD.findall(s)) for s in passage)
        while words > CLOZE_MAX_WORDS and len(passage) > 2:
            words -= len(_WORD.findall(passage[0]))
            passage = passage[1:]
        if words < CLOZE_MIN_WORDS or len(passage) < 2:
            continue
        last = passage[-1]
        found = list(_WORD.finditer(last))
        if not found:
            continue
        target = found[-1]
        word = target.group()
        if len(word) < CLOZE_MIN_CHARS or not word.isalpha() or word.lower() in FUNCTION_WORDS:
            continue
        earlier = " ".join(passage[:-1])
        if word.lower() not in {w.lower() for w in _WORD.findall(earlier)}:
            continue
        head = last[: target.start()]
        if not head.endswith(" "):
            continue  # the word must follow a space, so the continuation is " word"
        items.append(Item(((earlier + " " + head[:-1]).strip(),), (" " + word,)))
        first = end + 1
    return items


def choice_task(docs: Iterable[tuple[str, str]], limit: int = 500) -> Task:
    """`kiln_choice` from (document id, text) pairs of the validation split: each document's runs of
    CHOICE_SENTENCES + 1 sentences, round-robin over documents, distractors from the other documents;
    at most `limit` items (0: all)."""
    ordered = _shuffled(docs)
    split = [(doc_id, sentences(text)) for doc_id, text in ordered]
    pool = sorted((len(s), doc_id, s) for doc_id, sents in split for s in sents if len(_WORD.findall(s)) >= 3)
    lengths = [n for n, _, _ in pool]
    rng = random.Random(SEED + 1)
    per_doc: list[list[Item]] = []
    for doc_id, sents in split:
        per_doc.append([])
        for start in range(0, len(sents) - CHOICE_SENTENCES, CHOICE_SENTENCES + 1):
            item = _choice_item(sents[start : start + CHOICE_SENTENCES + 1], doc_id, pool, lengths, rng)
            if item is not None:
                per_doc[-1].append(item)
    items = _round_robin(per_doc, limit)
    return Task(
        "kiln_choice",
        "choice",
        tuple(items),
        "acc_norm",
        f"kiln: true next sentence against {CHOICE_DISTRACTORS} from other held-out documents "
        "(the validation split, or eval --text)",
    )


def _choice_item(
    window: list[str], doc_id: str, pool: list[tuple[int, str, str]], lengths: list[int], rng: random.Random
) -> Item | None:
    context, true = " ".join(window[:-1]), window[-1]
    # sentences of other documents between half and twice the true one's length
    lo, hi = bisect.bisect_left(lengths, len(true) / 2), bisect.bisect_right(lengths, 2 * len(true))
    picked: list[str] = []
    for _ in range(50 * CHOICE_DISTRACTORS):
        if len(picked) == CHOICE_DISTRACTORS or hi <= lo:
            break
        _, other, s = pool[rng.randrange(lo, hi)]
        if other != doc_id and s != true and s not in picked:
            picked.append(s)
    if len(picked) < CHOICE_DISTRACTORS:
        return None
    choices = [true, *picked]
    order = list(range(len(choices)))
    rng.shuffle(order)
    conts = tuple(" " + choices[i] for i in order)
    return Item((context,) * len(conts), conts, order.index(0))
