"""Dataclass helpers: attribute docstrings as help, dotted overrides, save/load, printing.

Every config is a (possibly nested) dataclass whose fields carry attribute docstrings:

    @dataclass
    class TrainConfig:
        max_steps: int = 100
        \"\"\"Optimizer steps to run.\"\"\"

Overrides are dotted paths into the nested config (``train.max_steps=200``); values are parsed by
the field's declared type, and the dataclass's ``__post_init__`` validates the result.

Derived values stay derived. A field left at its default sentinel (0 for "derive it") is filled in by
``__post_init__`` through `derive`, which remembers the name. `replace` (and so every override) and
`from_dict` reset remembered fields to their sentinel before rebuilding, so an override of a base
value (``model.dim``) re-derives what follows from it (MLP width, heads, learning rate) instead of
keeping stale numbers; a value the user sets explicitly is never touched. Saved configs list the
derived names under ``"_derived"`` next to the resolved numbers, and `format_config` marks them;
`from_dict` reads the saved numbers back (a run's config means what it meant when it was written)
and keeps them marked derived.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard, TypeVar, cast

from kiln.errors import KilnError

C = TypeVar("C")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: {field name: the string literal right after it}."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = cast(ast.ClassDef, tree.body[0]).body
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def iter_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """Yield (dotted name, type, docstring) for every leaf field of a nested dataclass type."""
    hints = _hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(cast(type, tp), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, docs.get(f.name, "")


def _parse_value(name: str, tp: Any, raw: Any, sep: str = ",") -> Any:
    """Convert `raw` (a string from the command line, or a JSON value) to type `tp`; a list given as
    one string is split at `sep` (a field's `metadata={"sep": "|"}` for lists of prose, else ",")."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        return _parse_value(name, args[0], raw, sep)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise KilnError(f"{name}={raw!r} is not one of {', '.join(map(str, choices))}; pick one of those")
        return raw
    if origin in (tuple, list):
        (elem,) = typing.get_args(tp)[:1]
        items = raw.split(sep) if isinstance(raw, str) else list(raw)
        return origin(_parse_value(name, elem, x) for x in items if x != "")
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise KilnError(f"{name}={raw!r} is not a boolean; use true or false")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(raw, str):
                return int(float(raw)) if "e" in raw.lower() else int(raw)
            return tp(raw)
        except (TypeError, ValueError):
            raise KilnError(f"{name}={raw!r} is not a valid {tp.__name__}; give a {tp.__name__}") from None
    return raw


def separators(cls: type) -> dict[str, str]:
    """A dataclass's list fields that split on something other than "," (field metadata "sep")."""
    return {f.name: f.metadata["sep"] for f in dataclasses.fields(cls) if "sep" in f.metadata}


DERIVED_KEY = "_derived"


def derive(cfg: Any, name: str, value: Any) -> None:
    """In ``__post_init__``: set field `name` to `value` if it holds its default (the "derive"
    sentinel), and remember that it was derived. An explicitly set value is left alone."""
    default = {f.name: f.default for f in dataclasses.fields(cfg)}[name]
    if getattr(cfg, name) == default:
        object.__setattr__(cfg, name, value)
        cfg.__dict__.setdefault(DERIVED_KEY, set()).add(name)


def derived_fields(cfg: Any) -> set[str]:
    """Names of `cfg`'s fields that `derive` filled in."""
    return set(cfg.__dict__.get(DERIVED_KEY, ()))


def replace(cfg: C, **changes: Any) -> C:
    """`dataclasses.replace` that keeps derived values derived, all the way down: every field that
    was derived (in `cfg` or a nested config) and is not in `changes` goes back to its sentinel, and
    the rebuilt config derives it afresh."""
    kwargs: dict[str, Any] = {}
    derived = derived_fields(cfg)
    for f in dataclasses.fields(cast(Any, cfg)):
        if not f.init:
            continue
        if f.name in changes:
            kwargs[f.name] = changes[f.name]
        elif f.name in derived:
            kwargs[f.name] = f.default
        else:
            value = getattr(cfg, f.name)
            kwargs[f.name] = replace(value) if dataclasses.is_dataclass(value) else value
    try:
        return type(cfg)(**kwargs)
    except ValueError as e:
        raise KilnError(str(e)) from None


def apply_overrides(cfg: C, overrides: dict[str, Any], prefix: str = "") -> C:
    """Return a copy of `cfg` with dotted-path overrides applied and validated (`prefix`: where `cfg`
    sits in the whole config, for messages).

    >>> apply_overrides(run_cfg, {"train.max_steps": "200"})

    A value equal to a derived field's "derive it" sentinel (``--train.lr 0``) is refused: it would be
    replaced silently; leave the option out to derive the value.
    """
    grouped: dict[str, dict[str, Any]] = {}
    changes: dict[str, Any] = {}
    hints = _hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cast(Any, cfg))}
    for key, raw in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            known = ", ".join(sorted(names))
            raise KilnError(f"unknown config key {prefix + key!r}; known sections and fields: {known}")
        if rest:
            if not dataclasses.is_dataclass(hints[head]):
                raise KilnError(f"unknown config key {prefix + key!r}: {prefix + head} has no fields")
            grouped.setdefault(head, {})[rest] = raw
        elif dataclasses.is_dataclass(hints[head]):
            raise KilnError(
                f"config key {prefix + key!r} is a section; set one of its fields, e.g. {prefix + head}.<field>=VALUE"
            )
        else:
            changes[head] = _parse_value(prefix + key, hints[head], raw, separators(type(cfg)).get(head, ","))
    for head, sub in grouped.items():
        changes[head] = apply_overrides(getattr(cfg, head), sub, f"{prefix}{head}.")
    out = replace(cfg, **changes)
    if not prefix:  # once, on the whole config: a parent section may derive a child's field (train.lr)
        for key, raw in overrides.items():
            *path, name = key.split(".")
            owner = functools.reduce(getattr, path, out)
            if name in derived_fields(owner):
                raise KilnError(
                    f"{key}={raw!r} is the 'derive it' default, so it would be replaced by "
                    f"{getattr(owner, name)!r}; give another value, or leave the option out to derive it"
                )
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dataclass -> plain JSON-able dict, with each level's derived field names under "_derived"."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = (
            to_dict(value) if dataclasses.is_dataclass(value) else (list(value) if isinstance(value, tuple) else value)
        )
    if derived_fields(cfg):
        out[DERIVED_KEY] = sorted(derived_fields(cfg))
    return out


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Plain dict (e.g. loaded JSON) -> nested dataclass; unknown keys are an error. Derived values
    read back as saved (a checkpoint's model keeps its shape when a later kiln derives heads or widths
    by another rule) and stay marked derived, so an override re-derives them as `replace` does."""
    if not isinstance(data, dict):
        raise KilnError(f"config: {cls.__name__} must be a JSON object of its fields, not {json.dumps(data)[:60]}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cast(Any, cls))}
    derived = set(data.get(DERIVED_KEY, ())) & names
    for key, value in data.items():
        if key == DERIVED_KEY:
            continue
        if key not in names:
            raise KilnError(f"config has unknown key {key!r} for {cls.__name__}; remove it or upgrade kiln")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(cast(type, tp), value)
        else:
            kwargs[key] = _parse_value(key, tp, value)
    try:
        cfg = cls(**kwargs)
    except ValueError as e:
        raise KilnError(str(e)) from None
    cfg.__dict__.setdefault(DERIVED_KEY, set()).update(derived)  # as saved, and derived again under overrides
    return cfg


def save_config(cfg: Any, path: Path) -> None:
    """Write the resolved config as indented JSON (whole or not at all)."""
    from kiln.staging import write_whole

    write_whole(path, json.dumps(to_dict(cfg), indent=2) + "\n")


def load_config(cls: type[C], path: Path) -> C:
    """Read a config written by `save_config`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KilnError(f"config file {path} not found; run an earlier stage first or pass --preset") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KilnError(f"config file {path} is not valid JSON ({e}); fix or delete it") from None
    except OSError as e:
        raise KilnError(f"config file {path}: cannot read it ({e.strerror})") from None
    return from_dict(cls, data)


def format_config(cfg: Any) -> str:
    """Human-readable listing of every resolved field, one `dotted.name = value` per line."""
    flat: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        derived = derived_fields(obj)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                flat.append(f"{prefix}{f.name} = {value!r}" + ("  (derived)" if f.name in derived else ""))

    walk(cfg, "")
    return "\n".join(flat)


def whole(value: object, least: int | None = None) -> TypeGuard[int]:
    """Whether a value read from JSON is a whole number (an int, not a bool), at least `least` if given."""
    return isinstance(value, int) and not isinstance(value, bool) and (least is None or value >= least)


def require(condition: bool, message: str) -> None:
    """Validation helper for ``__post_init__``: raise `KilnError(message)` unless `condition`."""
    if not condition:
        raise KilnError(message)
