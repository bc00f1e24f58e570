"""Checkpoints: sharded through torch.distributed.checkpoint, published atomically, checksummed, kept last-k.

``checkpoints/step_N/`` holds:
  dcp/                 model and optimizer state (torch.distributed.checkpoint: one file per rank,
                       resharded on load, so a run resumes at any world size)
  model.safetensors    consolidated weights (shared tensors stored once), for eval, generate, export
  rng_rank{R}.safetensors  each rank's torch RNG state (uint8 tensors)
  state.json           step, loader position (global samples), token count, tokenizer hash, world size
  config.json          the resolved run config
  tokenizer.json       the tokenizer, so a checkpoint is usable on its own
  manifest.json        size and sha256 of every file above: a truncated or corrupted checkpoint is
                       detected before it is loaded, and `--resume auto` falls back to an older one

Every rank writes into ``.tmp_step_N``; after a barrier rank 0 writes the manifest and renames the
folder into place, so a crash (or SIGKILL) mid-write never leaves a half checkpoint under a real name.
Reading runs no code from the files: model.safetensors and the RNG states are safetensors, and dcp/
(whose metadata and non-tensor values DCP pickles) is read through train/dcp_safe.py, which admits
only the classes checkpoint metadata is made of. Verbs that only need weights (eval, generate,
export, finetune, import) read model.safetensors and never open dcp/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
from torch.utils._pytree import tree_map_only

from kiln.errors import KilnError
from kiln.rundir import CONFIG, STATE, TOKENIZER
from kiln.staging import remove_path, rename_synced, save_tensors, sync_tree
from kiln.train.dcp_safe import SafeEmptyLoadPlanner, SafeLoadPlanner, SafeReader, quiet_load
from kiln.train.manifest import matches_manifest, verify_checkpoint, write_manifest

if TYPE_CHECKING:
    from kiln.train.parallel import Parallel

WeightFiles = Callable[[dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]]]
"""Full weights -> {file name: tensors}; "model.safetensors" holds the plain language model."""
STEP_PREFIX = "step_"
STEP_NAME = re.compile(rf"{STEP_PREFIX}(\d+)")
"""A published checkpoint's folder name; anything else under checkpoints/ (step_30.bak, a user's
notes) is left alone."""
REPLACED = ".old_"
"""Prefix of a checkpoint being replaced by a new save of its step: renamed aside, not deleted, until
the new one is in place (a crash between the renames leaves it, and it counts as published)."""


def _step_of(path: Path) -> int | None:
    """The step of a published checkpoint folder (step_N, or .old_step_N whose step_N is not there)."""
    name = path.name
    if name.startswith(REPLACED):
        name = name.removeprefix(REPLACED)
        if (path.parent / name / STATE).exists():
            return None
    found = STEP_NAME.fullmatch(name)
    return int(found.group(1)) if found and path.is_dir() and (path / STATE).exists() else None


def checkpoint_dirs(root: Path) -> list[Path]:
    """Published checkpoints under `root`, oldest first (not checked: see `verify_checkpoint`)."""
    if not root.is_dir():
        return []
    steps = {p: _step_of(p) for p in root.iterdir()}
    return sorted((p for p, step in steps.items() if step is not None), key=lambda p: steps[p] or 0)


def written_checkpoints(root: Path) -> list[Path]:
    """The folders kiln wrote under `root` (step_N, unfinished .tmp_step_N and replaced .old_step_N);
    anything else there (a user's step_30.bak) is not kiln's."""
    if not root.is_dir():
        return []
    found = [(p, p.name.removeprefix(".tmp_").removeprefix(REPLACED)) for p in root.iterdir()]
    return [p for p, name in found if p.is_dir() and not p.is_symlink() and STEP_NAME.fullmatch(name)]


Identity = tuple[str, int, int, int]
"""A checkpoint folder told from a later one of the same name, which may get the deleted one's inode
(its change time tells them apart): name, device, inode, change time in ns."""


def _identity(folder: Path) -> Identity:
    s = folder.stat()
    return folder.name, s.st_dev, s.st_ino, s.st_ctime_ns


def checkpoint_identities(root: Path) -> set[Identity]:
    """The identities of the folders kiln wrote under `root` (`written_checkpoints`)."""
    return {_identity(p) for p in written_checkpoints(root)}


def remove_checkpoints(root: Path, only: set[Identity] | None = None) -> None:
    """Delete the checkpoints kiln wrote under `root` (`written_checkpoints`; those `only` names, when
    given); a user's folders stay."""
    for p in written_checkpoints(root):
        if only is None or _identity(p) in only:
            shutil.rmtree(p)


def _single() -> bool:
    """No process group: DCP reads and writes as one process (and says nothing about it)."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized())


def _full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded weights (gathered from every rank), each shared tensor under its first name only."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # a tied parameter under its later names (the head tied to the embedding): gathered, the copies no
    # longer share storage when FSDP's root is a module around the model (classification's view)
    unique = {n for n, _ in model.named_parameters()}
    aliases = {n.replace("_checkpoint_wrapped_module.", "") for n, _ in model.named_parameters(remove_duplicate=False)}
    aliases -= {n.replace("_checkpoint_wrapped_module.", "") for n in unique}
    out, seen = {}, set()
    for name, tensor in full.items():
        if name in aliases:
            continue
        assert isinstance(tensor, torch.Tensor)
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor.contiguous()
    return out


class PendingCheckpoint:
    """A checkpoint whose sharded state is still being written in the background; `finish` waits
    for it, then publishes it like a synchronous one."""

    def __init__(self, future, publish) -> None:
        self.future, self.publish = future, publish

    def finish(self) -> Path:
        self.future.result()
        return self.publish()


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    config: dict[str, Any],
    tokenizer_path: Path,
    keep: int,
    par: Parallel | None = None,
    asynchronous: bool = False,
    weight_files: WeightFiles | None = None,
) -> Path | PendingCheckpoint:
    """Write checkpoint `step` from every rank, publish it atomically, delete all but the newest `keep`.

    With `asynchronous`, the model and optimizer state are copied in memory and written by a background
    thread (DCP's async_save) while training goes on; the returned `PendingCheckpoint` publishes the
    checkpoint when finished (the trainer finishes it before the next save and at the end).
    `weight_files` turns the full weights into the safetensors files to write (default: all of them
    as model.safetensors): a kind of training that keeps more than the language model (adapters, a
    classification head) says which tensors go where (train/parts.py)."""
    rank = par.rank if par else 0
    barrier = par.barrier if par else (lambda: None)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step}"
    tmp = root / f".tmp_{STEP_PREFIX}{step}"
    if rank == 0:
        remove_path(tmp)  # a save cut short; a link left at its name goes, never what it points to
        tmp.mkdir()
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    sharded = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():  # DCP warns that one process means one process
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        if asynchronous:  # a private copy: training keeps updating the live tensors in place
            sharded = tree_map_only(torch.Tensor, lambda t: t.detach().clone(), sharded)
            future = dcp.async_save(sharded, checkpoint_id=str(tmp / "dcp"), no_dist=_single())
        else:
            dcp.save(sharded, checkpoint_id=str(tmp / "dcp"), no_dist=_single())
    save_tensors(rng_state(), tmp / f"rng_rank{rank}.safetensors")
    weights = _full_weights(model)  # a collective under FSDP: every rank takes part
    if rank == 0:
        files = weight_files(weights) if weight_files is not None else {"model.safetensors": weights}
        for name, tensors in files.items():
            if tensors:
                save_tensors(tensors, tmp / name)

    def publish() -> Path:
        barrier()
        if rank == 0:
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            shutil.copyfile(tokenizer_path, tmp / TOKENIZER)
            (tmp / STATE).write_text(json.dumps(dict(state, step=step), indent=2) + "\n")
            write_manifest(tmp)
            sync_tree(tmp)  # on disk before its name says it is whole (a power loss, not only a kill)
            replaced = root / f"{REPLACED}{final.name}"
            if replaced.is_dir() and not final.exists():  # the last save of this step crashed between renames
                os.replace(replaced, final)
            shutil.rmtree(replaced, ignore_errors=True)
            if final.exists():  # aside, not deleted, until the new one has its name
                os.replace(final, replaced)
            rename_synced(tmp, final)
            shutil.rmtree(replaced, ignore_errors=True)
            for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
                shutil.rmtree(old)
        barrier()
        return final

    if asynchronous:
        return PendingCheckpoint(future, publish)
    return publish()


def read_state(path: Path) -> dict[str, Any]:
    """state.json of a checkpoint, with a clear error when it is not one."""
    path = Path(path)
    try:
        state = json.loads((path / STATE).read_text())
    except FileNotFoundError:
        raise KilnError(
            f"{path} is not a kiln checkpoint (no state.json); pass a checkpoints/step_N directory"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise KilnError(f"checkpoint {path} has a corrupt state.json; use an earlier checkpoint") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise KilnError(f"checkpoint {path} has a state.json without a step; use an earlier checkpoint")
    return state


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a checkpoint (the config its weights were trained with), as a dict."""
    path = Path(path)
    try:
        data = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise KilnError(f"{path} is not a kiln checkpoint (no {CONFIG}); pass a checkpoints/step_N directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise KilnError(
            f"checkpoint {path} has a corrupt {CONFIG} ({type(e).__name__}); use an earlier checkpoint"
        ) from None
    if not isinstance(data, dict):
        raise KilnError(f"checkpoint {path} has a {CONFIG} that is not a config; use an earlier checkpoint")
    return data


def load_weights(path: Path, model: nn.Module) -> None:
    """Load model.safetensors into `model` (strict: every tensor must match). Never reads dcp/."""
    file = Path(path) / "model.safetensors"
    if not file.exists():
        how = (
            f"; if it comes from a run you trust, make one with `kiln convert --checkpoint {path} --to safetensors`"
            if (Path(path) / "dcp").is_dir()
            else ""
        )
        raise KilnError(f"checkpoint {path} has no model.safetensors{how}")
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except SafetensorError as e:
        raise KilnError(f"checkpoint {file} is corrupt or truncated ({e}); use an earlier checkpoint") from None
    except (RuntimeError, OSError, ValueError) as e:
        raise KilnError(
            f"checkpoint {file} does not fit this model ({str(e).splitlines()[0]}); use the config saved with it"
        ) from None
    if missing or unexpected:
        raise KilnError(f"checkpoint {file} does not fit this model (missing {missing}, unexpected {unexpected})")


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch RNG states as uint8 tensors: "cpu", and "cuda.N" per GPU."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return rng


def set_rng_state(path: Path, rank: int) -> None:
    """Restore this rank's RNG states (rank 0's when the checkpoint had fewer ranks)."""
    own, first = path / f"rng_rank{rank}.safetensors", path / "rng_rank0.safetensors"
    file = own if own.exists() else first
    try:
        rng = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise KilnError(
            f"checkpoint {file} is missing, corrupt or truncated ({e}); use an earlier checkpoint"
        ) from None
    cuda = [rng[f"cuda.{i}"] for i in range(len(rng) - 1) if f"cuda.{i}" in rng]
    if any(t is None or t.dtype != torch.uint8 or t.dim() != 1 for t in [rng.get("cpu"), *cuda]):
        raise KilnError(f"checkpoint {file} holds no generator state kiln wrote; use an earlier checkpoint")
    try:
        torch.set_rng_state(rng["cpu"])
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    except RuntimeError as e:  # a uint8 vector of the wrong length
        raise KilnError(f"checkpoint {file} holds a generator state torch refuses ({e}); use an earlier one") from None


def _dcp_error(e: BaseException, reader: SafeReader) -> KilnError | None:
    """The KilnError (a refused payload, a corrupt file) behind what DCP raised, if any: the reader's
    own record of it, or one found among the per-rank exceptions DCP wraps in a CheckpointException."""
    if reader.problem is not None:
        return reader.problem
    seen: list[BaseException] = [e]
    while seen:
        err = seen.pop()
        if isinstance(err, KilnError):
            return err
        for failure in getattr(err, "failures", {}).values():  # (exception, traceback) pairs
            found = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(found, BaseException):
                seen.append(found)
        for linked in (err.__cause__, err.__context__):
            if linked is not None:
                seen.append(linked)
    return None


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0) -> None:
    """Restore model and optimizer from dcp/ (resharded to this run's world size) and this rank's RNG."""
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    reader = SafeReader(path / "dcp")
    try:
        with quiet_load():
            dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=_single())
    except (Exception, CheckpointException) as e:  # CheckpointException (a BaseException) wraps per-rank ones
        inner = _dcp_error(e, reader)
        if inner is not None:
            raise KilnError(str(inner)) from None
        raise KilnError(
            f"checkpoint {path} cannot be loaded into this model ({str(e).splitlines()[0][:200]}); "
            "use the config saved with it"
        ) from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    set_rng_state(path, rank)


def latest_checkpoint(root: Path, verify: bool = False) -> Path | None:
    """The newest checkpoint; with `verify`, the newest whose files match its manifest (older ones are
    tried in turn, each bad one reported on stderr)."""
    for path in reversed(checkpoint_dirs(root)):
        problem = verify_checkpoint(path) if verify else None
        if problem is None:
            return path
        print(f"warning: skipping checkpoint {path}: {problem}", file=sys.stderr)
    return None


def consolidate(path: Path) -> Path:
    """Sharded dcp/ -> one model.safetensors (the unsharded weights), for eval and export. dcp/ is
    read through train/dcp_safe.py: a planted payload is refused, nothing runs. A model.safetensors
    that matches the checkpoint's manifest is left as it is (a fine-tuned checkpoint's holds merged
    adapters or a head that dcp/ does not hold so); another is replaced only once the new one is whole."""
    path = Path(path)
    target = path / "model.safetensors"
    if target.exists() and matches_manifest(path, target.name):
        print(f"{target} matches the checkpoint's manifest: left as it is")
        return target
    config = read_config(path)
    if config.get("finetune", {}).get("lora_rank") or config.get("finetune", {}).get("labels"):
        raise KilnError(
            f"{path} is a LoRA or classification checkpoint: its weight files are written by its trainer "
            "(merged adapters, the head) and cannot be rebuilt from dcp/ alone"
        )
    full: dict[str, Any] = {}
    reader = SafeReader(path / "dcp")
    try:
        with quiet_load():
            # what torch's dcp_to_torch_save does (dcp.load keeps only keys the given dict has)
            _load_state_dict(full, storage_reader=reader, planner=SafeEmptyLoadPlanner(), no_dist=True)
    except (Exception, CheckpointException) as e:
        inner = _dcp_error(e, reader)
        if inner is not None:
            raise KilnError(str(inner)) from None
        raise KilnError(f"{path / 'dcp'} cannot be read ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(full.get("model"), dict):
        raise KilnError(f"{path / 'dcp'} holds no model weights")
    weights = {name: tensor.contiguous() for name, tensor in full["model"].items()}
    if config.get("model", {}).get("tie_embeddings"):  # DCP stores the tied output head twice; keep one
        weights.pop("head.weight", None)
    staged = path / f".staged-{target.name}"
    staged.unlink(missing_ok=True)  # a new file, never written through a link left at its name
    save_tensors(weights, staged)
    rename_synced(staged, target)
    return target


class Checkpointer:
    """One run's checkpoints as a trainer part: where they go, how many are kept, what identifies
    the data they belong to (the tokenizer's hash), and the one in flight when writing asynchronously."""

    def __init__(
        self,
        root: Path,
        tokenizer_path: Path,
        tokenizer_sha256: str,
        keep: int,
        par: Parallel | None = None,
        asynchronous: bool = False,
        weight_files: WeightFiles | None = None,
    ) -> None:
        self.root, self.tokenizer_path, self.tokenizer_sha256 = root, tokenizer_path, tokenizer_sha256
        self.keep, self.par, self.asynchronous, self.weight_files = keep, par, asynchronous, weight_files
        self.pending: PendingCheckpoint | None = None

    def latest(self) -> Path | None:
        """The newest checkpoint whose files match its manifest."""
        return latest_checkpoint(self.root, verify=True)

    def finish(self) -> Path | None:
        """Publish a checkpoint still being written in the background (if any)."""
        pending, self.pending = self.pending, None
        return pending.finish() if pending is not None else None

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        config: dict[str, Any],
    ) -> Path:
        """Checkpoint `step` (published now, or when the next save or `finish` comes if asynchronous)."""
        self.finish()
        state = {**state, "tokenizer_sha256": self.tokenizer_sha256}
        out = save_checkpoint(
            self.root,
            step,
            model,
            optimizer,
            state,
            config,
            self.tokenizer_path,
            self.keep,
            self.par,
            self.asynchronous,
            self.weight_files,
        )
        if isinstance(out, PendingCheckpoint):
            self.pending = out
            return self.root / f"{STEP_PREFIX}{step}"
        return out

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore model, optimizer and RNG from `path`; returns its state.json. A checkpoint of another
        tokenizer is refused."""
        state = read_state(path)
        if state.get("tokenizer_sha256") != self.tokenizer_sha256:
            raise KilnError(f"checkpoint {path} was trained with another tokenizer; resume with its run directory")
        load_training_state(path, model, optimizer, self.par.rank if self.par else 0)
        return state
