"""The data card's knowledge cutoff, derived from dated documents, and its group-term counts."""

import json
import random

from kiln.corpus import CorpusConfig
from kiln.curate.config import CurateConfig
from kiln.curate.datacard import knowledge_cutoff
from kiln.curate.pipeline import curate
from tests.conftest import make_text


def test_the_cutoff_is_the_latest_year_with_meaningful_coverage():
    years = {"1990": 1000, "1991": 1200, "1992": 900, "1993": 1100, "2020": 40}  # one stray late document
    cut = knowledge_cutoff(years, undated_bytes=4240)
    assert cut["year"] == 1993 and cut["latest_dated_document"] == 2020
    assert cut["dated_share"] == 0.5 and "median" in cut["rule"]
    assert knowledge_cutoff({}) is None


def test_curation_derives_the_cutoff_from_document_dates_and_counts_group_terms(tmp_path):
    rng = random.Random(0)
    corpus = tmp_path / "dated.jsonl"
    with corpus.open("w") as f:
        for i in range(60):
            year = 2001 + i % 10 if i < 59 else 2024  # ten well-covered years, then one late document
            text = make_text(rng, 20) + " She and her mother met the men."
            f.write(json.dumps({"id": f"d{i}", "text": text, "year": year}) + "\n")
    curate(CorpusConfig(corpus=str(corpus), max_documents=0), CurateConfig(), tmp_path / "curated")
    card = json.loads((tmp_path / "curated" / "data_card.json").read_text())
    assert card["date_range"][1] == 2024 and card["knowledge_cutoff"] == 2010
    assert "median" in card["knowledge_cutoff_derivation"] and card["dated_share"] == 1.0
    gender = card["group_terms"]["axes"]["gender"]
    assert gender["female"] == 3 * gender["male"] > 0  # "She", "her", "mother" against "men", per train document
    md = (tmp_path / "curated" / "data_card.md").read_text()
    assert "Knowledge cutoff: **2010**" in md and "## Groups the training text mentions" in md
