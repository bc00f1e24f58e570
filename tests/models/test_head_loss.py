"""The fused head + cross-entropy gives the loss and gradients of the plain path (logits, then the
masked-mean cross-entropy), with the soft-cap and the muP logit scale, across chunk boundaries."""

import pytest
import torch
import torch.nn.functional as F

from kiln.models.build import build_model
from kiln.models.config import ModelConfig
from kiln.models.head_loss import linear_cross_entropy


def plain(h, weight, targets, scale=1.0, cap=0.0):
    z = scale * (h @ weight.T).float()
    if cap:
        z = cap * torch.tanh(z / cap)
    return F.cross_entropy(z.flatten(0, -2), targets.flatten(), ignore_index=-100)


@pytest.mark.parametrize("scale, cap, chunk", [(1.0, 0.0, 7), (0.5, 0.0, 64), (1.0, 3.0, 5), (0.25, 2.0, 1000)])
def test_loss_and_gradients_match_the_plain_path_in_fp32(scale, cap, chunk):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (3, 11), generator=gen)
    targets[0, :4] = -100  # masked positions are left out of the mean
    want = plain(h, weight, targets, scale, cap)
    gh, gw = torch.autograd.grad(2.0 * want, (h, weight))  # an upstream gradient other than 1
    got = linear_cross_entropy(h, weight, targets, scale, cap, chunk)
    fh, fw = torch.autograd.grad(2.0 * got, (h, weight))
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-6)
    assert torch.allclose(fh, gh, atol=1e-6) and torch.allclose(fw, gw, atol=1e-6)


def test_under_bf16_autocast_it_stays_within_bf16_of_the_plain_path():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(4, 32, 64, generator=gen, requires_grad=True)
    weight = (0.1 * torch.randn(300, 64, generator=gen)).requires_grad_()
    targets = torch.randint(0, 300, (4, 32), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, weight, targets, chunk=50)
    fh, fw = torch.autograd.grad(got, (h, weight))
    want = plain(h, weight, targets)  # fp32 reference
    gh, gw = torch.autograd.grad(want, (h, weight))
    assert got.dtype == torch.float32 and abs(got.item() - want.item()) < 2e-2
    assert (fh - gh).abs().max() < 2e-2 * gh.abs().max() and (fw - gw).abs().max() < 2e-2 * gw.abs().max()
    assert fh.dtype == h.dtype and fw.dtype == weight.dtype


def test_a_decoder_given_targets_returns_the_loss_of_its_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16, tie_embeddings=False)
    model = build_model(cfg, torch.device("cpu"))
    tokens, targets = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    fused = model(tokens, targets=targets)
    grads = torch.autograd.grad(fused, list(model.parameters()))
    want = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    ref = torch.autograd.grad(want, list(model.parameters()))
    assert torch.allclose(fused, want, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, ref))
