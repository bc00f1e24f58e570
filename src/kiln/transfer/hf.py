"""Hugging Face format: a kiln decoder as a transformers Llama, Qwen3 or Mixtral folder, and back.

kiln's decoder computes the Llama function exactly: pre-norm RMSNorm blocks, rotary positions in the
rotate-half layout, grouped-query attention whose query head h reads key/value head h // (H / K)
(SDPA's `enable_gqa`, transformers' `repeat_kv`), SwiGLU, a final RMSNorm and a (tied) head. So the
export only renames tensors and splits kiln's fused projections:

    embed.weight                  -> model.embed_tokens.weight
    blocks.i.mixer_norm.weight    -> model.layers.i.input_layernorm.weight
    blocks.i.mixer.wqkv.weight    -> model.layers.i.self_attn.{q,k,v}_proj.weight  (rows split H*D, K*D, K*D)
    blocks.i.mixer.wo.weight      -> model.layers.i.self_attn.o_proj.weight
    blocks.i.mlp_norm.weight      -> model.layers.i.post_attention_layernorm.weight
    blocks.i.mlp.w_gate_up.weight -> model.layers.i.mlp.{gate,up}_proj.weight      (rows split in halves)
    blocks.i.mlp.w_down.weight    -> model.layers.i.mlp.down_proj.weight
    norm.weight                   -> model.norm.weight
    head.weight                   -> lm_head.weight (left out when tied: tie_word_embeddings)

and import does the inverse (concatenating the projections back), so export then import is bitwise.

With QK-norm (`model.qk_norm`, kiln's recipe) the model is Qwen3 (`Qwen3ForCausalLM`): the same
decoder with an RMSNorm over each head's queries and keys (eps `rms_norm_eps`) before the rotation,
exactly where kiln's attention puts it:

    blocks.i.mixer.q_norm.weight  -> model.layers.i.self_attn.q_norm.weight  (head_dim,)
    blocks.i.mixer.k_norm.weight  -> model.layers.i.self_attn.k_norm.weight

Parameter-free norms (`model.norm_params false`) are written as weights of ones, which compute the
same function; an import whose norm weights are all exactly one reads them back as parameter-free,
so a kiln export of the recipe comes back bitwise too.

A mixture-of-experts decoder with an MoE MLP in every block (`model.moe.every 1`) is Mixtral
(`MixtralForCausalLM`): its router takes the softmax over all experts in fp32, keeps the top k
and renormalises them to sum to one, exactly kiln's `MoE.route`. Its experts are written in
Mixtral's per-expert layout, which every transformers version reads:

    blocks.i.mlp.router.weight    -> model.layers.i.block_sparse_moe.gate.weight
    blocks.i.mlp.w_gate_up[e]     -> model.layers.i.block_sparse_moe.experts.e.{w1 (gate), w3 (up)}.weight (transposed)
    blocks.i.mlp.w_down[e]        -> model.layers.i.block_sparse_moe.experts.e.w2.weight (transposed)

With MoE on every other block (`every 2`, the cpu_moe preset) no transformers class computes the
same function: Mixtral has experts in every block, and Qwen2-MoE (which allows dense blocks via
`mlp_only_layers`) adds a gated shared expert that kiln's MoE lacks; the export refuses it. So it
refuses what no Llama, Qwen3 or Mixtral config holds: a logit soft-cap (only Gemma-family classes
have one), value embeddings, the norm after the embedding, the residual mixing scalars, ReLU
squared, muP's logit scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kiln.errors import KilnError
from kiln.models.config import ModelConfig, MoEConfig
from kiln.models.registry import family

UNEXPRESSIBLE = (
    ("logit_softcap", 0.0, "a logit soft-cap (only Gemma-family classes have one)"),
    ("value_embeds", False, "value embeddings"),
    ("embed_norm", False, "a norm after the embedding"),
    ("residual_scalars", False, "residual / embedding mixing scalars"),
    ("mlp", "swiglu", "a ReLU-squared MLP"),
)
"""(model option, the value every exported class assumes, what it is): options no class computes."""


def architecture(cfg: ModelConfig) -> str:
    """The transformers model_type a kiln model config exports as (llama, qwen3 or mixtral), or one
    KilnError saying why none computes it."""
    if not family(cfg.family).exports or (cfg.moe.num_experts and cfg.moe.every != 1):
        raise KilnError(
            f"Hugging Face export covers the decoder (Llama, Qwen3) and the all-MoE decoder (Mixtral); this model "
            f"is family={cfg.family}"
            + (f" with experts on every {cfg.moe.every}th block" if cfg.moe.num_experts else "")
            + ", which no transformers class computes (docs/finetuning.md says what differs)"
        )
    changed = [what for name, plain, what in UNEXPRESSIBLE if getattr(cfg, name) != plain]
    if changed:
        raise KilnError(
            f"this model has {', '.join(changed)}, which no Llama, Qwen3 or Mixtral config expresses; export "
            "a model trained without (kiln's default recipe is exportable)"
        )
    if cfg.mup_base_dim:
        raise KilnError(
            "this model was trained with muP (model.mup_base_dim): its logits are scaled by "
            f"{1 / cfg.width_mult:g}, which no Llama config field holds; export a standard-parametrised model"
        )
    if cfg.moe.num_experts and cfg.qk_norm:
        raise KilnError("experts with QK-norm (Qwen3-MoE) are not exported yet; export a dense QK-norm model")
    return "mixtral" if cfg.moe.num_experts else ("qwen3" if cfg.qk_norm else "llama")


ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "mixtral": "MixtralForCausalLM"}


def hf_config(cfg: ModelConfig, bos: int, eos: int, pad: int) -> dict[str, Any]:
    """transformers' config.json fields for a kiln decoder config (Llama, Qwen3 or Mixtral)."""
    kind = architecture(cfg)
    extra: dict[str, Any] = {}
    if kind == "mixtral":
        extra = {
            "num_local_experts": cfg.moe.num_experts,
            "num_experts_per_tok": cfg.moe.top_k,
            "intermediate_size": cfg.moe.expert_hidden_dim,
            "router_aux_loss_coef": cfg.moe.aux_loss_coef,
            "output_router_logits": False,
            "sliding_window": None,
        }
    elif kind == "qwen3":  # full attention in every layer: no sliding window
        extra = {
            "use_sliding_window": False,
            "sliding_window": None,
            "layer_types": ["full_attention"] * cfg.num_layers,
        }
    else:
        extra = {"mlp_bias": False}
    return {
        "architectures": [ARCHITECTURES[kind]],
        "model_type": kind,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    } | extra


def _norm(weights: dict[str, torch.Tensor], name: str, size: int) -> torch.Tensor:
    """A norm's gain, or ones where kiln's norm has none (model.norm_params false): the same function."""
    return weights[name] if name in weights else torch.ones(size)


def to_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """kiln decoder weights -> transformers names (Llama, Qwen3, Mixtral), fused projections split,
    parameter-free norms as ones (contiguous copies)."""
    H, K, D, C = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.dim
    out = {"model.embed_tokens.weight": weights["embed.weight"], "model.norm.weight": _norm(weights, "norm.weight", C)}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = weights["head.weight"]
    for i in range(cfg.num_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = weights[src + "mixer.wqkv.weight"].split([H * D, K * D, K * D], dim=0)
        if cfg.moe.num_experts:
            out |= _experts_out(weights, src, dst)
        else:
            gate, up = weights[src + "mlp.w_gate_up.weight"].chunk(2, dim=0)
            out |= {
                dst + "mlp.gate_proj.weight": gate,
                dst + "mlp.up_proj.weight": up,
                dst + "mlp.down_proj.weight": weights[src + "mlp.w_down.weight"],
            }
        if cfg.qk_norm:
            out |= {
                dst + "self_attn.q_norm.weight": _norm(weights, src + "mixer.q_norm.weight", D),
                dst + "self_attn.k_norm.weight": _norm(weights, src + "mixer.k_norm.weight", D),
            }
        out |= {
            dst + "input_layernorm.weight": _norm(weights, src + "mixer_norm.weight", C),
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": weights[src + "mixer.wo.weight"],
            dst + "post_attention_layernorm.weight": _norm(weights, src + "mlp_norm.weight", C),
        }
    return {name: t.contiguous().clone() for name, t in out.items()}


def _experts_out(weights: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    moe = dst + "block_sparse_moe."
    gate_up, down = weights[src + "mlp.w_gate_up"], weights[src + "mlp.w_down"]  # (E, C, 2H), (E, H, C)
    out = {moe + "gate.weight": weights[src + "mlp.router.weight"]}
    for e in range(gate_up.shape[0]):
        gate, up = gate_up[e].chunk(2, dim=-1)
        out |= {
            moe + f"experts.{e}.w1.weight": gate.T,
            moe + f"experts.{e}.w3.weight": up.T,
            moe + f"experts.{e}.w2.weight": down[e].T,
        }
    return out


def _experts_in(weights: dict[str, torch.Tensor], src: str, dst: str, num_experts: int) -> dict[str, torch.Tensor]:
    moe = src + "block_sparse_moe."
    gate_up = [
        torch.cat([weights[moe + f"experts.{e}.w1.weight"].T, weights[moe + f"experts.{e}.w3.weight"].T], dim=-1)
        for e in range(num_experts)
    ]
    down = [weights[moe + f"experts.{e}.w2.weight"].T for e in range(num_experts)]
    return {
        dst + "mlp.router.weight": weights[moe + "gate.weight"],
        dst + "mlp.w_gate_up": torch.stack(gate_up).contiguous(),
        dst + "mlp.w_down": torch.stack(down).contiguous(),
    }


def from_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers Llama / Qwen3 / Mixtral weights -> kiln decoder names, projections fused back."""
    try:
        out = {"embed.weight": weights["model.embed_tokens.weight"], "norm.weight": weights["model.norm.weight"]}
        out["head.weight"] = weights["lm_head.weight"] if not cfg.tie_embeddings else out["embed.weight"]
        for i in range(cfg.num_layers):
            src, dst = f"model.layers.{i}.", f"blocks.{i}."
            qkv = [weights[src + f"self_attn.{p}_proj.weight"] for p in "qkv"]
            if cfg.moe.num_experts:
                out |= _experts_in(weights, src, dst, cfg.moe.num_experts)
            else:
                gate_up = [weights[src + f"mlp.{p}_proj.weight"] for p in ("gate", "up")]
                out |= {
                    dst + "mlp.w_gate_up.weight": torch.cat(gate_up, dim=0),
                    dst + "mlp.w_down.weight": weights[src + "mlp.down_proj.weight"],
                }
            out |= {
                dst + "mixer_norm.weight": weights[src + "input_layernorm.weight"],
                dst + "mixer.wqkv.weight": torch.cat(qkv, dim=0),
                dst + "mixer.wo.weight": weights[src + "self_attn.o_proj.weight"],
                dst + "mlp_norm.weight": weights[src + "post_attention_layernorm.weight"],
            }
            if cfg.qk_norm:
                out |= {
                    dst + "mixer.q_norm.weight": weights[src + "self_attn.q_norm.weight"],
                    dst + "mixer.k_norm.weight": weights[src + "self_attn.k_norm.weight"],
                }
    except KeyError as e:
        raise KilnError(
            f"the checkpoint lacks {e.args[0]}: not a Llama, Qwen3 or Mixtral model kiln can read"
        ) from None
    return out


def unit_norms_dropped(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], bool]:
    """(weights, norm_params): when every norm gain is exactly one (a kiln export of parameter-free
    norms), the gains are dropped and the model reads back as parameter-free; otherwise unchanged."""
    norms = [n for n in weights if n.endswith(("norm.weight", "_norm.weight")) and weights[n].dim() == 1]
    if norms and all(bool((weights[n] == 1).all()) for n in norms):
        return {n: w for n, w in weights.items() if n not in norms}, False
    return weights, True


def model_config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """A kiln ModelConfig for a transformers Llama, Qwen3 or Mixtral config.json; features kiln's
    decoder lacks are refused. Norms read as learned (model.norm_params true): `unit_norms_dropped`
    turns an export's weights of ones back into parameter-free norms."""
    arch = hf.get("architectures") or [hf.get("model_type")]
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise KilnError(f"kiln imports Llama-, Qwen3- and Mixtral-architecture models; this one is {arch}")
    windowed = hf.get("sliding_window") if kind == "mixtral" else hf.get("use_sliding_window")
    if windowed:
        raise KilnError(f"kiln's attention has no sliding window (this {kind} model uses one: {windowed})")
    unsupported = {
        "attention_bias": bool(hf.get("attention_bias")),
        "mlp_bias": bool(hf.get("mlp_bias")),
        "hidden_act": hf.get("hidden_act", "silu") != "silu",
        "rope_scaling": bool(hf.get("rope_scaling"))
        or (hf.get("rope_parameters") or {}).get("rope_type", "default") != "default",
    }
    if any(unsupported.values()):
        raise KilnError(
            "kiln's decoder does not implement "
            + ", ".join(f"{k}={hf.get(k, hf.get('rope_parameters'))}" for k, bad in unsupported.items() if bad)
        )
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        raise KilnError(f"head_dim {head_dim} x {heads} heads != hidden_size {hf['hidden_size']}: not supported")
    theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    moe = (
        MoEConfig(
            num_experts=hf["num_local_experts"],
            top_k=hf["num_experts_per_tok"],
            every=1,
            expert_hidden_dim=hf["intermediate_size"],
            aux_loss_coef=hf.get("router_aux_loss_coef", 0.01),
        )
        if hf.get("model_type") == "mixtral"
        else MoEConfig()
    )
    return ModelConfig(
        family="decoder",
        moe=moe,
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        hidden_dim=0 if moe.num_experts else hf["intermediate_size"],  # every block MoE: the dense width is unused
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(theta),
        norm_eps=hf.get("rms_norm_eps", 1e-5),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=kind == "qwen3",
    )


def tokenizer_files(tokenizer_json: Path, out: Path, bos: str, eos: str, pad: str, context: int) -> None:
    """tokenizer.json with a post-processor that starts every sequence with <|bos|> (as kiln's models
    were trained to read text), and the tokenizer_config.json AutoTokenizer needs."""
    tok = json.loads(Path(tokenizer_json).read_text())
    vocab_ids = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [vocab_ids[bos]], "tokens": [bos]}},
    }
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": bos, "eos_token": eos, "pad_token": pad}, indent=2) + "\n"
    )
