"""KV-cache generation speed against recomputing the whole sequence at every step.

    python benchmarks/generate_speed.py                       # cpu preset shape, 256 new tokens
    python benchmarks/generate_speed.py --new-tokens 128 --preset debug

Uses a freshly initialised model of the preset's shape (speed does not depend on the weights),
greedy decoding so both paths produce the same tokens, and reports tokens/s and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kiln.config import apply_overrides
from kiln.device import pick_device
from kiln.models.build import build_model
from kiln.models.sampling import generate
from kiln.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    cfg = get_preset(args.preset)
    # room for prompt + new tokens, whatever the preset's training context
    needed = args.prompt_tokens + args.new_tokens
    overrides = {
        "model.max_seq_len": str(max(cfg.model.max_seq_len, needed)),
        **dict(o.split("=", 1) for o in args.overrides),
    }
    cfg = apply_overrides(cfg, overrides)
    device = pick_device(cfg.train.device)
    torch.manual_seed(0)
    model = build_model(cfg.model, device).eval()
    if args.precision == "bf16":
        model.to(torch.bfloat16)  # as `kiln generate` does: cast the weights once, not per token
    prompt = torch.randint(3, cfg.model.vocab_size, (1, args.prompt_tokens), device=device)
    rows = {}
    outputs = {}
    for use_cache in (True, False):
        generate(model, prompt, 8, temperature=0, use_cache=use_cache, precision=args.precision)  # warm up
        t0 = time.perf_counter()
        outputs[use_cache] = generate(
            model, prompt, args.new_tokens, temperature=0, use_cache=use_cache, precision=args.precision
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows["kv_cache" if use_cache else "recompute"] = args.new_tokens / (time.perf_counter() - t0)
    same = torch.equal(outputs[True], outputs[False])
    print(f"{'mode':<12}{'tokens/s':>12}")
    for name, tok_s in rows.items():
        print(f"{name:<12}{tok_s:>12,.1f}")
    print(
        f"speed-up at {args.new_tokens} new tokens: {rows['kv_cache'] / rows['recompute']:.1f}x (same tokens: {same})"
    )
    print(
        json.dumps(
            {
                "preset": args.preset,
                "new_tokens": args.new_tokens,
                "device": str(device),
                **rows,
                "speedup": rows["kv_cache"] / rows["recompute"],
                "same_tokens": same,
            }
        )
    )


if __name__ == "__main__":
    main()
