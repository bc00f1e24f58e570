import json

import pytest

from kiln.config import (
    apply_overrides,
    derived_fields,
    field_docs,
    format_config,
    load_config,
    save_config,
    to_dict,
)
from kiln.errors import KilnError
from kiln.presets import PRESETS, get_preset
from kiln.runconfig import RunConfig
from kiln.train.config import TrainConfig


def test_attribute_docstrings_become_help():
    docs = field_docs(TrainConfig)
    assert docs["max_steps"].startswith("Optimizer steps")
    assert set(docs) >= {"lr", "seq_len", "precision", "schedule"}


def test_overrides_parse_by_type_and_validate():
    cfg = apply_overrides(
        get_preset("debug"),
        {"train.max_steps": "7", "train.lr": "1e-3", "model.tie_embeddings": "false", "train.schedule": "cosine"},
    )
    assert cfg.train.max_steps == 7 and cfg.train.lr == 1e-3
    assert cfg.model.tie_embeddings is False and cfg.train.schedule == "cosine"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"train.max_steps": "ten"}, "not a valid int"),
        ({"train.max_steps": "0"}, "must be positive"),
        ({"train.schedule": "linear"}, "not one of"),
        ({"train.nope": "1"}, "unknown config key 'train.nope'"),
        ({"model.dim": "65"}, "divisible"),
        ({"train.seq_len": "4096"}, "exceeds model.max_seq_len"),
        ({"objective.masked.random_token_frac": "-0.6"}, "must be in \\[0, 1\\]"),
        ({"train.time_budget_s": "inf"}, "time_budget_s must be finite"),
        ({"budget_s": "inf"}, "must be finite"),
        ({"sample.temperature": "1e-39"}, "0 \\(greedy\\) or a finite value"),
        ({"model.rope_theta": "0"}, "rope_theta=0.0 must be positive"),  # NaN logits otherwise
    ],
)
def test_bad_values_name_the_problem(overrides, fragment):
    with pytest.raises(KilnError, match=fragment):
        apply_overrides(get_preset("debug"), overrides)


def test_save_load_round_trip(tmp_path):
    for name in PRESETS:
        cfg = get_preset(name)
        save_config(cfg, tmp_path / "config.json")
        assert load_config(RunConfig, tmp_path / "config.json") == cfg
        assert "train.max_steps" in format_config(cfg)


def test_a_width_override_rederives_heads_mlp_and_learning_rate():
    cfg = get_preset("cpu")
    assert (cfg.model.dim, cfg.model.num_heads, cfg.model.hidden_dim) == (256, 2, 704)  # heads of 128
    wide = apply_overrides(cfg, {"model.dim": "512"})
    assert (wide.model.dim, wide.model.num_heads, wide.model.num_kv_heads, wide.model.hidden_dim) == (512, 4, 4, 1408)
    assert wide.train.lr == pytest.approx(cfg.train.lr / 2)
    assert "model.hidden_dim = 1408  (derived)" in format_config(wide)
    kept = apply_overrides(cfg, {"model.dim": "512", "model.num_heads": "8"})  # explicit values stay
    assert kept.model.num_heads == 8 and kept.model.head_dim == 64
    odd = apply_overrides(cfg, {"model.dim": "320"})  # 128 does not divide 320: 2 heads of 160
    assert (odd.model.num_heads, odd.model.head_dim) == (2, 160)


def test_the_size_dial_is_reachable_from_overrides_and_stays_derived_through_a_save(tmp_path):
    deep = apply_overrides(get_preset("cpu"), {"model.depth": "6"})
    assert (deep.model.num_layers, deep.model.dim, deep.model.num_heads) == (6, 384, 3)
    moe = apply_overrides(get_preset("cpu_moe"), {"model.depth": "6"})
    assert moe.model.moe.expert_hidden_dim == moe.model.hidden_dim // 2
    save_config(deep, tmp_path / "config.json")
    loaded = load_config(RunConfig, tmp_path / "config.json")
    assert loaded == deep
    assert apply_overrides(loaded, {"model.depth": "3"}).model.dim == 192  # not stuck at the saved 384


def test_a_saved_config_reads_back_its_derived_values_as_saved(tmp_path):
    """A checkpoint's config keeps its model's shape when kiln later derives it by another rule."""
    cfg = apply_overrides(get_preset("cpu"), {"model.depth": "3"})
    data = to_dict(cfg)
    assert {"num_heads", "num_kv_heads"} <= set(data["model"]["_derived"])
    data["model"].update(num_heads=1, num_kv_heads=1)  # what an older rule derived for width 192
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = load_config(RunConfig, tmp_path / "config.json")
    assert (loaded.model.num_heads, loaded.model.head_dim) == (1, 192)
    assert "num_heads" in derived_fields(loaded.model)
    assert "model.num_heads = 1  (derived)" in format_config(loaded)
    assert apply_overrides(loaded, {"model.depth": "4"}).model.num_heads == 2  # an override re-derives
    assert apply_overrides(loaded, {"model.depth": "3"}).model.num_heads == 2  # by today's rule


def test_reading_a_config_loads_neither_torch_nor_the_trainer():
    import subprocess
    import sys

    code = (
        "import sys, kiln.runconfig, kiln.config; "
        "print(sorted(m for m in ('torch', 'numpy', 'kiln.train.trainer', 'kiln.curate.pipeline') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_finetuning_measures_the_precision_on_its_own_machine():
    """A checkpoint's config holds the precision its machine chose (bf16 on an AMX CPU); fine-tuning it
    on an AVX2-only CPU in bf16 would run ~100x slower than fp32 there: the preset asks `auto` again."""
    from kiln.config import replace
    from kiln.presets import finetune

    base = get_preset("cpu")
    trained = replace(base, train=replace(base.train, precision="bf16"))
    assert finetune(trained, "chat.jsonl", "sft", "ckpt").train.precision == "auto"


@pytest.mark.parametrize(
    "content, says",
    [
        (b"[1, 2]", "RunConfig must be a JSON object"),
        (b'{"model": 5}', "ModelConfig must be a JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_a_config_file_of_the_wrong_shape_is_one_line(tmp_path, content, says):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(KilnError, match=says):
        load_config(RunConfig, tmp_path / "config.json")


@pytest.mark.parametrize(
    "changes",
    [
        {"model.hidden_dim": "-5"},
        {"model.init_std": "-1"},
        {"model.mup_base_dim": "-64"},
        {"model.norm_eps": "-1"},
        {"model.norm_eps": "nan"},
        {"model.num_decoder_layers": "-1"},
        {"model.moe.num_experts": "4", "model.moe.expert_hidden_dim": "-3"},
    ],
)
def test_a_model_size_the_build_cannot_use_is_refused_in_one_line(changes):
    from kiln.config import apply_overrides

    with pytest.raises(KilnError, match=list(changes)[-1].split(".")[-1]):
        apply_overrides(get_preset("debug"), changes)
