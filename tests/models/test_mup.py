"""muP: the coordinate check (activation scales flat across widths at init and after a few steps,
where the standard parametrisation's logits grow with width), the learning-rate groups, and the
parametrisation's pieces (hidden init, logit multiplier) switched off when mup_base_dim is 0."""

import math

import pytest
import torch
import torch.nn.functional as F

from kiln.models.build import build_model
from kiln.models.config import ModelConfig
from kiln.train.config import AdamWConfig
from kiln.train.optim import build_optimizer

WIDTHS = (64, 128, 256, 512)


def coordinates(width: int, mup: bool, steps: int = 4, lr: float = 1e-2) -> tuple[float, float, float]:
    """(std of the final hidden state at init, after `steps` AdamW steps, std of the logits after)."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=97, dim=width, num_layers=2, num_heads=width // 64, max_seq_len=32, mup_base_dim=64 if mup else 0
    )
    model = build_model(cfg, torch.device("cpu"))
    opt = build_optimizer(model, lr, AdamWConfig(weight_decay=0.0, beta2=0.95), torch.device("cpu"), cfg.width_mult)
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 97, (8, 33), generator=gen)
    with torch.no_grad():
        h0 = model.hidden(tokens[:, :-1]).std().item()
    for _ in range(steps):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        h = model.hidden(tokens[:, :-1]).std().item()
        logits = model(tokens[:, :-1]).std().item()
    return h0, h, logits


def test_mup_keeps_activation_scales_flat_across_widths():
    mup = [coordinates(w, True) for w in WIDTHS]
    sp = [coordinates(w, False) for w in WIDTHS]

    def spread(values):
        return max(values) / min(values)

    for i in range(3):
        assert spread([m[i] for m in mup]) < 1.6, [m[i] for m in mup]
    # the standard parametrisation's logits after the same steps grow with width
    assert spread([s[2] for s in sp]) > 2 * spread([m[2] for m in mup]), (sp, mup)


def test_learning_rate_groups_cover_every_parameter_once():
    cfg = ModelConfig(vocab_size=97, dim=256, num_layers=2, num_heads=4, max_seq_len=32, mup_base_dim=64)
    model = build_model(cfg, torch.device("cpu"))
    opt = build_optimizer(model, 1e-2, AdamWConfig(), torch.device("cpu"), cfg.width_mult)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(seen) == len(set(seen))
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert scales == {0.25, 1.0}
    hidden = next(g for g in opt.param_groups if g["lr_scale"] == 0.25)
    assert all(p.ndim == 2 for p in hidden["params"]) and all(p is not model.embed.weight for p in hidden["params"])


def test_without_mup_nothing_changes():
    cfg = ModelConfig(vocab_size=97, dim=128, num_layers=2, num_heads=2, max_seq_len=32)
    assert cfg.width_mult == 1.0 and cfg.hidden_init_std == cfg.init_std
    model = build_model(cfg, torch.device("cpu"))
    tokens = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(tokens), model.head(model.hidden(tokens)))
    mup = ModelConfig(vocab_size=97, dim=256, num_layers=2, num_heads=4, max_seq_len=32, mup_base_dim=64)
    assert mup.width_mult == 4 and math.isclose(mup.hidden_init_std, mup.init_std / 2)
    with pytest.raises(Exception, match="muP"):
        from kiln.transfer.hf import hf_config

        hf_config(mup, 0, 1, 2)
