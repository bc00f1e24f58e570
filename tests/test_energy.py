"""Energy records: measured from RAPL counters where present (wrap-around included), else estimated."""

import pytest

from kiln.energy import EnergyConfig, EnergyMeter, total


def fake_rapl(root, energy_uj: int, max_uj: int = 1_000_000_000):
    pkg = root / "intel-rapl:0"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "energy_uj").write_text(str(energy_uj))
    (pkg / "max_energy_range_uj").write_text(str(max_uj))
    (root / "intel-rapl:0:0").mkdir(exist_ok=True)  # a sub-domain (core): not summed
    (root / "intel-rapl:0:0" / "energy_uj").write_text("5")
    return pkg


def test_rapl_counters_give_measured_energy_and_co2(tmp_path):
    pkg = fake_rapl(tmp_path, 100_000_000)
    meter = EnergyMeter(EnergyConfig(carbon_intensity_g_per_kwh=400), powercap=tmp_path)
    (pkg / "energy_uj").write_text(str(100_000_000 + 36_000_000))  # 36 J
    rec = meter.lap()
    assert rec["measured"] and rec["joules"] == pytest.approx(36.0)
    assert rec["kwh"] == pytest.approx(1e-5) and rec["co2_g"] == pytest.approx(4e-3)
    assert rec["how"]["cpu"].startswith("measured: RAPL")
    (pkg / "energy_uj").write_text(str(4_000_000))  # wrapped past max_energy_range_uj
    assert meter.lap()["joules"] == pytest.approx((1_000_000_000 - 136_000_000 + 4_000_000) / 1e6)


def test_without_counters_the_estimate_is_labelled(tmp_path):
    meter = EnergyMeter(EnergyConfig(cpu_watts_per_core=10.0, pue=1.5), powercap=tmp_path / "none")
    sum(i * i for i in range(300_000))  # some CPU time
    rec = meter.lap()
    assert not rec["measured"] and rec["how"]["cpu"].startswith("estimated: 10 W per busy core")
    assert rec["joules"] > 0
    gpu = EnergyMeter(EnergyConfig(gpu_watts=100.0), gpus=2, powercap=tmp_path / "none")
    rec = gpu.lap()
    assert rec["how"]["gpu"].startswith("estimated: 100 W x 2 GPU(s)")
    both = total({"a": rec, "b": rec})
    assert both["joules"] == pytest.approx(2 * rec["joules"]) and not both["measured"]


def test_nvml_is_read_only_when_every_gpu_it_sees_is_the_runs(tmp_path, monkeypatch):
    import kiln.energy

    class EightGPUs:
        handles = [object()] * 8

        def joules(self):
            return 1e6

    monkeypatch.setattr(kiln.energy, "_Nvml", EightGPUs)
    one = EnergyMeter(EnergyConfig(gpu_watts=100.0), gpus=1, powercap=tmp_path / "none").lap()
    assert one["how"]["gpu"].startswith("estimated: 100 W x 1 GPU(s)") and "NVML sees 8 GPUs" in one["how"]["gpu"]
    eight = EnergyMeter(EnergyConfig(), gpus=8, powercap=tmp_path / "none").lap()
    assert eight["how"]["gpu"] == "measured: NVML, 8 GPU(s)"
