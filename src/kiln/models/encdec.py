"""Encoder-decoder transformer for span corruption (T5-style).

The encoder reads the corrupted text bidirectionally; the decoder writes the missing spans, attending
causally to what it has written and, in every block, across to the encoder's output. One embedding
is shared by encoder, decoder and output projection (T5). Rotary positions in both self-attentions
(T5 used relative position buckets); pre-norm SwiGLU blocks as elsewhere in kiln. Generation encodes
once, then decodes token by token with a key/value cache for the decoder's self-attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.config import require
from kiln.device import autocast
from kiln.models.base import TokenModel
from kiln.models.block import Block, make_attention, make_mlp, make_norm, out_std
from kiln.models.config import ModelConfig
from kiln.models.decoder import ModelCache
from kiln.models.layers import CrossAttention, KVCache
from kiln.models.sampling import generate_spans
from kiln.models.spec import FamilySpec, Request, Scored, attention_params, mlp_params, stack_flops
from kiln.objectives.span import SpanCorruption, reconstruct

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.models.config import SampleConfig
    from kiln.objectives.config import ObjectiveConfig
    from kiln.tokenizer import SpecialIds


class DecoderBlock(nn.Module):
    """x + self_attn(norm(x)) (causal) + cross_attn(norm(x), memory) + mlp(norm(x)); built from the
    same parts as every family's Block (block.py), so it honours the same options."""

    def __init__(self, cfg: ModelConfig, i: int) -> None:
        super().__init__()
        self.self_norm = make_norm(cfg)
        self.self_attn = make_attention(cfg, causal=True)
        self.cross_norm = make_norm(cfg)
        self.cross_attn = CrossAttention(
            cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.qk_norm, cfg.norm_eps, cfg.norm_params
        )
        self.mlp_norm = make_norm(cfg)
        self.mlp = make_mlp(cfg, i)

    def init_weights(self, std: float, out_std: float) -> None:
        for norm in (self.self_norm, self.cross_norm, self.mlp_norm):
            norm.init_weights()
        for layer in (self.self_attn, self.cross_attn, self.mlp):
            layer.init_weights(std, out_std)

    def forward(self, x, memory, cos, sin, kv: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.self_norm(x), cos, sin, kv, layer)
        x = x + self.cross_attn(self.cross_norm(x), memory)
        return x + self.mlp(self.mlp_norm(x))


class EncoderDecoder(TokenModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = nn.ModuleList(Block(cfg, i, causal=False) for i in range(cfg.num_layers))
        self.encoder_norm = make_norm(cfg)
        self.decoder = nn.ModuleList(DecoderBlock(cfg, i) for i in range(cfg.decoder_layers))
        self.decoder_norm = make_norm(cfg)
        self._add_head()

    def repeated_blocks(self) -> list[nn.ModuleList]:
        return [self.encoder, self.decoder]

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        self._init_embedding()
        std_out = out_std(cfg, cfg.num_layers + cfg.decoder_layers)
        for block in [*self.encoder, *self.decoder]:
            block.init_weights(cfg.hidden_init_std, std_out)
        self.encoder_norm.init_weights()
        self.decoder_norm.init_weights()
        self._init_rotary()

    def _check(self, length: int) -> None:
        if length > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {length} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """src (B, S) -> memory (B, S, C)."""
        S = src.shape[1]
        self._check(S)
        x = self.embed(src)
        for block in self.encoder:
            x = block(x, self.cos[:S], self.sin[:S])
        return self.encoder_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, cache: ModelCache | None = None) -> torch.Tensor:
        """tgt (B, T) decoder inputs (targets shifted right) -> logits (B, T, V)."""
        T = tgt.shape[1]
        start = cache.pos if cache is not None else 0
        self._check(start + T)
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        x = self.embed(tgt)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, cos, sin, cache.kv if cache is not None else None, i)
        if cache is not None:
            cache.advance(T)
        return self.logits(self.decoder_norm(x))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt, self.encode(src))

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> ModelCache:
        cfg = self.cfg
        kv = KVCache(
            cfg.decoder_layers,
            batch,
            cfg.num_kv_heads,
            cfg.head_dim,
            max_len or cfg.max_seq_len,
            self.embed.weight.device,
            dtype or self.embed.weight.dtype,
        )
        return ModelCache(kv, {i: i for i in range(cfg.decoder_layers)})


def span_corruption_flops(cfg: ModelConfig, seq_len: int, objective: ObjectiveConfig) -> float:
    """Training FLOPs per window token. Span corruption (noise density d, mean span m) gives the encoder
    about (1 - d + d/m) and the decoder (d + d/m) tokens per window token; attention scores scale with
    the lengths attended over (the decoder's self-attention over its own, its cross-attention over the
    encoder's)."""
    d, m = objective.span.noise_density, objective.span.mean_span_length
    src, tgt = 1 - d + d / m, d + d / m
    enc = stack_flops(cfg, [True] * cfg.num_layers, seq_len * src, 0)
    dec_params = (
        sum(2 * attention_params(cfg) + mlp_params(cfg, i) for i in range(cfg.decoder_layers))
        + cfg.dim * cfg.vocab_size
    )
    dec = 6 * dec_params + 12 * 2 * cfg.decoder_layers * cfg.dim * seq_len * (tgt + src) / 2
    return enc * src + dec * tgt


def write_spans(
    model: EncoderDecoder,
    tokenizer: Tokenizer,
    ids: SpecialIds,
    prompt: str,
    sc: SampleConfig,
    seed: int,
    precision: str,
    use_cache: bool,
) -> str:
    """The prompt with each <|sentinel_N|> replaced by the span the model writes for it (one sentinel is
    added if it has none)."""
    prompt = prompt if "<|sentinel_" in prompt else prompt + " <|sentinel_0|>"
    src = tokenizer.encode(prompt, add_special_tokens=False).ids + [ids.eos]
    spans = generate_spans(
        model,
        torch.tensor([src], device=model.embed.weight.device),
        sc.max_new_tokens,
        ids.bos,
        ids.eos,
        sc.temperature,
        sc.top_k,
        sc.top_p,
        seed,
        precision,
    )
    out = reconstruct(src, spans[0].tolist(), ids.sentinels, ids.eos, generated=True)
    return tokenizer.decode(out, skip_special_tokens=True)


@torch.no_grad()
def score_span(
    model: nn.Module, requests: Sequence[Request], ids: SpecialIds, precision: str, max_len: int
) -> list[Scored]:
    """The continuation as the span of one sentinel after the context: the encoder reads
    `context <|sentinel_0|> <|eos|>`, the decoder writes `<|sentinel_0|> continuation`; the
    log-probabilities of the continuation's tokens summed (T5's way of scoring a completion). One
    request at a time: the encoder has no padding mask, so padded rows would see the padding."""
    device = next(model.parameters()).device
    sentinel = ids.sentinels[0]
    out = []
    for context, continuation in requests:
        if not continuation:  # nothing to score: log 1, as the other families give
            out.append(Scored(0.0, True))
            continue
        context, continuation = context[max(0, len(context) - (max_len - 2)) :], continuation[: max_len - 1]
        src = torch.tensor([[*context, sentinel, ids.eos]], device=device)
        tgt = torch.tensor([[ids.bos, sentinel, *continuation]], device=device)
        with autocast(device, precision):
            logits = model(src, tgt[:, :-1])
        out.append(Scored.of(logits[0, -len(continuation) :], tgt[0, -len(continuation) :]))
    return out


def windows_fit(cfg: Any) -> None:
    """Span corruption turns a window (train.seq_len + 1 tokens) into the encoder's input and the
    decoder's target: both must fit model.max_seq_len."""
    window = cfg.train.seq_len + 1
    source, target = cfg.objective.span.lengths(window)
    require(
        max(source, target) <= cfg.model.max_seq_len,
        f"objective.span turns a {window}-token window into {source} encoder and {target} decoder tokens, "
        f"over model.max_seq_len={cfg.model.max_seq_len}: raise it or objective.span.mean_span_length",
    )


SPEC = FamilySpec(
    name="encdec",
    model=EncoderDecoder,
    objective=SpanCorruption,
    flops_per_token=span_corruption_flops,
    sample=write_spans,
    score=score_span,
    summary="span corruption, encoder-decoder (T5-style)",
    causal=False,
    refuses=("embed_norm", "residual_scalars", "value_embeds"),
    check_run=windows_fit,
)
