"""The joints hold: which package may import which, no import cycle, the command line a table, and a
family, a fine-tuning method or a modality named only where it is defined (so adding one touches the
files docs/architecture.md says, and no others)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kiln"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The kiln modules `path` imports: all of them (also inside functions and TYPE_CHECKING), or only
    those imported when the module itself is (top level, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = []
    if top_level_only:
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kiln"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kiln"))
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def resolved(names: set[str]) -> set[str]:
    """Imported names -> the kiln modules they are (a `from kiln.x import y` of a function is kiln.x)."""
    return {n for n in names if n in MODULES}


@pytest.mark.parametrize(
    "lower, upper",
    [
        ("kiln.train", "kiln.finetune"),
        ("kiln.train", "kiln.images"),
        ("kiln.train", "kiln.stages"),
        ("kiln.models", "kiln.evaluate"),
        ("kiln.models", "kiln.train"),
        ("kiln.evaluate", "kiln.stages"),
        ("kiln.objectives", "kiln.train"),
        ("kiln.shards", "kiln.objectives"),
    ],
)
def test_a_lower_package_never_imports_an_upper_one(lower, upper):
    offenders = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if name.startswith(lower)
        for target in resolved(imports(path, top_level_only=False))
        if target.startswith(upper)
    ]
    assert not offenders, offenders


def test_no_import_cycle_at_import_time():
    graph = {name: resolved(imports(path, top_level_only=True)) - {name} for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_command_line_is_a_table():
    assert len((SRC / "cli.py").read_text().splitlines()) < 150


def string_literals(path: Path) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


@pytest.mark.parametrize(
    "registry, home",
    [
        ("families", ("kiln/models/", "kiln/presets.py")),
        ("methods", ("kiln/finetune/",)),
        ("modalities", ("kiln/images/", "kiln/modality.py")),
    ],
)
def test_a_family_method_or_modality_is_named_only_where_it_lives(registry, home):
    from kiln.finetune.methods import METHODS
    from kiln.modality import modalities
    from kiln.models.registry import FAMILIES

    names = {"families": set(FAMILIES) - {"decoder"}, "methods": set(METHODS), "modalities": set(modalities())}[
        registry
    ]
    offenders = [
        f"{path.relative_to(SRC.parent)} names {sorted(found)}"
        for path in SRC.rglob("*.py")
        if not str(path.relative_to(SRC.parent)).startswith(home) and (found := names & string_literals(path))
    ]
    assert not offenders, offenders


def test_every_verb_has_a_home_beside_its_stage():
    from kiln.cli import verbs

    homes = {v.name: v.run.__module__ for v in verbs()}
    assert not any(module == "kiln.cli" for module in homes.values()), homes
