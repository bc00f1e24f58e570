"""A generated web-like corpus for curation benchmarks and scale tests, made offline in seconds.

English prose is sampled from the word frequencies of the built-in corpus (so language ID and the
stop-word rules see real English), mixed with what a crawl holds: exact and near duplicates,
navigation/cookie boilerplate, symbol junk, other languages, and PII. The mix is fixed by `seed`,
so the same call always writes the same bytes.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import TextIO

import numpy as np

from kiln.corpus import CorpusConfig, read_documents
from kiln.errors import KilnError

OTHER_LANGUAGES = {
    "fr": "le la les de des du et un une est dans pour que qui sur avec pas plus par nous vous ils elle "
    "sont gouvernement année travail ville pays monde aujourd'hui toujours encore très bien",
    "de": "der die das und ist nicht ein eine zu den mit von auf für sich dem des auch wir sie es "
    "haben werden Regierung Jahr Arbeit Stadt Land heute immer noch sehr gut über",
    "es": "el la los las de del y en un una es por para con que se no su al lo como más pero sus "
    "gobierno año trabajo ciudad país mundo hoy siempre todavía muy bien sobre",
}
BOILERPLATE = [
    "We use cookies to improve your experience.",
    "Please enable JavaScript to continue.",
    "All rights reserved.",
    "Privacy policy | Terms of use",
    "Subscribe to our newsletter",
    "Home | About | Contact",
    "Log in to comment",
]
KINDS = ("prose", "exact_dup", "near_dup", "boilerplate", "other_language", "junk", "pii")
KIND_WEIGHTS = (0.70, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03)


class _Vocabulary:
    def __init__(self, rng: np.random.Generator) -> None:
        counts: Counter = Counter()
        for doc in read_documents(CorpusConfig(max_documents=60)):
            counts.update(re.findall(r"[A-Za-z']+", doc.text.lower()))
        words, freq = zip(*counts.most_common(20_000))
        self.words = np.array(words, dtype=object)
        self.cdf = np.cumsum(np.array(freq, dtype=np.float64) / sum(freq))
        self.rng = rng

    def sentence(self, n: int) -> str:
        return self.prose(n, paragraph=False)

    def prose(self, num_words: int, paragraph: bool = True) -> str:
        """Sentences of 8-24 words sampled by frequency, 3-7 sentences to a paragraph."""
        words = self.words[np.minimum(np.searchsorted(self.cdf, self.rng.random(num_words)), len(self.words) - 1)]
        lengths = self.rng.integers(8, 25, size=num_words // 8 + 1)
        ends = np.cumsum(lengths)
        ends = ends[ends < num_words].tolist() + [num_words]
        sentences, start = [], 0
        for end in ends:
            sentences.append(" ".join(words[start:end]).capitalize() + ".")
            start = end
        if not paragraph:
            return " ".join(sentences)
        breaks = np.cumsum(self.rng.integers(3, 8, size=len(sentences) // 3 + 1))
        breaks = [0] + breaks[breaks < len(sentences)].tolist() + [len(sentences)]
        return "\n\n".join(" ".join(sentences[a:b]) for a, b in zip(breaks, breaks[1:]))


def web_documents(num_bytes: int, seed: int = 0):
    """Yield (kind, row) pairs, row = {'id', 'text', 'url'}, until about `num_bytes` of text."""
    rng = np.random.default_rng(seed)
    vocab = _Vocabulary(rng)
    recent: list[str] = []
    made = i = 0
    while made < num_bytes:
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
        if kind in ("exact_dup", "near_dup") and not recent:
            kind = "prose"
        if kind == "prose":
            text = vocab.prose(int(rng.integers(150, 1500)))
            recent = (recent + [text])[-200:]
        elif kind == "exact_dup":
            text = recent[int(rng.integers(len(recent)))]
        elif kind == "near_dup":
            words = recent[int(rng.integers(len(recent)))].split(" ")
            for j in rng.integers(0, len(words), size=max(1, len(words) // 100)):
                words[j] = str(vocab.words[int(rng.integers(50, 2000))])
            text = " ".join(words)
        elif kind == "boilerplate":
            lines = [BOILERPLATE[int(j)] for j in rng.integers(0, len(BOILERPLATE), size=12)]
            text = "\n".join(lines + [vocab.sentence(12)])
        elif kind == "other_language":
            lang = list(OTHER_LANGUAGES)[int(rng.integers(3))]
            choices = np.array(OTHER_LANGUAGES[lang].split(), dtype=object)
            text = " ".join(
                " ".join(choices[rng.integers(0, len(choices), size=14)]).capitalize() + "."
                for _ in range(int(rng.integers(10, 60)))
            )
        elif kind == "junk":
            text = " ".join(["### $$$ @@@ ||| >>>"] * int(rng.integers(10, 200)))
        else:
            n = int(rng.integers(1000, 9999))
            text = (
                vocab.prose(int(rng.integers(150, 600))) + f"\n\nContact jane.doe{n}@example.org or "
                f"call +1 (202) 555-{n:04d}. Server 10.0.{n % 256}.{n // 256 % 256}; "
                "card 4111 1111 1111 1111."
            )
        made += len(text.encode("utf-8"))
        yield kind, {"id": f"web-{i:08d}", "text": text, "url": f"https://example.org/{kind}/{i}"}
        i += 1


def write_web_corpus(out_dir: Path, num_bytes: int, seed: int = 0, docs_per_file: int = 5000) -> dict[str, int]:
    """Write JSONL files of about `num_bytes` of web-like text (each row names its `kind`, which the
    benchmark uses to score the steps); returns documents per kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds: Counter = Counter()
    f: TextIO | None = None
    n = 0
    for kind, row in web_documents(num_bytes, seed):
        if n % docs_per_file == 0:
            if f:
                f.close()
            f = (out_dir / f"web_{n // docs_per_file:05d}.jsonl").open("w", encoding="utf-8")
        assert f is not None
        f.write(json.dumps({**row, "kind": kind}, ensure_ascii=False) + "\n")
        kinds[kind] += 1
        n += 1
    if f:
        f.close()
    return dict(kinds)


def cached_web_corpus(cache: Path, megabytes: int) -> tuple[Path, dict[str, int]]:
    """`write_web_corpus` of `megabytes` MB under `cache`, generated once: (its folder, documents per
    kind). A marker file beside the folder (not in it: it would be read as input) records the kinds
    when generation finished; a folder without one is a partial generation and is made again."""
    corpus = cache / f"{megabytes}MB"
    done = cache / f"{megabytes}MB.json"
    if not done.exists():
        if corpus.exists():  # a partial generation: only ever its own files
            strays = [f.name for f in corpus.iterdir() if not re.fullmatch(r"web_\d{5}\.jsonl", f.name)]
            if strays:
                raise KilnError(f"{corpus} holds files the generator did not write ({strays[0]}): not deleting it")
            shutil.rmtree(corpus)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(write_web_corpus(corpus, megabytes * 1_000_000)))
    return corpus, json.loads(done.read_text())
