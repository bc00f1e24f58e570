"""Every family: what each position may see, generation state equals recomputation, MoE routing."""

import pytest
import torch

from kiln.models.build import build_model
from kiln.models.config import ModelConfig
from kiln.models.moe import MoE, MoEConfig
from kiln.models.sampling import generate
from kiln.models.ssm import Mamba, SSMConfig, naive_scan, ssd_scan


def tiny(**kw) -> ModelConfig:
    base = dict(
        vocab_size=97,
        dim=32,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        max_seq_len=64,
    )
    if kw.get("family") == "hybrid":
        base["ssm"] = SSMConfig(attn_every=2, head_dim=8, state_dim=8, chunk=8)
    return ModelConfig(**{**base, **kw})


def _logits(model, tokens):
    return model(tokens) if model.cfg.family != "encdec" else model(tokens, tokens)


@pytest.mark.parametrize("family, sees_future", [("decoder", False), ("hybrid", False), ("encoder", True)])
def test_which_positions_see_later_tokens(family, sees_future):
    torch.manual_seed(0)
    model = build_model(tiny(family=family), torch.device("cpu")).eval()
    tokens = torch.randint(0, 97, (1, 20))
    changed = tokens.clone()
    changed[0, 15] = (changed[0, 15] + 1) % 97
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[0, :15], b[0, :15], atol=1e-6) != sees_future
    assert not torch.allclose(a[0, 15:], b[0, 15:])


def test_encdec_decoder_is_causal_and_reads_the_encoder():
    torch.manual_seed(0)
    model = build_model(tiny(family="encdec", num_decoder_layers=2), torch.device("cpu")).eval()
    src, tgt = torch.randint(0, 97, (1, 12)), torch.randint(0, 97, (1, 10))
    tgt2 = tgt.clone()
    tgt2[0, 7] = (tgt2[0, 7] + 1) % 97
    src2 = src.clone()
    src2[0, 11] = (src2[0, 11] + 1) % 97
    with torch.no_grad():
        base, later, other_src = model(src, tgt), model(src, tgt2), model(src2, tgt)
    assert torch.allclose(base[0, :7], later[0, :7], atol=1e-6)
    assert not torch.allclose(base[0, 0], other_src[0, 0])  # the first output depends on the whole source


@pytest.mark.parametrize("every, says", [(1, "no SSM layer"), (8, "no attending layer")])
def test_a_hybrid_without_both_kinds_of_layer_is_refused_in_one_line(every, says):
    from kiln.errors import KilnError

    cfg = tiny(family="hybrid", num_layers=2, ssm=SSMConfig(attn_every=every, head_dim=8, state_dim=8, chunk=8))
    with pytest.raises(KilnError, match=f"attn_every={every} with 2 layers gives {says}"):
        build_model(cfg, torch.device("cpu"))


def test_chunked_scan_equals_the_step_by_step_recurrence():
    torch.manual_seed(1)
    b, T, H, P, N = 2, 45, 3, 4, 6  # T not a multiple of the chunk
    x, B, C = torch.randn(b, T, H, P), torch.randn(b, T, N), torch.randn(b, T, N)
    dt, A = torch.rand(b, T, H) * 0.3, -torch.rand(H) * 4
    h0 = torch.randn(b, H, P, N)
    y, h = ssd_scan(x, dt, A, B, C, chunk=8, h0=h0)
    y_ref, h_ref = naive_scan(x, dt, A, B, C, h0=h0)
    assert (y - y_ref).abs().max() < 1e-5 and (h - h_ref).abs().max() < 1e-5


def test_the_chunked_scan_keeps_its_precision_over_a_long_selective_sequence():
    """A head that forgets hard, then holds its state: the decay summed across 64 chunks reaches
    ~1e5, which a difference of running sums would leave with a few digits."""
    torch.manual_seed(0)
    b, T, H, P, N = 1, 2048, 2, 4, 4
    x, B, C = torch.randn(b, T, H, P), torch.randn(b, T, N), torch.randn(b, T, N)
    A = -torch.tensor([1.0, 16.0])
    dt = torch.full((b, T, H), 30.0)
    dt[:, T // 2 :] = 1e-3
    y, _ = ssd_scan(x, dt, A, B, C, chunk=32)
    y_ref, _ = naive_scan(*(t.double() for t in (x, dt, A, B, C)))
    late = slice(T // 2, None)
    assert ((y.double() - y_ref)[:, late].abs().max() / y_ref[:, late].abs().max()) < 1e-5


def test_ssm_layer_recurrent_state_equals_full_sequence():
    torch.manual_seed(2)
    layer = Mamba(32, SSMConfig(head_dim=8, state_dim=8, chunk=8))
    layer.init_weights(0.02, 0.01)
    u = torch.randn(2, 19, 32)
    with torch.no_grad():
        full = layer(u)
        stepped = layer(u, layer.new_state(2, u.device, torch.float32))
    assert (full - stepped).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["decoder", "hybrid"])
def test_generation_with_cache_or_state_equals_recomputation(family):
    torch.manual_seed(3)
    cfg = tiny(family=family, moe=MoEConfig(num_experts=4, top_k=2)) if family == "hybrid" else tiny()
    model = build_model(cfg, torch.device("cpu"))
    prompt = torch.randint(0, 97, (2, 5))
    fast = generate(model, prompt, 20, temperature=0, use_cache=True, precision="fp32")
    slow = generate(model, prompt, 20, temperature=0, use_cache=False, precision="fp32")
    assert torch.equal(fast, slow)


def test_an_encoders_prompt_longer_than_it_reads_is_refused_in_one_line():
    from kiln.errors import KilnError
    from kiln.models.sampling import fill_masks, generate_spans

    long = torch.randint(0, 97, (1, 65))
    encoder = build_model(tiny(family="encoder"), torch.device("cpu"))
    with pytest.raises(KilnError, match="65 tokens"):
        fill_masks(encoder, long, mask_id=4)
    encdec = build_model(tiny(family="encdec", num_decoder_layers=2), torch.device("cpu"))
    with pytest.raises(KilnError, match="65 tokens"):
        generate_spans(encdec, long, 5, bos_id=1, eos_id=2)


def test_a_sampled_image_id_is_text_with_or_without_the_cache():
    """The vlm: a generated <|image|> id has no image behind it; both generation paths treat it as text."""
    from kiln.models.config import VisionConfig

    torch.manual_seed(0)
    cfg = tiny(family="vlm", num_layers=2, vision=VisionConfig(image_size=16, patch_size=8))
    model = build_model(cfg, torch.device("cpu")).eval()
    image_id, patches = 5, cfg.vision.patches
    prompt = torch.tensor([[1, 20, 21, 6] + [image_id] * patches + [7, 30]])
    pixels = torch.randint(0, 256, (1, 1, 16, 16, 3), dtype=torch.uint8)
    logits = model.logits
    model.logits = lambda h: logits(h).index_add(-1, torch.tensor([image_id]), torch.full((*h.shape[:-1], 1), 1e4))
    kw = dict(temperature=0, images=pixels, image_id=image_id, precision="fp32")
    fast, slow = generate(model, prompt, 3, use_cache=True, **kw), generate(model, prompt, 3, use_cache=False, **kw)
    assert fast[0, -3:].tolist() == [image_id] * 3 and torch.equal(fast, slow)


def test_moe_sends_each_token_to_k_experts_and_drops_none():
    torch.manual_seed(4)
    moe = MoE(16, 32, MoEConfig(num_experts=8, top_k=2))
    moe.init_weights(0.5, 0.5)
    x = torch.randn(3, 10, 16)
    weights, experts, _ = moe.route(x.reshape(-1, 16))
    assert experts.shape == (30, 2) and (experts[:, 0] != experts[:, 1]).all()
    assert torch.allclose(weights.sum(-1), torch.ones(30))
    # the layer's output equals the routed experts' weighted sum, token by token
    y = moe(x).reshape(-1, 16)
    for t in range(30):
        want = sum(
            w * (torch.nn.functional.silu(g) * u) @ moe.w_down[e]
            for w, e in zip(weights[t], experts[t])
            for g, u in [(x.reshape(-1, 16)[t] @ moe.w_gate_up[e]).chunk(2)]
        )
        assert torch.allclose(y[t], want, atol=1e-5)
    assert abs(float(moe.load.sum()) - 1) < 1e-6


@pytest.mark.parametrize("top_k", [1, 2])
def test_the_task_loss_reaches_the_router(top_k):
    """Top-1 keeps the chosen expert's probability as its weight (Switch): renormalising it to 1 would
    leave the router learning from the auxiliary losses alone."""
    torch.manual_seed(4)
    moe = MoE(16, 32, MoEConfig(num_experts=4, top_k=top_k, aux_loss_coef=0, z_loss_coef=0))
    moe.init_weights(0.5, 0.5)
    moe(torch.randn(64, 16)).square().sum().backward()
    assert moe.router.weight.grad.abs().max() > 1.0


def test_load_balancing_loss_evens_out_a_skewed_router():
    def train(aux_coef: float) -> tuple[float, float]:
        torch.manual_seed(5)
        moe = MoE(16, 8, MoEConfig(num_experts=4, top_k=1, aux_loss_coef=aux_coef, z_loss_coef=0))
        moe.init_weights(0.1, 0.1)
        with torch.no_grad():
            moe.router.weight[0] += 0.15  # expert 0 wins for inputs along +1 ...
        x = torch.randn(512, 16) + 0.5  # ... and the inputs lean that way
        opt = torch.optim.SGD(moe.router.parameters(), lr=0.1)
        moe(x)
        start = float(moe.load.max())
        for _ in range(200):
            moe(x)
            opt.zero_grad()
            (moe.aux_loss + 0 * moe.router.weight.sum()).backward()
            opt.step()
        moe(x)
        return start, float(moe.load.max())

    start, without = train(0.0)
    _, with_aux = train(1.0)
    assert start > 0.8 and without == start  # nothing moves the router without the loss
    assert with_aux < 0.3  # 0.25 is perfect balance over 4 experts
