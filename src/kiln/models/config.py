"""The model config every family shares: width, depth, heads, vocabulary, plus MoE and SSM options.
Plain dataclasses with no heavy imports, so reading a config never loads torch.

One size dial, `depth` (nanochat's): depth blocks of width aspect * depth rounded up to 64, one head
per head_width channels (at least 2 where one would be wider), Llama's SwiGLU width, experts at
hidden / top_k. Each derived value is derived only while left at 0, and stays derived under
overrides (see kiln.config), so `--model.depth 6` or `--model.dim 512` re-derives the rest, while an
explicitly set `--model.num_heads 8` is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kiln.config import derive, require
from kiln.derived import dial_heads, dial_width, expert_hidden_dim, mlp_hidden_dim


@dataclass
class MoEConfig:
    num_experts: int = 0
    """Experts per MoE layer; 0 keeps dense SwiGLU MLPs."""
    top_k: int = 2
    """Experts each token is sent to."""
    every: int = 2
    """An MoE MLP on every this-many-th block (the others dense): 1 = all, 2 = every other (Jamba)."""
    expert_hidden_dim: int = 0
    """Hidden width of each expert; 0 derives the dense MLP's width / top_k, so a token's active MLP
    compute matches the dense model's."""
    aux_loss_coef: float = 0.01
    """Weight of the load-balancing loss (Switch Transformer)."""
    z_loss_coef: float = 0.001
    """Weight of the router z-loss (ST-MoE)."""

    def __post_init__(self) -> None:
        require(self.num_experts >= 0, "model.moe.num_experts must be >= 0")
        if self.num_experts:
            require(1 <= self.top_k <= self.num_experts, f"model.moe.top_k={self.top_k} must be in 1..num_experts")
            require(self.every >= 1, "model.moe.every must be >= 1")


@dataclass
class SSMConfig:
    attn_every: int = 0
    """Hybrid only: one attention layer per this many layers (Jamba: 8); the others are SSM layers."""
    state_dim: int = 16
    """N: state size per head."""
    head_dim: int = 32
    """P: channels per SSM head."""
    expand: int = 2
    """Inner width = expand * model.dim."""
    conv_width: int = 4
    """Causal depthwise convolution width before the scan."""
    chunk: int = 32
    """Steps per chunk of the chunked scan."""

    def __post_init__(self) -> None:
        for name in ("state_dim", "head_dim", "expand", "conv_width", "chunk"):
            require(getattr(self, name) > 0, f"model.ssm.{name} must be positive")
        require(self.attn_every >= 0, "model.ssm.attn_every must be >= 0")


@dataclass
class VisionConfig:
    """The image input of the vlm family (models/vlm.py)."""

    image_size: int = 0
    """Pixels per side of the images the model reads (image+text runs fit their images to it before
    sharding, aspect kept, padded); 0 for a model without images."""
    patch_size: int = 8
    """Pixels per side of one patch; an image is (image_size / patch_size)^2 patch positions."""
    encoder: str = "linear"
    """linear: each patch projected straight into the decoder (Fuyu-style early fusion); vit: patches
    first mixed by `encoder_layers` bidirectional blocks of the decoder's width (ViT-style)."""
    encoder_layers: int = 2
    """vit only: blocks of the image encoder."""

    def __post_init__(self) -> None:
        require(self.encoder in ("linear", "vit"), f"model.vision.encoder={self.encoder!r}: choose linear or vit")
        require(self.patch_size > 0 and self.encoder_layers >= 0, "model.vision.patch_size must be positive")
        if self.image_size:
            require(self.image_size >= 8, f"model.vision.image_size={self.image_size} must be >= 8")
            require(
                self.image_size % self.patch_size == 0,
                f"model.vision.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}",
            )

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * 3


@dataclass
class ModelConfig:
    family: str = "decoder"
    """decoder (causal LM, Llama-style; MoE with moe.num_experts), encoder (masked LM, BERT-style),
    encdec (span corruption, T5-style), hybrid (attention + SSM layers with MoE, Jamba-style) or vlm
    (the decoder reading images too, models/vlm.py): a name in models/registry.py."""
    vocab_size: int = 8192
    """Rows of the embedding table; must cover the tokenizer's vocabulary."""
    depth: int = 0
    """The size dial: when > 0, num_layers and dim (and from dim, heads, MLP width and train.lr) are
    derived from it unless set explicitly. 0: give dim and num_layers."""
    aspect: int = 64
    """Size dial: dim = aspect * depth, rounded up to a multiple of 64 (64 gives GPT-2's shapes)."""
    dim: int = 0
    """Model width C; 0 derives it from depth."""
    num_layers: int = 0
    """Blocks (encdec: encoder blocks); 0 derives it from depth."""
    num_decoder_layers: int = 0
    """encdec only: decoder blocks; 0 uses num_layers."""
    num_heads: int = 0
    """Query heads; head_dim = dim / num_heads. 0 derives one head per head_width channels."""
    head_width: int = 64
    """Channels per head when num_heads is derived (kiln's recipe: 128, as nanochat; faster on CPUs and
    GPUs than 64 and as good, docs/benchmarks.md)."""
    num_kv_heads: int = 0
    """Key/value heads (grouped-query attention); must divide num_heads. 0 uses num_heads."""
    hidden_dim: int = 0
    """SwiGLU hidden width; 0 derives Llama's 8/3 * dim rounded to 64."""
    max_seq_len: int = 512
    """Longest sequence the rotary tables cover."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    tie_embeddings: bool = True
    """Share the input embedding with the output projection."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections use init_std / sqrt(2 * num_layers)."""
    mup_base_dim: int = 0
    """Maximal-update parametrisation (muP; Yang et al. 2022) when > 0: the width the learning rate
    was tuned at. With m = dim / mup_base_dim, the blocks' matrices start at init_std / sqrt(m) and
    train at lr / m (AdamW), and the logits are multiplied by 1 / m; embeddings, norms and the head
    keep the base rate. 0: the standard parametrisation."""
    qk_norm: bool = False
    """Normalise queries and keys per head (parameter-free RMSNorm) before the rotary rotation."""
    mlp: str = "swiglu"
    """Dense MLP: swiglu (Llama's, 8/3 x width) or relu2 (ReLU squared, 4 x width: the same parameters)."""
    logit_softcap: float = 0.0
    """When > 0, logits = cap * tanh(logits / cap) (Gemma 2's soft cap); 0 leaves them as they are."""
    zero_init_out: bool = False
    """Start the residual output projections (attention's and the MLP's last matrix) at zero, so each
    block starts as the identity."""
    zero_init_head: bool = False
    """With untied embeddings: start the output head at zero (modded-nanogpt's), so the first logits
    are uniform and the head learns its scale from the data."""
    norm_params: bool = True
    """RMSNorm with a learned per-channel gain; false: parameter-free norms."""
    embed_norm: bool = False
    """Decoder families: RMSNorm the token embeddings before the first block (as nanochat does)."""
    residual_scalars: bool = False
    """Decoder families: before block i the stream becomes r_i * x + s_i * x0, x0 the (normed)
    embeddings, with learned per-layer scalars r (from 1) and s (from `x0_init`): every block can
    reach the tokens directly (modded-nanogpt's and nanochat's value/embedding skip)."""
    x0_init: float = 0.1
    """residual_scalars: the starting weight s of the embeddings mixed back in before each block."""
    value_embeds: bool = False
    """Decoder families: value embeddings (ResFormer; nanochat's): on every other attention layer,
    counting back from the last one, a second token embedding of the key/value width is added to the
    attention's values through a per-head gate 2 * sigmoid(W x[..., :32]), W from zero."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    ssm: SSMConfig = field(default_factory=SSMConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)

    @property
    def width_mult(self) -> float:
        """muP's m = dim / mup_base_dim (1 without muP)."""
        return self.dim / self.mup_base_dim if self.mup_base_dim else 1.0

    @property
    def hidden_init_std(self) -> float:
        """The blocks' init std: init_std, divided by sqrt(m) under muP (variance ~ 1 / fan-in)."""
        return self.init_std / math.sqrt(self.width_mult)

    def __post_init__(self) -> None:
        require(
            self.depth >= 0 and self.aspect > 0 and self.head_width > 0,
            "model.depth must be >= 0, model.aspect and model.head_width > 0",
        )
        if self.depth:
            derive(self, "num_layers", self.depth)
            derive(self, "dim", dial_width(self.depth, self.aspect))
        require(
            self.dim > 0 and self.num_layers > 0,
            "give the model a size: model.depth (the size dial) or both model.dim and model.num_layers",
        )
        derive(self, "num_heads", dial_heads(self.dim, self.head_width))
        derive(self, "num_kv_heads", self.num_heads)
        require(self.mlp in ("swiglu", "relu2"), f"model.mlp={self.mlp!r}: choose swiglu or relu2")
        require(self.logit_softcap >= 0, "model.logit_softcap must be >= 0 (0: no cap)")
        derive(self, "hidden_dim", mlp_hidden_dim(self.dim, self.mlp))
        if self.moe.num_experts:
            derive(self.moe, "expert_hidden_dim", expert_hidden_dim(self.hidden_dim, self.moe.top_k))
        require(self.num_heads > 0 and self.num_kv_heads > 0, "model.num_heads and model.num_kv_heads must be positive")
        require(
            self.dim % self.num_heads == 0,
            f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}",
        )
        require(
            (self.dim // self.num_heads) % 2 == 0, "model head_dim (dim / num_heads) must be even for rotary positions"
        )
        require(
            self.num_heads % self.num_kv_heads == 0,
            f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads}",
        )
        for name in ("vocab_size", "dim", "num_layers", "max_seq_len", "hidden_dim"):
            require(getattr(self, name) > 0, f"model.{name}={getattr(self, name)} must be positive")
        for name in ("num_decoder_layers", "mup_base_dim", "init_std"):
            require(getattr(self, name) >= 0, f"model.{name}={getattr(self, name)} must be >= 0")
        for name in ("norm_eps", "rope_theta"):  # NaN is refused too
            require(getattr(self, name) > 0, f"model.{name}={getattr(self, name)} must be positive")
        require(not self.moe.num_experts or self.moe.expert_hidden_dim > 0, "model.moe.expert_hidden_dim must be > 0")
        require(
            not (self.zero_init_head and self.tie_embeddings),
            "model.zero_init_head needs model.tie_embeddings false (a tied head is the embedding)",
        )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    def is_moe_layer(self, i: int) -> bool:
        return self.moe.num_experts > 0 and i % self.moe.every == self.moe.every - 1


@dataclass
class SampleConfig:
    max_new_tokens: int = 200
    """Tokens to generate per prompt."""
    temperature: float = 0.8
    """Softmax temperature; 0 means greedy."""
    top_k: int = 50
    """Keep the k most likely tokens (0 disables)."""
    top_p: float = 0.95
    """Keep the smallest set of tokens whose probability reaches p (1.0 disables)."""
    seed: int = 0
    """Sampling seed: the same seed gives the same text."""
    prompts: list[str] = field(
        default_factory=lambda: [
            "Fellow-Citizens of the Senate and House of Representatives:",
            "The state of the Union is",
            "We must",
        ],
        metadata={"sep": "|"},
    )
    """Prompts for `kiln run`'s samples (on the command line separated by '|': they may hold commas)."""

    def __post_init__(self) -> None:
        require(
            self.temperature == 0 or 1e-3 <= self.temperature < math.inf,
            f"sample.temperature={self.temperature} must be 0 (greedy) or a finite value >= 0.001 (smaller "
            "overflows the scaled logits)",
        )
        require(0 < self.top_p <= 1, f"sample.top_p={self.top_p} must be in (0, 1]")
        require(self.top_k >= 0, f"sample.top_k={self.top_k} must be >= 0")
        require(self.max_new_tokens > 0, f"sample.max_new_tokens={self.max_new_tokens} must be positive")
