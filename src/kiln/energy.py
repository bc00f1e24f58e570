"""Energy and CO2 per stage: measured where the hardware exposes a counter, else estimated and labelled.

- CPU, measured: the RAPL package counters Linux exposes at /sys/class/powercap/intel-rapl:N/energy_uj
  (Intel, and AMD Zen on recent kernels), read at each stage boundary, wrap-around handled. They
  count the whole package, every process on it, so on a shared machine they overstate this run.
- NVIDIA GPU, measured: NVML's total energy counter (`nvmlDeviceGetTotalEnergyConsumption`, Volta
  and newer) through the `nvidia-ml-py` package when it is installed.
- Otherwise estimated: CPU as `energy.cpu_watts_per_core` x the CPU-seconds this process and its
  children used (so the estimate follows utilisation, not wall time), a GPU as
  `energy.gpu_watts` x wall time (utilisation assumed full). Every record says which it is.

CO2 = kWh x `energy.pue` x `energy.carbon_intensity_g_per_kwh`. The default intensity, 475 g/kWh,
is the world-average figure that codecarbon also falls back on (IEA, 2019); set your grid's.
codecarbon itself is not used: its offline mode still needs a country code, it pulls pandas, and
what kiln needs (two counters and an estimate) is these few lines.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.config import require

POWERCAP = Path("/sys/class/powercap")


@dataclass
class EnergyConfig:
    carbon_intensity_g_per_kwh: float = 475.0
    """Grid carbon intensity, gCO2e per kWh (default: world average, IEA 2019, as codecarbon)."""
    pue: float = 1.0
    """Power usage effectiveness of the data centre (1.0: count the devices only)."""
    cpu_watts_per_core: float = 10.0
    """For the estimate without RAPL: watts a fully busy core draws (server CPUs ~4-10 W per core)."""
    gpu_watts: float = 700.0
    """For the estimate without NVML: a GPU's board power (H100 SXM: 700 W)."""

    def __post_init__(self) -> None:
        require(self.carbon_intensity_g_per_kwh >= 0, "energy.carbon_intensity_g_per_kwh must be >= 0")
        require(self.pue >= 1.0, f"energy.pue={self.pue} must be >= 1")
        require(self.cpu_watts_per_core > 0 and self.gpu_watts > 0, "energy.*_watts must be > 0")


def rapl_domains(root: Path = POWERCAP) -> list[Path]:
    """The readable CPU package domains (intel-rapl:N, not their sub-domains)."""
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") == 1 and (d / "energy_uj").exists():
            try:
                int((d / "energy_uj").read_text())
            except (OSError, ValueError):
                continue  # root-only on many distributions
            out.append(d)
    return out


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Nvml:
    """NVIDIA's energy counters, when nvidia-ml-py is installed and a GPU answers; else unusable."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            for h in handles:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            self.pynvml, self.handles = pynvml, handles
        except Exception:  # not installed, no driver, or a GPU older than Volta
            self.handles = []

    def joules(self) -> float:
        return sum(self.pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1e3


class EnergyMeter:
    """Energy between `lap()` calls: one record per stage."""

    def __init__(self, cfg: EnergyConfig, gpus: int = 0, powercap: Path = POWERCAP) -> None:
        self.cfg, self.gpus = cfg, gpus
        self.domains = rapl_domains(powercap)
        nvml = _Nvml() if gpus else None
        # NVML counts every GPU of the machine: used only when they are all this run's
        self.seen = len(nvml.handles) if nvml else 0
        self.nvml = nvml if nvml and self.seen == gpus else None
        self._mark = self._read()

    def _read(self) -> dict[str, Any]:
        return {
            "t": time.perf_counter(),
            "cpu_s": _cpu_seconds(),
            "rapl_uj": [int((d / "energy_uj").read_text()) for d in self.domains],
            "gpu_j": self.nvml.joules() if self.nvml and self.nvml.handles else 0.0,
        }

    def _rapl_joules(self, before: list[int], after: list[int]) -> float:
        total = 0
        for d, a, b in zip(self.domains, before, after, strict=True):
            delta = b - a
            if delta < 0:  # the counter wrapped
                delta += int((d / "max_energy_range_uj").read_text())
            total += delta
        return total / 1e6

    def lap(self) -> dict[str, Any]:
        """Energy since the previous lap (or construction) as a record: joules, kWh, CO2 grams, and
        per device how it was obtained."""
        now = self._read()
        then, self._mark = self._mark, now
        wall, cpu_s = now["t"] - then["t"], now["cpu_s"] - then["cpu_s"]
        parts = {}
        if self.domains:
            parts["cpu"] = (
                self._rapl_joules(then["rapl_uj"], now["rapl_uj"]),
                f"measured: RAPL, {len(self.domains)} CPU package(s), all processes on them",
            )
        else:
            parts["cpu"] = (
                self.cfg.cpu_watts_per_core * cpu_s,
                f"estimated: {self.cfg.cpu_watts_per_core:g} W per busy core x {cpu_s:.1f} CPU-seconds",
            )
        if self.gpus:
            if self.nvml and self.nvml.handles:
                parts["gpu"] = (now["gpu_j"] - then["gpu_j"], f"measured: NVML, {len(self.nvml.handles)} GPU(s)")
            else:
                parts["gpu"] = (
                    self.cfg.gpu_watts * self.gpus * wall,
                    f"estimated: {self.cfg.gpu_watts:g} W x {self.gpus} GPU(s) x {wall:.1f} s, full utilisation"
                    + (f" (NVML sees {self.seen} GPUs, not only this run's)" if self.seen else ""),
                )
        joules = sum(j for j, _ in parts.values()) * self.cfg.pue
        kwh = joules / 3.6e6
        return {
            "seconds": wall,
            "joules": joules,
            "kwh": kwh,
            "co2_g": kwh * self.cfg.carbon_intensity_g_per_kwh,
            "measured": all(how.startswith("measured") for _, how in parts.values()),
            "how": {device: how for device, (_, how) in parts.items()},
        }


def total(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sum of per-stage records; `measured` only if every stage's was."""
    return {
        "seconds": sum(r["seconds"] for r in records.values()),
        "joules": sum(r["joules"] for r in records.values()),
        "kwh": sum(r["kwh"] for r in records.values()),
        "co2_g": sum(r["co2_g"] for r in records.values()),
        "measured": all(r["measured"] for r in records.values()),
    }
