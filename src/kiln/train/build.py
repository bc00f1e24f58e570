"""Build a Trainer from a run directory: its tokenizer, shards and checkpoints, checked together.

This is the only place that knows the run directory's layout on the training side: it settles the
config with the Planner (precision, budget-sized depth, a resumed checkpoint's choices), checks that
the shards and tokenizer belong together, builds the model on meta and materialises it, applies
parallelism and compilation from outside the model, and hands the parts to the Trainer with its hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from kiln.device import compile_unavailable, keep_freed_host_memory, pick_device
from kiln.errors import KilnError
from kiln.evaluate.suites import load_tasks
from kiln.freshstart import FreshStart
from kiln.models.build import build_model
from kiln.models.registry import check_run, family
from kiln.rundir import STATE, RunDir
from kiln.tokenizer import literal, load_tokenizer, objective_ids, token_byte_lengths, tokenizer_hash
from kiln.train.checkpoint import Checkpointer, checkpoint_dirs, latest_checkpoint, load_weights
from kiln.train.hooks import Checkpoint, EvalTasks, FollowPlan, Hook, Validate
from kiln.train.metrics import MetricsLog
from kiln.train.optim import make_optimizer
from kiln.train.parallel import Parallel, parallelize
from kiln.train.parts import Parts
from kiln.train.plan import Planner
from kiln.train.signals import StopRequest
from kiln.train.trainer import Trainer, accumulation_steps

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig


def find_checkpoint(root: Path, mode: bool | str) -> Path | None:
    """The newest checkpoint under `root` whose files match its manifest; None when not resuming, or
    with mode "auto" when there is none. Checkpoints that all fail their check are refused, never
    started afresh over (a fresh start would prune them and truncate the metrics)."""
    if not mode:
        return None
    path = latest_checkpoint(root, verify=True)
    if path is None and checkpoint_dirs(root):
        raise KilnError(
            f"{root} holds checkpoints but none matches its manifest (each one's problem is printed above); "
            "copy out what you need, then start afresh with --overwrite (without --resume)"
        )
    if path is None and mode != "auto":
        raise KilnError(
            f"--resume given but {root} holds no complete checkpoint; "
            "use --resume auto to start fresh when there is none"
        )
    return path


def build_trainer(
    cfg: RunConfig,
    run: RunDir,
    parts: Parts,
    resume: bool | str = False,
    time_budget_s: float | None = None,
    stop: StopRequest | None = None,
    heldout_docs: Callable[[], list[tuple[str, str]]] | None = None,
    fresh: FreshStart | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Trainer:
    """A Trainer for `cfg` on `run`'s shards, resumed from its newest checkpoint when asked; with a
    time budget (`time_budget_s`, else train.time_budget_s) it plans its steps to fit.
    `heldout_docs()` gives the validation split's (id, text) documents, for kiln's own tasks when
    eval.every scores eval.tasks during training. A `fresh` start (--overwrite) is accepted, deleting the
    run's earlier checkpoints, once every part is built and checked (a bad path or config leaves them as
    they were). `clock` gives the seconds step times and the budget are measured in. `parts` are what
    the kind of training brings (train/parts.py: data, model changes, objective, weight files;
    stages.parts_for picks them for a config)."""
    started = clock()
    stop = stop if stop is not None else StopRequest()
    device = pick_device(cfg.train.device)
    par = Parallel(cfg.parallel, device)
    if device.type == "cuda":
        device = torch.device("cuda", par.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        keep_freed_host_memory()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    par.barrier()  # rank 0 may still be writing what every rank reads (kiln finetune prepares on rank 0 alone)
    tokenizer = load_tokenizer(run.tokenizer)
    sha = tokenizer_hash(run.tokenizer)
    ids = objective_ids(tokenizer)
    checkpoint = find_checkpoint(run.checkpoints, resume)
    requested_max_steps = cfg.train.max_steps
    planner = Planner(
        run,
        device,
        par,
        cfg.train.time_budget_s if time_budget_s is None else time_budget_s,
        stop=lambda: bool(stop),
        clock=clock,
        ids=ids,
    )
    global_batch = cfg.train.micro_batch_size * accumulation_steps(cfg.train, par.world_size) * par.world_size
    cfg = planner.settle(cfg, checkpoint, global_batch)
    check_run(cfg)  # the family's rules for the whole config (its objective's windows, ...)
    tc = cfg.train
    loader, val = parts.data(cfg, run, tokenizer, ids, par.rank, par.world_size)
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, device)
    if tc.init_from:  # also when resuming: DPO's reference is a copy of these weights
        start = Path(tc.init_from).expanduser()
        if not (start / STATE).exists():
            raise KilnError(f"train.init_from={start} is not a kiln checkpoint (no {STATE}); pass a checkpoints/step_N")
        if fresh and start.resolve().is_relative_to(run.checkpoints.resolve()):
            raise KilnError(
                f"train.init_from={start} is one of the checkpoints --overwrite deletes; copy it out of "
                f"{run.checkpoints} first, or train into another --run-dir"
            )
        load_weights(start, model)  # the consolidated weights, before parallelize shards them
        if par.rank == 0 and not checkpoint:
            print(f"starting from the weights of {start}")
    adapted = parts.adapt(cfg, model)
    if parts.note and par.rank == 0:
        print(parts.note)
    forward_model = parallelize(adapted, par, tc.precision)  # FSDP shards in place
    optimizer = make_optimizer(model, cfg, device)
    objective = parts.objective(cfg, ids)
    checkpointer = Checkpointer(
        run.checkpoints, run.tokenizer, sha, tc.keep_checkpoints, par, tc.async_checkpoint, parts.weight_files
    )
    hooks: list[Hook] = [FollowPlan(planner, started, requested_max_steps), Validate()]
    if cfg.eval.every and cfg.eval.tasks:
        tasks = load_tasks(cfg.eval.tasks, cfg.eval.every_limit, heldout_docs)
        text_tok = literal(tokenizer)  # task text quoting "<|eos|>" is text
        encode = lambda text: text_tok.encode(text, add_special_tokens=False).ids  # noqa: E731
        hooks.append(EvalTasks(tasks, family(cfg.model.family), encode, ids))
    hooks.append(Checkpoint())
    token_bytes = torch.tensor(token_byte_lengths(tokenizer, pad_to=cfg.model.vocab_size))
    trainer = Trainer(
        cfg,
        model,
        forward_model,
        objective,
        loader,
        optimizer,
        par,
        device,
        checkpointer,
        val,
        token_bytes,
        hooks=hooks,
        stop=stop,
        plan=planner.plan,
        started=started,
        clock=clock,
    )
    # measured for the depth choice, if it was: a square reading, named as one in the summary
    trainer.peak_flops = trainer.peaks["square"] = planner.peak_flops
    if fresh and not checkpoint:  # every check above has passed
        if par.rank == 0:
            fresh.accept()
        par.barrier()
    if checkpoint:
        trainer.load(checkpoint)
        if par.rank == 0:
            print(f"resumed from {checkpoint} at step {trainer.step}")
    if par.rank == 0:
        tensorboard = run.tensorboard if tc.tensorboard else None
        trainer.metrics = MetricsLog(run.metrics, trainer.step if checkpoint else None, tensorboard)
    unavailable = compile_unavailable(device) if tc.compile else None
    if tc.compile and par.mean_of(0.0 if unavailable is None else 1.0, device) > 0:  # eager on every rank, or none
        unavailable = unavailable or "torch.compile cannot build its kernels on another rank"
    if unavailable and par.rank == 0:
        print(f"train.compile: {unavailable}; training eager (install one for faster steps)")
    if tc.compile and not unavailable:  # the training step only: evaluation's shapes would recompile
        trainer.step_model = cast(nn.Module, torch.compile(forward_model))
    return trainer
