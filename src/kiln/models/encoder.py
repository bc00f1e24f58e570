"""Encoder-only transformer for masked language modelling (BERT / RoBERTa-style).

Bidirectional attention (every position sees every other), rotary positions, pre-norm SwiGLU blocks,
and a masked-LM head: a dense layer with GELU and a norm (BERT's prediction-head transform), then the
output projection tied to the embedding. The objective (objectives/masked.py) chooses the positions
to predict; the model returns logits at every position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from kiln.device import autocast
from kiln.models.base import TokenModel
from kiln.models.block import Block, make_norm, out_std
from kiln.models.config import ModelConfig
from kiln.models.sampling import fill_masks
from kiln.models.spec import FamilySpec, Request, Scored, fit_request, stack_flops
from kiln.objectives.masked import MaskedLM
from kiln.tokenizer import MASK

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.models.config import SampleConfig
    from kiln.tokenizer import SpecialIds


class Encoder(TokenModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.blocks = nn.ModuleList(Block(cfg, i, causal=False) for i in range(cfg.num_layers))
        self.norm = make_norm(cfg)
        self.transform = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.transform_norm = make_norm(cfg)
        self._add_head()

    def repeated_blocks(self) -> list[nn.ModuleList]:
        return [self.blocks]

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        self._init_embedding()
        for block in self.blocks:
            cast(Block, block).init_weights(cfg.hidden_init_std, out_std(cfg, cfg.num_layers))
        self.norm.init_weights()
        nn.init.normal_(self.transform.weight, std=cfg.hidden_init_std)
        self.transform_norm.init_weights()
        self._init_rotary()

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> contextual states (B, T, C), each position seeing the whole sequence."""
        T = tokens.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos[:T], self.sin[:T])
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> masked-LM logits (B, T, vocab_size)."""
        h = F.gelu(self.transform(self.hidden(tokens)))
        return self.logits(self.transform_norm(h.to(self.transform.weight.dtype)))  # fused norm: dtypes match


def masked_lm_flops(cfg: ModelConfig, seq_len: int, objective: object = None) -> float:
    """Training FLOPs per token: the bidirectional blocks, the MLM transform and the head."""
    return stack_flops(cfg, [True] * cfg.num_layers, seq_len, cfg.dim * cfg.dim + cfg.dim * cfg.vocab_size)


def fill_prompt_masks(
    model: Encoder,
    tokenizer: Tokenizer,
    ids: SpecialIds,
    prompt: str,
    sc: SampleConfig,
    seed: int,
    precision: str,
    use_cache: bool,
) -> str:
    """The prompt with each <|mask|> filled by the most likely token (one mask is added if it has none)."""
    prompt = prompt if MASK in prompt else prompt + " " + MASK
    tokens = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids], device=model.embed.weight.device)
    return tokenizer.decode(fill_masks(model, tokens, ids.mask, precision)[0].tolist(), skip_special_tokens=True)


@torch.no_grad()
def score_masked(
    model: nn.Module, requests: Sequence[Request], ids: SpecialIds, precision: str, max_len: int
) -> list[Scored]:
    """Pseudo-log-likelihood (Salazar et al. 2020): each continuation token masked in turn and predicted
    from everything else, context and the rest of the continuation; the log-probabilities summed.
    One row per continuation token, so a request costs a batch of that many windows."""
    device = next(model.parameters()).device
    out = []
    for context, continuation in requests:
        context, continuation = fit_request(context, continuation, max_len)
        tokens = torch.tensor([*context, *continuation], device=device)
        positions = torch.arange(len(context), len(tokens), device=device)
        batch = tokens.repeat(len(positions), 1)
        batch[torch.arange(len(positions)), positions] = ids.mask
        with autocast(device, precision):
            logits = model(batch)
        out.append(Scored.of(logits[torch.arange(len(positions)), positions], tokens[positions]))
    return out


SPEC = FamilySpec(
    name="encoder",
    model=Encoder,
    objective=MaskedLM,
    flops_per_token=masked_lm_flops,
    sample=fill_prompt_masks,
    score=score_masked,
    summary="masked LM, bidirectional (BERT-style)",
    causal=False,
    pooling="mean",
    refuses=("embed_norm", "residual_scalars", "value_embeds"),
)
