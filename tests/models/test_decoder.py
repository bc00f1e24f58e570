import pytest
import torch

from kiln.errors import KilnError
from kiln.models.build import build_model
from kiln.models.config import ModelConfig
from kiln.models.sampling import filter_logits, generate


def tiny(**kw) -> ModelConfig:
    return ModelConfig(
        **{"vocab_size": 97, "dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "max_seq_len": 64, **kw}
    )


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny(), torch.device("cpu")).eval()


def test_causal_model_cannot_see_the_future(model):
    tokens = torch.randint(0, 97, (2, 24))
    changed = tokens.clone()
    changed[:, 15:] = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_meta_build_initialises_and_ties(model):
    assert model.head.weight is model.embed.weight
    assert not any(p.is_meta for p in model.parameters())
    assert 0.015 < model.embed.weight.std().item() < 0.025
    untied = build_model(tiny(tie_embeddings=False), torch.device("cpu"))
    assert untied.head.weight is not untied.embed.weight
    assert untied.num_params() == model.num_params() + 97 * 32


@pytest.mark.parametrize("recipe", [{}, {"value_embeds": True, "residual_scalars": True, "qk_norm": True}])
def test_kv_cache_logits_equal_full_recompute(model, recipe):
    if recipe:  # the recipe options that read the tokens or the embeddings at every layer
        torch.manual_seed(0)
        model = build_model(tiny(**recipe), torch.device("cpu")).eval()
    tokens = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2)
        prefix = model(tokens[:, :12], cache=cache)
        chunk = model(tokens[:, 12:16], cache=cache)  # a chunk after a prefix uses an explicit mask
        steps = [model(tokens[:, i : i + 1], cache=cache) for i in range(16, 20)]
    incremental = torch.cat([prefix, chunk, *steps], dim=1)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


def test_generation_with_cache_equals_without(model):
    prompt = torch.randint(0, 97, (1, 5))
    kw = dict(max_new_tokens=20, temperature=0.9, top_k=20, top_p=0.9, seed=7, precision="fp32")
    assert torch.equal(generate(model, prompt, use_cache=True, **kw), generate(model, prompt, use_cache=False, **kw))
    greedy = generate(model, prompt, 10, temperature=0, precision="fp32")
    assert greedy.shape == (1, 15)


def test_generation_fills_the_context_and_refuses_a_longer_prompt(model):
    """A prompt of max_seq_len - 1 tokens gets 2 new ones (the last is never fed back), one of
    max_seq_len gets 1, with and without the cache; a longer one is refused in one line."""
    for length, new in [(63, 2), (64, 1)]:
        prompt = torch.randint(0, 97, (1, length))
        fast = generate(model, prompt, 10, temperature=0, use_cache=True, precision="fp32")
        assert fast.shape == (1, length + new)
        assert torch.equal(fast, generate(model, prompt, 10, temperature=0, use_cache=False, precision="fp32"))
    with pytest.raises(KilnError, match="65 tokens.*max_seq_len=64"):
        generate(model, torch.randint(0, 97, (1, 65)), 10, temperature=0)


def test_generation_is_seeded(model):
    prompt = torch.randint(0, 97, (1, 3))
    a = generate(model, prompt, 15, temperature=1.0, seed=1, precision="fp32")
    assert torch.equal(a, generate(model, prompt, 15, temperature=1.0, seed=1, precision="fp32"))
    assert not torch.equal(a, generate(model, prompt, 15, temperature=1.0, seed=2, precision="fp32"))


def test_top_k_and_top_p_filtering():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, 2:]).all()
    probs = logits.softmax(-1)[0]
    kept = ~torch.isinf(filter_logits(logits, 0, float(probs[0] + probs[1]) - 1e-4))[0]
    assert kept.tolist() == [True, True, False, False, False]


def test_sequence_longer_than_rotary_tables_is_refused(model):
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_bad_shapes_are_config_errors():
    with pytest.raises(KilnError, match="num_kv_heads"):
        tiny(num_kv_heads=3)
