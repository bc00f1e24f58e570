"""The transfer demonstration: its sets are deterministic and hold out whole addresses; its hard
negatives are wrong; the whole demonstration runs end to end on a tiny checkpoint."""

import json

import pytest

from kiln.cli import main
from kiln.finetune.demo_sets import (
    QUESTIONS,
    addresses,
    hard_negative,
    heldout_tasks,
    question_years,
    write_sets,
)


def test_sets_are_deterministic_and_hold_out_whole_addresses(tmp_path):
    a, b = write_sets(tmp_path / "a"), write_sets(tmp_path / "b")
    assert all(a[k].read_bytes() == b[k].read_bytes() for k in a)
    years = question_years(addresses())
    held = {q.format(year=x.year) for x in years if x.held_out for q in QUESTIONS.values()}
    assert 1961 not in {x.year for x in years}  # two presidents gave 1961's addresses
    train_prompts = {json.loads(line)["prompt"] for line in a["sft"].open()}
    held_prompts = {json.loads(line)["prompt"] for line in a["sft_val"].open()}
    assert held_prompts == held and not train_prompts & held
    passages_train = {json.loads(line)["text"] for line in a["classify"].open()}
    passages_held = {json.loads(line)["text"] for line in a["classify_val"].open()}
    assert passages_train and passages_held and not passages_train & passages_held
    for line in a["dpo"].open():
        pair = json.loads(line)
        assert pair["chosen"] != pair["rejected"]
    years = addresses()
    assert hard_negative(years, 0, "president") == "John Adams"  # Washington's nearest other president


def test_heldout_tasks_are_multiple_choice_over_every_answer():
    who, party = heldout_tasks()
    assert len(who.items) == len(party.items) == sum(x.held_out for x in question_years(addresses()))
    assert len(who.items[0].continuations) == len({x.president for x in addresses()})
    assert who.items[0].contexts[0].endswith("\nAssistant:") and who.items[0].continuations[0].endswith("<|eos|>")


@pytest.mark.slow  # ~40 s: every stage of it, in CI's slow pass
def test_the_demonstration_runs_end_to_end(pretrained, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["transfer-demo", "--checkpoint", str(pretrained), "--run-dir", str(out), "--steps-scale", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"base", "sft", "sft-random", "lora", "sft+dpo", "classify", "classify-random"}
    assert results["runs"]["lora"]["trainable_params"] < results["runs"]["sft"]["trainable_params"]
    assert 0 <= results["runs"]["sft+dpo"]["heldout_president"] <= 1
    report = (out / "report.md").read_text()
    assert "| sft-random | random |" in report and "| classify |" in report
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # each run trained beside, then moved in
    # run again: every finished run is kept, nothing retrains
    capsys.readouterr()
    assert main(["transfer-demo", "--checkpoint", str(pretrained), "--run-dir", str(out), "--steps-scale", "0"]) == 0
    assert "== sft" not in capsys.readouterr().out


def test_the_demonstration_never_deletes_or_overwrites_what_it_did_not_make(tmp_path):
    from kiln.errors import KilnError
    from kiln.finetune.demo import SPEC, _ours, _replace, run_demo
    from kiln.rundir import RunDir

    out = tmp_path / "out"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "notes.txt").write_text("mine")
    with pytest.raises(KilnError, match="was not made by kiln transfer-demo"):
        _ours(RunDir(out / "sft"))
    assert (out / "sft" / "notes.txt").read_text() == "mine"
    # a finished run of another plan stays in place until its replacement has finished beside it
    (out / "lora").mkdir()
    (out / "lora" / SPEC).write_text('{"steps": 4}')
    (out / ".staged-lora").mkdir()
    (out / ".staged-lora" / SPEC).write_text('{"steps": 8}')
    assert _ours(RunDir(out / "lora")) and not _ours(RunDir(out / "classify"))
    (out / ".dropped-lora" / "checkpoints").mkdir(parents=True)  # a kill inside the last one's deletion
    (out / ".dropped-lora" / "checkpoints" / "model.safetensors").write_bytes(b"x")  # (its SPEC already gone)
    _replace(RunDir(out / "lora"), RunDir(out / ".staged-lora"))
    assert (out / "lora" / SPEC).read_text() == '{"steps": 8}'
    assert sorted(p.name for p in out.iterdir()) == ["lora", "sft"]
    (out / "report.md").write_text("mine")  # a name the demonstration writes, beside a folder it did not make
    (out / "thesis").mkdir()
    with pytest.raises(KilnError, match="did not write"):
        run_demo(out, tmp_path / "no_checkpoint")
    assert (out / "report.md").read_text() == "mine"


def test_the_demonstration_refuses_a_folder_it_did_not_mark_before_writing_anything(tmp_path, pretrained):
    from kiln.errors import KilnError
    from kiln.finetune.demo import MARK, SPEC, check_run_dir, run_demo

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    mine = tmp_path / "mine"  # only names the demonstration uses, but the user's files
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "sft.jsonl").write_text("my instructions")
    (mine / "results.json").write_text("my results")
    before = files(mine)
    with pytest.raises(KilnError, match=f"no {MARK}"):
        run_demo(mine, pretrained)
    assert files(mine) == before
    (mine / "sft").mkdir()  # a demonstration's folder from before the mark: its runs hold their SPEC
    (mine / "sft" / SPEC).write_text("{}")
    check_run_dir(mine, pretraining=False)
    out = tmp_path / "demo"  # the demonstration's own folder, with a run in it the demonstration did not make
    (out / "sft").mkdir(parents=True)
    (out / MARK).write_text("{}")
    (out / "sft" / "notes.txt").write_text("mine")
    (out / "pretrain" / "shards").mkdir(parents=True)
    (out / "pretrain" / "shards" / "mine.bin").write_bytes(b"mine")
    (out / "pretrain" / "config.json").write_text('{"mine": true}')  # not a kiln config
    before = files(out)
    with pytest.raises(KilnError, match="was not made by kiln transfer-demo"):
        run_demo(out, pretrained)
    (out / "sft" / "notes.txt").unlink()
    (out / "sft").rmdir()
    with pytest.raises(KilnError, match="not a kiln run directory"):
        run_demo(out)  # it would pretrain into pretrain/
    assert files(out) == {k: v for k, v in before.items() if k != "sft/notes.txt"}
