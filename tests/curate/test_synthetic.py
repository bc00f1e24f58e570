"""The benchmarks' generated web corpus: made once into a cache, and a cache folder holding anything
the generator did not write is refused, not deleted."""

import pytest

from kiln.curate.synthetic import cached_web_corpus
from kiln.errors import KilnError


def test_the_corpus_is_generated_once_and_a_foreign_folder_is_not_deleted(tmp_path):
    corpus, kinds = cached_web_corpus(tmp_path / "cache", 1)
    files = sorted(corpus.glob("web_*.jsonl"))
    assert files and sum(kinds.values()) == sum(len(f.read_text().splitlines()) for f in files)
    stamp = files[0].stat().st_mtime_ns
    assert cached_web_corpus(tmp_path / "cache", 1) == (corpus, kinds)
    assert files[0].stat().st_mtime_ns == stamp  # found, not made again

    mine = tmp_path / "mine" / "1MB"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(KilnError, match="not deleting"):
        cached_web_corpus(tmp_path / "mine", 1)
    assert (mine / "notes.txt").read_text() == "a user's file"
