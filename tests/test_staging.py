"""A staged folder: new files replace the last output only on publish; discard and a new start
remove staged files and nothing else."""

import json

import pytest

from kiln.staging import Publication, StagedFolder


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


def test_a_publication_publishes_its_folders_together_then_runs_their_follow_ups(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    publication, seen = Publication(), []
    for folder in (a, b):
        staging = StagedFolder(folder)
        staging.path("part_0.txt").write_text(f"new {folder.name}")
        staging.publish_in(
            publication,
            ["part_*.txt"],
            {"folder": folder.name},
            then=lambda: seen.append(sorted(p.name for f in (a, b) for p in f.iterdir())),
        )
    assert not (a / "manifest.json").exists() and seen == []  # added, not yet published
    publication.publish()
    assert (a / "part_0.txt").read_text() == "new a" and (b / "part_0.txt").read_text() == "new b"
    assert seen == [sorted(["manifest.json", "part_0.txt"] * 2)] * 2  # each follow-up after both folders
    staging = StagedFolder(a)
    staging.path("part_1.txt").write_text("x")
    publication.add(staging, ["part_*.txt"], {"folder": "a2"})
    publication.discard()
    assert sorted(p.name for p in a.iterdir()) == ["manifest.json", "part_0.txt"]
    assert json.loads((a / "manifest.json").read_text()) == {"folder": "a"}
