"""Llama-style decoder-only transformer: pre-norm blocks of causal attention and SwiGLU (or MoE).

Built on the meta device, moved with `to_empty`, then `init_weights()`:

    with torch.device("meta"):
        model = Decoder(cfg)
    model.to_empty(device=device)
    model.init_weights()

With `model.moe.num_experts > 0` every `moe.every`-th block's MLP is a mixture of experts. The
hybrid family (hybrid.py) is this class with SSM layers in place of most attention layers. No
parallelism or precision logic lives here; the trainer applies those from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from kiln.device import autocast
from kiln.models.base import TokenModel
from kiln.models.block import Block, make_norm, out_std
from kiln.models.config import ModelConfig
from kiln.models.layers import KVCache
from kiln.models.sampling import generate
from kiln.models.spec import FamilySpec, Request, Scored, fit_request, stack_flops
from kiln.models.ssm import Mamba, SSMState
from kiln.objectives.causal import CausalLM

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.models.config import SampleConfig
    from kiln.tokenizer import SpecialIds


@dataclass
class ModelCache:
    """Incremental-decoding state: keys/values of the attention layers, recurrent state of SSM layers."""

    kv: KVCache | None
    kv_slot: dict[int, int]  # layer -> its slot in kv
    states: dict[int, SSMState] = field(default_factory=dict)  # layer -> SSM state
    pos: int = 0

    def advance(self, num_tokens: int) -> None:
        self.pos += num_tokens
        if self.kv is not None:
            self.kv.advance(num_tokens)


class Decoder(TokenModel):
    rotary = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        attending = [i for i in range(cfg.num_layers) if self.layer_attends(cfg, i)]
        self.ve_layers = attending[::-1][::2] if cfg.value_embeds else []  # every other, the last always
        self.blocks = nn.ModuleList(
            Block(
                cfg,
                i,
                causal=True,
                rotary=self.rotary,
                attends=self.layer_attends(cfg, i),
                value_embed=i in self.ve_layers,
            )
            for i in range(cfg.num_layers)
        )
        self.norm = make_norm(cfg)
        if cfg.embed_norm:
            self.embed_norm = make_norm(cfg)
        if cfg.residual_scalars:  # per block: stream <- resid_scales[i] * stream + x0_scales[i] * x0
            self.resid_scales = nn.Parameter(torch.empty(cfg.num_layers))
            self.x0_scales = nn.Parameter(torch.empty(cfg.num_layers))
        kv_dim = cfg.num_kv_heads * cfg.head_dim  # layer -> a table added to its attention's values (empty: off)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(cfg.vocab_size, kv_dim) for i in self.ve_layers})
        self._add_head()

    def repeated_blocks(self) -> list[nn.ModuleList]:
        return [self.blocks]

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter and buffer; call after `to_empty`."""
        cfg = self.cfg
        self._init_embedding()
        for block in self.blocks:
            cast(Block, block).init_weights(cfg.hidden_init_std, out_std(cfg, cfg.num_layers))
        self.norm.init_weights()
        if cfg.embed_norm:
            self.embed_norm.init_weights()
        if cfg.residual_scalars:
            self.resid_scales.fill_(1.0)
            self.x0_scales.fill_(cfg.x0_init)
        for table in self.value_embeds.values():
            nn.init.normal_(cast(nn.Embedding, table).weight, std=cfg.hidden_init_std)
        self._init_rotary()

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> ModelCache:
        cfg, device = self.cfg, self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        attn = [i for i, b in enumerate(self.blocks) if b.attends]
        kv = (
            KVCache(len(attn), batch, cfg.num_kv_heads, cfg.head_dim, max_len or cfg.max_seq_len, device, dtype)
            if attn
            else None
        )
        states = {
            i: b.mixer.new_state(batch, device, dtype) for i, b in enumerate(self.blocks) if isinstance(b.mixer, Mamba)
        }
        return ModelCache(kv, {layer: slot for slot, layer in enumerate(attn)}, states)

    def hidden(
        self, tokens: torch.Tensor, cache: ModelCache | None = None, embedded: torch.Tensor | None = None
    ) -> torch.Tensor:
        """tokens (B, T) -> final normed hidden states (B, T, C); `embedded` (B, T, C) replaces the
        token embeddings (the vlm family writes image patches into them)."""
        T = tokens.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        x = self.embed(tokens) if embedded is None else embedded  # (B, T, C)
        if self.cfg.embed_norm:
            x = self.embed_norm(x)
        x0 = x
        for i, block in enumerate(self.blocks):
            if self.cfg.residual_scalars:
                x = self.resid_scales[i] * x + self.x0_scales[i] * x0
            ve = self.value_embeds[str(i)](tokens) if i in self.ve_layers else None
            if cache is None:
                x = block(x, cos, sin, ve=ve)
            else:
                x = block(x, cos, sin, cache.kv, cache.kv_slot.get(i, 0), cache.states.get(i), ve)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def forward(
        self, tokens: torch.Tensor, cache: ModelCache | None = None, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, vocab_size). With `cache`, continue from cache.pos.
        With `targets` (B, T), the training loss instead: their mean cross-entropy (head_loss)."""
        h = self.hidden(tokens, cache)
        return self.head_loss(h, targets) if targets is not None else self.logits(h)  # (B, T, V) or ()


def causal_lm_flops(model: type[Decoder], cfg: ModelConfig, seq_len: int, objective: object = None) -> float:
    """Training FLOPs per token of a `model`-class decoder: its blocks by its layer plan, plus the head."""
    plan = [model.layer_attends(cfg, i) for i in range(cfg.num_layers)]
    return stack_flops(cfg, plan, seq_len, cfg.dim * cfg.vocab_size)


def continue_prompt(
    model: Decoder,
    tokenizer: Tokenizer,
    ids: SpecialIds,
    prompt: str,
    sc: SampleConfig,
    seed: int,
    precision: str,
    use_cache: bool,
) -> str:
    """Causal LMs: the prompt, continued by sampling (see models/sampling.py)."""
    from_prompt = [ids.bos] + tokenizer.encode(prompt, add_special_tokens=False).ids
    tokens = torch.tensor([from_prompt], device=model.embed.weight.device)
    out = generate(
        model,
        tokens,
        sc.max_new_tokens,
        sc.temperature,
        sc.top_k,
        sc.top_p,
        seed,
        eos_id=ids.eos,
        use_cache=use_cache,
        precision=precision,
    )
    return tokenizer.decode(out[0].tolist(), skip_special_tokens=True)


SCORE_BATCH_TOKENS = 8192
"""Tokens per scoring batch (rows x padded length): bounds the logits held at once to ~8k x vocab."""


@torch.no_grad()
def score_causal(
    model: nn.Module, requests: Sequence[Request], ids: SpecialIds, precision: str, max_len: int
) -> list[Scored]:
    """Sum of log p(token | everything before it) over each continuation, after <|bos|> and its context.
    Requests are sorted by length and batched with right padding (causal: a padded tail cannot change
    the positions before it), so a task costs a few forward passes, not one per choice."""
    device = next(model.parameters()).device
    fitted = [fit_request(ctx, cont, max_len) for ctx, cont in requests]
    rows = [[ids.bos, *ctx, *cont] for ctx, cont in fitted]
    conts = [len(cont) for _, cont in fitted]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list[Scored | None] = [None] * len(rows)
    start = 0
    while start < len(order):
        end = start + 1  # the longest rows last: a chunk grows while rows x its longest row fit the batch
        while end < len(order) and (end + 1 - start) * len(rows[order[end]]) <= SCORE_BATCH_TOKENS:
            end += 1
        chunk = order[start:end]
        width = len(rows[chunk[-1]])
        tokens = torch.full((len(chunk), width), ids.pad, dtype=torch.long)
        for r, i in enumerate(chunk):
            tokens[r, : len(rows[i])] = torch.tensor(rows[i])
        tokens = tokens.to(device)
        with autocast(device, precision):
            logits = model(tokens[:, :-1])
        for r, i in enumerate(chunk):
            n, k = len(rows[i]), conts[i]
            out[i] = Scored.of(logits[r, n - 1 - k : n - 1], tokens[r, n - k : n])
        start = end
    return [s for s in out if s is not None]


SPEC = FamilySpec(
    name="decoder",
    model=Decoder,
    objective=CausalLM,
    flops_per_token=partial(causal_lm_flops, Decoder),
    sample=continue_prompt,
    score=score_causal,
    summary="causal LM (Llama-style; MoE with model.moe.num_experts)",
    pooling="last",
    exports=True,
)
