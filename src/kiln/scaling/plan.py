"""`kiln plan`: how big a model and how many tokens for a compute budget, before paying for it.

The budget is FLOPs, device-hours, or wall-clock hours on `gpus` devices of a named kind (its
dense bf16 peak and power below) or this machine (its matmul peak measured now). FLOPs come from
device time x peak x MFU (stated, default 40 % on a GPU, 50 % on a CPU, kiln's measured range).
For each law (the published fits; kiln's own when `kiln sweep` has fitted one in the run
directory) the plan gives the compute-optimal N and D and the predicted loss; then the nearest
shape on kiln's size dial (model.depth), its FLOPs per token (kiln's count, attention included),
the tokens the budget buys at that shape, the time, memory per device, energy and cost (with the
assumptions printed), and the epochs over the run's corpus (from its shards' manifest) with
Muennighoff et al.'s warning. `--emit-config FILE` writes that shape as a config `kiln train
--config FILE` takes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.energy import EnergyConfig
from kiln.errors import KilnError
from kiln.models.config import ModelConfig
from kiln.models.spec import attention_params, mlp_params
from kiln.scaling.laws import PUBLISHED, LossLaw, discrepancy_note, epochs_note

DEVICES = {
    # name: (dense bf16 peak FLOP/s, board power W), from the vendors' data sheets
    "h100": (989e12, 700.0),
    "h200": (989e12, 700.0),
    "a100": (312e12, 400.0),
    "l4": (121e12, 72.0),
}
BYTES_PER_PARAM = 16
"""fp32 weights, gradients and AdamW's two moments (mixed precision keeps fp32 masters too)."""
CARBON_G_PER_KWH = EnergyConfig().carbon_intensity_g_per_kwh
"""The grid intensity kiln's energy figures use by default (energy.py)."""


@dataclass
class Budget:
    flops: float
    seconds: float
    """Wall-clock seconds on `devices` devices at `peak` x `mfu`."""
    devices: int
    peak: float
    mfu: float
    watts: float
    device: str
    how: str


def budget_of(
    flops: float = 0.0,
    device_hours: float = 0.0,
    hours: float = 0.0,
    device: str = "h100",
    gpus: int = 1,
    mfu: float = 0.0,
    peak: float = 0.0,
    watts: float = 0.0,
) -> Budget:
    """One budget from whichever of flops / device_hours / hours is given."""
    if sum(x > 0 for x in (flops, device_hours, hours)) != 1:
        raise KilnError("give exactly one budget: --flops, --gpu-hours or --hours")
    if device == "cpu":
        import torch

        if peak <= 0:
            from kiln.train.precision import measure_matmul_peak

            peak = measure_matmul_peak(torch.device("cpu"), torch.float32)
        watts = watts or EnergyConfig().cpu_watts_per_core * torch.get_num_threads()
        mfu = mfu or 0.5
    elif device in DEVICES:
        peak = peak or DEVICES[device][0]
        watts = watts or DEVICES[device][1]
        mfu = mfu or 0.4
    else:
        raise KilnError(f"--device {device}: not one of {', '.join([*DEVICES, 'cpu'])}")
    rate = peak * mfu * gpus
    if flops:
        seconds, how = flops / rate, f"{flops:.3g} FLOPs"
    elif device_hours:
        seconds, how = device_hours * 3600 / gpus, f"{device_hours:g} device-hours"
    else:
        seconds, how = hours * 3600, f"{hours:g} h on {gpus} device(s)"
    return Budget(flops or seconds * rate, seconds, gpus, peak, mfu, watts, device, how)


def decoder_params(cfg: ModelConfig) -> int:
    """The dense decoder's parameter count from its config alone (equal to the built model's: tested):
    embedding, untied head, per block attention (and QK-norm's two gains) + SwiGLU + two norm weights,
    the final norm."""
    qk = 2 * cfg.head_dim if cfg.qk_norm and cfg.norm_params else 0
    block = attention_params(cfg) + qk + int(mlp_params(cfg, 0)) + (2 * cfg.dim if cfg.norm_params else 0)
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim
    return cfg.vocab_size * cfg.dim + head + cfg.num_layers * block + (cfg.dim if cfg.norm_params else 0)


def planned_model(depth: int, vocab_size: int, seq_len: int) -> ModelConfig:
    """The model a planned config trains: kiln's recipe (presets.recipe_model) at `depth` on the dial."""
    from kiln.presets import recipe_model

    return recipe_model(depth=depth, vocab_size=vocab_size, max_seq_len=seq_len)


def dial_point(depth: int, vocab_size: int, seq_len: int) -> tuple[int, int, float]:
    """(depth, parameters, training FLOPs per token) of one depth on the size dial."""
    from kiln.objectives.config import ObjectiveConfig
    from kiln.train.flops import flops_per_token

    cfg = planned_model(depth, vocab_size, seq_len)
    return depth, decoder_params(cfg), flops_per_token(cfg, seq_len, ObjectiveConfig())


def nearest_depth(params: float, vocab_size: int, seq_len: int, max_depth: int = 512) -> tuple[int, int, float]:
    """The depth on the dial whose parameter count is nearest `params` in ratio (parameters grow
    with depth, so a bisection finds it in a few meta builds)."""
    guess = (params / (12 * 64**2)) ** (1 / 3)  # ~12 L dim^2 with dim = 64 L
    lo, hi = 1, min(max_depth, int(2 * guess) + 2)
    while lo < hi:  # the smallest depth with at least `params`
        mid = (lo + hi) // 2
        if dial_point(mid, vocab_size, seq_len)[1] >= params:
            hi = mid
        else:
            lo = mid + 1
    options = [dial_point(d, vocab_size, seq_len) for d in {max(lo - 1, 1), lo}]
    return min(options, key=lambda o: abs(math.log(o[1] / params)))


def own_law(run_dir: Path | None) -> LossLaw | None:
    """kiln's own fit for this corpus (written by `kiln sweep` to RUN/scaling/fit.json), if any."""
    if run_dir is None:
        return None
    path = Path(run_dir) / "scaling" / "fit.json"
    if not path.exists():
        return None
    try:
        law = json.loads(path.read_text())["law"]
        return LossLaw("kiln (this corpus)", source=str(path), **law)
    except (ValueError, KeyError, TypeError) as e:
        raise KilnError(f"{path} is not a fit `kiln sweep` wrote ({e}); delete it or rerun the sweep") from None


def corpus_tokens(run_dir: Path | None) -> int | None:
    if run_dir is None:
        return None
    manifest = Path(run_dir) / "shards" / "train" / "manifest.json"
    if not manifest.exists():
        raise KilnError(f"{manifest} not found; run `kiln tokenize` in {run_dir} first, or leave out --run-dir")
    return int(json.loads(manifest.read_text())["num_tokens"])


def make_plan(
    budget: Budget,
    vocab_size: int = 8192,
    seq_len: int = 2048,
    run_dir: Path | None = None,
    parallel: str = "fsdp",
    micro_batch_tokens: int = 16384,
    price_per_hour: float = 0.0,
) -> dict[str, Any]:
    """The plan as a dict (what `kiln plan` prints as a table and JSON)."""
    laws = [*PUBLISHED]
    own = own_law(run_dir)
    if own is not None:
        laws.append(own)
    flops = budget.flops
    allocations: list[dict[str, Any]] = []
    for law in laws:
        n, d = law.optimal(flops)
        allocations.append(
            {
                "law": law.name,
                "source": law.source,
                "params": n,
                "tokens": d,
                "tokens_per_param": d / n,
                "loss": law.loss(n, d),
            }
        )
    target = allocations[0]["params"]  # the replication (or kiln's own fit, preferred when present)
    if own is not None:
        target = allocations[-1]["params"]
    depth, params, fpt = nearest_depth(target, vocab_size, seq_len)
    tokens = flops / fpt
    hours = budget.seconds / 3600
    shards = budget.devices if parallel == "fsdp" else 1

    shape = planned_model(depth, vocab_size, seq_len)
    activations = micro_batch_tokens * shape.dim * shape.num_layers * 34 + micro_batch_tokens * vocab_size * 4
    memory = params * BYTES_PER_PARAM / shards + activations
    energy_kwh = budget.watts * budget.devices * hours / 1000
    plan: dict[str, Any] = {
        "budget": {
            "as_given": budget.how,
            "flops": flops,
            "device": budget.device,
            "devices": budget.devices,
            "peak_flops": budget.peak,
            "mfu": budget.mfu,
        },
        "allocations": allocations,
        "note": discrepancy_note(flops),
        "shape": {
            "depth": depth,
            "dim": shape.dim,
            "layers": shape.num_layers,
            "heads": shape.num_heads,
            "params": params,
            "flops_per_token": fpt,
            "tokens": tokens,
            "tokens_per_param": tokens / params,
            "predicted_loss": {law.name: law.loss(params, tokens) for law in laws},
            "hours": hours,
            "memory_per_device_gib": memory / 2**30,
            "memory_assumptions": (
                f"{BYTES_PER_PARAM} bytes/parameter (fp32 weights, grads, AdamW), "
                f"{'sharded over ' + str(shards) + ' devices' if shards > 1 else 'whole on each device'} ({parallel}); "
                f"activations "
                f"~34 bytes x dim x layers per token and fp32 logits for {micro_batch_tokens} tokens per micro-batch"
            ),
            "energy_kwh": energy_kwh,
            "co2_kg": energy_kwh * CARBON_G_PER_KWH / 1000,
            "energy_assumptions": f"{budget.watts:g} W per device for the whole run, {CARBON_G_PER_KWH:g} g CO2e/kWh",
            "cost": price_per_hour * budget.devices * hours if price_per_hour else None,
        },
        "seq_len": seq_len,
        "vocab_size": vocab_size,
        "parallel": parallel if budget.devices > 1 else "none",
    }
    corpus = corpus_tokens(run_dir)
    if corpus is not None:
        epochs, warning = epochs_note(tokens, corpus)
        plan["corpus"] = {"tokens": corpus, "epochs": epochs, "warning": warning}
    return plan


def plan_table(plan: dict[str, Any]) -> str:
    """The plan for a person: the allocations, then the chosen shape."""
    b, s = plan["budget"], plan["shape"]
    lines = [
        f"budget: {b['as_given']} = {b['flops']:.3g} FLOPs ({b['devices']} x {b['device']}, peak "
        f"{b['peak_flops']:.3g} FLOP/s, MFU {b['mfu']:.0%})",
        "",
        "| law | parameters | tokens | tokens/param | predicted loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for a in plan["allocations"]:
        lines.append(
            f"| {a['law']} | {a['params']:.3g} | {a['tokens']:.3g} | {a['tokens_per_param']:.1f} | {a['loss']:.3f} |"
        )
    lines += [
        "",
        plan["note"],
        "",
        f"nearest shape on the size dial: depth {s['depth']} ({s['layers']} x {s['dim']}, {s['heads']} heads), "
        f"{s['params']:.3g} parameters, {s['flops_per_token']:.3g} FLOPs/token -> {s['tokens']:.3g} tokens "
        f"({s['tokens_per_param']:.1f}/parameter) in {s['hours']:.3g} h",
        f"memory per device ~{s['memory_per_device_gib']:.1f} GiB ({s['memory_assumptions']})",
        f"energy ~{s['energy_kwh']:.3g} kWh, ~{s['co2_kg']:.3g} kg CO2e ({s['energy_assumptions']})"
        + (f"; cost ~{s['cost']:.4g}" if s["cost"] else ""),
        "predicted loss at this shape: " + ", ".join(f"{k} {v:.3f}" for k, v in s["predicted_loss"].items()),
    ]
    corpus = plan.get("corpus")
    if corpus:
        lines.append(f"corpus: {corpus['tokens']:,} tokens -> {corpus['epochs']:.2f} epochs")
        if corpus["warning"]:
            lines.append(f"WARNING: {corpus['warning']}")
    return "\n".join(lines) + "\n"


def emit_config(plan: dict[str, Any], path: Path, micro_batch_size: int = 8) -> Path:
    """The planned shape as a run config `kiln train --config` takes (the cpu preset otherwise). It
    replaces only a config an earlier `kiln plan` wrote, and none in a run directory (a run's
    config.json, even one trained from a planned config, or any other file stays)."""
    import json

    from kiln.config import replace, save_config
    from kiln.errors import KilnError
    from kiln.presets import cpu

    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            earlier = None
        in_a_run = any((path.parent / name).exists() for name in ("checkpoints", "stages.json", "metrics.jsonl"))
        if in_a_run or not (isinstance(earlier, dict) and earlier.get("preset") == "plan"):
            raise KilnError(
                f"{path} exists and is not a config kiln plan wrote (or sits in a run directory): not replacing it; "
                "choose another path"
            )
    s = plan["shape"]
    base = cpu()
    seq_len = plan["seq_len"]
    devices = plan["budget"]["devices"]
    sequences = micro_batch_size * devices  # a step: one micro-batch on each device of the plan
    steps = max(1, int(s["tokens"] // (seq_len * sequences)))
    cfg = replace(
        base,
        preset="plan",
        budget_s=0.0,
        tokenizer=replace(base.tokenizer, vocab_size=plan["vocab_size"]),
        model=replace(base.model, depth=s["depth"], vocab_size=plan["vocab_size"], max_seq_len=seq_len),
        train=replace(
            base.train,
            seq_len=seq_len,
            micro_batch_size=micro_batch_size,
            max_steps=steps,
            size_from_budget=False,
            time_budget_s=0.0,
            global_batch_size=sequences if devices > 1 else 0,  # the same tokens a step at any world size
        ),
        parallel=replace(base.parallel, mode=plan.get("parallel", "none")),
    )
    save_config(cfg, path)
    return path
