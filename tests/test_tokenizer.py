import dataclasses
import random

import pytest

from kiln import stages
from kiln.errors import KilnError
from kiln.tokenizer import (
    TokenizerConfig,
    bytes_per_token,
    load_tokenizer,
    special_ids,
    token_byte_lengths,
    train_tokenizer,
)
from tests.conftest import copy_run, make_text


@pytest.fixture(scope="module")
def tok():
    rng = random.Random(1)
    texts = [make_text(rng, 20) for _ in range(30)] + ["Ünïcödé — “quotes” 東京 🙂 1234567 tabs\tand\nnewlines"]
    return train_tokenizer(texts, TokenizerConfig(vocab_size=400, num_sentinels=4), show_progress=False)


@pytest.mark.parametrize(
    "text",
    [
        "The union is strong.",
        "  leading spaces and trailing  ",
        "Ünïcödé — “quotes” 東京 🙂 and numbers 1234567.89",
        "line one\nline two\r\n\ttabbed",
        "never seen: ẞ ℵ 𝔘 ☃\ufffd",
    ],
)
def test_round_trip_is_exact(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text


def test_special_tokens_have_fixed_ids(tok):
    assert special_ids(tok) == {"pad": 0, "bos": 1, "eos": 2}
    assert tok.token_to_id("<|mask|>") == 3
    assert tok.token_to_id("<|fim_suffix|>") == 6
    assert tok.token_to_id("<|sentinel_0|>") == 7 and tok.token_to_id("<|sentinel_3|>") == 10
    assert tok.get_vocab_size() <= 400


def test_token_byte_lengths_sum_to_utf8_bytes(tok):
    lengths = token_byte_lengths(tok)
    text = "Ünïcödé — 東京 🙂 The union is strong."
    ids = tok.encode(text, add_special_tokens=False).ids
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))
    assert lengths[0] == lengths[1] == lengths[2] == 0


def test_bytes_per_token_compresses(tok):
    rng = random.Random(2)
    assert bytes_per_token(tok, [make_text(rng, 20)]) > 2.0


def test_load_errors(tmp_path):
    with pytest.raises(KilnError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KilnError, match="corrupt or truncated"):
        load_tokenizer(bad)


def test_vocab_too_small_is_rejected():
    with pytest.raises(KilnError, match="too small"):
        TokenizerConfig(vocab_size=100)


def test_a_tokenizer_stage_with_no_training_text_keeps_the_last_tokenizer(tokenized_run, tmp_path):
    cfg, source = tokenized_run
    run = copy_run(source, tmp_path / "run")
    before = run.tokenizer.read_bytes()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_fraction=0.999999999))
    with pytest.raises(KilnError, match="no training text"):
        stages.tokenizer(cfg, run)
    assert run.tokenizer.read_bytes() == before
    assert [p.name for p in run.root.iterdir() if p.name.startswith(".")] == []


def test_a_run_with_checkpoints_keeps_the_tokenizer_they_were_trained_with(tokenized_run, tmp_path):
    """Another tokenizer over a trained run would leave its checkpoints unable to resume: refused, the
    same one again is fine, and a fresh start (kiln run --overwrite) replaces it."""
    cfg, source = tokenized_run
    run = copy_run(source, tmp_path / "run")
    stages.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=2, eval_every=0)), run)
    before = run.tokenizer.read_bytes()
    stages.tokenizer(cfg, run)  # the same settings and text: the same file
    assert run.tokenizer.read_bytes() == before
    other = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, vocab_size=300))
    with pytest.raises(KilnError, match="checkpoints were trained with another tokenizer"):
        stages.tokenizer(other, run)
    assert run.tokenizer.read_bytes() == before
    assert [p.name for p in run.root.iterdir() if p.name.startswith(".")] == []
    stages.tokenizer(other, run, fresh=True)
    assert run.tokenizer.read_bytes() != before


def test_a_vocabulary_no_machine_could_train_is_one_line():
    from kiln.errors import KilnError
    from kiln.tokenizer import MAX_VOCAB, TokenizerConfig

    with pytest.raises(KilnError, match="the most kiln trains"):
        TokenizerConfig(vocab_size=MAX_VOCAB + 1)
    assert TokenizerConfig(vocab_size=MAX_VOCAB).vocab_size == MAX_VOCAB
