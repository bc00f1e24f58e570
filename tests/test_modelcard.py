"""The model card says what this run did: its data, its starting weights."""

import json

from kiln.config import apply_overrides
from kiln.modelcard import build_model_card, render
from kiln.presets import get_preset
from kiln.rundir import RunDir


def test_a_run_on_the_raw_corpus_does_not_borrow_an_earlier_curated_sets_card(tmp_path):
    run = RunDir(tmp_path)
    run.curated.mkdir(parents=True)
    (run.curated / "data_card.json").write_text(json.dumps({"sources": [{"name": "sotu"}], "knowledge_cutoff": 1813}))
    cfg = apply_overrides(get_preset("debug"), {"curate.enabled": "false", "data.corpus": "/data/mine"})
    data = build_model_card(run, cfg, {}, {})["training_data"]
    assert data["sources"] == [{"name": "/data/mine", "licence": None}] and data["knowledge_cutoff"] is None
    curated = build_model_card(run, get_preset("debug"), {}, {})["training_data"]
    assert curated["sources"][0]["name"] == "sotu" and curated["knowledge_cutoff"] == 1813


def test_a_run_from_a_base_checkpoint_names_it(tmp_path):
    cfg = apply_overrides(get_preset("debug"), {"train.init_from": "/runs/base/checkpoints/step_900"})
    card = build_model_card(RunDir(tmp_path), cfg, {}, {})
    assert "from scratch" not in card["intended_use"] and "/runs/base/checkpoints/step_900" in card["intended_use"]
    assert card["training_data"]["initialised_from"] == "/runs/base/checkpoints/step_900"
    assert "initialised from /runs/base/checkpoints/step_900" in render(card)
    assert "pretrained from scratch" in build_model_card(RunDir(tmp_path), get_preset("debug"), {}, {})["intended_use"]


def test_a_resumed_runs_time_and_energy_say_they_cover_its_last_session(tmp_path):
    cfg = get_preset("debug")
    card = build_model_card(RunDir(tmp_path), cfg, {"steps": 60, "resumed_from_step": 30}, {})
    assert card["compute"]["covers"].startswith("this session only (steps 31-60, resumed at step 30)")
    assert "Covers this session only" in render(card)
    idle = build_model_card(RunDir(tmp_path), cfg, {"steps": 30, "resumed_from_step": 30}, {})
    assert "no training step" in idle["compute"]["covers"]
    assert build_model_card(RunDir(tmp_path), cfg, {"steps": 30, "resumed_from_step": 0}, {})["compute"]["covers"] == (
        "the whole run"
    )
