"""Precision by measurement and the bounded matmul ceiling: decisions tested with injected rates,
so they hold whatever CPU runs the suite."""

import pytest
import torch

from kiln.train.precision import (
    MatmulRates,
    choose_precision,
    compare_matmul_rates,
    matmul_ladder,
    measure_matmul_peak,
)

CPU = torch.device("cpu")
AVX2_ONLY = MatmulRates(fp32=150e9, bf16=1.2e9, size=512)  # emulated bf16: ~100x slower
AMX = MatmulRates(fp32=190e9, bf16=830e9, size=1024)


def test_auto_picks_fp32_where_bf16_is_slower_and_says_why():
    choice = choose_precision("auto", CPU, AVX2_ONLY)
    assert choice.precision == "fp32" and choice.warning is None
    assert "0.01x the fp32 rate" in choice.reason and choice.bf16_speedup < 0.01


def test_auto_picks_bf16_where_it_is_faster():
    choice = choose_precision("auto", CPU, AMX)
    assert choice.precision == "bf16" and "4.37x" in choice.reason


@pytest.mark.parametrize("rates", [AVX2_ONLY, AMX])
def test_a_stretch_of_load_slows_both_precisions_alike(rates, monkeypatch):
    """Another process loads the CPU for the probe's first half (each product 20x slower): timed one
    precision after the other, a loaded fp32 was compared with a quiet bf16 (40x the truth on AMX)."""
    now = [0.0]
    per_flop = {torch.float32: 1 / rates.fp32, torch.bfloat16: 1 / rates.bf16}

    def matmul(a, b):  # a product's time on a clock of its own, the same whatever CPU runs the suite
        now[0] += 2 * a.shape[0] ** 3 * per_flop[a.dtype] * (20 if now[0] < 0.15 else 1)
        return a

    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    probed = compare_matmul_rates(CPU, 0.3, clock=lambda: now[0])
    assert probed.bf16_speedup == pytest.approx(rates.bf16_speedup, rel=1e-6)
    assert now[0] < 0.3 + 2 * 1024**3 * (per_flop[torch.float32] + per_flop[torch.bfloat16])  # bounded


def test_explicit_bf16_is_kept_with_one_warning_line_where_slow():
    slow = choose_precision("bf16", CPU, AVX2_ONLY)
    assert slow.precision == "bf16"
    assert "125x slower than fp32" in slow.warning and "\n" not in slow.warning
    assert choose_precision("bf16", CPU, AMX).warning is None


def test_explicit_fp32_needs_no_measurement():
    assert choose_precision("fp32", CPU).precision == "fp32"


def test_the_ceiling_measurement_is_bounded_whatever_the_speed():
    for dtype in (torch.float32, torch.bfloat16):  # bf16 runs ~1 GFLOP/s on an AVX2-only CPU
        assert measure_matmul_peak(CPU, dtype, seconds=0.3) > 0, dtype

    class Clock:  # every product seems to take `per_product` seconds (two readings each)
        def __init__(self, per_product: float) -> None:
            self.now, self.per_product = 0.0, per_product

        def __call__(self) -> float:
            self.now += self.per_product / 2
            return self.now

    slow = Clock(0.5)  # 8 such products would overrun the time allowed: no growing past the first size
    assert set(matmul_ladder(CPU, torch.float32, 2.0, 4096, clock=slow)) == {128}
    assert slow.now <= 2.0 + 2 * 0.5  # the deadline, overrun by at most the product under way and one more
    fast = Clock(0.001)  # quick products: up the ladder to its top, then repeats until the deadline
    assert set(matmul_ladder(CPU, torch.float32, 0.5, 256, clock=fast)) == {128, 256}
    assert fast.now <= 0.5 + 2 * 0.001


def test_under_load_the_ladder_climbs_past_products_that_mostly_wait_for_the_cores(monkeypatch):
    """Another process holds the cores: every product waits 7 ms before its compute (400 GFLOP/s).
    Judged by one product's share of a 0.2 s budget, the ladder stayed at 128 x 128 and read 0.6
    GFLOP/s as the ceiling; judged by the time left, it climbs to where the compute shows."""
    now = [0.0]

    def matmul(a, b):
        now[0] += 0.007 + 2 * a.shape[0] ** 3 / 400e9
        return a

    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    rates = matmul_ladder(CPU, torch.float32, 0.2, 4096, clock=lambda: now[0])
    assert max(rates) >= 1024 and max(rates.values()) > 100e9
    assert now[0] < 0.2 + 2 * (0.007 + 2 * 4096**3 / 400e9)  # bounded


def test_the_ladder_grows_only_while_products_are_quick_and_stops_on_request():
    rates = matmul_ladder(CPU, torch.float32, 0.2, max_size=256)
    assert set(rates) <= {128, 256} and 128 in rates
    calls = []
    stopped = matmul_ladder(
        CPU, torch.float32, 30.0, max_size=4096, stop=lambda: bool(calls.append(1)) or len(calls) > 2
    )
    assert len(stopped) <= 2  # a stop request ends a 30-second measurement after a product or two


def test_the_ceiling_is_also_measured_at_the_products_the_model_multiplies():
    from kiln.models.build import build_model
    from kiln.models.config import ModelConfig
    from kiln.train.flops import forward_matmul_shapes
    from kiln.train.precision import measure_shape_peak

    cfg = ModelConfig(vocab_size=96, dim=64, num_layers=2, num_heads=4, max_seq_len=32, tie_embeddings=False)
    shapes = forward_matmul_shapes(build_model(cfg, CPU), tokens=128)
    qkv, hidden = 64 * 3, cfg.hidden_dim
    assert {(128, 64, qkv), (128, 64, 64), (128, 64, 2 * hidden), (128, hidden, 64), (128, 64, 96)} == set(shapes)
    assert measure_shape_peak(CPU, torch.float32, shapes, seconds=0.2) > 0
    assert measure_shape_peak(CPU, torch.float32, shapes, stop=lambda: True) == 0.0
