"""A compiled training step computes what the eager one does: the same loss and the same gradients
(fp32, within float tolerance), through kiln's fused head and cross-entropy."""

import pytest
import torch

from kiln.device import compile_unavailable
from kiln.models.build import build_model
from kiln.models.config import ModelConfig
from kiln.objectives.causal import CausalLM

CPU = torch.device("cpu")


def loss_and_grads(model: torch.nn.Module, params: dict, batch: dict) -> tuple[torch.Tensor, dict]:
    for p in params.values():
        p.grad = None
    loss, _ = CausalLM().loss(model, batch)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in params.items()}


def test_a_compiled_step_equals_an_eager_one():
    if (reason := compile_unavailable(CPU)) is not None:
        pytest.skip(reason)
    cfg = ModelConfig(
        vocab_size=97, dim=64, num_layers=2, max_seq_len=32, head_width=32, qk_norm=True, tie_embeddings=False
    )
    torch.manual_seed(0)
    model = build_model(cfg, CPU)
    params = dict(model.named_parameters())
    windows = torch.randint(0, 97, (4, 33), generator=torch.Generator().manual_seed(1))
    batch = {"inputs": windows[:, :-1], "targets": windows[:, 1:].clone()}
    batch["targets"][:, :5] = -100  # a masked prompt, as fine-tuning has
    eager_loss, eager = loss_and_grads(model, params, batch)
    compiled_loss, compiled = loss_and_grads(torch.compile(model), params, batch)
    assert compiled_loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    for name, grad in eager.items():
        assert torch.allclose(compiled[name], grad, rtol=1e-4, atol=1e-6), name
    assert any(g.abs().sum() > 0 for g in compiled.values())


def test_a_machine_whose_compiler_cannot_build_inductors_kernels_trains_eager(monkeypatch):
    """A compiler on PATH is not enough (a Mac without libomp, an image without Python's headers): the
    kernels are tried once, and a failure is a reason to train eager, not a crash at the first step."""
    import kiln.device as device

    def fails(fn, **kwargs):
        def run(*args):
            raise RuntimeError("CppCompileError: 'omp.h' file not found\nmore lines")

        return run

    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # a compiler is on PATH
    monkeypatch.setattr(torch, "compile", fails)
    device._cpu_kernel_problem.cache_clear()
    try:
        reason = compile_unavailable(CPU)
    finally:
        device._cpu_kernel_problem.cache_clear()
    assert reason is not None and "cannot build a CPU kernel" in reason and "omp.h" in reason
    assert "more lines" not in reason
