"""Tokenize throughput (MB/s, MB/s per thread) of `kiln tokenize`'s shard writer on a generated
web-like corpus, on 1 and on all of this machine's cores.

    python benchmarks/tokenize_throughput.py                   # 50 MB, 1 and all threads
    python benchmarks/tokenize_throughput.py --mb 20 --threads 1,2,4

The tokenizer is the default run's: byte-level BPE at 8,192 tokens, trained here on the built-in
corpus (the State of the Union addresses) as `kiln run` trains it. The corpus (kiln.curate.synthetic,
the same one benchmarks/curate_throughput.py curates) is generated once into --cache and read into
memory before the clock starts, so the figure is the encoder and the shard writer
(`kiln.shards.writer.write_shards`), not the disk or JSON parsing. Each thread count runs in its own
process: the Rust encoder's thread pool (RAYON_NUM_THREADS) is fixed when it first starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tokenizer(path: Path) -> None:
    from kiln.corpus import CorpusConfig, read_documents
    from kiln.tokenizer import TokenizerConfig, train_tokenizer

    texts = (d.text for d in read_documents(CorpusConfig()))
    train_tokenizer(texts, TokenizerConfig(), show_progress=False).save(str(path))


def _time(corpus: Path, tokenizer: Path) -> dict:
    """In a child process whose RAYON_NUM_THREADS is set: read the corpus, then time write_shards."""
    from kiln.corpus import CorpusConfig, read_documents
    from kiln.shards.config import ShardConfig
    from kiln.shards.writer import write_shards
    from kiln.tokenizer import load_tokenizer, tokenizer_hash

    docs = list(read_documents(CorpusConfig(corpus=str(corpus))))
    mb = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
    tok = load_tokenizer(tokenizer)
    out = Path(tempfile.mkdtemp(prefix="kiln-tokenize-bench-"))
    try:
        t = time.perf_counter()
        manifests = write_shards(docs, tok, tokenizer_hash(tokenizer), {"train": out}, ShardConfig())
        wall = time.perf_counter() - t
    finally:
        shutil.rmtree(out)
    return {"mb": round(mb, 1), "tokens": manifests["train"]["num_tokens"], "wall_s": round(wall, 2)}


def _counts(text: str) -> list[int]:
    """'1,2' -> [1, 2]: positive thread counts, sorted, each once."""
    try:
        counts = sorted({int(t) for t in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be at least 1, got {text!r}")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=50, help="corpus size in MB of text")
    ap.add_argument(
        "--threads", type=_counts, default=f"1,{os.cpu_count() or 1}", help="comma-separated thread counts to time"
    )
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kiln-bench-web"), help="corpus folder")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print("RESULT " + json.dumps(_time(Path(args._child[0]), Path(args._child[1]))))
        return
    from kiln.curate.synthetic import cached_web_corpus

    corpus, _ = cached_web_corpus(Path(args.cache), args.mb)  # the same cache as benchmarks/curate_throughput.py
    work = Path(tempfile.mkdtemp(prefix="kiln-tokenize-bench-tok-"))
    try:
        tokenizer = work / "tokenizer.json"
        _tokenizer(tokenizer)
        rows = []
        for threads in args.threads:
            env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
            cmd = [sys.executable, __file__, "--_child", str(corpus), str(tokenizer)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"tokenizing on {threads} thread(s) failed:\n{proc.stderr[-2000:]}")
            out = proc.stdout
            row = {"threads": threads, **json.loads(out[out.rindex("RESULT ") + 7 :])}
            row["mb_per_s"] = round(row["mb"] / row["wall_s"], 2)
            row["mb_per_s_per_thread"] = round(row["mb_per_s"] / threads, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work)
    print(json.dumps({"machine_cores": os.cpu_count(), "runs": rows}))


if __name__ == "__main__":
    main()
