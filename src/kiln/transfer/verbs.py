"""`kiln export`: one entry for every export format, each verified as it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.errors import KilnError


def export_checkpoint(checkpoint: Path, fmt: str, out: Path, verify: bool = True) -> dict[str, Any]:
    """Export `checkpoint` as `fmt` (hf or gguf) to `out`; returns what was written and checked."""
    if fmt == "hf":
        from kiln.transfer.export import export_hf

        result = export_hf(checkpoint, out, verify)
    elif fmt == "gguf":
        from kiln.transfer.gguf import export_gguf

        result = export_gguf(checkpoint, out, verify)
    else:
        raise KilnError(f"unknown export format {fmt!r}: hf or gguf")
    check = result.get("verification", {})
    if check.get("checked") and not all(v for v in check.values() if isinstance(v, bool)):
        raise KilnError(f"the export to {out} does not reproduce the checkpoint: {check}")
    return result
