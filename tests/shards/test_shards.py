import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from kiln import stages
from kiln.corpus import Document
from kiln.errors import KilnError
from kiln.shards.config import ShardConfig
from kiln.shards.loader import PackedLoader, ShardSet, iterate_windows
from kiln.shards.writer import token_dtype, write_shards
from kiln.tokenizer import load_tokenizer
from tests.conftest import copy_run


def test_shards_hold_exactly_bos_tokens_eos(tokenized_run, tmp_path):
    cfg, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    docs = [Document(f"d{i}", f"document number {i} " * (i + 1)) for i in range(7)]
    manifest = write_shards(docs, tok, "sha", {"x": tmp_path}, ShardConfig(shard_tokens=40, batch_bytes=50))["x"]
    assert len(manifest["shards"]) > 1, "small shard_tokens must split into several shards"
    shards = ShardSet(tmp_path)
    stored = list(shards.documents())
    assert len(stored) == 7
    for doc, tokens in zip(docs, stored):
        assert tokens.tolist() == [1] + tok.encode(doc.text, add_special_tokens=False).ids + [2]
    assert manifest["num_bytes"] == sum(len(d.text.encode()) for d in docs)
    assert shards.dtype == np.uint16
    shards.verify()


def test_a_document_quoting_special_tokens_holds_them_as_text(tokenized_run, tmp_path):
    """Only the writer places <|bos|>/<|eos|>; a quoted "<|eos|>" or "<|sentinel_0|>" is text."""
    cfg, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    specials = {i for name, i in tok.get_vocab().items() if name.startswith("<|")}
    text = "see <|eos|> and <|sentinel_0|> and <|bos|> here"
    assert specials & set(tok.encode(text, add_special_tokens=False).ids)  # a prompt's reading
    write_shards([Document("d", text)], tok, "sha", {"x": tmp_path}, ShardConfig())
    (tokens,) = list(ShardSet(tmp_path).documents())
    assert tokens[0] == 1 and tokens[-1] == 2 and not specials & set(tokens[1:-1].tolist())
    assert tok.decode(tokens[1:-1].tolist()) == text


def test_writing_is_deterministic(tokenized_run, tmp_path):
    cfg, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    docs = [Document(str(i), f"text {i} and more" * 3) for i in range(20)]
    a = write_shards(docs, tok, "sha", {"a": tmp_path / "a"}, ShardConfig())["a"]
    b = write_shards(docs, tok, "sha", {"b": tmp_path / "b"}, ShardConfig(batch_bytes=7))["b"]
    assert a["shards"][0]["sha256"] == b["shards"][0]["sha256"]
    assert a["shards"][0]["sha256"] == hashlib.sha256((tmp_path / "a" / "shard_00000.bin").read_bytes()).hexdigest()


def test_dtype_widens_for_big_vocabularies():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_truncated_shard_is_detected(tokenized_run, tmp_path):
    cfg, run = tokenized_run
    import shutil

    shutil.copytree(run.split("train"), tmp_path / "s")
    shard = tmp_path / "s" / "shard_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(KilnError, match="truncated"):
        ShardSet(tmp_path / "s")


def test_a_manifest_naming_an_object_dtype_or_a_file_outside_is_refused(tokenized_run, tmp_path):
    """An object dtype would map the shard's bytes as Python pointers; a path would read another file."""
    import json
    import shutil

    _, run = tokenized_run
    shutil.copytree(run.split("train"), tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    good = json.loads(manifest.read_text())
    for bad, match in (({"dtype": "O"}, "dtype 'O'"), ({"dtype": "float64"}, "dtype 'float64'")):
        manifest.write_text(json.dumps({**good, **bad}))
        with pytest.raises(KilnError, match=match):
            ShardSet(tmp_path / "s")
    (tmp_path / "secret.bin").write_bytes((tmp_path / "s" / good["shards"][0]["file"]).read_bytes())
    for bad in ({"file": "../secret.bin"}, {"file": ".."}, {"docs_file": "../secret.npy"}, {"file": None}):
        manifest.write_text(json.dumps({**good, "shards": [{**good["shards"][0], **bad}]}))
        with pytest.raises(KilnError, match="not a file name in its folder"):
            ShardSet(tmp_path / "s")
    manifest.write_text(json.dumps(good))
    assert ShardSet(tmp_path / "s").num_tokens == good["num_tokens"]
    for bad in ([], {**good, "shards": ["x"]}, {**good, "shards": [{**good["shards"][0], "num_tokens": "9"}]}):
        manifest.write_text(json.dumps(bad))
        with pytest.raises(KilnError, match="no list of shards with token counts"):
            ShardSet(tmp_path / "s")
    manifest.write_bytes(b"\xff\xfe")
    with pytest.raises(KilnError, match="is corrupt"):
        ShardSet(tmp_path / "s")


def test_shards_holding_ids_beyond_the_vocabulary_are_refused(tokenized_run, tmp_path):
    """A manifest can claim any vocabulary: the ids themselves are checked once, when the run starts."""
    import json
    import shutil

    from kiln.train.parts import check_shards

    cfg, run = tokenized_run
    shutil.copytree(run.split("train"), tmp_path / "s")
    good = ShardSet(tmp_path / "s")
    sha, vocab = good.tokenizer_sha256, good.manifest["vocab_size"]
    assert check_shards(good, sha, vocab) is good
    shard = tmp_path / "s" / good.manifest["shards"][0]["file"]
    tokens = np.fromfile(shard, dtype=good.dtype)
    tokens[0] = vocab + 5
    tokens.tofile(shard)
    with pytest.raises(KilnError, match=f"hold token id {vocab + 5}, beyond {vocab}"):
        check_shards(ShardSet(tmp_path / "s"), sha, vocab)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["vocab_size"] == vocab


def _take(loader, n):
    return [(b["inputs"], b["targets"]) for b in (loader.next_batch() for _ in range(n))]


def test_loader_is_deterministic_and_resumes_at_its_position(tokenized_run):
    cfg, run = tokenized_run
    shards = ShardSet(run.split("train"))
    a = PackedLoader(shards, seq_len=16, batch_size=4, seed=3)
    straight = _take(a, 6)
    b = PackedLoader(shards, seq_len=16, batch_size=4, seed=3)
    _take(b, 3)
    state = b.state_dict()
    c = PackedLoader(shards, seq_len=16, batch_size=4, seed=3)
    c.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(straight[3:], _take(c, 3)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y = straight[0]
    assert x.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]), "targets are inputs shifted by one"


def test_ranks_are_disjoint_and_world_size_does_not_change_the_token_stream(tokenized_run):
    cfg, run = tokenized_run
    shards = ShardSet(run.split("train"))
    single = PackedLoader(shards, seq_len=16, batch_size=4)
    ranks = [PackedLoader(shards, seq_len=16, batch_size=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        x_single = single.next_batch()["inputs"]
        x_ranks = torch.cat([r.next_batch()["inputs"] for r in ranks])
        assert torch.equal(x_single, x_ranks)
    assert single.samples_seen == ranks[0].samples_seen == ranks[1].samples_seen


def test_an_epoch_visits_every_window_once(tokenized_run):
    cfg, run = tokenized_run
    loader = PackedLoader(ShardSet(run.split("train")), seq_len=32, batch_size=1, seed=0)
    seen = [tuple(loader.next_batch()["inputs"][0].tolist()) for _ in range(loader.num_windows)]
    expected = [tuple(loader.window(i)[:-1].tolist()) for i in range(loader.num_windows)]
    assert sorted(seen) == sorted(expected)


def test_eval_windows_cover_the_shards_in_order(tokenized_run):
    cfg, run = tokenized_run
    shards = ShardSet(run.split("val"))
    batches = list(iterate_windows(shards, seq_len=16, batch_size=3))
    inputs = torch.cat([b["inputs"] for b in batches]).flatten()
    assert torch.equal(inputs, torch.from_numpy(np.asarray(shards.tokens[0][: len(inputs)], dtype=np.int64)))


def test_a_corpus_that_fails_to_open_leaves_the_last_shards(tokenized_run, tmp_path):
    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    docs = [Document(f"d{i}", f"document number {i} with a few words") for i in range(5)]
    write_shards(docs, tok, "sha", {"x": tmp_path}, ShardConfig())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def missing():
        raise KilnError("corpus path /nowhere does not exist")
        yield  # a generator, as read_documents is

    with pytest.raises(KilnError, match="does not exist"):
        write_shards(missing(), tok, "sha", {"x": tmp_path}, ShardConfig())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_failure_mid_corpus_or_a_refused_check_leaves_the_last_shards(tokenized_run, tmp_path):
    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    small = ShardConfig(shard_tokens=40, batch_bytes=50)  # several shards, several batches
    docs = [Document(f"d{i}", f"document number {i} with a few words") for i in range(12)]
    write_shards(
        docs, tok, "sha", {"x": tmp_path / "x", "y": tmp_path / "y"}, small, route=lambda d: "xy"[int(d.id[1:]) % 2]
    )
    before = {name: _files(tmp_path / name) for name in "xy"}
    assert len(before["x"]) > 3  # more than one shard in each

    def broken():
        yield from (Document(f"n{i}", f"another text {i} " * 5) for i in range(30))
        raise KilnError("document 31 is not valid UTF-8")

    with pytest.raises(KilnError, match="not valid"):
        write_shards(broken(), tok, "sha", {"x": tmp_path / "x", "y": tmp_path / "y"}, small, route=lambda d: "x")
    assert {name: _files(tmp_path / name) for name in "xy"} == before

    def refuse(manifests):
        assert manifests["y"]["num_documents"] == 0
        raise KilnError("no document fell into the y split")

    with pytest.raises(KilnError, match="y split"):
        write_shards(
            docs, tok, "sha", {"x": tmp_path / "x", "y": tmp_path / "y"}, small, route=lambda d: "x", check=refuse
        )
    assert {name: _files(tmp_path / name) for name in "xy"} == before


def test_splits_written_without_a_publication_are_one_set(tokenized_run, tmp_path, monkeypatch):
    """Killed after the first split's files have moved: opening either split finishes both."""
    import kiln.staging as staging_module

    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    docs = [Document(f"d{i}", f"document number {i} with a few words") for i in range(12)]
    dirs = {"x": tmp_path / "x", "y": tmp_path / "y"}
    split = lambda d: "xy"[int(d.id[1:]) % 2]  # noqa: E731
    write_shards(docs[:4], tok, "sha", dirs, ShardConfig(), route=split)
    real, calls = staging_module.os.replace, iter(range(100))
    monkeypatch.setattr(staging_module.os, "replace", lambda s, d: real(s, d) if next(calls) < 4 else 1 / 0)
    with pytest.raises(ZeroDivisionError):  # 2 commits, x's 2 files, then a kill
        write_shards(docs, tok, "sha", dirs, ShardConfig(), route=split)
    monkeypatch.setattr(staging_module.os, "replace", real)
    for folder in dirs.values():  # a reader meanwhile finds neither split ready
        with pytest.raises(KilnError, match="no shard manifest"):
            ShardSet(folder)
    staging_module.StagedFolder(dirs["y"])
    for folder in dirs.values():
        shards = ShardSet(folder)
        shards.verify()
        assert shards.manifest["num_documents"] == 6


def test_new_shards_replace_every_old_one_and_what_a_crash_staged(tokenized_run, tmp_path):
    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    many = [Document(f"d{i}", f"document number {i} with a few words") for i in range(12)]
    write_shards(many, tok, "sha", {"x": tmp_path}, ShardConfig(shard_tokens=40))
    assert len(list(tmp_path.glob("shard_*.bin"))) > 1
    (tmp_path / ".staged-shard_00007.bin").write_bytes(b"left by a crash")
    manifest = write_shards(many[:1], tok, "sha", {"x": tmp_path}, ShardConfig())["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "shard_00000.bin", "shard_00000.docs.npy"]
    assert (
        ShardSet(tmp_path).num_tokens
        == manifest["num_tokens"]
        == len(tok.encode(many[0].text, add_special_tokens=False).ids) + 2
    )


def test_tokenize_refusing_an_empty_split_leaves_the_runs_shards(tokenized_run, tmp_path):
    cfg, source = tokenized_run
    run = copy_run(source, tmp_path / "run")
    before = {split: _files(run.split(split)) for split in ("train", "val")}
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_fraction=1e-9))
    with pytest.raises(KilnError, match="fell into the val split"):
        stages.tokenize(cfg, run)
    assert {split: _files(run.split(split)) for split in ("train", "val")} == before
