"""`kiln convert`: a checkpoint's weights between the sharded (dcp/) and the consolidated form."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.errors import KilnError
from kiln.rundir import STATE
from kiln.staging import STAGED, remove_path, rename_synced, sync_tree
from kiln.train.checkpoint import consolidate
from kiln.verbs import Verb, checkpoint_option


def _arguments(parser: argparse.ArgumentParser) -> None:
    checkpoint_option(parser, required=True)
    parser.add_argument(
        "--to",
        choices=["safetensors", "dcp"],
        required=True,
        help="safetensors: consolidate dcp/ into model.safetensors (read without running code); dcp: write "
        "the weights as DCP",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="--to dcp: the folder to write (default: CHECKPOINT/weights_dcp)"
    )


def to_dcp(path: Path, out: Path) -> Path:
    """model.safetensors -> a new DCP folder `out` of the weights ({"model": ...}), which a sharded run
    of any world size loads as its starting point (no optimizer state); written staged, then renamed."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    weights = load_file(str(Path(path) / "model.safetensors"))
    out = Path(out)
    staged = out.with_name(f"{STAGED}{out.name}")
    if staged.exists() or staged.is_symlink():  # a conversion stopped midway, once it is sure to be one
        left = staged.is_dir() and not staged.is_symlink() and all(_dcp_file(p) for p in staged.iterdir())
        if not left:
            raise KilnError(f"{staged} is in the way of the conversion and is not one kiln left behind: move it away")
        remove_path(staged)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": weights}, checkpoint_id=str(staged), no_dist=True)
    sync_tree(staged)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder made for it
    rename_synced(staged, out)  # whole or not at all
    return out


def _dcp_file(path: Path) -> bool:
    """Whether `path` is a file a DCP save writes (`__R_N.distcp`, `.metadata`, and `.metadata.tmp`
    before its last rename)."""
    name = path.name.removesuffix(".tmp")
    return path.is_file() and not path.is_symlink() and (name.endswith(".metadata") or name.endswith(".distcp"))


def _convert(args: argparse.Namespace) -> Path:
    if not (args.checkpoint / STATE).exists():
        raise KilnError(f"{args.checkpoint} is not a kiln checkpoint (no state.json)")
    target = args.out or args.checkpoint / "weights_dcp"
    if args.to == "dcp" and (target.is_symlink() or target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise KilnError(f"--out {target} exists; kiln convert writes a new folder: pass another --out, or remove it")
    out = consolidate(args.checkpoint) if args.to == "safetensors" else to_dcp(args.checkpoint, target)
    print(f"wrote {out}")
    return out


CONVERT = Verb(
    "convert",
    "convert a checkpoint: sharded (dcp/) -> model.safetensors, or model.safetensors -> a DCP folder",
    _arguments,
    _convert,
)
