"""Every family's spec: FLOPs from the config alone equal the count over a built model, and every block
list is one that parallelize wraps (a list a family forgets to name is caught)."""

import pytest
import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointWrapper,
)

from kiln.models.block import Block
from kiln.models.build import build_model
from kiln.models.config import ModelConfig, MoEConfig, SSMConfig, VisionConfig
from kiln.models.decoder import Decoder
from kiln.models.encdec import DecoderBlock
from kiln.models.layers import Attention, CrossAttention
from kiln.models.registry import FAMILIES
from kiln.objectives.config import ObjectiveConfig
from kiln.train.config import ParallelConfig
from kiln.train.flops import flops_per_token, matmul_params
from kiln.train.parallel import Parallel, parallelize

SHAPES = {
    "decoder": {},
    "decoder_moe": {"moe": MoEConfig(num_experts=4, top_k=2, every=2)},
    "hybrid": {"family": "hybrid", "moe": MoEConfig(num_experts=4, top_k=2, every=2)},
    "encoder": {"family": "encoder"},
    "encdec": {"family": "encdec", "num_decoder_layers": 3},
    "gqa_untied": {"num_kv_heads": 2, "tie_embeddings": False},
    "vlm_vit": {"family": "vlm", "vision": VisionConfig(image_size=16, patch_size=8, encoder="vit", encoder_layers=1)},
}


def tiny(**kw) -> ModelConfig:
    base = dict(
        vocab_size=97,
        dim=64,
        num_layers=4,
        num_heads=4,
        num_kv_heads=4,
        max_seq_len=64,
    )
    if kw.get("family") == "hybrid":  # the sections only their family reads (others refuse them)
        base["ssm"] = SSMConfig(attn_every=2, head_dim=16, state_dim=8, chunk=8)
    if kw.get("family") == "vlm":
        base["vision"] = VisionConfig(image_size=16, patch_size=8)
    return ModelConfig(**{**base, **kw})


def counted_flops(model: nn.Module, cfg: ModelConfig, seq_len: int, objective: ObjectiveConfig) -> float:
    """PaLM's count over the built modules (what kiln measured MFU with before the specs)."""

    def attention_layers(module):
        return sum(isinstance(m, (Attention, CrossAttention)) for m in module.modules())

    C = cfg.dim
    if cfg.family == "vlm":  # the image encoder runs once per patch, patches are P of seq_len positions
        v, P = model.vision, cfg.vision.patches
        image = 6 * matmul_params(v) + 12 * attention_layers(v) * C * P
        text = (
            6 * (matmul_params(model) - matmul_params(v))
            + 12 * (attention_layers(model) - attention_layers(v)) * C * seq_len
        )
        return text + image * P / max(seq_len, P)
    if cfg.family != "encdec":
        return 6 * matmul_params(model) + 12 * attention_layers(model) * C * seq_len
    d, m = objective.span.noise_density, objective.span.mean_span_length
    src, tgt = 1 - d + d / m, d + d / m
    enc = 6 * matmul_params(model.encoder) + 12 * attention_layers(model.encoder) * C * seq_len * src
    dec = (
        6 * (matmul_params(model.decoder) + C * cfg.vocab_size)
        + 12 * attention_layers(model.decoder) * C * seq_len * (tgt + src) / 2
    )
    return enc * src + dec * tgt


@pytest.mark.parametrize("shape", SHAPES)
def test_flops_from_the_config_alone_match_the_built_model(shape):
    cfg, objective = tiny(**SHAPES[shape]), ObjectiveConfig()
    model = build_model(cfg, torch.device("meta"))
    assert flops_per_token(cfg, 60, objective) == pytest.approx(counted_flops(model, cfg, 60, objective), rel=1e-12)


def test_every_family_is_registered_under_its_name():
    assert set(FAMILIES) == {"decoder", "hybrid", "encoder", "encdec", "vlm"}
    assert all(spec.name == name for name, spec in FAMILIES.items())


def unwrapped_blocks(model: nn.Module) -> list[str]:
    """Blocks that parallelize (activation checkpointing, the same walk FSDP takes) left unwrapped."""
    par = Parallel(ParallelConfig(activation_checkpointing="block"), torch.device("cpu"))
    wrapped = parallelize(model, par, "fp32")
    inside = {id(m) for w in wrapped.modules() if isinstance(w, CheckpointWrapper) for m in w.modules()}
    return [name for name, m in wrapped.named_modules() if isinstance(m, (Block, DecoderBlock)) and id(m) not in inside]


@pytest.mark.parametrize("shape", SHAPES)
def test_parallelize_wraps_every_block_of_every_family(shape):
    model = build_model(tiny(**SHAPES[shape]), torch.device("cpu"))
    lists = {id(x) for x in model.repeated_blocks()}
    assert lists == {id(m) for m in model.modules() if isinstance(m, nn.ModuleList)}  # the ViT's too
    assert unwrapped_blocks(model) == []


def test_a_block_list_a_family_forgets_to_name_is_caught():
    class Forgetful(Decoder):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.extra = nn.ModuleList([Block(cfg, 0)])

    model = Forgetful(tiny())
    assert unwrapped_blocks(model) == ["extra.0"]


def test_every_family_scores_a_continuation_given_its_context():
    from tests.objectives.test_objectives import IDS

    torch.manual_seed(0)
    context, continuation = [50, 61, 72, 83, 94], [100, 101, 102]
    for name, spec in FAMILIES.items():
        cfg = (
            tiny(family=name, vocab_size=IDS.vocab_size)
            if name != "hybrid"
            else tiny(**SHAPES["hybrid"], vocab_size=IDS.vocab_size)
        )
        model = build_model(cfg, torch.device("cpu")).eval()
        (score, greedy), again = spec.score(model, [(context, continuation), (context, continuation)], IDS, "fp32", 64)
        assert score < 0 and score == pytest.approx(again.logprob), name
        (other, _), (alone, _) = spec.score(
            model, [([55, 66, 77, 88, 99], continuation), (context, continuation)], IDS, "fp32", 64
        )
        assert other != pytest.approx(score) and alone == pytest.approx(score, abs=1e-5), name
        assert spec.score(model, [(context, [])], IDS, "fp32", 64) == [(0.0, True)], name  # nothing to score


def test_a_causal_score_is_the_sum_of_next_token_log_probabilities_and_batching_changes_nothing():
    from tests.objectives.test_objectives import IDS

    spec = FAMILIES["decoder"]
    model = build_model(tiny(vocab_size=IDS.vocab_size), torch.device("cpu")).eval()
    tokens = torch.tensor([[IDS.bos, 50, 61, 72, 100, 101]])
    with torch.no_grad():
        logprobs = model(tokens[:, :-1]).log_softmax(-1)[0]
    want = logprobs[3, 100] + logprobs[4, 101]  # positions predicting the continuation's two tokens
    greedy = bool((logprobs[3].argmax() == 100) & (logprobs[4].argmax() == 101))
    alone = spec.score(model, [([50, 61, 72], [100, 101])], IDS, "fp32", 64)
    assert alone[0].logprob == pytest.approx(want.item(), rel=1e-6) and alone[0].greedy == greedy
    # padded beside longer and shorter requests, in one batch: the same figure
    mixed = [([7] * 30, [8, 9]), ([50, 61, 72], [100, 101]), ([3], [4])]
    assert spec.score(model, mixed, IDS, "fp32", 64)[1].logprob == pytest.approx(want.item(), abs=1e-5)
    # the continuation the model itself would write greedily is greedy
    best = int(logprobs[2].argmax())
    assert spec.score(model, [([50, 61], [best])], IDS, "fp32", 64)[0].greedy
    # too long a context loses its start: only the last max_len - len(continuation) tokens count
    long_ctx = list(range(40, 100))
    cut = spec.score(model, [(long_ctx, [100, 101])], IDS, "fp32", 10)[0].logprob
    assert cut == pytest.approx(spec.score(model, [(long_ctx[-8:], [100, 101])], IDS, "fp32", 64)[0].logprob, abs=1e-5)


@pytest.mark.parametrize(
    "context, continuation, max_len, kept_context, kept_continuation",
    [
        (130, 14, 256, 130, 14),  # fits: nothing cut (the bug cut 18 tokens from its front)
        (242, 14, 256, 242, 14),  # exactly the room
        (243, 14, 256, 242, 14),  # one over: the context loses its first token
        (10, 300, 256, 0, 256),  # the continuation alone is too long: its end goes, the context too
        (0, 5, 8, 0, 5),
        (3, 5, 8, 3, 5),
        (4, 5, 8, 3, 5),
    ],
)
def test_fit_request_cuts_only_what_does_not_fit(context, continuation, max_len, kept_context, kept_continuation):
    from kiln.models.spec import fit_request

    ctx, cont = list(range(context)), list(range(1000, 1000 + continuation))
    got_ctx, got_cont = fit_request(ctx, cont, max_len)
    assert got_ctx == ctx[len(ctx) - kept_context :] and got_cont == cont[:kept_continuation]
