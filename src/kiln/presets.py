"""The named presets: each a plain function returning a `RunConfig` (runconfig.py).

One size dial, `model.depth`, derives width, heads and MLP width (models/config.py) and the learning
rate for the width (derived.lr_for_width), in the spirit of nanochat. The `cpu` presets are
planned to a wall-clock budget: `kiln run` measures this machine and picks the precision, the depth
on the dial and the number of steps to fit it.

`cpu` and `gpt2_small` train kiln's recipe (`recipe_model`, `recipe_train`; chosen on a development
slice and reported on a held-out one, docs/benchmarks.md): Muon for the blocks' matrices, QK-norm,
untied embeddings, learned norm gains, heads of 128 (gpt2_small: GPT-2's 64) and nanochat's schedule,
with a compiled step. It is the decoder Qwen3 computes, so
`kiln export --to hf|gguf` takes the default run's model as it is. The family presets keep the AdamW
recipe with Llama's blocks they were measured with.
"""

from __future__ import annotations

from collections.abc import Callable

from kiln.config import replace
from kiln.corpus import CorpusConfig
from kiln.derived import finetune_lr
from kiln.errors import KilnError
from kiln.evaluate.config import EvalConfig
from kiln.finetune.config import FinetuneConfig
from kiln.images.config import ImageConfig
from kiln.models.config import ModelConfig, MoEConfig, SampleConfig, SSMConfig, VisionConfig
from kiln.runconfig import RunConfig
from kiln.tokenizer import TokenizerConfig
from kiln.train.config import AdamWConfig, TrainConfig


def recipe_model(**model: object) -> ModelConfig:
    """kiln's recipe's architecture on top of `model`'s fields: QK-norm (with learned gains, as every
    norm), untied embeddings (the input one at its own rate, adamw.embed_lr), heads of 128 channels;
    Llama's SwiGLU blocks otherwise."""
    return ModelConfig(**{"qk_norm": True, "tie_embeddings": False, "head_width": 128, **model})  # type: ignore[arg-type]


def recipe_train(**train: object) -> TrainConfig:
    """kiln's recipe's schedule on top of `train`'s fields: Muon for the blocks' matrices (the muon
    section's defaults: lr 0.02, momentum 0.95), nanochat's schedule (flat, then to 0 over the last
    30 %) after a warmup of 2 steps (the time-budget planner times a step there)."""
    fields = {"optimizer": "muon", "warmup_steps": 2, "decay_fraction": 0.3, "min_lr_ratio": 0.0, **train}
    return TrainConfig(**fields)  # type: ignore[arg-type]


RECIPE_ADAMW = AdamWConfig(beta1=0.8, weight_decay=0.0, embed_lr=0.1)
"""kiln's recipe's AdamW, for the head and norms at the width's rate and the input embedding at 0.1."""


def debug() -> RunConfig:
    """Seconds on a CPU: a tiny model on 24 documents; for tests and smoke runs."""
    return RunConfig(
        preset="debug",
        data=CorpusConfig(max_documents=24, val_fraction=0.1),
        tokenizer=TokenizerConfig(vocab_size=512, num_sentinels=8),
        model=ModelConfig(vocab_size=512, dim=64, num_layers=2, num_heads=4, num_kv_heads=2, max_seq_len=64),
        train=TrainConfig(
            seq_len=64,
            micro_batch_size=8,
            max_steps=30,
            lr=3e-3,
            warmup_steps=5,
            eval_every=10,
            eval_windows=16,
            checkpoint_every=10,
        ),
        sample=SampleConfig(max_new_tokens=24),
    )


CPU_BUDGET_S = 540.0
"""`kiln run`'s budget for the cpu presets: 9 minutes, a minute inside the 10 the README promises,
for the planner's error (a few %) and the run-to-run noise of a shared 2-core VM."""


def cpu() -> RunConfig:
    """`kiln run`'s default: the best validation bits-per-byte this machine reaches in 9 minutes, with
    kiln's recipe (a model `kiln export` writes as Qwen3).

    The trainer measures the machine (bf16 or fp32, matmul rate, the step time of candidate depths),
    picks the depth on the size dial for the tokens the budget affords (train.tokens_per_param) and
    the steps that fit.
    """
    seq_len = 256
    return RunConfig(
        preset="cpu",
        tokenizer=TokenizerConfig(vocab_size=8192),
        model=recipe_model(depth=4, vocab_size=8192, max_seq_len=seq_len),
        train=recipe_train(
            seq_len=seq_len,
            micro_batch_size=32,
            max_steps=5000,
            eval_every=50,
            eval_windows=64,
            checkpoint_every=100,
            size_from_budget=True,
            compile=True,  # ~30 s once, then steps 1.4-1.5x faster (docs/benchmarks.md); eager without a C++ compiler
        ),
        eval=EvalConfig(every=100),  # kiln's own tasks during training too
        adamw=RECIPE_ADAMW,
        budget_s=CPU_BUDGET_S,
    )


def gpt2_small() -> RunConfig:
    """GPT-2 small's shape (124M-class, 12 x 768, 12 heads of 64, 1024 context) for one GPU, as measured
    on an H200 (docs/benchmarks.md); bring a larger corpus."""
    seq_len = 1024
    return RunConfig(
        preset="gpt2_small",
        tokenizer=TokenizerConfig(vocab_size=32768),
        model=recipe_model(depth=12, vocab_size=32768, max_seq_len=seq_len, head_width=64),
        train=recipe_train(
            seq_len=seq_len,
            micro_batch_size=32,
            grad_accum_steps=4,
            max_steps=5000,
            warmup_steps=20,
            eval_every=250,
            checkpoint_every=1000,
            compile=True,
        ),
        adamw=RECIPE_ADAMW,
    )


PLAIN_MODEL = {"qk_norm": False, "tie_embeddings": True, "norm_params": True, "head_width": 64}
"""Llama's blocks: what the family presets were measured with."""
ADAMW_TRAIN = {"optimizer": "adamw", "warmup_steps": 30, "min_lr_ratio": 0.1}
"""kiln's AdamW recipe (warmup 30, WSD to 10 %; the adamw section's defaults: weight decay 0.1, beta1
0.9): what the family presets and fine-tuning use."""


def _family(name: str, cfg: RunConfig, lr: float | None = None, **model: object) -> RunConfig:
    """A family at the cpu size, with Llama's blocks and AdamW as it was measured, eager (kiln's recipe
    and compiled step are measured on the decoder only so far)."""
    train = replace(cfg.train, **ADAMW_TRAIN, compile=False, **({"lr": lr} if lr is not None else {}))
    model_cfg = replace(cfg.model, **PLAIN_MODEL, **model)
    return replace(cfg, preset=name, model=model_cfg, train=train, adamw=AdamWConfig())


def cpu_moe() -> RunConfig:
    """The cpu decoder with 8 experts (top 2, each half the dense width, so active compute matches) on
    every other block."""
    return _family("cpu_moe", cpu(), moe=MoEConfig(num_experts=8, top_k=2, every=2))


def cpu_hybrid() -> RunConfig:
    """Jamba-style at the cpu size: 4 layers, one attending (1:3; Jamba's 1:7 needs 8 layers), three
    SSM layers, MoE (4 experts, top 2, half width) on every other block."""
    return _family(
        "cpu_hybrid",
        cpu(),
        family="hybrid",
        ssm=SSMConfig(attn_every=4),
        moe=MoEConfig(num_experts=4, top_k=2, every=2),
    )


def cpu_encoder() -> RunConfig:
    """BERT-style masked LM at the cpu size."""
    return _family("cpu_encoder", cpu(), lr=2e-3, family="encoder")


def cpu_t5() -> RunConfig:
    """T5-style span corruption at the cpu size: 4 encoder + 4 decoder blocks."""
    return _family("cpu_t5", cpu(), lr=2e-3, family="encdec")


def cpu_vlm() -> RunConfig:
    """Image+text at the cpu size: the built-in shapes set (32 x 32 pixels, 16 patches of 8 x 8,
    projected straight into the decoder) with a quarter of every batch text windows of the built-in
    corpus; curated, sharded, trained, evaluated (caption accuracy per attribute, retrieval) and
    sampled inside the cpu budget."""
    seq_len = 64
    return RunConfig(
        preset="cpu_vlm",
        tokenizer=TokenizerConfig(vocab_size=4096, image_tokens=True),
        model=ModelConfig(
            family="vlm",
            dim=128,
            num_layers=4,
            vocab_size=4096,
            max_seq_len=seq_len,
            vision=VisionConfig(image_size=32),
        ),
        images=ImageConfig(source="shapes", dedup_near=False),  # see ImageConfig.dedup_near
        train=TrainConfig(
            seq_len=seq_len,
            micro_batch_size=64,
            max_steps=5000,
            warmup_steps=30,
            eval_every=100,
            eval_windows=256,
            checkpoint_every=200,
        ),
        eval=EvalConfig(tasks=[], bias=False),
        sample=SampleConfig(prompts=["The image shows", "We the people"], max_new_tokens=24),
        budget_s=CPU_BUDGET_S,
    )


def finetune(base: RunConfig, data: str, method: str, init_from: str, lora_rank: int = 0) -> RunConfig:
    """`kiln finetune`'s preset, derived from the checkpoint's config `base` (its model, objective and
    tokenizer unchanged): the data file and method, the checkpoint's weights as the start (`init_from`;
    "" for a random start), no time budget or budget-sized depth, no task evaluation (kiln's own tasks
    are made from pretraining text), 200 steps with a warmup of 20, AdamW as it was measured for
    fine-tuning (ADAMW_TRAIN) at derived.finetune_lr, and the precision measured again on this machine
    (the checkpoint's is the one its own machine chose: bf16 from an AMX CPU runs ~100x slower than
    fp32 on an AVX2-only one)."""
    train = replace(
        base.train,
        **ADAMW_TRAIN | {"warmup_steps": 20},
        precision="auto",
        init_from=init_from,
        max_steps=200,
        lr=finetune_lr(base.train.lr, full_from_pretrained=bool(init_from) and not lora_rank),
        time_budget_s=0.0,
        size_from_budget=False,
        eval_every=20,
        checkpoint_every=100,
    )
    ft = FinetuneConfig(data=data, objective=method, lora_rank=lora_rank)  # none of an earlier one's settings
    evaluation = replace(base.eval, every=0)  # kiln's own tasks are made from pretraining text
    return replace(
        base, preset="finetune", budget_s=0.0, finetune=ft, train=train, adamw=AdamWConfig(), eval=evaluation
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "debug": debug,
    "cpu": cpu,
    "gpt2_small": gpt2_small,
    "cpu_moe": cpu_moe,
    "cpu_hybrid": cpu_hybrid,
    "cpu_encoder": cpu_encoder,
    "cpu_t5": cpu_t5,
    "cpu_vlm": cpu_vlm,
}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise KilnError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
