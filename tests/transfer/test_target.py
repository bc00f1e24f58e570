"""Where an export lands: never over files kiln did not write, and the last export stays until the
new one is written and checked."""

import json
from pathlib import Path

import pytest

from kiln import stages
from kiln.errors import KilnError
from kiln.transfer import export as export_module
from kiln.transfer.target import HF_FILES, RECORD
from kiln.transfer.verbs import export_checkpoint
from tests.conftest import copy_run, tiny_config

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def checkpoint(tokenized_run, tmp_path_factory, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path_factory.mktemp("export_target"))
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "2"}), run)
    return run.checkpoints / "step_2"


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_folder_or_file_kiln_did_not_write_is_refused_untouched(checkpoint, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("my notes")
    (project / "config.json").write_text("{}")
    with pytest.raises(KilnError, match="did not export"):
        export_checkpoint(checkpoint, "hf", project, verify=False)
    important = tmp_path / "thesis.tex"
    important.write_text("chapter one")
    with pytest.raises(KilnError, match="not a GGUF file"):
        export_checkpoint(checkpoint, "gguf", important, verify=False)
    assert files(project) == {"README.md": b"my notes", "config.json": b"{}"}
    assert important.read_text() == "chapter one"
    pending = project / ".kiln_export.pending.json"  # a list that claims any content: not kiln's to claim
    pending.write_text(json.dumps({"sha256": {"config.json": None, "README.md": None}}))
    with pytest.raises(KilnError, match="as kiln's last export did not write it"):
        export_checkpoint(checkpoint, "hf", project, verify=False)
    pending.unlink()
    assert files(project) == {"README.md": b"my notes", "config.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "thesis.tex"]


def test_a_new_export_replaces_kilns_files_and_keeps_a_persons(checkpoint, tmp_path):
    out = tmp_path / "hf"
    export_checkpoint(checkpoint, "hf", out, verify=False)
    record = json.loads((out / RECORD).read_text())
    assert set(record["files"]) | {RECORD} == {p.name for p in out.iterdir()} and set(record["files"]) <= HF_FILES
    assert record["out"] == str(out.absolute())
    assert set(record["sha256"]) == set(record["files"])
    (out / "notes.txt").write_text("added by a person")
    export_checkpoint(checkpoint, "hf", out, verify=False)
    assert (out / "notes.txt").read_text() == "added by a person"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # nothing staged left beside it


def test_a_file_a_person_changed_or_added_under_an_export_name_stops_the_export(checkpoint, tmp_path):
    out = tmp_path / "hf"
    export_checkpoint(checkpoint, "hf", out, verify=False)
    (out / "config.json").write_text('{"edited": "by hand"}')  # e.g. before pushing to the Hub
    before = files(out)
    with pytest.raises(KilnError, match="config.json as kiln's last export did not write it"):
        export_checkpoint(checkpoint, "hf", out, verify=False)
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # the staged export was cleared
    record = json.loads((out / RECORD).read_text())
    (out / "config.json").unlink()
    record["files"].remove("config.json")  # as if the last export had not written it: now a person's
    (out / RECORD).write_text(json.dumps(record))
    (out / "config.json").write_text("mine")
    with pytest.raises(KilnError, match="config.json as kiln's last export did not write it"):
        export_checkpoint(checkpoint, "hf", out, verify=False)
    assert (out / "config.json").read_text() == "mine"


def test_a_gguf_file_kiln_did_not_write_is_refused_and_its_own_replaced(checkpoint, tmp_path):
    import gguf

    theirs = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(theirs), "llama")
    writer.add_name("Llama 3 8B Instruct")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    before = theirs.read_bytes()
    with pytest.raises(KilnError, match="GGUF file kiln did not export"):
        export_checkpoint(checkpoint, "gguf", theirs, verify=False)
    assert theirs.read_bytes() == before
    ours = tmp_path / "m.gguf"
    export_checkpoint(checkpoint, "gguf", ours, verify=False)
    first = ours.stat().st_ino
    export_checkpoint(checkpoint, "gguf", ours, verify=False)  # its own: replaced
    assert ours.stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf", "m.gguf"]
    current = tmp_path / "current.gguf"  # the user's link to a version: replacing it would lose the link
    current.symlink_to(ours)
    for link in (current, tmp_path / "hf_link"):
        if link.name == "hf_link":
            link.symlink_to(tmp_path / "nowhere")  # a link to nothing: the export would replace the link
        with pytest.raises(KilnError, match="is a link"):
            export_checkpoint(checkpoint, "gguf" if link == current else "hf", link, verify=False)
        assert link.is_symlink()
    assert ours.stat().st_ino != first and not (tmp_path / "nowhere").exists()


def test_a_failed_or_unverified_export_leaves_the_last_one(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    export_checkpoint(checkpoint, "hf", out, verify=False)
    gguf_out = tmp_path / "m.gguf"
    export_checkpoint(checkpoint, "gguf", gguf_out, verify=False)
    before, gguf_before = files(out), gguf_out.read_bytes()
    real = export_module.export_hf

    def interrupted(checkpoint, out, verify=True):
        real(checkpoint, out, verify=False)
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "export_hf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoint, "hf", out, verify=False)

    def wrong(checkpoint, out, verify=True):
        result = real(checkpoint, out, verify=False)
        return {**result, "verification": {"checked": True, "logits_match": False}}

    monkeypatch.setattr(export_module, "export_hf", wrong)
    with pytest.raises(KilnError, match="does not reproduce"):
        export_checkpoint(checkpoint, "hf", out)
    assert files(out) == before and gguf_out.read_bytes() == gguf_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m.gguf"]


def _killed_after_one_file(checkpoint, out, monkeypatch) -> list:
    """Export `checkpoint` into `out`, interrupted once its first file has moved in; the files moved."""
    from kiln.transfer import target

    move, moved = target._move, []

    def killed(src, dst):
        if moved:
            raise KeyboardInterrupt
        moved.append(dst)
        move(src, dst)

    monkeypatch.setattr(target, "_move", killed)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoint, "hf", out, verify=False)
    monkeypatch.undo()
    return moved


def test_an_export_interrupted_while_moving_its_files_in_is_finished_by_the_next(checkpoint, tmp_path, monkeypatch):
    import hashlib

    out = tmp_path / "hf"
    export_checkpoint(checkpoint, "hf", out, verify=False)
    record = json.loads((out / RECORD).read_text())  # made an earlier export, of another model
    for name in record["files"]:
        text = f"earlier {name}".encode()
        (out / name).write_bytes(text)
        record["sha256"][name] = hashlib.sha256(text).hexdigest()
    (out / RECORD).write_text(json.dumps(record))
    (out / "notes.txt").write_text("a person's")
    moved = _killed_after_one_file(checkpoint, out, monkeypatch)  # it is the new one, the rest the earlier
    assert len(moved) == 1 and (out / "model.safetensors").read_bytes() == b"earlier model.safetensors"
    export_checkpoint(checkpoint, "hf", out, verify=False)  # not refused as files a person changed
    clean = tmp_path / "clean"
    export_checkpoint(checkpoint, "hf", clean, verify=False)
    theirs = {**files(clean), "notes.txt": b"a person's"}
    ours = files(out)
    assert ours.keys() == theirs.keys() and all(ours[k] == theirs[k] for k in theirs if k != RECORD)
    (out / "config.json").write_text("{}")  # and a person's edit still stops the next one
    with pytest.raises(KilnError, match="config.json as kiln's last export did not write it"):
        export_checkpoint(checkpoint, "hf", out, verify=False)


def test_what_an_interrupted_export_left_is_cleared_and_anything_else_refused(checkpoint, tmp_path):
    staged = tmp_path / ".staged-hf"
    staged.mkdir()
    (staged / "config.json").write_text("{")  # a crash's half-written export
    export_checkpoint(checkpoint, "hf", tmp_path / "hf", verify=False)
    assert not staged.exists()
    staged.mkdir()
    (staged / "diary.txt").write_text("not kiln's")
    with pytest.raises(KilnError, match="in the way"):
        export_checkpoint(checkpoint, "hf", tmp_path / "hf", verify=False)
    assert (staged / "diary.txt").read_text() == "not kiln's"


def test_a_target_on_another_file_system_is_copied_into_place(tmp_path, monkeypatch):
    import errno
    import os

    from kiln.transfer import target

    real, calls = os.replace, []

    def across(src, dst):
        calls.append(src)
        if len(calls) == 1:  # the first rename crosses file systems (a mount point); the copy's does not
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    (tmp_path / "staged").write_text("new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("old")
    monkeypatch.setattr(target.os, "replace", across)
    target._move(tmp_path / "staged", tmp_path / "out" / "config.json")
    assert (tmp_path / "out" / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "out"]


def test_an_export_into_a_mounted_earlier_export_finishes(checkpoint, tmp_path, monkeypatch):
    """Every rename from the staged export into the target crosses file systems (the target a mount)."""
    import errno
    import os

    from kiln.transfer import target

    out = tmp_path / "hf"
    export_checkpoint(checkpoint, "hf", out, verify=False)
    real = os.replace

    def across(src, dst):
        if Path(src).parent.name == ".staged-hf" and Path(dst).parent == out:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(target.os, "replace", across)
    export_checkpoint(checkpoint, "hf", out, verify=False)
    monkeypatch.undo()
    record = json.loads((out / RECORD).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*record["files"], RECORD])
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_an_interrupted_export_over_an_older_kilns_is_finished_too(checkpoint, tmp_path, monkeypatch):
    from kiln.transfer import target

    out = tmp_path / "hf"
    export_checkpoint(checkpoint, "hf", out, verify=False)
    record = json.loads((out / RECORD).read_text())
    del record["sha256"]  # an older kiln recorded the files, not their sums: any content is its
    (out / RECORD).write_text(json.dumps(record))
    for name in record["files"]:
        (out / name).write_bytes(f"older {name}".encode())
    _killed_after_one_file(checkpoint, out, monkeypatch)
    export_checkpoint(checkpoint, "hf", out, verify=False)
    assert json.loads((out / RECORD).read_text())["sha256"]
    assert not (out / target.PENDING).exists()


def test_an_interrupted_first_export_into_an_empty_folder_is_finished(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "mount"
    out.mkdir()  # an empty folder (a mount point, say): its files move in one by one
    _killed_after_one_file(checkpoint, out, monkeypatch)
    export_checkpoint(checkpoint, "hf", out, verify=False)
    record = json.loads((out / RECORD).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*record["files"], RECORD])


def test_every_export_rename_publishes_only_what_is_on_disk(checkpoint, tmp_path, rename_log):
    """A new export, one over kiln's last, and a GGUF file: synced before each rename, their folder after."""
    export_checkpoint(checkpoint, "hf", tmp_path / "hf", verify=False)
    export_checkpoint(checkpoint, "hf", tmp_path / "hf", verify=False)
    export_checkpoint(checkpoint, "gguf", tmp_path / "m.gguf", verify=False)
    rename_log.check()


def test_a_linked_model_card_is_not_published_as_the_readme(checkpoint, tmp_path, capsys):
    secret = tmp_path / "secret.txt"  # a run directory from someone else, its model card a link
    secret.write_text("SECRET-KEY-123")
    card = checkpoint.parent.parent / "model_card.md"
    card.symlink_to(secret)
    try:
        export_checkpoint(checkpoint, "hf", tmp_path / "hf", verify=False)
    finally:
        card.unlink()
    assert not (tmp_path / "hf" / "README.md").exists() and "is a link" in capsys.readouterr().err
