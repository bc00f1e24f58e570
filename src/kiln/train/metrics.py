"""Where the trainer's records go: metrics.jsonl, and TensorBoard event files beside it.

metrics.jsonl holds one JSON object per line (training steps, validations, task scores, events),
flushed as written; a resumed run first moves the records past its checkpoint's step (the steps it
will run again) to metrics_rewound.jsonl beside it. When the
`tensorboard` package is installed (and train.tensorboard is on), every numeric figure is also a
TensorBoard scalar under <run>/tensorboard (nested figures as "tasks/kiln_cloze/acc"), purged past
the resumed step the same way: `tensorboard --logdir runs/` shows any run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln.config import whole
from kiln.staging import write_whole


def flat_scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """A record's numeric figures, nested keys joined with "/" (step and tokens left out)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "tokens") and not prefix:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def tensorboard_writer(directory: Path, purge_step: int | None) -> Any | None:
    """A SummaryWriter when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package (the [tensorboard] extra)
        return None
    return SummaryWriter(str(directory), purge_step=purge_step)


REWOUND = "metrics_rewound.jsonl"
"""Beside metrics.jsonl: the records of steps after the checkpoint a run resumed from, as first logged
(the resumed run logs those steps again), and any line a crash cut short."""


def _split_at_step(text: str, step: int) -> tuple[list[str], list[str]]:
    """metrics.jsonl's lines -> (those up to `step`, the rest: later steps and unreadable lines)."""
    keep: list[str] = []
    rewound: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        try:
            record = json.loads(line)
            at = record.get("step", 0) if isinstance(record, dict) else None
            kept = whole(at) and at <= step  # else not a record kiln wrote
        except json.JSONDecodeError:  # the last line of a process killed while writing it
            kept = False
        (keep if kept else rewound).append(line)
    return keep, rewound


class MetricsLog:
    """metrics.jsonl (and TensorBoard when available): one record per call of `write`."""

    def __init__(self, path: Path, truncate_after_step: int | None, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        if truncate_after_step is not None and path.exists():
            keep, rewound = _split_at_step(path.read_text(errors="replace"), truncate_after_step)
            if rewound:  # what the steps a resume runs again logged the first time (a crash's last words)
                aside, block = path.with_name(REWOUND), "".join(ln + "\n" for ln in rewound)
                before = aside.read_text() if aside.exists() else ""
                if not before.endswith(block):  # once, when a crash came between this and the rewrite below
                    write_whole(aside, before + block)
            write_whole(path, "".join(ln + "\n" for ln in keep))
        else:  # a fresh start (the last log goes: --overwrite said so) or no log yet; a link there is replaced
            write_whole(path, "")
            if truncate_after_step is None:
                path.with_name(REWOUND).unlink(missing_ok=True)
        purge = None if truncate_after_step is None else truncate_after_step + 1
        self.tensorboard = tensorboard_writer(tensorboard_dir, purge) if tensorboard_dir is not None else None

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None and "step" in record:
            for name, value in flat_scalars(record).items():
                self.tensorboard.add_scalar(name, value, record["step"])
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
