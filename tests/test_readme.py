"""README.md stays true: CI runs its two commands, and its source tree names every module."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    setup, test = _code_blocks(readme)[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup.strip() in ci.splitlines()
    assert test.strip() in ci.splitlines()


def test_source_tree_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    tree = readme[readme.index("## Source tree") :]
    for path in sorted((ROOT / "src" / "kiln").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        assert re.search(rf"^\s+{re.escape(path.name)}\s", tree, flags=re.M), f"README tree lacks {path.name}"
