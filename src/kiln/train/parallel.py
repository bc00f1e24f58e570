"""Data parallelism on PyTorch's own engine: the process group, the DeviceMesh, and `parallelize`.

Launch with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous):

    torchrun --nproc_per_node=2 -m kiln train --parallel.mode fsdp ...

`Parallel` reads the launch environment, starts the process group (NCCL on GPUs, gloo on CPUs) with
a timeout, so a dead rank makes the others fail with a clear message instead of hanging, and owns
the DeviceMesh: 1-D ("dp") for DDP and FSDP, 2-D ("replicate", "shard") for HSDP. `parallelize`
then applies activation checkpointing and DDP or FSDP2 (`fully_shard` per block, then the root,
with bf16 parameters and fp32 gradient reduction when training in bf16) from outside the model code.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Protocol, cast

import torch
import torch.distributed as dist
from torch import nn

from kiln.errors import KilnError
from kiln.train.config import ParallelConfig


class Blocks(Protocol):
    """What parallelize wraps: a model, or a view of one with a head, naming its repeated blocks."""

    def repeated_blocks(self) -> list[nn.ModuleList]: ...


def launch_rank() -> int:
    """This process's rank as torchrun launched it (0 without torchrun), before any process group."""
    return launch()[0]


def launch() -> tuple[int, int, int]:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (0, 1, 0 without it), checked: a launcher
    that set them otherwise is one line, not a traceback or a world of 0 processes."""
    values = []
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(name, str(default))
        try:
            values.append(int(raw))
        except ValueError:
            raise KilnError(f"environment variable {name}={raw!r} is not a whole number (torchrun sets it)") from None
    rank, world, local = values
    if world < 1 or not 0 <= rank < world or local < 0:
        raise KilnError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: not a launch torchrun makes")
    return rank, world, local


class Parallel:
    """The launch's ranks, the process group and the DeviceMesh, validated against the world size."""

    def __init__(self, cfg: ParallelConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.rank, self.world_size, self.local_rank = launch()
        self.mesh = None
        if self.world_size > 1 and cfg.mode == "none":
            raise KilnError(
                f"launched with {self.world_size} processes but parallel.mode=none; "
                "pass --parallel.mode ddp, fsdp or hsdp"
            )
        if self.world_size == 1:
            return
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(seconds=cfg.timeout_s))
        from torch.distributed.device_mesh import init_device_mesh

        if cfg.mode == "hsdp":
            replicas = cfg.replicas or self.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
            if replicas < 1 or self.world_size % replicas:
                raise KilnError(f"parallel.replicas={replicas} must divide the world size {self.world_size}")
            self.mesh = init_device_mesh(
                device.type, (replicas, self.world_size // replicas), mesh_dim_names=("replicate", "shard")
            )
        else:
            self.mesh = init_device_mesh(device.type, (self.world_size,), mesh_dim_names=("dp",))

    @classmethod
    def single(cls) -> Parallel:
        """One process, whatever the launch: for work each rank does on its own (timing a step)."""
        one = cls.__new__(cls)
        one.cfg, one.rank, one.world_size, one.local_rank, one.mesh = ParallelConfig(), 0, 1, 0, None
        return one

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (identity in one process; gloo has no AVG, so sum / size)."""
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def mean_of(self, value: float, device: torch.device) -> float:
        """The mean over ranks of a measured figure (a time, a rate), so every rank decides alike."""
        if not self.distributed:
            return value
        return self.all_mean(torch.tensor(float(value), dtype=torch.float64, device=device)).item()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave together, then tear down: a rank that destroys the group while another is still in
        its last collective can make gloo abort that one (seen on a busy 2-core machine)."""
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def parallelize(model: nn.Module, par: Parallel, precision: str) -> nn.Module:
    """Activation checkpointing, then DDP or FSDP2, per `par.cfg`; returns the module to call. The
    units are the family's `repeated_blocks()` (each block checkpointed and sharded on its own); the
    root is the module the trainer calls (a model, or classification's view of one)."""
    cfg, units = par.cfg, cast(Blocks, model).repeated_blocks()
    if cfg.activation_checkpointing == "block":
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            checkpoint_wrapper,
        )

        for blocks in units:
            for i, block in enumerate(blocks):
                blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    if not par.distributed:
        return model
    if cfg.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [par.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for blocks in units:
        for block in blocks:
            fully_shard(block, mesh=par.mesh, mp_policy=mp)
    fully_shard(model, mesh=par.mesh, mp_policy=mp)
    return model
