"""LoRA: the adapted model starts as the base, merging equals the adapted forward, only adapters train."""

import pytest
import torch

from kiln.errors import KilnError
from kiln.finetune.lora import LoRALinear, adapter_weights, apply_lora, merged_weights
from kiln.models.build import build_model
from tests.models.test_spec import tiny


def test_lora_starts_as_the_base_model_and_merges_exactly():
    torch.manual_seed(0)
    model = build_model(tiny(vocab_size=300), torch.device("cpu")).eval()
    tokens = torch.randint(10, 300, (2, 12))
    with torch.no_grad():
        before = model(tokens)
    wrapped = apply_lora(model, ["wqkv", "wo", "w_gate_up", "w_down"], rank=4, alpha=8.0, dropout=0.0)
    assert wrapped == 4 * model.cfg.num_layers
    with torch.no_grad():
        assert torch.equal(model(tokens), before)  # B starts at zero
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(std=0.02)
        adapted = model(tokens)
    assert not torch.allclose(adapted, before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    state = model.state_dict()
    plain = build_model(tiny(vocab_size=300), torch.device("cpu")).eval()
    plain.load_state_dict(merged_weights(state), strict=False)
    with torch.no_grad():
        assert torch.allclose(plain(tokens), adapted, atol=1e-5)
    assert set(adapter_weights(state)) == {k for k in state if ".lora_" in k}
    with pytest.raises(KilnError, match="names no linear layer"):
        apply_lora(build_model(tiny(vocab_size=300), torch.device("cpu")), ["nosuch"], 4, 8.0, 0.0)
