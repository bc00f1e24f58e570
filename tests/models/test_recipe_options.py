"""The architecture options of the training recipe (docs/benchmarks.md): each does what it says,
keeps the model causal, and leaves the default model unchanged."""

import pytest
import torch

from kiln.errors import KilnError
from kiln.models.build import build_model
from kiln.models.config import ModelConfig, SSMConfig
from kiln.train.flops import matmul_params

OPTIONS = {
    "qk_norm": {"qk_norm": True},
    "relu2": {"mlp": "relu2"},
    "softcap": {"logit_softcap": 5.0},
    "zero_out": {"zero_init_out": True},
    "no_norm_params": {"norm_params": False},
    "untied": {"tie_embeddings": False},
    "zero_head": {"tie_embeddings": False, "zero_init_head": True},
    "value_embeds": {"value_embeds": True},
}


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"vocab_size": 64, "dim": 64, "num_layers": 2, "num_heads": 2, "max_seq_len": 16, **kw})
    return build_model(cfg, torch.device("cpu")), cfg


def _causal_logits(model, tokens):
    """The model's logits for `tokens`, after checking that changing later tokens leaves earlier ones;
    backpropagates a loss through them."""
    logits = model(tokens)
    later = tokens.clone()
    later[:, 8:] = 3
    assert torch.allclose(model(later)[:, :8], logits[:, :8], atol=1e-6)
    logits.float().logsumexp(-1).mean().backward()
    return logits


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_trains_and_stays_causal(option):
    model, cfg = _model(**OPTIONS[option])
    tokens = torch.randint(0, 64, (2, 12))
    logits = _causal_logits(model, tokens)
    assert all(p.grad is not None for p in model.parameters())
    if option == "softcap":
        assert logits.abs().max() < 5.0
    if option == "zero_out":  # every block starts as the identity: the logits are the embedding's
        plain = model.logits(model.norm(model.embed(tokens)))
        assert torch.allclose(logits, plain, atol=1e-6)
    if option == "zero_head":  # uniform first predictions, and the head still learns
        assert torch.equal(logits, torch.zeros_like(logits)) and model.head.weight.grad.abs().sum() > 0
    if option == "no_norm_params":
        assert not any("norm" in n for n, _ in model.named_parameters())


def test_relu2_matches_swiglu_parameters_and_qk_norm_adds_only_its_gains():
    swiglu, relu2, (qk, cfg) = _model()[0], _model(mlp="relu2")[0], _model(qk_norm=True)
    # equal but for the rounding of SwiGLU's 8/3 x width up to a multiple of 64 (11 % at width 64, 3 % at 256)
    assert matmul_params(relu2) == pytest.approx(matmul_params(swiglu), rel=0.12)
    # Qwen3's per-head gains on queries and keys when norms learn gains; none without
    assert qk.num_params() == swiglu.num_params() + cfg.num_layers * 2 * cfg.head_dim
    free = _model(qk_norm=True, norm_params=False)[0]
    assert free.num_params() == _model(norm_params=False)[0].num_params()


def test_embed_norm_and_residual_scalars():
    plain, _ = _model()
    model, cfg = _model(embed_norm=True, residual_scalars=True, x0_init=0.0)
    assert model.num_params() == plain.num_params() + 2 * cfg.num_layers + cfg.dim  # scalars + the norm's gain
    assert model.resid_scales.tolist() == [1.0, 1.0] and model.x0_scales.tolist() == [0.0, 0.0]
    tokens = torch.randint(0, 64, (2, 12))
    logits = _causal_logits(model, tokens)
    assert model.x0_scales.grad.abs().sum() > 0  # the skip from the embeddings learns from 0
    with torch.no_grad():  # with r = 0 and s = 1 each block sees the embeddings, not the stream
        model.resid_scales.zero_()
        model.x0_scales.fill_(1.0)
        only_last = model(tokens)
        model.blocks[0].mixer.wo.weight.normal_()  # block 0's output no longer reaches the logits
        assert torch.allclose(model(tokens), only_last, atol=1e-6)
    assert not torch.allclose(only_last, logits)


def test_value_embeds_on_every_other_attention_layer_from_the_last():
    plain, _ = _model(num_layers=3)
    model, cfg = _model(num_layers=3, value_embeds=True)
    assert model.ve_layers == [2, 0] and sorted(model.value_embeds) == ["0", "2"]
    gate = min(32, cfg.dim) * cfg.num_kv_heads
    tables = 2 * cfg.vocab_size * cfg.num_kv_heads * cfg.head_dim
    assert model.num_params() == plain.num_params() + tables + 2 * gate
    assert model.num_params(non_embedding=True) == plain.num_params(non_embedding=True) + 2 * gate
    tokens = torch.randint(0, 64, (2, 12))
    logits = _causal_logits(model, tokens)
    assert model.blocks[2].mixer.ve_gate.weight.grad.abs().sum() > 0  # the gate learns from zero
    with torch.no_grad():  # with the tables at zero the model is the plain one with the same weights
        plain.load_state_dict(model.state_dict(), strict=False)
        for table in model.value_embeds.values():
            table.weight.zero_()
        assert torch.allclose(model(tokens), plain(tokens), atol=1e-6)
    assert not torch.allclose(logits, plain(tokens))
    hybrid, _ = _model(family="hybrid", num_layers=8, ssm=SSMConfig(attn_every=4, head_dim=16), value_embeds=True)
    assert hybrid.ve_layers == [6]  # the last of its attention layers (2 and 6; the SSM layers have no values)
    _causal_logits(hybrid, tokens)


def test_decoder_only_options_refused_for_encoders():
    cpu = torch.device("cpu")
    with pytest.raises(KilnError, match="model.residual_scalars: model.family=encoder has no place for it"):
        build_model(ModelConfig(family="encoder", vocab_size=64, dim=64, num_layers=2, residual_scalars=True), cpu)
    with pytest.raises(KilnError, match="model.value_embeds: model.family=encdec has no place for it"):
        build_model(ModelConfig(family="encdec", vocab_size=64, dim=64, num_layers=2, value_embeds=True), cpu)
