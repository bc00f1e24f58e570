"""`kiln export --to gguf`: a decoder checkpoint as one GGUF file for llama.cpp (the `gguf` package).

Architecture `llama` (with experts, as llama.cpp stores Mixtral: ffn_gate_inp and the stacked
ffn_{gate,up,down}_exps) or, for a QK-norm model (kiln's recipe), `qwen3` (attn_q_norm / attn_k_norm
per head, key_length = head_dim), fp32 tensors, with llama.cpp's tensor names (token_embd,
blk.N.attn_q, ..., output_norm; no `output` when the head is tied, which llama.cpp then reads from
token_embd). Two things differ from the Hugging Face layout, as llama.cpp's own convert_hf_to_gguf.py
does them:

- for `llama`, the query and key projections are permuted per head from the rotate-half rotary
  layout (HF, kiln) to the interleaved-pair layout llama.cpp's `llama` rope applies; `qwen3` uses
  the rotate-half (NEOX) rope itself, so its projections are written as they are;
- the tokenizer is stored as `gpt2` (byte-level BPE): the vocabulary in its byte-level spelling,
  the merges, token types (special tokens are `control`), and <|bos|>/<|eos|>/<|pad|> ids, with
  add_bos_token on (kiln's models read text after <|bos|>). `tokenizer.ggml.pre` names the
  pre-tokenizer: kiln's split pattern is GPT-4's with numbers in groups of at most two digits, which
  no llama.cpp preset matches exactly; "llama-bpe" (groups of three) is the nearest, so numbers of
  three or more digits may split differently there.

The file is checked as written by reading it back with gguf's reader: metadata, every tensor's
name, shape and values (the permutation undone, bitwise against kiln's weights), and the tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.errors import KilnError
from kiln.evaluate.load import load_checkpoint
from kiln.rundir import RunDir
from kiln.transfer.hf import architecture, to_hf

GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}
EXPERT_NAMES = {"w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"}
PRE_TOKENIZER = "llama-bpe"


def permute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q/k projection from rotate-half to interleaved pairs, per head (llama.cpp's permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of permute_rotary."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(
    hf_weights: dict[str, torch.Tensor], heads: int, kv_heads: int, permute: bool = True
) -> dict[str, torch.Tensor]:
    """Llama, Qwen3 or Mixtral (HF names) -> GGUF names and layout (experts stacked:
    ffn_{gate,up,down}_exps); q/k projections permuted for llama.cpp's `llama` rope when `permute`."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, w in hf_weights.items():
        if ".block_sparse_moe." in name:
            _, _, layer, _, rest = name.split(".", 4)
            if rest == "gate.weight":
                out[f"blk.{layer}.ffn_gate_inp.weight"] = w
            else:
                _, e, which, _ = rest.split(".")
                experts.setdefault((layer, EXPERT_NAMES[which]), {})[int(e)] = w
            continue
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = w
        elif name == "model.norm.weight":
            out["output_norm.weight"] = w
        elif name == "lm_head.weight":
            out["output.weight"] = w
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.removesuffix(".weight")
            if permute and module == "self_attn.q_proj":
                w = permute_rotary(w, heads)
            elif permute and module == "self_attn.k_proj":
                w = permute_rotary(w, kv_heads)
            out[f"blk.{layer}.{GGUF_NAMES[module]}.weight"] = w
    for (layer, kind), per_expert in experts.items():
        out[f"blk.{layer}.{kind}.weight"] = torch.stack([per_expert[e] for e in sorted(per_expert)])
    return out


def _vocab(tokenizer_json: Path) -> tuple[list[str], list[int], list[str]]:
    """Tokens in id order (byte-level spelling), their GGUF types, and the merges as "a b"."""
    data = json.loads(Path(tokenizer_json).read_text())
    model = data["model"]
    if model.get("type") != "BPE":
        raise KilnError("GGUF export needs a byte-level BPE tokenizer")
    by_id = {i: t for t, i in model["vocab"].items()}
    special = {t["id"]: t["content"] for t in data.get("added_tokens", [])}
    size = max([*by_id, *special]) + 1
    tokens = [special.get(i, by_id.get(i, f"[PAD{i}]")) for i in range(size)]
    types = [3 if i in special else (1 if i in by_id else 5) for i in range(size)]  # control / normal / unused
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def export_gguf(checkpoint: Path, out: Path, verify: bool = True) -> dict[str, Any]:
    """Write `checkpoint` as a GGUF file at `out`; returns what the read-back checked."""
    import gguf

    checkpoint, out = Path(checkpoint), Path(out)
    loaded = load_checkpoint(checkpoint, torch.device("cpu"))
    cfg, ids = loaded.cfg.model, loaded.ids
    arch = "qwen3" if architecture(cfg) == "qwen3" else "llama"  # the HF export's families, or one error
    weights = {k: v.detach().float() for k, v in loaded.model.state_dict().items()}
    tensors = gguf_tensors(to_hf(weights, cfg), cfg.num_heads, cfg.num_kv_heads, permute=arch == "llama")
    tokens, types, merges = _vocab(checkpoint / "tokenizer.json")
    if len(tokens) < cfg.vocab_size:  # the model's embedding has spare rows past the tokenizer
        tokens += [f"[PAD{i}]" for i in range(len(tokens), cfg.vocab_size)]
        types += [5] * (cfg.vocab_size - len(types))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(f"kiln {RunDir.of_checkpoint(checkpoint).root.name} step {loaded.step}")
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.num_layers)
    if cfg.moe.num_experts:
        writer.add_feed_forward_length(cfg.moe.expert_hidden_dim)
        writer.add_expert_count(cfg.moe.num_experts)
        writer.add_expert_used_count(cfg.moe.top_k)
    else:
        writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids.bos)
    writer.add_eos_token_id(ids.eos)
    writer.add_pad_token_id(ids.pad)
    writer.add_add_bos_token(True)
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "step": loaded.step, "format": "gguf", "out": str(out)}
    if verify:
        llama_cpp = run_llama_cpp(out, loaded, heldout_window(checkpoint, loaded))
        result["verification"] = read_back(out, tensors, tokens, cfg, arch) | {"llama_cpp": llama_cpp}
        if isinstance(llama_cpp, dict):
            result["verification"]["llama_cpp_agrees"] = llama_cpp["agrees"]
    return result


LLAMA_CPP_PROMPT = "The state of the Union is"
LOGIT_TOLERANCE = 0.05
"""llama.cpp's CPU kernels sum in their own order: its fp32 logits may differ from kiln's by this much."""
BPB_TOLERANCE = 0.01
"""...and its bits-per-byte on the held-out window by this share."""
WINDOW_TOKENS = 128


def heldout_window(checkpoint: Path, loaded: Any) -> list[int]:
    """The first WINDOW_TOKENS tokens (at most the model's context) of the checkpoint's run's validation
    shards (text the model never trained on, from its <|bos|>), or a fixed prompt when the run's shards
    are not beside it."""
    from kiln.shards.loader import ShardSet

    size = min(WINDOW_TOKENS, loaded.model.cfg.max_seq_len)
    val = RunDir.of_checkpoint(checkpoint).split("val")
    if (val / "manifest.json").exists():
        shards = ShardSet(val)
        if shards.tokenizer_sha256 == loaded.tokenizer_sha256 and shards.num_tokens >= size:
            window: list[int] = []  # documents as stored: each starts with <|bos|>
            for doc in shards.documents():
                window += doc.tolist()
                if len(window) >= size:
                    return window[:size]
    prompt = [loaded.ids.bos] + loaded.tokenizer.encode(LLAMA_CPP_PROMPT, add_special_tokens=False).ids
    return prompt[:size]


def bits_per_byte(logits: np.ndarray, tokens: list[int], token_bytes: torch.Tensor) -> float:
    """Bits-per-byte of tokens[1:] given the logits (T, V) at tokens[:-1]."""
    lse = torch.from_numpy(logits[:-1]).double().logsumexp(-1)
    targets = torch.tensor(tokens[1:])
    nats = (lse - torch.from_numpy(logits[:-1]).double()[torch.arange(len(targets)), targets]).sum()
    return float(nats / math.log(2) / token_bytes[targets].sum())


def run_llama_cpp(path: Path, loaded: Any, window: list[int] | None = None) -> dict[str, Any] | str:
    """With llama-cpp-python installed: llama.cpp's tokens for a fixed prompt, and its logits on a
    held-out window against kiln's (top-1 at every position, max |difference|, bits-per-byte)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return "not run: llama-cpp-python is not installed"
    tokens = window or [loaded.ids.bos] + loaded.tokenizer.encode(LLAMA_CPP_PROMPT, add_special_tokens=False).ids
    n_ctx = max(len(tokens), 64)
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False)
    theirs = llm.tokenize(LLAMA_CPP_PROMPT.encode(), add_bos=True, special=False)
    ours = [loaded.ids.bos] + loaded.tokenizer.encode(LLAMA_CPP_PROMPT, add_special_tokens=False).ids
    llm.eval(tokens)
    with torch.no_grad():
        want = loaded.model.float()(torch.tensor([tokens]))[0].numpy()
    got = np.array(llm.scores[: len(tokens)])[:, : want.shape[-1]]
    ours_bpb = bits_per_byte(want, tokens, loaded.token_bytes)
    theirs_bpb = bits_per_byte(got, tokens, loaded.token_bytes)
    diff = float(np.abs(want - got).max())
    same_top1 = bool((want.argmax(-1) == got.argmax(-1)).all())
    bpb_gap = abs(theirs_bpb - ours_bpb) / ours_bpb
    return {
        "tokens_identical": theirs == ours,
        "window_tokens": len(tokens),
        "max_abs_logit_diff": diff,
        "top1_identical": same_top1,
        "bpb_kiln": ours_bpb,
        "bpb_llama_cpp": theirs_bpb,
        "agrees": same_top1 and diff < LOGIT_TOLERANCE and bpb_gap < BPB_TOLERANCE,
    }


def read_back(
    path: Path, tensors: dict[str, torch.Tensor], tokens: list[str], cfg: Any, arch: str = "llama"
) -> dict[str, Any]:
    """Read the file with gguf's reader and compare metadata, tensors (bitwise) and tokens."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields[key]
        return f.parts[f.data[0]].tolist()[0] if len(f.data) == 1 else None

    written = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    metadata_ok = (
        written == arch
        and field(f"{arch}.block_count") == cfg.num_layers
        and field(f"{arch}.embedding_length") == cfg.dim
        and field(f"{arch}.attention.head_count") == cfg.num_heads
        and field(f"{arch}.attention.head_count_kv") == cfg.num_kv_heads
        and field(f"{arch}.attention.key_length") == cfg.head_dim
    )
    found = {t.name: t for t in reader.tensors}
    tensors_ok = set(found) == set(tensors)
    for name, want in tensors.items():
        got = found.get(name)
        # GGUF lists dimensions innermost first; the data reads back in row-major order
        if got is None or list(reversed(got.shape.tolist())) != list(want.shape):
            tensors_ok = False
            continue
        tensors_ok &= np.array_equal(np.asarray(got.data).reshape(want.shape), want.numpy())
    token_field = reader.fields["tokenizer.ggml.tokens"]
    read_tokens = [bytes(token_field.parts[i]).decode() for i in token_field.data]
    return {
        "checked": True,
        "metadata_match": metadata_ok,
        "tensors_identical": tensors_ok,
        "tensors": len(found),
        "tokens_identical": read_tokens == tokens,
    }
