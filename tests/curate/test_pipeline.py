"""Curation on a synthetic corpus with planted duplicates, PII, junk, boilerplate and other languages."""

import json
import random

import pytest

from kiln.corpus import CorpusConfig
from kiln.curate.config import CurateConfig, DedupConfig, QualityConfig
from kiln.curate.curated import CuratedSet
from kiln.curate.dedup import MinHasher, NearDuplicateIndex
from kiln.curate.pipeline import curate
from kiln.curate.quality import check_quality
from kiln.errors import KilnError
from tests.conftest import make_text

FRENCH = (
    "Le gouvernement a présenté aujourd'hui son budget pour l'année prochaine. Les députés ont discuté "
    "longuement des impôts, des écoles et des hôpitaux, et la séance a duré toute la nuit. "
) * 6
GERMAN = (
    "Die Regierung hat heute den Haushalt für das kommende Jahr vorgestellt. Die Abgeordneten haben "
    "lange über Steuern, Schulen und Krankenhäuser gesprochen, und die Sitzung dauerte die ganze Nacht. "
) * 6


def _edit(text: str, rng: random.Random, num_edits: int) -> str:
    words = text.split()
    for _ in range(num_edits):
        words[rng.randrange(len(words))] = rng.choice(["nation", "people", "law", "trade"])
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = random.Random(5)
    root = tmp_path_factory.mktemp("planted")
    originals = [make_text(rng, 40) for _ in range(60)]
    files = {f"orig_{i:03d}": t for i, t in enumerate(originals)}
    files.update({f"x_exact_{i:03d}": originals[i] for i in range(10)})
    files.update({f"x_exact_ws_{i:03d}": "  " + originals[i].upper().replace(" ", "  ") for i in range(10, 15)})
    files.update({f"x_near_{i:03d}": _edit(originals[i], rng, 3) for i in range(20, 40)})
    files["pii_all"] = (
        make_text(rng, 30) + " Mail jane.doe@example.org or call +1 (202) 555-0143. The host is "
        "10.0.0.12 and card 4111 1111 1111 1111 was used."
    )
    files["junk_short"] = "Buy now!"
    files["junk_symbols"] = " ".join("### $$$ ### @@@" for _ in range(40))
    files["boilerplate"] = "\n".join(
        [
            "We use cookies to improve your experience.",
            "Please enable JavaScript.",
            "All rights reserved.",
            "Privacy policy | Terms of use",
        ]
        * 5
        + [make_text(rng, 8)]
    )
    files["lorem"] = "Lorem ipsum dolor sit amet. " + make_text(rng, 20)
    files["french"] = FRENCH
    files["german"] = GERMAN
    files["mojibake"] = make_text(rng, 20) + " The cafÃ© was open and the naÃ¯ve plan worked."
    for name, text in files.items():
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
    return root, files


def _run(root, out, **kw):
    cfg = CurateConfig(decontaminate=False, **kw)
    manifest = curate(CorpusConfig(corpus=str(root), val_fraction=0.1), cfg, out)
    kept = {d.id.removesuffix(".txt"): d for d in CuratedSet(out).documents(CorpusConfig())}
    return manifest, kept


def test_planted_corpus_is_cleaned(planted, tmp_path):
    root, files = planted
    manifest, kept = _run(root, tmp_path / "out")
    # duplicates come later in stream order (x_ sorts after orig_): they go, the originals stay
    assert not any(k.startswith("x_exact") for k in kept)
    assert all(f"orig_{i:03d}" in kept for i in range(60))
    # near duplicates: recall >= 0.9; no original lost (false positives <= 0.05)
    near_found = sum(f"x_near_{i:03d}" not in kept for i in range(20, 40)) / 20
    assert near_found >= 0.9
    # junk, boilerplate, lorem ipsum and other languages are dropped, each with its reason
    for name in ("junk_short", "junk_symbols", "boilerplate", "lorem", "french", "german"):
        assert name not in kept, name
    reasons = {s["step"]: s["dropped_by_reason"] for s in manifest["steps"]}
    assert "language:fr" in reasons["language"] and "language:de" in reasons["language"]
    assert reasons["dedup"]["exact_duplicate"] == 15
    # PII placeholders, and the counts in the manifest
    text = kept["pii_all"].text
    for placeholder in ("<EMAIL>", "<PHONE>", "<IP>", "<CARD>"):
        assert placeholder in text
    assert "jane.doe" not in text and "4111" not in text
    pii = next(s for s in manifest["steps"] if s["step"] == "pii")["notes"]
    assert pii == {"EMAIL": 1, "PHONE": 1, "IP": 1, "CARD": 1}
    # mojibake repaired; language labels in metadata
    assert "café" in kept["mojibake"].text and "naïve" in kept["mojibake"].text
    assert kept["orig_000"].metadata["language"] == "en"
    # dropped samples are written for inspection
    dropped = {
        json.loads(line)["id"]
        for f in (tmp_path / "out" / "dropped").glob("*.jsonl")
        for line in f.read_text().splitlines()
    }
    assert dropped >= {"junk_short.txt", "junk_symbols.txt", "boilerplate.txt", "lorem.txt", "french.txt"}


def test_data_card_fields(planted, tmp_path):
    root, files = planted
    manifest, _ = _run(root, tmp_path / "out", licence="CC-BY-4.0")
    card = json.loads((tmp_path / "out" / "data_card.json").read_text())
    assert card["documents"] == {"before": len(files), "after": manifest["documents_out"]}
    assert card["sources"][0]["licence"] == "CC-BY-4.0"
    # the French file is identified, then dropped: the languages are those kept
    assert card["languages"]["en"] >= 60 and "fr" not in card["languages"]
    assert card["languages_identified"].get("fr") == 1
    assert card["pii_redacted"] == {"EMAIL": 1, "PHONE": 1, "IP": 1, "CARD": 1}
    assert card["knowledge_cutoff"] is None and any("knowledge cutoff" in g for g in card["known_gaps_and_biases"])
    md = (tmp_path / "out" / "data_card.md").read_text()
    assert "## Known gaps and biases" in md and "| dedup |" in md


def test_the_data_card_says_a_step_was_off_rather_than_that_it_found_nothing(planted, tmp_path):
    root, _ = planted
    _run(root, tmp_path / "out", pii=False, dedup=DedupConfig(exact=False, near=False))
    card = json.loads((tmp_path / "out" / "data_card.json").read_text())
    assert card["pii_redacted"] is None and card["largest_duplicate_clusters"] is None
    md = (tmp_path / "out" / "data_card.md").read_text()
    assert "- not run (curate.pii off)" in md and "- not removed (curate.dedup" in md and "none found" not in md


def test_output_is_deterministic(planted, tmp_path):
    root, _ = planted
    a, _ = _run(root, tmp_path / "a")
    b, _ = _run(root, tmp_path / "b")
    assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]


@pytest.mark.parametrize("workers", [1, 2])  # 2: the workers read the eval n-grams from a file
def test_decontamination_drops_copies_of_validation_text(tmp_path, workers):
    rng = random.Random(9)
    root = tmp_path / "c"
    root.mkdir()
    texts = [make_text(rng, 40) for _ in range(30)]
    for i, t in enumerate(texts):
        (root / f"d{i:02d}.txt").write_text(t)
    data = CorpusConfig(corpus=str(root), val_fraction=0.2)
    from kiln.corpus import split_of

    val_ids = [f"d{i:02d}.txt" for i in range(30) if split_of(f"d{i:02d}.txt", data) == "val"]
    victim = texts[int(val_ids[0][1:3])]
    (root / "leak.txt").write_text(make_text(rng, 10) + " " + victim[: len(victim) // 2])
    cfg = CurateConfig(dedup=DedupConfig(exact=False, near=False), workers=workers)
    notes = tmp_path / "notes.txt"  # a link left at the hand-off file's name: never written through
    notes.write_text("mine")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".eval_grams.npy").symlink_to(notes)
    manifest = curate(data, cfg, tmp_path / "out")
    assert notes.read_text() == "mine"
    decon = next(s for s in manifest["steps"] if s["step"] == "decontaminate")
    assert decon["dropped_by_reason"] == {"eval_overlap": 1}
    assert not list((tmp_path / "out").glob(".*"))  # no hand-off file left behind
    kept = {d.id for d in CuratedSet(tmp_path / "out").documents(CorpusConfig())}
    assert "leak.txt" not in kept and set(val_ids) <= kept


def test_minhash_false_positive_rate_on_unrelated_documents():
    rng = random.Random(3)
    hasher, index = MinHasher(DedupConfig()), NearDuplicateIndex(DedupConfig())
    hits = sum(index.check_and_add(str(i), hasher.signature(make_text(rng, 40))) is not None for i in range(300))
    assert hits / 300 <= 0.05


def test_quality_rules_keep_prose_and_name_the_rule():
    rng = random.Random(4)
    assert check_quality(make_text(rng, 30), QualityConfig()) is None
    assert check_quality("too short", QualityConfig()) == "gopher:min_words"
    assert check_quality(("word " * 60).strip() + ".", QualityConfig()).startswith("gopher:")


def test_output_is_identical_for_one_and_two_workers(planted, tmp_path):
    root, _ = planted
    one, _ = _run(root, tmp_path / "one", workers=1, batch_bytes=20_000)
    two, _ = _run(root, tmp_path / "two", workers=2, batch_bytes=20_000)
    assert [f["sha256"] for f in one["files"]] == [f["sha256"] for f in two["files"]]
    assert one["steps"] == two["steps"]
    for name in ("dedup", "quality", "language"):
        assert (tmp_path / "one" / "dropped" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "two" / "dropped" / f"{name}.jsonl"
        ).read_bytes()


def test_sources_are_mixed_by_weight_and_reported(tmp_path):
    rng = random.Random(11)
    for name, n in (("big", 60), ("small", 15)):
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{i:03d}.txt").write_text(make_text(rng, 30))
    spec = [
        {"name": "big", "path": str(tmp_path / "big"), "licence": "CC0", "date": "2001-2003", "weight": 1},
        {"name": "small", "path": str(tmp_path / "small"), "licence": "CC-BY", "weight": 1},
    ]
    (tmp_path / "sources.json").write_text(json.dumps(spec))
    data = CorpusConfig(sources=str(tmp_path / "sources.json"), val_fraction=0.1)
    manifest = curate(data, CurateConfig(decontaminate=False), tmp_path / "out")
    mix = manifest["mix"]
    # equal weights over 60 + 15 documents: small repeated ~2.5x, big sampled at ~5/8
    assert 2 < mix["small"]["epochs"] < 3 and 0.5 < mix["big"]["epochs"] < 0.75
    for name in ("big", "small"):
        assert mix[name]["target_share"] == 0.5 and abs(mix[name]["achieved_share"] - 0.5) < 0.1
    # the mix is what the next stage reads: count training bytes per source through the curated set
    curated, split = CuratedSet(tmp_path / "out"), CorpusConfig(val_fraction=0.1)
    got = {"big": 0, "small": 0}
    for doc in curated.split_documents(split, "train"):
        got[doc.metadata["source"]] += len(doc.text.encode())
    assert got == {n: mix[n]["mixed_train_bytes"] for n in got}
    # validation documents appear once each
    val_ids = [d.id for d in curated.split_documents(split, "val")]
    assert len(val_ids) == len(set(val_ids)) > 0
    card = json.loads((tmp_path / "out" / "data_card.json").read_text())
    assert [s["name"] for s in card["sources"]] == ["big", "small"] and card["sources"][1]["licence"] == "CC-BY"
    assert card["date_range"] == [2001, 2003] and card["mix"]["small"]["achieved_share"] > 0.4
    assert "| small |" in (tmp_path / "out" / "data_card.md").read_text()


def test_unweighted_sources_use_epochs(tmp_path):
    from kiln.corpus import SourceConfig
    from kiln.curate.mix import plan_mix

    plan = plan_mix([SourceConfig("a", "x", epochs=2), SourceConfig("b", "y", epochs=1)], {"a": 100, "b": 200})
    assert plan["a"]["epochs"] == 2 and plan["a"]["target_share"] == 0.5
    with pytest.raises(Exception, match="every source a weight"):
        plan_mix([SourceConfig("a", "x", weight=1), SourceConfig("b", "y")], {"a": 1, "b": 1})


def test_step_names_match_the_steps_built():
    from kiln.curate.pipeline import build_local_steps, step_names

    for cfg in (CurateConfig(), CurateConfig(pii=False, decontaminate=False, quality=QualityConfig(enabled=False))):
        built = build_local_steps(cfg, CorpusConfig(), __import__("numpy").zeros(0, dtype="uint64"))
        assert [s.name for s in built.steps] == step_names(cfg)


def test_a_curation_that_keeps_nothing_stops_with_the_counts_and_leaves_the_last_one(tmp_path):
    """Its dropped samples and skipped.log go to refused/: the last curation's own (documents, dropped
    samples, log, data card) stay as they were, and the next curation that succeeds clears refused/."""
    rng = random.Random(3)
    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
    for folder, texts in ((good, [make_text(rng, 60) for _ in range(4)] + ["Buy now!"]), (bad, ["too short"] * 3)):
        folder.mkdir()
        for i, text in enumerate(texts):
            (folder / f"{i}.txt").write_text(text)
    (bad / "broken.jsonl").write_text("{not json\n")
    curate(CorpusConfig(corpus=str(good)), CurateConfig(), out)
    last = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"dropped/quality.jsonl", "skipped.log", "data_card.md", "manifest.json"} <= last.keys()
    cfg = CurateConfig(quality=QualityConfig(min_words=50))
    refused = r"kept 0 of 3 documents, 1 input skipped as unreadable: .*; samples in .*refused/dropped"
    mine = tmp_path / "mine"  # a link left at refused/dropped (a run from someone else): never followed
    mine.mkdir()
    (mine / "important.jsonl").write_text("mine\n")
    (out / "refused").mkdir()
    (out / "refused" / "dropped").symlink_to(mine)
    with pytest.raises(KilnError, match=refused):
        curate(CorpusConfig(corpus=str(bad)), cfg, out)
    assert [p.name for p in mine.iterdir()] == ["important.jsonl"] and (out / "refused" / "dropped").is_dir()
    assert not (out / "refused" / "dropped").is_symlink()
    now = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: v for k, v in now.items() if not k.startswith("refused/")} == last
    assert "broken.jsonl" in (out / "refused" / "skipped.log").read_text()
    assert (out / "refused" / "dropped" / "language.jsonl").read_text().count("too short") == 3
    curate(CorpusConfig(corpus=str(good)), CurateConfig(), out)
    assert not [p for p in (out / "refused").rglob("*") if p.is_file()]


def test_a_document_whose_written_line_outgrows_the_size_limit_is_still_read_back(tmp_path):
    """JSON escaping and metadata make a curated line longer than its raw text: a document inside
    data.max_document_bytes as input must not vanish from training when its line is over it."""
    rng = random.Random(21)
    root = tmp_path / "c"
    root.mkdir()
    lines = [make_text(rng, 12) for _ in range(40)]
    big = "\n".join(f'"{line}"' for line in lines)  # quotes and line breaks double when escaped
    (root / "big.txt").write_text(big)
    for i in range(6):
        (root / f"d{i}.txt").write_text(make_text(rng, 40))
    limit = len(big.encode()) + 16
    data = CorpusConfig(corpus=str(root), max_document_bytes=limit)
    manifest = curate(data, CurateConfig(workers=1, decontaminate=False), tmp_path / "out")
    assert manifest["longest_line_bytes"] > limit  # the premise: its line is over the input limit
    kept = {d.id for d in CuratedSet(tmp_path / "out").documents(data)}
    assert "big.txt" in kept and len(kept) == manifest["documents_out"]


def test_a_bad_sources_file_leaves_the_last_curation_in_place(tmp_path):
    rng = random.Random(5)
    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        (root / f"d{i}.txt").write_text(make_text(rng, 40))
    out = tmp_path / "out"
    curate(CorpusConfig(corpus=str(root)), CurateConfig(workers=1, decontaminate=False), out)
    before = sorted(p.name for p in out.iterdir())
    (tmp_path / "sources.json").write_text("{not json")
    with pytest.raises(KilnError, match="not valid JSON"):
        curate(CorpusConfig(sources=str(tmp_path / "sources.json")), CurateConfig(workers=1), out)
    assert sorted(p.name for p in out.iterdir()) == before and (out / "manifest.json").exists()


def test_minhash_agreement_estimates_the_jaccard_similarity_of_shingle_sets():
    """The fraction of equal signature values is an unbiased estimate of the shingles' Jaccard
    similarity J with variance J(1 - J) / (bands * rows): checked over 40 pairs of edited documents."""
    from kiln.curate.words import analyze

    rng = random.Random(5)
    cfg = DedupConfig()
    hasher, n = MinHasher(cfg), cfg.bands * cfg.rows
    vocab = [f"w{i}x{rng.randrange(10**6)}" for i in range(5000)]
    errors, variances = [], []
    for _ in range(40):
        base = [rng.choice(vocab) for _ in range(400)]
        rate = rng.uniform(0.005, 0.1)  # per pair: J from ~0.97 down to ~0.6
        edited = [rng.choice(vocab) if rng.random() < rate else w for w in base]
        a, b = analyze(" ".join(base)), analyze(" ".join(edited))
        sa, sb = set(a.grams(cfg.shingle_words).tolist()), set(b.grams(cfg.shingle_words).tolist())
        jaccard = len(sa & sb) / len(sa | sb)
        estimate = float((hasher.signature(a) == hasher.signature(b)).mean())
        errors.append(estimate - jaccard)
        variances.append(jaccard * (1 - jaccard) / n)
    spread = sum(e * e for e in errors) / sum(variances)
    assert abs(sum(errors) / len(errors)) < 3 * (sum(variances) ** 0.5) / len(errors)
    assert 0.4 < spread < 2.0, spread


def test_documents_are_written_as_utf8_json_whatever_their_characters(tmp_path):
    """The writer escapes as ASCII first (faster) and falls back where anything was escaped: every
    line is what json.dumps(row, ensure_ascii=False) writes."""
    from kiln.curate.pipeline import _JsonlShards

    rows = [
        {"id": "a", "text": 'plain ascii, "quoted"\nand a tab\t', "n": 1},
        {"id": "b", "text": "caf\u00e9 \u2019quoted\u2019 \U0001f600"},
        {"id": "c", "text": "a literal backslash-u: \\u00e9 and \\\\"},
        {"id": "d", "text": "controls \x01 \x1f and delete \x7f"},
        {"id": "e", "text": "ascii", "url": "https://example.org/\u00fc"},
    ]
    writer = _JsonlShards(tmp_path, per_file=100)
    for row in rows:
        writer.write(row)
    writer.close()
    writer.publish({"files": writer.files})
    written = (tmp_path / writer.files[0]["file"]).read_text(encoding="utf-8")
    assert written == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert writer.longest_line == max(len((json.dumps(r, ensure_ascii=False) + "\n").encode()) for r in rows)


def test_signatures_of_a_batch_equal_each_documents_own(monkeypatch):
    """MinHash over a batch at once (blocks of permutations, minima per document) equals the
    permutations' minima over each document's shingles alone, short and empty documents included."""
    import numpy as np

    import kiln.curate.dedup as dedup
    from kiln.curate.words import analyze

    rng = random.Random(8)
    texts = [make_text(rng, rng.randrange(1, 80)) for _ in range(30)] + ["", "one", "a b c d", "a b c d e"]
    words = [analyze(t) for t in texts]
    # 15 permutations: a last block of 7; groups of at most 100 shingles: documents hashed apart too
    for cfg, group in ((DedupConfig(), dedup._GROUP_SHINGLES), (DedupConfig(bands=3, rows=5), 100)):
        hasher = MinHasher(cfg)
        monkeypatch.setattr(dedup, "_GROUP_SHINGLES", group)
        batch = hasher.signatures(words)
        assert batch.shape == (len(texts), cfg.bands * cfg.rows) and batch.dtype == np.uint32
        for w, row in zip(words, batch):
            shingles = w.grams(cfg.shingle_words)
            if len(shingles) == 0:
                shingles = np.array([np.bitwise_xor.reduce(w.hashes) if len(w) else 0], dtype=np.uint64)
            folded = (shingles ^ (shingles >> np.uint64(32))).astype(np.uint32).tolist()
            want = [min(int(a) * x + int(b) & 0xFFFFFFFF for x in folded) for a, b in zip(hasher.a, hasher.b)]
            assert row.tolist() == want
        assert hasher.signatures([]).shape == (0, cfg.bands * cfg.rows)


def test_a_refused_curation_leaves_the_last_one_in_place(tmp_path):
    """A missing corpus or one that keeps nothing stops with its error and removes nothing: the last
    curation's documents and manifest stay, and nothing half-written is left beside them."""
    rng = random.Random(9)
    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        (root / f"d{i}.txt").write_text(make_text(rng, 60))
    out = tmp_path / "out"
    cfg = CurateConfig(workers=1, decontaminate=False)
    curate(CorpusConfig(corpus=str(root)), cfg, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.j*")}
    assert "manifest.json" in before and any(n.startswith("documents_") for n in before)
    with pytest.raises(KilnError, match="does not exist"):
        curate(CorpusConfig(corpus=str(tmp_path / "typo")), cfg, out)
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.txt").write_text("too short")
    with pytest.raises(KilnError, match="kept 0 of 1 documents"):
        curate(CorpusConfig(corpus=str(short)), cfg, out)
    assert {p.name: p.read_bytes() for p in out.glob("*.j*")} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(CuratedSet(out).manifest["files"]) >= 1
