"""`kiln export --to hf`: a checkpoint as a folder transformers loads offline, verified as it is written.

The folder holds config.json (LlamaForCausalLM, Qwen3ForCausalLM with QK-norm, MixtralForCausalLM
with experts in every block: transfer/hf.py), model.safetensors (fp32, the fused projections
split: transfer/hf.py), tokenizer.json + tokenizer_config.json + special_tokens_map.json (the
tokenizer adds <|bos|> in front, as kiln's models read text), generation_config.json (kiln's
sampling defaults), README.md (the run's model card) and, written by `kiln export`, kiln_export.json
(what the verification measured: transfer/target.py). With transformers installed
(`pip install -e ".[transfer]"`) the export is checked at once: the exported model's logits against
kiln's on a fixed batch (max abs difference), greedy tokens from a fixed prompt, and AutoTokenizer's
ids against kiln's.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, cast

import torch

from kiln.evaluate.load import LoadedCheckpoint, load_checkpoint
from kiln.finetune.sft import CHAT_TEMPLATE
from kiln.models.decoder import Decoder
from kiln.models.sampling import generate
from kiln.rundir import RunDir
from kiln.staging import save_tensors
from kiln.tokenizer import BOS, EOS, PAD
from kiln.transfer.hf import hf_config, to_hf, tokenizer_files

VERIFY_PROMPT = "The state of the Union is"
VERIFY_TOKENS = 20
TOLERANCE = 1e-4
"""fp32 logits of the exported model may differ from kiln's by at most this (summation order only)."""


def export_hf(checkpoint: Path, out: Path, verify: bool = True) -> dict[str, Any]:
    """Write `checkpoint` as a transformers Llama folder at `out`; returns what was checked."""
    checkpoint, out = Path(checkpoint), Path(out)
    loaded = load_checkpoint(checkpoint, torch.device("cpu"))
    cfg, ids = loaded.cfg, loaded.ids
    config = hf_config(cfg.model, ids.bos, ids.eos, ids.pad)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().float() for k, v in loaded.model.state_dict().items()}
    save_tensors(to_hf(weights, cfg.model), out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer_files(checkpoint / "tokenizer.json", out, BOS, EOS, PAD, cfg.train.seq_len)
    if cfg.finetune.data:  # fine-tuned on chats: its template, for apply_chat_template
        tok_config = json.loads((out / "tokenizer_config.json").read_text())
        tok_config["chat_template"] = CHAT_TEMPLATE
        (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    sc = cfg.sample
    generation = {
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "do_sample": sc.temperature > 0,
        "temperature": sc.temperature or 1.0,
        "top_k": sc.top_k,
        "top_p": sc.top_p,
        "max_new_tokens": sc.max_new_tokens,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    card = RunDir.of_checkpoint(checkpoint).model_card
    if card.is_symlink():  # a run from someone else: the file it names is not this run's card to publish
        print(f"warning: {card} is a link; the export has no README.md (copy the card in by hand)", file=sys.stderr)
    elif card.is_file():
        shutil.copyfile(card, out / "README.md")
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "step": loaded.step, "format": "hf", "out": str(out)}
    if verify:
        result["verification"] = verify_hf(out, loaded)
    return result


def fixed_batch(loaded: LoadedCheckpoint, rows: int = 2, length: int = 64) -> torch.Tensor:
    """A seeded batch of text token ids after <|bos|>, the same for every export of a checkpoint."""
    length = min(length, loaded.cfg.train.seq_len)
    gen = torch.Generator().manual_seed(0)
    text_ids = torch.randint(
        loaded.ids.num_special, loaded.tokenizer.get_vocab_size(), (rows, length - 1), generator=gen
    )
    return torch.cat([torch.full((rows, 1), loaded.ids.bos), text_ids], dim=1)


@torch.no_grad()
def verify_hf(out: Path, loaded: LoadedCheckpoint) -> dict[str, Any]:
    """Load `out` with transformers and compare it with kiln's model; raises if transformers is absent."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        return {"checked": False, "why": 'transformers is not installed (pip install -e ".[transfer]")'}
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    model = cast(Decoder, loaded.model.float().eval())
    tokens = fixed_batch(loaded)
    diff = (hf(tokens).logits - model(tokens)).abs().max().item()
    tok = AutoTokenizer.from_pretrained(str(out))
    kiln_ids = [loaded.ids.bos] + loaded.tokenizer.encode(VERIFY_PROMPT, add_special_tokens=False).ids
    hf_ids = tok(VERIFY_PROMPT)["input_ids"]
    prompt = torch.tensor([kiln_ids])
    ours = generate(model, prompt, VERIFY_TOKENS, 0.0, 0, 1.0, 0, eos_id=loaded.ids.eos, use_cache=True)
    theirs = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=VERIFY_TOKENS,
        do_sample=False,
        eos_token_id=loaded.ids.eos,
        pad_token_id=loaded.ids.pad,
    )
    same = ours[0].tolist() == theirs[0].tolist()
    return {
        "checked": True,
        "max_abs_logit_diff": diff,
        "logits_match": diff <= TOLERANCE,
        "greedy_tokens_identical": same,
        "greedy_tokens": len(ours[0]) - len(kiln_ids),
        "tokenizer_ids_identical": hf_ids == kiln_ids,
        "batch": list(tokens.shape),
    }
