"""A staged folder: new files replace the last output only on publish; discard and a new start
remove staged files and nothing else."""

import json
import os
import shutil

import pytest

from kiln.errors import KilnError
from kiln.rundir import OVERWRITTEN
from kiln.staging import Publication, StagedFolder, write_whole


def test_publish_replaces_the_last_output_and_keeps_the_rest(tmp_path):
    for name, text in {"part_0.txt": "old 0", "part_1.txt": "old 1", "manifest.json": "{}", "card.md": "kept"}.items():
        (tmp_path / name).write_text(text)
    staging = StagedFolder(tmp_path)
    staging.path("part_0.txt").write_text("new 0")
    assert (tmp_path / "part_0.txt").read_text() == "old 0"  # nothing changes before publish
    staging.publish(["part_*.txt"], {"parts": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md", "manifest.json", "part_0.txt"]
    assert (tmp_path / "part_0.txt").read_text() == "new 0"
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"parts": 1}


def test_discard_and_a_new_start_remove_only_staged_files(tmp_path):
    (tmp_path / "part_0.txt").write_text("published")
    staging = StagedFolder(tmp_path)
    staging.path("part_0.txt").write_text("half written")
    staging.path("part_1.txt").write_text("half written")
    with pytest.raises(ValueError, match="twice"):
        staging.path("part_1.txt")
    StagedFolder(tmp_path)  # a run after a crash
    assert [p.name for p in tmp_path.iterdir()] == ["part_0.txt"]
    staging = StagedFolder(tmp_path)
    staging.path("part_9.txt").write_text("x")
    staging.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["part_0.txt"]
    assert (tmp_path / "part_0.txt").read_text() == "published"
    kept = tmp_path / OVERWRITTEN / ".staged-part_2.txt"  # an earlier run's, kept aside in a linked folder
    kept.parent.mkdir()
    kept.write_text("the earlier run's unfinished publication")
    StagedFolder(tmp_path).discard()
    assert kept.read_text() == "the earlier run's unfinished publication"


def test_a_publication_publishes_its_folders_together(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    publication = Publication()
    for folder in (a, b):
        staging = StagedFolder(folder)
        staging.path("part_0.txt").write_text(f"new {folder.name}")
        staging.path("notes/card.md").write_text(f"card {folder.name}")  # a file in a subfolder
        staging.publish_in(publication, ["part_*.txt"], {"folder": folder.name})
    assert not (a / "manifest.json").exists()  # added, not yet published
    publication.publish()
    assert (a / "part_0.txt").read_text() == "new a" and (b / "part_0.txt").read_text() == "new b"
    assert (b / "notes" / "card.md").read_text() == "card b"
    assert sorted(p.name for p in a.rglob("*")) == ["card.md", "manifest.json", "notes", "part_0.txt"]
    staging = StagedFolder(a)
    staging.path("part_1.txt").write_text("x")
    publication.add(staging, ["part_*.txt"], {"folder": "a2"})
    publication.discard()
    assert sorted(p.name for p in a.iterdir()) == ["manifest.json", "notes", "part_0.txt"]
    assert json.loads((a / "manifest.json").read_text()) == {"folder": "a"}


def test_every_rename_publishes_only_what_is_on_disk(tmp_path, rename_log):
    """Files are synced before the rename that commits to them, folders after the renames into them: a
    power loss leaves the last output or the new one (the kills below cover a stopped process)."""
    a, b = tmp_path / "a", tmp_path / "b"
    _old_outputs(a, b)
    with Publication() as publication:
        for folder in (a, b):
            staging = StagedFolder(folder)
            staging.path("part_0.txt").write_text("new 0")
            staging.path("notes/card.md").write_text("a file in a subfolder")
            staging.publish_in(publication, ["part_*.txt"], {"parts": 1})
    write_whole(tmp_path / "stages.json", "{}")
    rename_log.check()
    assert sorted(p.name for p in a.rglob("*")) == ["card.md", "manifest.json", "notes", "part_0.txt"]
    published = [folder / name for folder in (a, b) for name in ("part_0.txt", "notes/card.md")]
    rename_log.synced_before_rename_to(".publishing.json", published)  # every file, before the commit


def test_a_folder_that_cannot_be_synced_still_publishes_and_a_linked_subfolder_is_refused(tmp_path, monkeypatch):
    """SMB and some FUSE mounts refuse a folder's fsync (EINVAL): they are used as they are; a file's
    fsync failing is an error. A subfolder that links out of the folder is never staged into."""
    import errno

    real = os.fsync

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _old_outputs(tmp_path / "a")
    with Publication() as publication:
        _stage_new(publication, tmp_path / "a")
    assert _contents(tmp_path / "a") == NEW
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        write_whole(tmp_path / "stages.json", "{}")
    monkeypatch.setattr(os, "fsync", real)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a" / "dropped").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KilnError, match="is a link out of"):
        StagedFolder(tmp_path / "a").path("dropped/x.jsonl")
    assert not any((tmp_path / "elsewhere").iterdir())


def _old_outputs(*folders):
    for folder in folders:
        folder.mkdir()
        for i in range(3):
            (folder / f"part_{i}.txt").write_text(f"old {i}")
        (folder / "manifest.json").write_text(json.dumps({"format": "kiln-test", "parts": 3}))


def _stage_new(publication, *folders):
    for folder in folders:
        staging = StagedFolder(folder)
        for i in range(2):
            staging.path(f"part_{i}.txt").write_text(f"new {i}")
        staging.publish_in(publication, ["part_*.txt"], {"format": "kiln-test", "parts": 2})


def _contents(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


OLD = {
    "manifest.json": '{"format": "kiln-test", "parts": 3}',
    "part_0.txt": "old 0",
    "part_1.txt": "old 1",
    "part_2.txt": "old 2",
}
NEW = {"manifest.json": '{\n  "format": "kiln-test",\n  "parts": 2\n}\n', "part_0.txt": "new 0", "part_1.txt": "new 1"}


@pytest.mark.parametrize("renames", range(8))  # 2 commits, then 2 files and a manifest a folder
def test_a_publication_killed_at_any_rename_leaves_every_folder_old_or_every_one_new(tmp_path, monkeypatch, renames):
    """A process killed while publishing two folders (before, between or after its commits, half-way
    through moving one folder's files): the next open of either folder finishes a committed
    publication in both, or discards an uncommitted one in both. Never a mix, never a loss."""
    import kiln.staging as staging_module

    a, b = tmp_path / "a", tmp_path / "b"
    _old_outputs(a, b)
    publication = Publication()
    _stage_new(publication, a, b)
    real, done = os.replace, []

    def killed_after(src, dst):
        if len(done) == renames:
            raise KeyboardInterrupt("killed")
        done.append(dst)
        real(src, dst)

    monkeypatch.setattr(staging_module.os, "replace", killed_after)
    with pytest.raises(KeyboardInterrupt):
        publication.publish()
    monkeypatch.setattr(staging_module.os, "replace", real)
    committed = renames >= 1  # the first rename commits a's plan, and with it the set
    ready = [  # what a reader sees: the published files of the folders with a manifest
        {k: v for k, v in _contents(f).items() if not k.startswith(".")}
        for f in (a, b)
        if (f / "manifest.json").exists()
    ]
    assert ready in ([], [OLD, OLD], [NEW])  # meanwhile no folder reads as ready with new files beside an old one
    StagedFolder(b if renames % 2 else a)  # the next run opens one of them: that finishes the set
    assert _contents(a) == _contents(b) == (NEW if committed else OLD) or (not committed and _contents(a) == OLD)
    if committed:
        assert not [p for p in tmp_path.rglob(".*")]  # no plan or staged file left
    StagedFolder(a), StagedFolder(b)
    assert _contents(a) == _contents(b) == (NEW if committed else OLD)
    assert not [p for p in tmp_path.rglob(".*")]


def test_a_set_published_through_a_symlinked_folder_is_finished_from_either_side(tmp_path, monkeypatch):
    import kiln.staging as staging_module

    real_a, b = tmp_path / "elsewhere" / "a", tmp_path / "b"
    real_a.parent.mkdir()
    _old_outputs(real_a, b)
    (tmp_path / "a").symlink_to(real_a)
    publication = Publication()
    _stage_new(publication, tmp_path / "a", b)
    real, calls = os.replace, iter(range(100))
    monkeypatch.setattr(staging_module.os, "replace", lambda s, d: real(s, d) if next(calls) < 3 else 1 / 0)
    with pytest.raises(ZeroDivisionError):  # committed, one file of a moved
        publication.publish()
    monkeypatch.setattr(staging_module.os, "replace", real)
    StagedFolder(b)
    assert _contents(real_a) == _contents(b) == NEW


def test_a_staged_file_deleted_by_hand_leaves_its_folder_unready_not_stuck(tmp_path, monkeypatch, capsys):
    import kiln.staging as staging_module

    a = tmp_path / "a"
    _old_outputs(a)
    staging = StagedFolder(a)
    for i in (5, 6):
        staging.path(f"part_{i}.txt").write_text(f"new {i}")
    staging.path("dropped/x.jsonl").write_text("{}")
    real = os.replace
    calls = iter(range(100))
    monkeypatch.setattr(staging_module.os, "replace", lambda s, d: real(s, d) if next(calls) < 1 else 1 / 0)
    with pytest.raises(ZeroDivisionError):  # committed, nothing moved
        staging.publish(["part_*.txt"], {"parts": 2})
    monkeypatch.setattr(staging_module.os, "replace", real)
    (a / ".staged-part_6.txt").unlink()
    shutil.rmtree(a / "dropped")  # a whole subfolder too
    StagedFolder(a)
    err = capsys.readouterr().err
    assert "staged part_6.txt of a publication is gone" in err or "staged dropped/x.jsonl" in err
    assert not (a / "manifest.json").exists() and not (a / ".publishing.json").exists()
    StagedFolder(a).publish(["part_*.txt"], {"parts": 0})  # the stage run again works
    assert json.loads((a / "manifest.json").read_text()) == {"parts": 0}


def test_a_killed_publication_of_one_folder_is_finished_when_it_is_opened(tmp_path, monkeypatch):
    import kiln.staging as staging_module

    a = tmp_path / "a"
    _old_outputs(a)
    staging = StagedFolder(a)
    for i in range(2):
        staging.path(f"part_{i}.txt").write_text(f"new {i}")
    real = os.replace
    calls = iter(range(100))
    monkeypatch.setattr(staging_module.os, "replace", lambda s, d: real(s, d) if next(calls) < 2 else 1 / 0)
    with pytest.raises(ZeroDivisionError):  # the plan committed, part_0 moved, then a crash
        staging.publish(["part_*.txt"], {"format": "kiln-test", "parts": 2})
    monkeypatch.setattr(staging_module.os, "replace", real)
    assert not (a / "manifest.json").exists()  # readers refuse the folder meanwhile
    StagedFolder(a)
    assert _contents(a) == NEW


def test_a_plan_planted_in_a_folder_acts_only_inside_it(tmp_path, capsys):
    """A plan is a file found in a folder that deletes and moves files: one reaching outside its folder
    (a `..` glob, a linked subfolder, an absolute partner, a manifest that is not an object, a staged
    name that is a link) is ignored, and nothing outside the folder is touched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (outside / ".bashrc").write_text("alias ll='ls -l'")
    folder = tmp_path / "run" / "shards"
    folder.mkdir(parents=True)
    (folder / "link").symlink_to(outside)
    (folder / ".staged-manifest.json").symlink_to(outside / ".bashrc")
    (folder / ".staged-part_0.txt").symlink_to(outside / "new.txt")  # dangling: would be created outside
    bad_plans = [
        {"replaces": ["../../outside/*"], "manifest": {"parts": 0}, "with": []},
        {"replaces": ["part_*"], "manifest": "$(echo pwned)", "with": []},
        {"replaces": ["part_*"], "manifest": {}, "with": [str(outside)]},
        {"replaces": ["part_*"], "manifest": {}, "with": [], "names": ["../outside/keep.txt"]},
    ]
    for bad in bad_plans:
        (folder / ".publishing.json").write_text(json.dumps({"id": "x", "names": [], **bad}))
        StagedFolder(folder)
        assert sorted(p.name for p in outside.iterdir()) == [".bashrc", "keep.txt"], bad
        assert (outside / ".bashrc").read_text() == "alias ll='ls -l'", bad
    assert "not a publication kiln wrote" in capsys.readouterr().err
    (folder / ".publishing.json").write_text(
        json.dumps({"id": "x", "names": [], "replaces": ["link/*"], "manifest": {"parts": 0}, "with": []})
    )
    staging = StagedFolder(folder)  # a plan of kiln's shape, whose glob goes through the linked subfolder
    staging.path("part_0.txt").write_text("new")
    staging.publish(["part_*.txt", "link/*"], {"parts": 1})
    assert sorted(p.name for p in outside.iterdir()) == [".bashrc", "keep.txt"]
    assert (outside / "keep.txt").read_text() == "mine" and (outside / ".bashrc").read_text() == "alias ll='ls -l'"
    assert (folder / "part_0.txt").read_text() == "new" and json.loads((folder / "manifest.json").read_text())


def test_a_whole_write_replaces_a_link_at_its_name_and_a_failed_one_leaves_the_file(tmp_path):
    from kiln.staging import write_whole_with

    mine = tmp_path / "thesis.md"
    mine.write_text("chapter one")
    (tmp_path / "report.md").symlink_to(mine)  # planted in a run directory from someone else
    write_whole(tmp_path / "report.md", "kiln's report")
    assert mine.read_text() == "chapter one" and (tmp_path / "report.md").read_text() == "kiln's report"
    assert not (tmp_path / "report.md").is_symlink()

    def half_then_fail(staged):
        staged.write_text("half a pl")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_whole_with(tmp_path / "report.md", half_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "thesis.md"]
    assert (tmp_path / "report.md").read_text() == "kiln's report"


def test_a_linked_folder_no_kiln_stage_published_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"  # a run directory from someone else: curated/ a link to a user's folder
    mine.mkdir()
    (mine / "part_0.txt").write_text("my 2023 documents")
    (mine / "manifest.json").write_text('{"mine": true}')
    (tmp_path / "curated").symlink_to(mine)
    staging = StagedFolder(tmp_path / "curated")
    staging.path("part_0.txt").write_text("new")
    with pytest.raises(KilnError, match="which no kiln stage published there"):
        staging.publish(["part_*.txt"], {"format": "kiln-test", "parts": 1})
    assert _contents(mine) == {"manifest.json": '{"mine": true}', "part_0.txt": "my 2023 documents"}
    (mine / "manifest.json").write_text('{"format": "kiln-test", "parts": 1}')  # a kiln stage's: replaced
    staging = StagedFolder(tmp_path / "curated")
    staging.path("part_0.txt").write_text("new")
    staging.publish(["part_*.txt"], {"format": "kiln-test", "parts": 1})
    assert (mine / "part_0.txt").read_text() == "new"


def test_saved_tensors_get_the_permissions_any_other_file_gets(tmp_path):
    """safetensors creates its file for the owner alone: a shared export or checkpoint was unreadable."""
    import os
    import stat

    import torch

    from kiln.staging import save_tensors

    before = os.umask(0o022)
    try:
        save_tensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
        (tmp_path / "config.json").write_text("{}")
    finally:
        os.umask(before)
    mode = stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
