"""`kiln export` (one entry for every format, each verified as it is written) and `kiln import`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.rundir import STATE
from kiln.transfer.target import check_target, clear_staged, put_in_place, staged_path
from kiln.verbs import Verb, checkpoint_option

FORMATS = {
    "hf": "a folder transformers loads (config.json, model.safetensors, tokenizer files, model card): Llama, "
    "Qwen3 (QK-norm, kiln's recipe) or Mixtral",
    "gguf": "one .gguf file for llama.cpp (llama or qwen3)",
}


def export_checkpoint(checkpoint: Path, fmt: str, out: Path, verify: bool = True) -> dict[str, Any]:
    """Export `checkpoint` as `fmt` (hf or gguf) to `out`; returns what was written and checked. The
    export is written and verified beside `out` and replaces the last one only then (transfer/target.py)."""
    if fmt not in FORMATS:
        raise KilnError(f"unknown export format {fmt!r}: {', '.join(FORMATS)}")
    out = Path(out).absolute()
    check_target(out, fmt)
    staged = staged_path(out)
    clear_staged(staged, fmt)
    try:
        if fmt == "hf":
            from kiln.transfer.export import export_hf

            result = export_hf(checkpoint, staged, verify)
        else:
            from kiln.transfer.gguf import export_gguf

            result = export_gguf(checkpoint, staged, verify)
        result["out"] = str(out)
        check = result.get("verification", {})
        if check.get("checked") and not all(v for v in check.values() if isinstance(v, bool)):
            raise KilnError(f"the export to {out} does not reproduce the checkpoint (nothing was replaced): {check}")
        put_in_place(staged, out, fmt, result)
    except BaseException:
        clear_staged(staged, fmt)
        raise
    return result


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    checkpoint_option(parser, required=True)
    parser.add_argument(
        "--to", choices=list(FORMATS), required=True, help="; ".join(f"{k}: {v}" for k, v in FORMATS.items())
    )
    parser.add_argument("out", type=Path, help="the folder (hf) or .gguf file to write")
    parser.add_argument("--no-verify", action="store_true", help="skip the check against kiln's own logits")


def _export(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.checkpoint / STATE).exists():
        raise KilnError(f"{args.checkpoint} is not a kiln checkpoint (no state.json)")
    result = export_checkpoint(args.checkpoint, args.to, args.out, verify=not args.no_verify)
    print(json.dumps(result, indent=2))
    return result


EXPORT = Verb(
    "export",
    "write a checkpoint in Hugging Face format (transformers loads it offline) or GGUF, checked as written",
    _export_arguments,
    _export,
)


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=["hf"], required=True, help="the format of DIR")
    parser.add_argument("dir", type=Path, help="a local folder with config.json, *.safetensors and tokenizer.json")
    parser.add_argument("--run-dir", type=Path, required=True, help="the new run directory to write (absent or empty)")


def _import(args: argparse.Namespace) -> dict[str, Any]:
    from kiln.transfer.importer import import_hf

    result = import_hf(args.dir, args.run_dir)  # refuses a --run-dir that is not new or empty
    print(json.dumps(result, indent=2))
    return result


IMPORT = Verb(
    "import",
    "turn a local Hugging Face Llama, Qwen3 or Mixtral folder into a kiln run with one checkpoint",
    _import_arguments,
    _import,
)
