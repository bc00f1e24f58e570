"""Sampling with temperature, top-k and top-p, with or without a KV cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from kiln.device import autocast
from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.models.decoder import Decoder
    from kiln.models.encdec import EncoderDecoder
    from kiln.models.encoder import Encoder


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside top-k / nucleus top-p to -inf. logits (B, V) float."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def check_prompt_fits(tokens: torch.Tensor, max_len: int) -> None:
    """Refuse, in one line, a prompt (B, T) longer than the model reads."""
    if tokens.shape[1] > max_len:
        raise KilnError(
            f"the prompt is {tokens.shape[1]} tokens and this model reads at most model.max_seq_len={max_len}; "
            "shorten it"
        )


@torch.inference_mode()
def generate(
    model: Decoder,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
    use_cache: bool = True,
    precision: str = "fp32",
    images: torch.Tensor | None = None,
    image_id: int = -1,
) -> torch.Tensor:
    """Extend prompt (B, T0) int64 by up to max_new_tokens; returns (B, T0 + new).

    With `use_cache`, past keys/values are kept and each step feeds one token; without, each step
    recomputes the whole sequence (the baseline the KV cache is measured against). Stops early when
    every row has produced `eos_id`. `images` (B, K, S, S, 3) uint8 fill the prompt's `image_id`
    positions (the vlm family).
    """
    was_training = model.training
    model.eval()
    device = prompt.device
    max_len = model.cfg.max_seq_len
    check_prompt_fits(prompt, max_len)
    # the last new token is never fed back, so a prompt of max_len tokens still gets one
    max_new_tokens = min(max_new_tokens, max_len - prompt.shape[1] + 1)
    gen = torch.Generator(device=device).manual_seed(seed)
    cache_dtype = torch.bfloat16 if precision == "bf16" else next(model.parameters()).dtype
    cache = model.new_cache(prompt.shape[0], max_len, cache_dtype) if use_cache else None
    tokens = prompt
    step_input = prompt
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=device)
    # weights already in bf16 (as `kiln generate` loads them) need no autocast, which costs per op
    weights_fp32 = next(model.parameters()).dtype == torch.float32
    for step in range(max_new_tokens):
        seen = step_input if use_cache else tokens
        extra = {}
        if images is not None and (step == 0 or not use_cache):  # the prompt's image positions
            mask = seen == image_id
            mask[:, prompt.shape[1] :] = False  # a sampled image id is text: it has no image to show
            extra = dict(images=images, image_mask=mask)
        with autocast(device, precision if weights_fp32 else "fp32"):
            logits = model(seen, cache=cache, **extra)[:, -1].float()  # (B, V)
        if temperature == 0:
            next_id = logits.argmax(-1, keepdim=True)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            next_id = torch.multinomial(probs, 1, generator=gen)
        tokens = torch.cat([tokens, next_id], dim=1)
        step_input = next_id
        if eos_id is not None:
            done |= next_id.squeeze(1) == eos_id
            if bool(done.all()):
                break
    model.train(was_training)
    return tokens


@torch.inference_mode()
def fill_masks(model: Encoder, tokens: torch.Tensor, mask_id: int, precision: str = "fp32") -> torch.Tensor:
    """Encoder: replace every mask token in tokens (B, T) with the model's most likely token."""
    check_prompt_fits(tokens, model.cfg.max_seq_len)
    was_training = model.training
    model.eval()
    with autocast(tokens.device, precision):
        logits = model(tokens)
    model.train(was_training)
    return torch.where(tokens == mask_id, logits.argmax(-1), tokens)


@torch.inference_mode()
def generate_spans(
    model: EncoderDecoder,
    src: torch.Tensor,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    precision: str = "fp32",
) -> torch.Tensor:
    """Encoder-decoder: encode src (1, S) once, then decode the sentinels' spans token by token with a
    key/value cache until <|eos|>; returns the decoder's output (1, n) without the start token."""
    check_prompt_fits(src, model.cfg.max_seq_len)
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=src.device).manual_seed(seed)
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len)
    with autocast(src.device, precision):
        memory = model.encode(src)
    dtype = torch.bfloat16 if precision == "bf16" else memory.dtype
    cache = model.new_cache(src.shape[0], max_new_tokens, dtype)
    step = torch.full((src.shape[0], 1), bos_id, dtype=src.dtype, device=src.device)
    out = []
    for _ in range(max_new_tokens):
        with autocast(src.device, precision):
            logits = model.decode(step, memory, cache)[:, -1].float()
        if temperature == 0:
            step = logits.argmax(-1, keepdim=True)
        else:
            step = torch.multinomial(filter_logits(logits / temperature, top_k, top_p).softmax(-1), 1, generator=gen)
        out.append(step)
        if bool((step == eos_id).all()):
            break
    model.train(was_training)
    return torch.cat(out, dim=1)
