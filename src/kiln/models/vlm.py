"""The decoder that reads images (family "vlm"): image patches take the places of <|image|> tokens.

An image (B, K, S, S, 3) uint8 is cut into P = (S / patch)^2 patches (images/patches.py), embedded,
and written into the decoder's input sequence where its row holds <|image_start|> <|image|> x P
<|image_end|>, in raster order; everything after it (the caption) attends to it through the
decoder's ordinary causal attention, and the rotary positions order the patches. Two embeddings
(`model.vision.encoder`, compared in docs/models.md):

- linear: one projection per patch into the decoder's width (Fuyu-style early fusion; the decoder
  does all the mixing);
- vit: a learned position per patch, then `encoder_layers` bidirectional blocks of the decoder's
  width and a norm (ViT-style; an image's patches see each other before any text does).

Without images (text-only batches, text tasks, plain generation) it is exactly the decoder.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from kiln.config import require
from kiln.models.block import Block, make_norm
from kiln.models.config import ModelConfig
from kiln.models.decoder import Decoder, ModelCache, causal_lm_flops, continue_prompt, score_causal
from kiln.models.spec import FamilySpec, attention_params, mlp_params
from kiln.objectives.caption import CaptionLM

if TYPE_CHECKING:
    from kiln.objectives.config import ObjectiveConfig


class ImageEncoder(nn.Module):
    """(n, P, patch_dim) patches in [-1, 1] -> (n, P, dim) decoder inputs."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        v = cfg.vision
        self.patch_size, self.vit = v.patch_size, v.encoder == "vit"
        self.proj = nn.Linear(v.patch_dim, cfg.dim)
        if self.vit:
            self.pos = nn.Parameter(torch.empty(v.patches, cfg.dim))
            self.blocks = nn.ModuleList(Block(cfg, i, causal=False, rotary=False) for i in range(v.encoder_layers))
            self.norm = make_norm(cfg)

    def init_weights(self, std: float) -> None:
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(self.proj.in_features))
        nn.init.zeros_(self.proj.bias)
        if self.vit:
            nn.init.normal_(self.pos, std=std)
            for block in self.blocks:
                cast(Block, block).init_weights(std, std / math.sqrt(2 * max(1, len(self.blocks))))
            self.norm.init_weights()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.proj(patches)  # (n, P, C)
        if not self.vit:
            return x
        x = x + self.pos
        empty = x.new_empty(0)
        for block in self.blocks:
            x = block(x, empty, empty)
        return self.norm(x)


class ImageDecoder(Decoder):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        assert cfg.vision.image_size > 0, "model.vision.image_size must be set for family vlm"
        self.vision = ImageEncoder(cfg)

    def repeated_blocks(self) -> list[nn.ModuleList]:
        return [self.blocks, self.vision.blocks] if self.vision.vit and len(self.vision.blocks) else [self.blocks]

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        self.vision.init_weights(self.cfg.hidden_init_std)

    def embed_images(self, tokens: torch.Tensor, images: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, C) with each masked position replaced by its image patch: row b's
        first n_b images fill its n_b x P masked positions, in order."""
        from kiln.images.patches import patchify

        x = self.embed(tokens)
        P = self.cfg.vision.patches
        B, K = images.shape[:2]
        counts = image_mask.sum(dim=1) // P  # (B,) images each row shows
        used = torch.arange(K, device=tokens.device)[None, :] < counts[:, None]  # (B, K)
        if not bool(used.any()):
            return x
        patches = patchify(images[used], self.cfg.vision.patch_size).to(x.dtype)  # (n, P, patch_dim)
        feats = self.vision(patches).to(x.dtype)  # (n, P, C)
        return x.masked_scatter(image_mask[..., None], feats.reshape(-1, x.shape[-1]))

    def forward(  # type: ignore[override]  # images and their mask come between the cache and the targets
        self,
        tokens: torch.Tensor,
        cache: ModelCache | None = None,
        images: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, V); images (B, K, S, S, 3) uint8 fill the positions of
        image_mask (B, T) (the <|image|> tokens). With `targets`, the training loss instead."""
        x = self.embed_images(tokens, images, image_mask) if images is not None and image_mask is not None else None
        h = self.hidden(tokens, cache, x)
        return self.head_loss(h, targets) if targets is not None else self.logits(h)


def vlm_flops(cfg: ModelConfig, seq_len: int, objective: ObjectiveConfig | None = None) -> float:
    """The decoder's FLOPs per token, plus the image encoder's per patch (one image of P patches per
    window of seq_len tokens: a caption row; P / seq_len of the encoder's cost per token)."""
    v = cfg.vision
    encoder: float = 6 * v.patch_dim * cfg.dim
    if v.encoder == "vit":
        layers = range(v.encoder_layers)
        encoder += 6 * sum(attention_params(cfg) + mlp_params(cfg, i) for i in layers)
        encoder += 12 * v.encoder_layers * cfg.dim * v.patches
    return causal_lm_flops(ImageDecoder, cfg, seq_len) + encoder * v.patches / max(seq_len, v.patches)


SPEC = FamilySpec(
    name="vlm",
    model=ImageDecoder,
    objective=CaptionLM,
    flops_per_token=vlm_flops,
    sample=continue_prompt,
    score=score_causal,
    summary="causal LM over text and image patches (captions, interleaved documents)",
    pooling="last",
    reads_images=True,
    check=lambda cfg: require(
        cfg.vision.image_size > 0, "model.family=vlm needs images.source (or model.vision.image_size)"
    ),
)
