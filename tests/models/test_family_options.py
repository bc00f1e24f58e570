"""Every family honours every model option or refuses it in one line: no option is silently ignored.

For each family in the registry and each option, the config is either refused with a one-line
KilnError naming the option, or the built model differs from the plain one built from the same seed
(in its parameters, or in its outputs on the same tokens).
"""

import pytest
import torch

from kiln.errors import KilnError
from kiln.models.build import build_model
from kiln.models.config import MoEConfig, SSMConfig, VisionConfig
from kiln.models.registry import FAMILIES
from tests.models.test_spec import tiny

OPTIONS = {
    "qk_norm": {"qk_norm": True},
    "relu2": {"mlp": "relu2"},
    "softcap": {"logit_softcap": 0.5},
    "zero_init_out": {"zero_init_out": True},
    "no_norm_params": {"norm_params": False},
    "untied": {"tie_embeddings": False},
    "zero_head": {"tie_embeddings": False, "zero_init_head": True},
    "embed_norm": {"embed_norm": True},
    "residual_scalars": {"residual_scalars": True},
    "value_embeds": {"value_embeds": True},
    "moe": {"moe": MoEConfig(num_experts=4, top_k=2, every=1)},
    "moe_on_no_layer": {"moe": MoEConfig(num_experts=4, top_k=2, every=8)},
    "rope_theta": {"rope_theta": 500.0},
    "decoder_layers": {"num_decoder_layers": 6},
    "ssm": {"ssm": SSMConfig(attn_every=2, head_dim=16, state_dim=16, chunk=8)},
    "vision": {"vision": VisionConfig(image_size=16, patch_size=4)},
}


def outputs(model, family: str, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, tokens) if family == "encdec" else model(tokens)


def state(model) -> dict[str, tuple]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_an_option_is_honoured_or_refused_in_one_line(family, option):
    torch.manual_seed(0)
    plain = build_model(tiny(family=family, vocab_size=97), torch.device("cpu"))
    try:  # refused when the config is made or, at the latest, when the model is built
        cfg = tiny(family=family, vocab_size=97, **OPTIONS[option])
        torch.manual_seed(0)
        changed = build_model(cfg, torch.device("cpu"))
    except KilnError as e:
        assert "\n" not in str(e) and "model." in str(e), str(e)
        return
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    same_params = state(plain) == state(changed)
    same_outputs = same_params and torch.equal(outputs(plain, family, tokens), outputs(changed, family, tokens))
    assert not same_outputs, f"{family} ignores {option}"
