"""A checkpoint's files as its manifest lists them: a crafted manifest (a path out of the folder, a
device, the wrong types) is a checkpoint that fails verification, never a read of something else; a
link left at a save's temporary name is replaced, never followed."""

import json

import torch

from kiln.staging import file_sha256
from kiln.train.checkpoint import save_checkpoint
from kiln.train.manifest import verify_checkpoint


def _checkpoint(tmp_path, files):
    folder = tmp_path / "step_3"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


def test_a_crafted_manifest_fails_verification_without_reading_outside(tmp_path):
    (tmp_path / "secret").write_bytes(b"x")
    good = {"bytes": 7, "sha256": file_sha256(_checkpoint(tmp_path / "a", {}) / "model.safetensors")}
    for files, says in [
        ({"model.safetensors": good}, None),
        ({"/dev/zero": {"bytes": 0, "sha256": "0"}}, "is not a file inside the checkpoint"),  # read forever
        ({"../secret": {"bytes": 1, "sha256": "0"}}, "is not a file inside the checkpoint"),
        ({"model.safetensors": "big"}, "has no size and sha256"),
        (["model.safetensors"], "are not a table"),
    ]:
        folder = _checkpoint(tmp_path / str(len(list(tmp_path.iterdir()))), files)
        problem = verify_checkpoint(folder)
        assert (problem is None) if says is None else says in problem, (files, problem)


def test_a_link_at_a_saves_temporary_name_is_replaced_not_followed(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / ".tmp_step_1").symlink_to(mine)  # planted in a run directory from someone else
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(root, 1, model, optimizer, {"step": 1}, {}, tokenizer, keep=2)
    assert verify_checkpoint(path) is None and [p.name for p in mine.iterdir()] == ["notes.txt"]
