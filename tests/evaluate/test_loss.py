import math

import torch
from torch import nn

from kiln.evaluate.loss import validation_loss
from kiln.objectives.causal import CausalLM


class FixedLogits(nn.Module):
    """Returns the same logits row at every position."""

    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.row.expand(*tokens.shape, len(self.row)).clone()


def test_bits_per_byte_matches_a_hand_computed_case():
    # vocab of 4: id 0 is special (0 bytes); ids 1, 2, 3 stand for 1, 2 and 3 bytes of text.
    token_bytes = torch.tensor([0, 1, 2, 3])
    model = FixedLogits([0.0, 0.0, 0.0, 0.0])  # uniform: every target costs ln 4 nats
    inputs = torch.tensor([[0, 1, 2, 3]])
    targets = torch.tensor([[1, 2, 3, 0]])
    out = validation_loss(
        CausalLM(), model, [{"inputs": inputs, "targets": targets}], token_bytes, torch.device("cpu"), precision="fp32"
    )
    assert math.isclose(out["loss"], math.log(4), rel_tol=1e-6)
    # three text targets, 2 bits each, over 1 + 2 + 3 = 6 bytes -> 1 bit per byte
    assert math.isclose(out["bpb"], 1.0, rel_tol=1e-6)
    assert out["tokens"] == 4 and out["bytes"] == 6


def test_bits_per_byte_with_skewed_predictions():
    token_bytes = torch.tensor([0, 2, 4])
    model = FixedLogits([0.0, math.log(3.0), 0.0])  # p = (1/5, 3/5, 1/5)
    targets = torch.tensor([[1, 2, 1]])
    out = validation_loss(
        CausalLM(), model, [{"inputs": torch.zeros_like(targets), "targets": targets}], token_bytes, torch.device("cpu")
    )
    nats = 2 * -math.log(3 / 5) + -math.log(1 / 5)
    assert math.isclose(out["bpb"], nats / (math.log(2) * 8), rel_tol=1e-6)
