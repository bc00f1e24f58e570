"""Equal wall-clock: kiln's default run against nanoGPT and nanochat on the same CPU and text (issue 26).

    python benchmarks/equal_wall.py                                   # kiln's default run only
    python benchmarks/equal_wall.py --nanogpt ~/src/nanoGPT --nanochat ~/src/nanochat \\
        --python ~/baselines/.venv/bin/python                         # the comparison (~35 min)

The text: the State of the Union addresses in date order, cut by bytes into the first 90 % (training)
and the last 10 % (scored; `--cut dev`: the first 80 % and the 80-90 % tenth, to choose settings on), as
benchmarks/recipe.py cuts them, once under --root. kiln runs as a user
runs it: `kiln run --data.corpus trained.jsonl` (the cpu preset's 9 minutes, holding out its own 5 %
by document hash). The baselines, from checkouts the user has, run with --python (torch, numpy,
tiktoken, rustbpe, pyarrow, filelock, wandb), train on the same documents kiln trains on and validate
on the ones it holds out, each in its own format, for the same wall-clock (default: kiln's measured
wall; their data preparation and timing runs are outside it):

- nanoGPT: train.py with config/train_shakespeare_char.py at its README's CPU flags, character-level
  (prepare.py's train.bin / val.bin / meta.pkl; the alphabet of all the text, as prepare.py takes it,
  and a document separator); max_iters = lr_decay_iters from a timed rate, rounded down to a multiple
  of eval_interval (nanoGPT saves at evaluations, when validation improves).
- nanochat: scripts/base_train.py at kiln's shape (depth, width, heads, sequence, batch: from kiln's
  final checkpoint, or --nanochat-shape) with its own recipe, --num-iterations from a timed rate,
  --eval-every -1, --window-pattern L (SDPA attends fully at 256 either way), NANOCHAT_DTYPE as kiln's
  measured precision. Data: parquet shards through its own scripts/base_prepare.py, twice: to train
  its tokenizer at kiln's vocabulary size, then with each address cut into one-row windows of that
  tokenizer, because nanochat trains on a row's prefix of each document (an address is ~40 rows).

Every model is scored by the same code: each last-10 % document with its own tokenizer after its
boundary token, every window of its context (stride the context, as kiln's evaluation), summed
next-token loss over text targets / ln 2 / their UTF-8 bytes; kiln's is checked against `kiln eval
--text`. Prints one table and appends a JSON line with the CPU to ROOT/results.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NANOGPT_CPU = "--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12"
NANOGPT_CPU += " --n_layer=4 --n_head=4 --n_embd=128 --dropout=0.0"  # nanoGPT's README, CPU; + max/decay iters
NANOGPT_EVAL_EVERY = 250  # config/train_shakespeare_char.py's eval_interval
SEP = "\x00"  # the char model's document boundary (never in the corpus; scored as 0 bytes)
DATASET = "sotu90"


# ---------------------------------------------------------------- the text


CUTS = {"test": (0.9, 1.0), "dev": (0.8, 0.9)}
"""Each cut's scored slice, as byte shares of the corpus in date order (benchmarks/recipe.py's): `test`
reports (train on the first 90 %, score the last tenth), `dev` chooses (the first 80 %; 80-90 %)."""


def prepare_cut(root: Path, name: str = "test") -> Path:
    """A cut as JSONL, once: trained (kiln's corpus: what precedes the scored slice), its hash split
    (train / val, the documents kiln trains and validates on) for the baselines, and scored."""
    from kiln.corpus import CorpusConfig, read_documents, split_of

    cut = root / ("cut" if name == "test" else f"cut_{name}")
    if (cut / "scored.jsonl").exists():
        return cut
    docs = list(read_documents(CorpusConfig()))  # date order, 1790 first
    sizes = list(itertools.accumulate(len(d.text.encode()) for d in docs))
    # the document that passes a share starts the next slice
    start, end = (next((i for i, n in enumerate(sizes) if n > s * sizes[-1]), len(docs)) for s in CUTS[name])
    cut.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list] = {"trained": docs[:start], "scored": docs[start:end], "train": [], "val": []}
    for d in docs[:start]:
        parts[split_of(d.id, CorpusConfig())].append(d)
    for part_name, part in parts.items():
        with (cut / f"{part_name}.jsonl").open("w") as f:
            f.writelines(json.dumps({"id": d.id, "text": d.text, **d.metadata}) + "\n" for d in part)
    print(
        f"cut {name}: {start} documents to {docs[start - 1].id} for training, {end - start} scored from "
        f"{docs[start].id} to {docs[end - 1].id}"
    )
    return cut


def texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.open()]


# ---------------------------------------------------------------- one scorer for every model


def score_stream(logits_of, stream: np.ndarray, token_bytes, seq_len: int, batch: int = 16) -> dict:
    """Summed next-token loss over every window of seq_len + 1 tokens (stride seq_len, as kiln's
    evaluation), over targets that are text (bytes > 0), in bits per UTF-8 byte of those targets."""
    import torch
    import torch.nn.functional as F

    windows = (len(stream) - 1) // seq_len
    nats, nbytes, ntok = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, windows, batch):
            idx = range(start, min(windows, start + batch))
            rows = torch.from_numpy(
                np.stack([stream[i * seq_len : (i + 1) * seq_len + 1] for i in idx]).astype(np.int64)
            )
            x, y = rows[:, :-1].contiguous(), rows[:, 1:].reshape(-1)
            logits = logits_of(x).float()
            loss = F.cross_entropy(logits.reshape(y.numel(), -1), y, reduction="none")
            b = token_bytes[y]
            nats += loss[b > 0].double().sum().item()
            nbytes += int(b.sum())
            ntok += int((b > 0).sum())
    return {"bpb": nats / math.log(2) / nbytes, "scored_tokens": ntok, "scored_bytes": nbytes, "windows": windows}


def score_kiln(ckpt: Path, scored: Path) -> dict:
    """kiln's final checkpoint, its documents tokenized by kiln's shard writer (<|bos|> text <|eos|>)."""
    import tempfile

    import torch

    from kiln.corpus import CorpusConfig, read_documents
    from kiln.device import autocast
    from kiln.evaluate.load import load_checkpoint
    from kiln.shards.config import ShardConfig
    from kiln.shards.loader import ShardSet
    from kiln.shards.writer import write_shards

    cpu = torch.device("cpu")
    loaded = load_checkpoint(ckpt, cpu)
    with tempfile.TemporaryDirectory() as tmp:
        docs = read_documents(CorpusConfig(corpus=str(scored)))
        write_shards(docs, loaded.tokenizer, loaded.tokenizer_sha256, {"eval": Path(tmp)}, ShardConfig())
        stream = np.concatenate([np.asarray(t) for t in ShardSet(Path(tmp)).tokens])

    def logits_of(x):
        with autocast(cpu, loaded.precision):
            return loaded.model(x)

    out = score_stream(logits_of, stream, loaded.token_bytes, loaded.cfg.train.seq_len)
    return {**out, "params": sum(p.numel() for p in loaded.model.parameters())}


def score_baseline(spec: dict) -> dict:
    """A nanoGPT or nanochat checkpoint this harness trained (run under --python, the baselines' env)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    sys.path.insert(0, spec["dir"])
    docs = texts(Path(spec["text"]))
    if spec["system"] == "nanogpt":
        from model import GPT, GPTConfig  # nanoGPT's model.py

        chars = json.loads(Path(spec["meta"]).read_text())["chars"]  # meta.pkl's alphabet, never unpickled here
        meta = {"vocab_size": len(chars), "stoi": {c: i for i, c in enumerate(chars)}, "itos": dict(enumerate(chars))}
        ckpt = torch.load(spec["ckpt"], map_location="cpu", weights_only=True)  # tensors and plain values only
        model = GPT(GPTConfig(**ckpt["model_args"]))
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
        model.eval()
        stream = np.array([meta["stoi"][c] for c in "".join(SEP + d for d in docs)], dtype=np.int64)
        token_bytes = torch.tensor(
            [0 if meta["itos"][i] == SEP else len(meta["itos"][i].encode()) for i in range(meta["vocab_size"])]
        )
        logits_of = lambda x: model(x, x)[0]  # noqa: E731 (given targets, nanoGPT returns every position's logits)
        out = score_stream(logits_of, stream, token_bytes, ckpt["model_args"]["block_size"], 256)
        return {**out, "params": sum(p.numel() for p in model.parameters()), "steps": ckpt["iter_num"]}
    from harness.checkpoint import build_model  # nanochat's
    from nanochat.tokenizer import get_token_bytes

    model, tokenizer, meta = build_model(spec["ckpt_dir"], spec["step"], "cpu")
    ids = tokenizer.encode(docs, prepend=tokenizer.get_bos_token_id(), num_threads=2)
    stream = np.concatenate([np.asarray(i) for i in ids])
    out = score_stream(lambda x: model(x), stream, get_token_bytes("cpu").long(), meta["max_seq_len"])
    return {**out, "params": sum(p.numel() for p in model.parameters()), "steps": meta["step"]}


# ---------------------------------------------------------------- runs


def run(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> tuple[float, str]:
    """Run a command to completion with its output in `log`; (wall seconds, output)."""
    t0 = time.perf_counter()
    env = {**os.environ, **(env or {})}
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall, out = time.perf_counter() - t0, log.read_text()
    if code:
        sys.exit(f"{cmd[1] if len(cmd) > 1 else cmd[0]} failed ({code}); the end of {log}:\n{out[-3000:]}")
    return wall, out


def last_json(out: str) -> dict:
    return json.loads(out[out.rfind("\n{\n") + 1 if "\n{\n" in out else out.find("{") :])


def run_kiln(root: Path, cut: Path, kiln_args: list[str], reuse: bool = False) -> dict:
    """`kiln run` on the first 90 %, then its final checkpoint scored here and by `kiln eval --text`.
    With `reuse`, a finished run under ROOT/kiln is scored again instead (its wall: the run's own)."""
    from kiln.train.checkpoint import latest_checkpoint

    run_dir = root / "kiln"
    reused = reuse and (run_dir / "summary.json").exists()
    if not reused:
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = f"{sys.executable} -m kiln run --data.corpus {cut / 'trained.jsonl'} --run-dir {run_dir}".split()
        wall, _ = run(cmd + kiln_args, root / "kiln.log")
    summary = json.loads((run_dir / "summary.json").read_text())
    if reused:
        wall = summary["wall_s"]
        print(f"kiln: reusing {run_dir} ({wall:.0f} s)")
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    cfg = json.loads((ckpt / "config.json").read_text())
    m, t = cfg["model"], cfg["train"]
    scored = score_kiln(ckpt, cut / "scored.jsonl")
    evaluate = f"{sys.executable} -m kiln eval --checkpoint {ckpt} --text {cut / 'scored.jsonl'}".split()
    _, out = run(evaluate, root / "kiln_eval.log")
    shape = dict(
        layers=m["num_layers"], dim=m["dim"], heads=m["num_heads"], seq_len=t["seq_len"], vocab=m["vocab_size"]
    )
    shape.update(batch=t["micro_batch_size"] * t["grad_accum_steps"], precision=summary["precision"])
    name = "{layers}x{dim}, {heads} heads, seq {seq_len} x {batch}, {precision}".format(**shape)
    row = result("kiln", name, summary["train_tokens"], summary["tokens_per_s"], wall, scored)
    return {**row, **shape, "kiln_eval_bpb": last_json(out)["bpb"], "kiln_steps": summary["steps"]}


def result(system: str, shape: str, train_tokens: int, tokens_per_s: float, wall_s: float, scored: dict) -> dict:
    """One row of the table."""
    row = dict(system=system, shape=shape, train_tokens=train_tokens, tokens_per_s=tokens_per_s, wall_s=wall_s)
    return {**row, **scored}


def rate(out: str, pattern: str) -> float:
    """Median seconds per step from a training log (the first 5 steps left out: warm-up, compile)."""
    times = [float(x) / 1000 for x in re.findall(pattern, out)]
    return statistics.median(times[5:] or times)


def prepare_nanogpt(root: Path, cut: Path, repo: Path) -> Path:
    """A nanoGPT working directory: data/sotu_char in prepare.py's format, its configurator and configs.
    The data is written afresh every time: nanoGPT unpickles meta.pkl, so one found in --root is never used."""
    work = root / "nanogpt"
    data = work / "data" / "sotu_char"
    data.mkdir(parents=True, exist_ok=True)
    docs = {name: texts(cut / f"{name}.jsonl") for name in ("train", "val", "scored")}
    assert not any(SEP in d for part in docs.values() for d in part), "the document separator is in the text"
    split = {name: "".join(SEP + d for d in part) for name, part in docs.items()}
    chars = sorted(set("".join(split.values())))  # prepare.py: the alphabet of all the text
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))
    for name in ("train", "val"):
        np.array([stoi[c] for c in split[name]], dtype=np.uint16).tofile(data / f"{name}.bin")
    (data / "meta.pkl").unlink(missing_ok=True)  # a new file, never written through a link
    with (data / "meta.pkl").open("wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    (data / "meta.json").write_text(json.dumps({"chars": chars}))  # what this harness reads back (train.py: meta.pkl)
    for name in ("configurator.py", "config"):  # linked afresh: nanoGPT execs configurator.py from here
        if (work / name).is_symlink() or (work / name).is_file():
            (work / name).unlink()
        elif (work / name).exists():
            raise SystemExit(f"{work / name} is in the way of a link to {repo / name}; remove it")
        (work / name).symlink_to((repo / name).resolve())
    return work


def run_nanogpt(args: argparse.Namespace, root: Path, cut: Path, budget_s: float) -> dict:
    """nanoGPT's CPU recipe on the same text, max_iters chosen to end in `budget_s` seconds."""
    work, py = prepare_nanogpt(root, cut, args.nanogpt), str(args.python)
    train = [py, str(args.nanogpt.resolve() / "train.py"), "config/train_shakespeare_char.py", *NANOGPT_CPU.split()]
    train += ["--dataset=sotu_char", *args.nanogpt_args.split()]
    n, pattern = args.calibrate_iters, r"iter \d+: loss [\d.]+, time ([\d.]+)ms"
    schedule = "--max_iters={0} --lr_decay_iters={0} --eval_interval={1} --out_dir={2}"
    wall, out = run(train + schedule.format(n, n, "calib").split(), root / "nanogpt_calib.log", work)
    step_s = rate(out, pattern)
    fixed_s = wall - (n + 1) * step_s  # start-up and the two evaluations
    per_iter_s = step_s * (1 + 2 * 20 / (3 * NANOGPT_EVAL_EVERY))  # plus its evaluations (20 + 20 forward batches)
    iters = max(1, int((budget_s - fixed_s) / per_iter_s))
    every = NANOGPT_EVAL_EVERY if iters >= NANOGPT_EVAL_EVERY else iters
    iters = iters // every * every
    print(f"nanoGPT: {step_s * 1000:.1f} ms/iter, {fixed_s:.1f} s fixed -> max_iters {iters} (eval_interval {every})")
    shutil.rmtree(work / "out", ignore_errors=True)
    wall, out = run(train + schedule.format(iters, every, "out").split(), root / "nanogpt.log", work)
    spec = dict(system="nanogpt", dir=str(args.nanogpt.resolve()), ckpt=str(work / "out" / "ckpt.pt"))
    spec.update(meta=str(work / "data" / "sotu_char" / "meta.json"), text=str(cut / "scored.jsonl"))
    scored = baseline_score(args, spec, root)
    shape = f"4x128, 4 heads, char ctx 64 x 12, fp32, {iters} iters"
    return result("nanoGPT", shape, scored["steps"] * 12 * 64, 12 * 64 / rate(out, pattern), wall, scored)


def prepare_nanochat(args: argparse.Namespace, root: Path, cut: Path, shape: dict, env: dict) -> None:
    """nanochat's dataset contract (parquet shards with a 'text' column, the last one validation),
    packed by its own scripts/base_prepare.py: first the whole addresses (to train its tokenizer
    at kiln's vocabulary size), then the addresses cut into one-row windows of that tokenizer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, done = root / "nanochat" / "datasets" / DATASET, f"{shape['seq_len']} {shape['vocab']}"
    if (data / "prepared").exists() and (data / "prepared").read_text() == done:
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    for i, name in enumerate(("train", "val")):  # the last shard is nanochat's validation split
        table = pa.table({"text": texts(cut / f"{name}.jsonl")})
        pq.write_table(table, data / f"shard_{i:05d}.parquet", row_group_size=64)
    prepare = f"{args.python} -m scripts.base_prepare -n 1 -T {shape['seq_len']} --vocab-size {shape['vocab']} -w 1"
    prepare = prepare.split() + ["--doc-cap", str(10**9)]  # the tokenizer sees whole addresses, not 10k-char heads
    run(prepare, root / "nanochat_tokenizer.log", args.nanochat, env)
    spec = {"data": str(data), "row": shape["seq_len"], "dir": str(args.nanochat.resolve())}
    run([str(args.python), __file__, "_windows", json.dumps(spec)], root / "nanochat_windows.log", args.nanochat, env)
    for old in data.glob("*.bin"):
        old.unlink()
    _, out = run(prepare, root / "nanochat_prepare.log", args.nanochat, env)
    print("nanochat data:", *[line for line in out.splitlines() if "cropped" in line])
    (data / "prepared").write_text(done)


def cut_windows(spec: dict) -> None:
    """Rewrite each parquet shard's documents as consecutive windows of `row` tokens of nanochat's
    tokenizer, cut where the bytes so far are whole UTF-8 (run under --python)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, spec["dir"])
    from nanochat.tokenizer import get_tokenizer

    enc, row = get_tokenizer().enc, spec["row"]
    for path in sorted(Path(spec["data"]).glob("*.parquet")):
        pieces = []
        for doc in pq.read_table(path).column("text").to_pylist():
            ids, i = enc.encode_ordinary(doc), 0
            while i < len(ids):
                j = min(i + row, len(ids))
                while j > i + 1 and not valid_utf8(enc.decode_bytes(ids[i:j])):
                    j -= 1
                pieces.append(enc.decode_bytes(ids[i:j]).decode("utf-8", errors="replace"))
                i = j
        pq.write_table(pa.table({"text": pieces}), path, row_group_size=1024)
        print(f"{path.name}: {len(pieces)} windows")


def valid_utf8(b: bytes) -> bool:
    return b.decode("utf-8", errors="ignore").encode() == b


def run_nanochat(args: argparse.Namespace, root: Path, cut: Path, budget_s: float, kiln: dict | None) -> dict:
    """nanochat's base_train at kiln's shape, --num-iterations chosen to end in `budget_s` seconds."""
    if args.nanochat_shape:
        layers, dim, seq_len, batch = (int(v) for v in re.split(r"[x,]", args.nanochat_shape))
        head_dim = 64  # kiln's size dial: one head per 64 channels
    elif kiln:
        layers, dim, seq_len, batch = kiln["layers"], kiln["dim"], kiln["seq_len"], kiln["batch"]
        head_dim = dim // kiln["heads"]
    else:
        sys.exit("--nanochat needs kiln's shape: run kiln too, or give --nanochat-shape LAYERSxDIMxSEQxBATCH")
    kiln_bf16 = kiln is not None and kiln["precision"] == "bf16"
    dtype = args.nanochat_dtype if args.nanochat_dtype != "kiln" else ("bfloat16" if kiln_bf16 else "auto")
    env = dict(NANOCHAT_BASE_DIR=str(root / "nanochat"), NANOCHAT_DATASET=DATASET, NANOCHAT_EXPERIMENT="equal_wall")
    env.update({"NANOCHAT_DTYPE": dtype} if dtype != "auto" else {})
    if args.nanochat_no_outer_fusion:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(no_outer_fusion(root)), os.environ.get("PYTHONPATH")]))
    vocab = args.vocab_size or (kiln["vocab"] if kiln else 8192)
    prepare_nanochat(args, root, cut, {"seq_len": seq_len, "vocab": vocab}, env)
    train = f"{args.python} -m scripts.base_train --device-type cpu --depth {layers} --aspect-ratio {dim // layers}"
    train += f" --head-dim {head_dim} --max-seq-len {seq_len} --device-batch-size {batch}"
    train += f" --total-batch-size {batch * seq_len} --window-pattern L --eval-every -1 {args.nanochat_args}"
    n, pattern = args.calibrate_steps, r"\| dt: ([\d.]+)ms"
    for tag, calib_steps in (("warm", 2), ("calib", n)):  # the first fills torch.compile's cache, the second is timed
        cmd = f"{train} --num-iterations {calib_steps} --model-tag {tag}".split()
        wall, out = run(cmd, root / f"nanochat_{tag}.log", args.nanochat, env)
    step_s = rate(out, pattern)
    fixed_s = wall - n * step_s  # start-up, the compile from its cache, the checkpoint
    steps = max(1, int((budget_s - fixed_s) / step_s))
    print(f"nanochat: {step_s * 1000:.0f} ms/step, {fixed_s:.1f} s fixed -> --num-iterations {steps}")
    cmd = f"{train} --num-iterations {steps} --model-tag equal_wall".split()
    wall, out = run(cmd, root / "nanochat.log", args.nanochat, env)
    ckpt_dir = root / "nanochat" / "experiments" / "equal_wall" / "equal_wall" / "base"
    spec = dict(system="nanochat", dir=str(args.nanochat.resolve()), ckpt_dir=str(ckpt_dir), step=steps)
    scored = baseline_score(args, {**spec, "text": str(cut / "scored.jsonl")}, root, env)
    shape = f"{layers}x{dim}, {dim // head_dim} heads, seq {seq_len} x {batch}, {env.get('NANOCHAT_DTYPE', 'float32')}"
    return result("nanochat", shape, steps * batch * seq_len, batch * seq_len / rate(out, pattern), wall, scored)


def no_outer_fusion(root: Path) -> Path:
    """A sitecustomize.py for the baseline's own processes that turns off one inductor CPU fusion
    (vertical outer-loop fusion), which fails compiling nanochat's optimizer step on torch 2.13 and
    2.14 CPU (`KeyError: 'buf13'` in try_outer_loop_fusion_with_local_buf). Everything else compiles."""
    patch = root / "nanochat_patch"
    patch.mkdir(parents=True, exist_ok=True)
    (patch / "sitecustomize.py").write_text(
        "from torch._inductor.codegen import cpp  # written by kiln's benchmarks/equal_wall.py\n"
        "cpp.CppScheduling.can_fuse_vertical_outer_loop = lambda self, a, b: False\n"
    )
    return patch


def baseline_score(args: argparse.Namespace, spec: dict, root: Path, env: dict | None = None) -> dict:
    cmd = [str(args.python), __file__, "_score", json.dumps(spec)]
    _, out = run(cmd, root / f"{spec['system']}_score.log", env=env)
    return json.loads(out[out.rindex("RESULT ") + 7 :])


# ---------------------------------------------------------------- the table


def table(rows: list[dict]) -> str:
    """One line per system, then kiln's relative difference in bits-per-byte to each baseline."""
    cols = "{:9} {:48} {:>10} {:>13} {:>9} {:>7} {:>12}"
    head = cols.format("system", "shape", "params", "train tokens", "tokens/s", "wall s", "last-10% bpb")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = (f"{r['params']:,}", f"{r['train_tokens']:,}", f"{r['tokens_per_s']:,.0f}", f"{r['wall_s']:.0f}")
        lines.append(cols.format(r["system"], r["shape"][:48], *cells, f"{r['bpb']:.4f}"))
    kiln = next((r for r in rows if r["system"] == "kiln"), None)
    if kiln:
        lines.append(f"the same kiln checkpoint by `kiln eval --text`: {kiln['kiln_eval_bpb']:.4f} bpb")
        for r in rows[1:]:
            rel = kiln["bpb"] / r["bpb"] - 1
            lines.append(
                f"kiln vs {r['system']}: {rel:+.1%} bits-per-byte ({'kiln' if rel < 0 else r['system']} lower)"
            )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("_score", "_windows"):  # internal: under the baselines' python
        spec = json.loads(sys.argv[2])
        if sys.argv[1] == "_score":
            print("RESULT " + json.dumps(score_baseline(spec)))
        else:
            cut_windows(spec)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default, what in (
        ("--root", Path, Path("runs/equal_wall"), "prepared data, runs, logs, results.jsonl"),
        ("--nanogpt", Path, None, "a checkout of karpathy/nanoGPT"),
        ("--nanochat", Path, None, "a checkout of karpathy/nanochat"),
        ("--python", Path, Path(sys.executable), "the baselines' interpreter"),
        ("--budget", float, 0.0, "the baselines' wall seconds (default: kiln's measured wall)"),
        ("--kiln-args", str, "", "extra `kiln run` arguments, as --kiln-args='--budget 2m'"),
        ("--nanogpt-args", str, "", "extra train.py overrides, as --nanogpt-args='--learning_rate=2e-3'"),
        ("--nanochat-args", str, "", "extra base_train.py flags, as --nanochat-args='--weight-decay 0'"),
        ("--nanochat-shape", str, "", "LAYERSxDIMxSEQxBATCH (default: kiln's final checkpoint's)"),
        ("--nanochat-dtype", str, "kiln", "NANOCHAT_DTYPE: auto, float32, bfloat16 or kiln (its measured precision)"),
        ("--vocab-size", int, 0, "nanochat's tokenizer (default: kiln's; 8192 without kiln)"),
        ("--calibrate-iters", int, 40, "nanoGPT iterations timed before its run"),
        ("--calibrate-steps", int, 12, "nanochat steps timed before its run"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=what)
    parser.add_argument(
        "--nanochat-no-outer-fusion",
        action="store_true",
        help="turn off inductor's vertical outer-loop fusion in nanochat's processes (torch 2.13/2.14 CPU "
        "fail compiling its optimizer with KeyError 'buf13' otherwise)",
    )
    parser.add_argument(
        "--cut", choices=list(CUTS), default="test", help="test: score the last tenth; dev: the 80-90 %% one"
    )
    parser.add_argument("--no-kiln", action="store_true", help="skip kiln (give --budget, and --nanochat-shape)")
    parser.add_argument("--reuse-kiln", action="store_true", help="score the finished kiln run under ROOT again")
    args = parser.parse_args()
    args.root = args.root.resolve()  # the baselines run from their checkouts: every path they get is absolute
    if args.no_kiln and (not args.budget or (args.nanochat and not args.nanochat_shape)):
        parser.error("--no-kiln needs --budget SECONDS (and, with --nanochat, --nanochat-shape)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipe.py: cpu_name
    from recipe import cpu_name

    args.root.mkdir(parents=True, exist_ok=True)
    cut = prepare_cut(args.root, args.cut)
    rows: list[dict] = []
    kiln = None if args.no_kiln else run_kiln(args.root, cut, args.kiln_args.split(), args.reuse_kiln)
    rows += [kiln] if kiln else []
    budget_s = args.budget or kiln["wall_s"]
    if args.nanogpt:
        rows.append(run_nanogpt(args, args.root, cut, budget_s))
    if args.nanochat:
        rows.append(run_nanochat(args, args.root, cut, budget_s, kiln))
    print(table(rows))
    record = dict(budget_s=budget_s, cut=args.cut, kiln_args=args.kiln_args, rows=rows, cpu=cpu_name())
    record["date"] = time.strftime("%F")
    with (args.root / "results.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
