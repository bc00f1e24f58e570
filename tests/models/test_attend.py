"""Attention as batched matmuls (bf16 on a CPU, short lengths) gives SDPA's output and gradients
within bf16's error, keeps causality, and is taken only where it was measured to pay."""

import pytest
import torch
import torch.nn.functional as F

from kiln.models import attend as attend_module
from kiln.models.attend import MatmulAttention, attend, uses_matmul_path


def inputs(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for _ in range(3)]


def rel_err(got, want):
    return ((got.double() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("causal", [True, False])
def test_output_and_gradients_are_sdpas_within_bf16(causal):
    shape = (2, 3, 40, 32)
    q, k, v = inputs(shape, torch.float64)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    wants = [want, *torch.autograd.grad(want, (q, k, v), grad)]
    errors = {}
    for name, fn in (("flash", lambda *x: F.scaled_dot_product_attention(*x, is_causal=causal)), ("matmul", None)):
        qb, kb, vb = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
        out = fn(qb, kb, vb) if fn else MatmulAttention.apply(qb, kb, vb, causal)
        got = [out, *torch.autograd.grad(out, (qb, kb, vb), grad.bfloat16())]
        assert all(g.dtype == torch.bfloat16 for g in got)
        errors[name] = [rel_err(g, w) for g, w in zip(got, wants)]
    # bf16 has 8 bits of mantissa: ~4e-3 relative; the matmul path rounds the scores too
    assert max(errors["matmul"]) < 1.5e-2, errors
    assert all(m < 3 * f + 1e-3 for m, f in zip(errors["matmul"], errors["flash"])), errors


def test_a_query_cannot_see_later_keys():
    q, k, v = (t.detach().bfloat16().requires_grad_() for t in inputs((1, 2, 16, 8), torch.float64))
    out = MatmulAttention.apply(q, k, v, True)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, 10:] += 5.0
    v2[:, :, 10:] -= 5.0
    out2 = MatmulAttention.apply(q, k2.requires_grad_(), v2.requires_grad_(), True)
    assert torch.equal(out[:, :, :10], out2[:, :, :10])
    assert not torch.equal(out[:, :, 10:], out2[:, :, 10:])
    # and no gradient flows from an early query's output into a later key
    (gk,) = torch.autograd.grad(out[:, :, :10].sum(), (k,))
    assert gk[:, :, 10:].abs().max() == 0


def test_under_autocast_fp32_inputs_take_the_matmul_path_and_get_fp32_gradients():
    q, k, v = inputs((2, 2, 24, 16), torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert uses_matmul_path(q, k, None)
        out = attend(q, k, v, causal=True)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert all(g.dtype == torch.float32 for g in grads)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert rel_err(out.float(), want.double()) < 1.5e-2


def test_it_is_taken_only_where_it_pays(monkeypatch):
    q, k, _ = inputs((1, 2, 24, 16), torch.bfloat16)
    assert uses_matmul_path(q, k, None)
    assert not uses_matmul_path(q.float(), k.float(), None)  # fp32: flash is as fast or faster
    assert not uses_matmul_path(q, k, torch.ones(24, 24, dtype=torch.bool))  # masks go to SDPA
    assert not uses_matmul_path(q, k[:, :1], None)  # grouped-query heads go to SDPA
    with torch.no_grad():
        assert not uses_matmul_path(q, k, None)  # inference keeps flash's memory
    monkeypatch.setattr(attend_module, "MAX_MATMUL_LEN", 16)
    assert not uses_matmul_path(q, k, None)  # longer than the measured crossover
