"""Muon: Newton-Schulz orthogonalises, the groups cover every parameter once, fused and expert
matrices are cut into their parts, and a Muon run resumes bitwise."""

import pytest
import torch

from kiln.models.build import build_model
from kiln.models.config import ModelConfig, MoEConfig, SSMConfig, VisionConfig
from kiln.train.config import AdamWConfig, MuonConfig
from kiln.train.muon import (
    momentum_at,
    neuron_dim,
    newton_schulz,
    normalize_neurons,
    orthogonalize,
    orthogonalize_all,
)
from kiln.train.optim import build_muon
from tests.conftest import copy_run, tiny_config
from tests.train.test_trainer import straight_and_resumed


@pytest.mark.parametrize("polar_express", [False, True])
@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (3, 24, 40), (128, 128)])
def test_newton_schulz_pushes_singular_values_to_one(shape, polar_express):
    torch.manual_seed(0)
    G = torch.randn(*shape) * 5
    s = torch.linalg.svdvals(newton_schulz(G, polar_express=polar_express))
    if shape[-1] == shape[-2]:
        # a square Gaussian matrix's smallest singular values approach 0 (relative ~1 / n); five steps
        # lift all but that tail, as Muon intends (it never needs exactness)
        s = s.flatten().sort().values[len(s.flatten()) // 20 :]
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    if polar_express and shape[-1] != shape[-2]:  # closer to 1 than the fixed quintic's
        plain = torch.linalg.svdvals(newton_schulz(G))
        assert (s - 1).abs().max() < (plain - 1).abs().max()


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (2, 24, 40)])
def test_normuon_evens_out_the_neurons_and_keeps_the_norm(shape):
    torch.manual_seed(0)
    update = torch.randn(*shape) * torch.linspace(0.1, 3, shape[-2]).unsqueeze(-1)  # uneven rows
    dim = neuron_dim(update.shape)
    second = torch.zeros_like(update.mean(dim=dim, keepdim=True))
    out = normalize_neurons(update, second, beta2=0.95)
    assert torch.allclose(out.norm(dim=(-2, -1)), update.norm(dim=(-2, -1)), rtol=1e-5)
    # from a zero start the first step gives every neuron (of the longer side) the same norm
    per_neuron = out.norm(dim=dim)
    assert torch.allclose(per_neuron, per_neuron.mean(dim=-1, keepdim=True), rtol=1e-4)
    assert torch.allclose(second, 0.05 * update.square().mean(dim=dim, keepdim=True))


def test_fused_matrices_are_orthogonalised_block_by_block():
    torch.manual_seed(0)
    q, k = torch.randn(64, 32), torch.randn(16, 32) * 10
    fused = orthogonalize(torch.cat([q, k]), [0, -2, 64, 16], 5)
    assert torch.allclose(fused[:64], newton_schulz(q) * 2**0.5, atol=1e-5)  # fan_out 64 / fan_in 32
    assert torch.allclose(fused[64:], newton_schulz(k), atol=1e-5)


def test_blocks_of_one_shape_go_through_newton_schulz_together_with_the_same_result():
    torch.manual_seed(0)
    updates = [torch.randn(96, 32), torch.randn(32, 32), torch.randn(32, 96), torch.randn(2, 24, 40)]
    layouts = [[0, -2, 32, 32, 32], None, None, [1, -1]]
    together = orthogonalize_all(updates, layouts, 5)
    alone = [orthogonalize(u, layout, 5) for u, layout in zip(updates, layouts)]
    assert all(a.shape == b.shape and torch.allclose(a, b, atol=1e-5) for a, b in zip(together, alone))


def test_newton_schulz_in_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    G = torch.randn(4, 64, 192)
    low, full = newton_schulz(G, dtype=torch.bfloat16), newton_schulz(G)
    assert low.dtype == G.dtype and (low - full).abs().max() < 0.05
    s = torch.linalg.svdvals(low)
    assert s.min() > 0.6 and s.max() < 1.3


FAMILIES = {
    "decoder": ModelConfig(vocab_size=64, dim=32, num_layers=2, num_heads=2, num_kv_heads=1, max_seq_len=16),
    "moe": ModelConfig(vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16, moe=MoEConfig(num_experts=4)),
    "hybrid": ModelConfig(
        family="hybrid", vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16,
        ssm=SSMConfig(attn_every=2, head_dim=16),
    ),
    "encoder": ModelConfig(family="encoder", vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16),
    "encdec": ModelConfig(family="encdec", vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16),
    "vlm": ModelConfig(
        family="vlm", vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16,
        vision=VisionConfig(image_size=16, patch_size=8, encoder="vit", encoder_layers=1),
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_cover_every_parameter_exactly_once(family):
    model = build_model(FAMILIES[family], torch.device("cpu"))
    opt = build_muon(model, 1e-3, AdamWConfig(), MuonConfig())
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
    muon = next(g for g in opt.param_groups if g["kind"] == "muon")
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].startswith(("embed", "head")) and p.ndim >= 2 for p in muon["params"])
    assert muon["lr_scale"] == pytest.approx(20.0)
    # one step moves every parameter that has a gradient
    tokens = torch.randint(0, 64, (2, 8))
    out = model(tokens, tokens) if family == "encdec" else model(tokens)
    out.float().pow(2).mean().backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    moved = [n for n, p in model.named_parameters() if p.grad is not None and not torch.equal(p, before[n])]
    assert len(moved) == sum(p.grad is not None for p in model.parameters())


def test_an_untied_embedding_and_the_value_embeddings_can_have_their_own_rate():
    cfg = ModelConfig(
        vocab_size=64, dim=32, num_layers=1, num_heads=2, max_seq_len=16, tie_embeddings=False, value_embeds=True
    )
    model = build_model(cfg, torch.device("cpu"))
    opt = build_muon(model, 1e-3, AdamWConfig(embed_lr=0.1), MuonConfig())
    (embed,) = [g for g in opt.param_groups if any(p is model.embed.weight for p in g["params"])]
    assert embed["params"] == [model.embed.weight, model.value_embeds["0"].weight]
    assert embed["lr_scale"] == pytest.approx(100)
    (muon,) = [g for g in opt.param_groups if g["kind"] == "muon"]
    assert any(p is model.blocks[0].mixer.ve_gate.weight for p in muon["params"])  # a matrix in a block
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_newton_schulz_keeps_this_runs_precision_when_a_checkpoint_loads():
    """A bf16 checkpoint resumed in fp32 (another CPU) restores the optimizer's state and settings, but
    not its Newton-Schulz precision: that would stay bf16, ~100x slower there, saved again each time."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    cfg = ModelConfig(vocab_size=64, dim=32, num_layers=1, num_heads=2, max_seq_len=16)
    model = build_model(cfg, torch.device("cpu"))
    saved = build_muon(model, 1e-3, AdamWConfig(), MuonConfig(), "bf16")
    model(torch.randint(0, 64, (2, 16))).float().pow(2).mean().backward()
    saved.step()
    model_sd, optim_sd = get_state_dict(model, saved)
    resumed = build_muon(model, 1e-3, AdamWConfig(), MuonConfig(), "fp32")
    set_state_dict(model, resumed, model_state_dict=model_sd, optim_state_dict=optim_sd)
    (muon,) = [g for g in resumed.param_groups if g["kind"] == "muon"]
    assert muon["ns_dtype"] == "fp32" and muon["momentum"] == MuonConfig().momentum
    weight = muon["params"][0]
    assert torch.equal(resumed.state[weight]["momentum_buffer"], saved.state[weight]["momentum_buffer"])


def test_residual_scalars_have_their_own_rate_and_momentum_warms_up():
    cfg = ModelConfig(vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=16, residual_scalars=True)
    model = build_model(cfg, torch.device("cpu"))
    opt = build_muon(model, 1e-3, AdamWConfig(scalar_lr=0.5), MuonConfig(momentum_warmup=10))
    (scalars,) = [g for g in opt.param_groups if any(p is model.x0_scales for p in g["params"])]
    assert len(scalars["params"]) == 2 and scalars["lr_scale"] == pytest.approx(500) and scalars["weight_decay"] == 0
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    ramp = [momentum_at(s, 0.95, 10) for s in range(12)]
    assert ramp[0] == pytest.approx(0.85) and ramp[5] == pytest.approx(0.90) and ramp[10:] == [0.95, 0.95]
    assert all(a < b for a, b in zip(ramp[:10], ramp[1:11]))


@pytest.mark.parametrize("mixed_dtypes", [False, True])
def test_its_adamw_groups_step_as_torchs_adamw(mixed_dtypes):
    """One dtype takes torch's fused kernel, a group mixing dtypes the foreach path: both are AdamW."""
    from kiln.train.muon import MuonAdamW

    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(16, 8, generator=gen), torch.randn(8, generator=gen)]
    if mixed_dtypes:
        ours[1] = ours[1].double()
    ours = [p.requires_grad_() for p in ours]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    start = [p.detach().clone() for p in ours]
    hyper = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)
    opt = MuonAdamW([dict(params=ours, kind="adamw", **hyper)])
    want = torch.optim.AdamW(ref, foreach=False, **hyper)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ours]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        want.step()
    for p, q, s in zip(ours, ref, start):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5) and not torch.allclose(p, s, atol=1e-2)


def test_a_muon_run_resumes_bitwise(tokenized_run, tmp_path, corpus_dir):
    _, src = tokenized_run
    cfg = tiny_config(
        corpus_dir,
        **{
            "train.optimizer": "muon",
            "train.max_steps": "8",
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "model.moe.num_experts": "4",
            "model.residual_scalars": "true",
            "model.value_embeds": "true",
            "adamw.scalar_lr": "0.01",
            "muon.momentum_warmup": "6",  # the cut falls inside the warm-up
            "muon.normalize": "true",  # NorMuon's per-neuron state is checkpointed
            "muon.polar_express": "true",
        },
    )
    a, b = straight_and_resumed(cfg, src, tmp_path, cut=4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_muon_on_two_processes_matches_one(mode, tokenized_run, tmp_path):
    """FSDP2 shards each matrix by rows: Muon gathers the update whole, so 2 ranks equal 1 (with
    NorMuon's per-neuron statistics, Polar Express and value embeddings on too)."""
    from tests.train.test_distributed import _train

    _, src = tokenized_run
    muon = ["--train.optimizer", "muon", "--model.moe.num_experts", "4", "--model.value_embeds", "true"]
    muon += ["--muon.normalize", "true", "--muon.polar_express", "true"]
    single = _train(copy_run(src, tmp_path / "one").root, "--overwrite", *muon)
    losses = _train(copy_run(src, tmp_path / "two").root, "--overwrite", "--parallel.mode", mode, *muon, procs=2)
    assert len(losses) == len(single) == 6
    assert max(abs(a - b) for a, b in zip(losses, single)) < 1e-4, (losses, single)
