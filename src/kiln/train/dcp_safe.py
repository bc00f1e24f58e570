"""Reading torch.distributed.checkpoint folders without running code from them.

DCP keeps two pickles in a checkpoint: `dcp/.metadata` (what is stored where), read by torch's
FileSystemReader with plain `pickle.load`, and the non-tensor values of the state (the optimizer's
param-group settings, as BYTE_IO items in the data files), read by DefaultLoadPlanner with
`torch.load(weights_only=False)`. A checkpoint is a file a user can be handed, so either would run
whatever a planted `__reduce__` names. Here:

- `.metadata` goes through `MetadataUnpickler`, which resolves only the classes DCP's metadata is
  made of (torch.distributed.checkpoint.metadata's dataclasses, the filesystem's _StorageInfo,
  torch.Size, dtypes, layouts, paths); anything else is refused before it is called, state is set
  only on new instances of the dataclasses (never on a class, an enum member or a path), and every
  storage entry must name a plain file inside the folder, as a string;
- byte items are read with `torch.load(weights_only=True)` (numbers, strings, tuples, lists, dicts);
- a refusal is a `KilnError` naming the file and the class it refused: nothing runs.

Tensor data is read by DCP with weights_only=True already.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import ReadItem

from kiln.errors import KilnError

METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch": {"Size"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "slice", "complex"},
}
"""(module, name) pairs a DCP metadata pickle may name: the classes torch writes there (torch 2.5-2.13)."""

BUILT = {
    (module, name)
    for module in ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
    for name in METADATA_CLASSES[module] - {"_MEM_FORMAT_ENCODING"}
}
"""The classes whose instances a metadata pickle sets state on (BUILD): the dataclasses, each a new
object of its own. Not the enum (its members are shared by the whole process) nor paths (their
cached parts would let a path print as one file and open another)."""


class UnsafeCheckpoint(KilnError):
    """A checkpoint file asks to run code or to read outside its folder."""


def _tampered(where: str, what: str) -> UnsafeCheckpoint:
    return UnsafeCheckpoint(
        f"{where} asks to {what}, which is not part of a checkpoint's metadata; "
        "refused without running it (this checkpoint was tampered with: use one from a run you trust)"
    )


class MetadataUnpickler(pickle._Unpickler):
    """Python's own unpickler, resolving only DCP's metadata classes and torch's dtypes, and setting
    state (BUILD) only on instances of the `BUILT` dataclasses, from a dict of fields: a BUILD aimed at
    a class, an enum member or a path would change it for the whole process (e.g. `PosixPath.is_symlink`,
    which kiln's own checks use).
    The pure-Python unpickler (`pickle._Unpickler`) is the one whose opcodes can be checked one by one;
    a checkpoint's metadata is small, so its speed does not matter."""

    dispatch = dict(pickle._Unpickler.dispatch)
    stack: list[Any]  # the pure-Python unpickler's (typeshed does not list it)

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if name in METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        dtype = vars(torch).get(name) if module == "torch" else None  # vars: no lazy import of a submodule
        if isinstance(dtype, torch.dtype):
            return dtype
        raise _tampered(self.where, f"load {module}.{name}")

    def load_build(self) -> None:
        state, target = self.stack[-1], self.stack[-2]  # the state is on top, what it is set on beneath it
        kind = type(target)  # a class itself, or a function, is of type `type` or `function`: refused
        if (kind.__module__, kind.__qualname__) not in BUILT:
            raise _tampered(self.where, f"set the state of {getattr(target, '__qualname__', kind.__name__)}")
        if getattr(kind, "__setstate__", None) is None and not (  # no __setstate__ of its own:
            isinstance(state, dict) and all(isinstance(k, str) for k in state)  # instance fields only
        ):
            raise _tampered(self.where, f"set {kind.__name__}'s state from a {type(state).__name__}")
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = load_build  # type: ignore[assignment]


def read_metadata(path: Path) -> Metadata:
    """DCP metadata from the file `path`, through `MetadataUnpickler`."""
    try:
        with open(path, "rb") as f:
            metadata = MetadataUnpickler(f, str(path)).load()
    except (UnsafeCheckpoint, FileNotFoundError):  # DCP looks for per-rank metadata files that may not exist
        raise
    except Exception as e:  # a truncated or garbled pickle raises many kinds
        raise KilnError(f"{path} is corrupt or truncated ({type(e).__name__}); use an earlier checkpoint") from None
    if not isinstance(metadata, Metadata):
        raise KilnError(f"{path} is not DCP metadata ({type(metadata).__name__}); use an earlier checkpoint")
    for info in (metadata.storage_data or {}).values():
        name = getattr(info, "relative_path", "")
        if type(name) is not str or not name or Path(name).name != name or name in (".", ".."):
            raise UnsafeCheckpoint(
                f"{path} points at {name!r}, outside its folder; refused (use a checkpoint from a run you trust)"
            )
    return metadata


class _DropFallbackTraceback(logging.Filter):
    """The loader's "Global/Rank local metadata is not found" warnings, with their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "state_dict_loader" and "metadata is not found" in record.getMessage())


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """Around a DCP load: torch's warning that one process is no process group, and the traceback its
    loader logs to the root logger when the metadata read fails (Python prints it in a terminal) are
    kept out of the user's way; the refusal itself is raised as one line (`SafeReader.problem`)."""
    root, drop = logging.getLogger(), _DropFallbackTraceback()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            yield
    finally:
        root.removeFilter(drop)


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata comes through `read_metadata` (no code runs). DCP turns the
    errors of its metadata reads into one message; `problem` keeps the refusal itself."""

    problem: KilnError | None = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        try:
            metadata = read_metadata(Path(self._get_metadata_path(rank)))
        except KilnError as e:
            self.problem = self.problem or e
            raise
        if getattr(metadata, "storage_meta", None) is not None:
            metadata.storage_meta.load_id = self.load_id  # type: ignore[union-attr]
        return metadata


def _load_bytes_weights_only(value: io.BytesIO) -> Any:
    try:
        return torch.load(value, weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"GLOBAL (\S+)", str(e))
        what = f"asks to load {named.group(1)}" if named else "is not plain data"
        raise UnsafeCheckpoint(
            f"a value in the checkpoint's data {what}; refused without running it "
            "(this checkpoint was tampered with: use one from a run you trust)"
        ) from None


class _WeightsOnlyBytes:
    """DefaultLoadPlanner.load_bytes, reading the value with weights_only=True (a mixin)."""

    flatten_state_dict: bool
    original_state_dict: Any
    mappings: Any
    state_dict: Any

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = _load_bytes_weights_only(value)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


class SafeLoadPlanner(_WeightsOnlyBytes, DefaultLoadPlanner):
    """DefaultLoadPlanner that reads the state's non-tensor values with weights_only=True."""


class SafeEmptyLoadPlanner(_WeightsOnlyBytes, _EmptyStateDictLoadPlanner):
    """The planner that rebuilds a state dict from the metadata (for consolidation), reading
    non-tensor values with weights_only=True."""
