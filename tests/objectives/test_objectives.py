"""Batch construction of each objective: masking statistics, span corruption round trip, FIM layout."""

import pytest
import torch

from kiln.models.head_loss import linear_cross_entropy
from kiln.objectives.causal import CausalLM
from kiln.objectives.config import CausalConfig, MaskedConfig, SpanConfig
from kiln.objectives.masked import MaskedLM
from kiln.objectives.span import SpanCorruption, reconstruct
from kiln.tokenizer import SpecialIds

IDS = SpecialIds(
    pad=0,
    bos=1,
    eos=2,
    mask=3,
    fim_prefix=4,
    fim_middle=5,
    fim_suffix=6,
    sentinels=tuple(range(7, 7 + 40)),
    num_special=47,
    vocab_size=1000,
)


def _windows(b=64, t=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(IDS.num_special, IDS.vocab_size, (b, t + 1), generator=g)
    w[:, ::50] = IDS.eos  # document boundaries are special and never masked
    return w[:, :-1], w[:, 1:]


def test_masking_selects_15_percent_split_80_10_10():
    inputs, targets = _windows()
    batch = MaskedLM(MaskedConfig(), IDS).make_batch(
        {"inputs": inputs, "targets": targets}, torch.Generator().manual_seed(1)
    )
    selected = batch["labels"] != -100
    text = inputs >= IDS.num_special
    assert not (selected & ~text).any()  # specials never selected
    assert abs(selected.sum() / text.sum() - 0.15) < 0.01
    assert torch.equal(batch["labels"][selected], inputs[selected])
    masked = (batch["inputs"] == IDS.mask) & selected
    kept = (batch["inputs"] == inputs) & selected
    randomised = selected & ~masked & ~kept
    n = selected.sum()
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(kept.sum() / n - 0.1) < 0.02  # (a random token equal to the original counts as kept)
    assert abs(randomised.sum() / n - 0.1) < 0.02
    assert torch.equal(batch["inputs"][~selected], inputs[~selected])


def test_masks_change_every_batch_and_repeat_for_the_same_seed():
    inputs, targets = _windows(8, 64)
    obj = MaskedLM(MaskedConfig(), IDS)
    a = obj.make_batch({"inputs": inputs, "targets": targets}, torch.Generator().manual_seed(1))["labels"]
    b = obj.make_batch({"inputs": inputs, "targets": targets}, torch.Generator().manual_seed(2))["labels"]
    c = obj.make_batch({"inputs": inputs, "targets": targets}, torch.Generator().manual_seed(1))["labels"]
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_span_corruption_round_trips_and_has_fixed_shapes():
    inputs, targets = _windows(16, 128)
    batch = SpanCorruption(SpanConfig(), IDS).make_batch(
        {"inputs": inputs, "targets": targets}, torch.Generator().manual_seed(3)
    )
    windows = torch.cat([inputs, targets[:, -1:]], dim=1)
    noise, spans = SpanConfig(0.15, 3.0).counts(129)
    assert (noise, spans) == (19, 6) and SpanConfig().lengths(129) == (129 - noise + spans + 1, noise + spans + 1)
    assert batch["src"].shape == (16, 129 - noise + spans + 1) and batch["tgt"].shape == (16, noise + spans + 1)
    assert torch.equal(batch["tgt_in"][:, 1:], batch["tgt"][:, :-1]) and (batch["tgt_in"][:, 0] == IDS.bos).all()
    for src, tgt, window in zip(batch["src"], batch["tgt"], windows):
        assert reconstruct(src.tolist(), tgt.tolist(), IDS.sentinels, IDS.eos) == window.tolist()
        assert sum(t in IDS.sentinels for t in src.tolist()) == spans


def test_fim_moves_the_middle_to_the_end_with_markers():
    inputs, targets = _windows(32, 64)
    obj = CausalLM(CausalConfig(fim_rate=0.5), IDS)
    batch = obj.make_batch({"inputs": inputs.clone(), "targets": targets.clone()}, torch.Generator().manual_seed(4))
    windows = torch.cat([inputs, targets[:, -1:]], dim=1)
    out = torch.cat([batch["inputs"], batch["targets"][:, -1:]], dim=1)
    fim_rows = [r for r in range(32) if out[r, 0] == IDS.fim_prefix]
    assert 8 <= len(fim_rows) <= 24  # about half
    for r in range(32):
        row, original = out[r].tolist(), windows[r].tolist()
        if r not in fim_rows:
            assert row == original
            continue
        # <pre> prefix <suf> suffix <mid> middle, cut to the window's length (the end of middle falls off)
        s = row.index(IDS.fim_suffix)
        prefix = row[1:s]
        assert original[: len(prefix)] == prefix
        if IDS.fim_middle in row:
            m = row.index(IDS.fim_middle)
            suffix, middle = row[s + 1 : m], row[m + 1 :]
            assert original[len(original) - len(suffix) :] == suffix if suffix else True
            assert original[len(prefix) : len(prefix) + len(middle)] == middle
            assert len(prefix) + len(middle) + len(suffix) + 3 <= len(original) + 3


def test_masked_targets_are_left_out_of_the_causal_loss():
    torch.manual_seed(0)
    hidden, head = torch.randn(2, 5, 32), torch.randn(1000, 32)

    class Fixed(torch.nn.Module):  # a model's contract: given targets, the mean loss of its head
        def forward(self, tokens, targets):
            return linear_cross_entropy(hidden, head, targets)

    inputs, targets = torch.zeros(2, 5, dtype=torch.long), torch.randint(50, 1000, (2, 5))
    masked = targets.clone()
    masked[:, :3] = -100  # e.g. a prompt: only the last two positions of each row are trained on
    objective = CausalLM(CausalConfig(), IDS)
    full, _ = objective.loss(Fixed(), {"inputs": inputs, "targets": targets})
    part, _ = objective.loss(Fixed(), {"inputs": inputs, "targets": masked})
    logits = hidden @ head.T
    want = torch.nn.functional.cross_entropy(logits[:, 3:].flatten(0, 1), targets[:, 3:].flatten())
    assert part.item() == pytest.approx(want.item(), rel=1e-5) and full.item() != pytest.approx(part.item())
