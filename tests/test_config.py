import pytest

from kiln.config import (
    apply_overrides,
    field_docs,
    format_config,
    load_config,
    save_config,
)
from kiln.errors import KilnError
from kiln.presets import PRESETS, RunConfig, get_preset
from kiln.train.trainer import TrainConfig


def test_attribute_docstrings_become_help():
    docs = field_docs(TrainConfig)
    assert docs["max_steps"].startswith("Optimizer steps")
    assert set(docs) >= {"lr", "seq_len", "precision", "schedule"}


def test_overrides_parse_by_type_and_validate():
    cfg = apply_overrides(get_preset("debug"), {"train.max_steps": "7", "train.lr": "1e-3",
                                                "model.tie_embeddings": "false", "train.schedule": "cosine"})
    assert cfg.train.max_steps == 7 and cfg.train.lr == 1e-3
    assert cfg.model.tie_embeddings is False and cfg.train.schedule == "cosine"


@pytest.mark.parametrize("overrides, fragment", [
    ({"train.max_steps": "ten"}, "not a valid int"),
    ({"train.max_steps": "0"}, "must be positive"),
    ({"train.schedule": "linear"}, "not one of"),
    ({"train.nope": "1"}, "unknown config key 'train.nope'"),
    ({"model.dim": "65"}, "divisible"),
    ({"train.seq_len": "4096"}, "exceeds model.max_seq_len"),
])
def test_bad_values_name_the_problem(overrides, fragment):
    with pytest.raises(KilnError, match=fragment):
        apply_overrides(get_preset("debug"), overrides)


def test_save_load_round_trip(tmp_path):
    for name in PRESETS:
        cfg = get_preset(name)
        save_config(cfg, tmp_path / "config.json")
        assert load_config(RunConfig, tmp_path / "config.json") == cfg
        assert "train.max_steps" in format_config(cfg)
