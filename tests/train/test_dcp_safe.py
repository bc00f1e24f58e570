"""A checkpoint is data, never code: a pickle planted in dcp/ is refused by every verb and nothing runs.

The payload is the one an attacker would write: an object whose `__reduce__` calls os.system. Each
verb gets a copy of a real checkpoint with it planted (and the manifest rewritten to match, as an
attacker would), must fail with one line, and the marker file the payload would create must not
appear.
"""

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict

from kiln import stages
from kiln.cli import main
from kiln.errors import KilnError
from kiln.stages import parts_for
from kiln.train.build import build_trainer
from kiln.train.checkpoint import consolidate
from kiln.train.dcp_safe import read_metadata
from kiln.train.manifest import write_manifest
from tests.conftest import copy_run, tiny_config


class Payload:
    """Unpickled, it runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tokenized_run, tmp_path_factory, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path_factory.mktemp("trained"))
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "4", "train.eval_every": "0", "train.checkpoint_every": "0"})
    stages.train(cfg, run)
    return cfg, run


def plant(run_root: Path, dst: Path, marker: Path) -> Path:
    """A copy of the run with its checkpoint's dcp/.metadata replaced by the payload, its
    model.safetensors removed (so weight readers would have to go to dcp/), the manifest rewritten."""
    shutil.copytree(run_root, dst)
    ckpt = dst / "checkpoints" / "step_4"
    (ckpt / "model.safetensors").unlink()
    (ckpt / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    (ckpt / "manifest.json").unlink()
    write_manifest(ckpt)
    return ckpt


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_payload_is_live_under_plain_pickle(tmp_path):
    """The test's payload does run under pickle.load (what torch's reader does): the refusals below mean something."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_every_verb_refuses_a_planted_checkpoint_and_runs_nothing(trained, tmp_path, capsys):
    _, run = trained
    marker = tmp_path / "pwned"
    ckpt = plant(run.root, tmp_path / "evil", marker)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(40)))
    weights_only = [
        ["eval", "--checkpoint", str(ckpt)],
        ["generate", "--checkpoint", str(ckpt), "--prompt", "x"],
        ["export", "--checkpoint", str(ckpt), "--to", "hf", str(tmp_path / "hf")],
        ["export", "--checkpoint", str(ckpt), "--to", "gguf", str(tmp_path / "m.gguf")],
        ["finetune", "--checkpoint", str(ckpt), "--data", str(data), "--run-dir", str(tmp_path / "ft")],
    ]
    for argv in weights_only:  # they read model.safetensors only, and say how to make one
        err = one_line_error(capsys, argv)
        assert "no model.safetensors" in err and "kiln convert" in err, argv
    err = one_line_error(capsys, ["convert", "--checkpoint", str(ckpt), "--to", "safetensors"])
    assert "posix.system" in err and "refused" in err
    err = one_line_error(capsys, ["train", "--run-dir", str(tmp_path / "evil"), "--resume"])
    assert "posix.system" in err and "refused" in err
    assert not marker.exists()


def test_a_payload_among_the_optimizer_values_is_refused(trained, tmp_path):
    """DCP pickles the state's non-tensor values (param-group settings) into the data files; a payload
    there is read with weights_only and refused, on resume (and so on a rollback, the same load)."""
    cfg, run = trained
    evil = copy_run(run, tmp_path / "evil")
    ckpt = evil.checkpoints / "step_4"
    trainer = build_trainer(cfg, evil, parts_for(cfg))
    model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
    marker = tmp_path / "pwned"
    optim_sd["param_groups"][0]["lr"] = Payload(marker)
    shutil.rmtree(ckpt / "dcp")
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(ckpt / "dcp"), no_dist=True)
    write_manifest(ckpt)
    with pytest.raises(KilnError, match="refused"):
        build_trainer(cfg, evil, parts_for(cfg), resume=True)
    (ckpt / "model.safetensors").unlink()  # convert then rebuilds it from dcp/
    with pytest.raises(KilnError, match="refused"):
        consolidate(ckpt)
    assert not marker.exists()


def test_real_metadata_reads_and_a_path_outside_the_folder_is_refused(trained, tmp_path):
    _, run = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(run.checkpoints / "step_4", ckpt)
    metadata = read_metadata(ckpt / "dcp" / ".metadata")
    assert "model.embed.weight" in metadata.state_dict_metadata
    for info in metadata.storage_data.values():
        info.relative_path = "../../../etc/passwd"
    (ckpt / "dcp" / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(KilnError, match="outside its folder"):
        read_metadata(ckpt / "dcp" / ".metadata")
    (ckpt / "dcp" / ".metadata").write_bytes(b"\x80\x04garbage")
    with pytest.raises(KilnError, match="corrupt or truncated"):
        read_metadata(ckpt / "dcp" / ".metadata")


STATE_REWRITES = [
    # PosixPath.is_symlink := set, process-wide (kiln's own checkpoint listing relies on is_symlink)
    ("set the state of PosixPath", b"cpathlib\nPosixPath\nN}Vis_symlink\ncbuiltins\nset\ns\x86b0"),
    # the shared enum member's value := 99: every checkpoint this process saves later is unreadable
    (
        "set the state of _MEM_FORMAT_ENCODING",
        b"ctorch.distributed.checkpoint.metadata\n_MEM_FORMAT_ENCODING\nK\x00\x85R}V_value_\nKcsb0",
    ),
    # a path whose cached parts differ from its text: prints as a file in the folder, opens another
    ("set the state of PosixPath", b"cpathlib\nPosixPath\nV__0_0.distcp\n\x85RN}V_str\nVx\ns\x86b0"),
    # a dataclass's state from something other than its fields
    (
        "set ChunkStorageMetadata's state from a tuple",
        b"ctorch.distributed.checkpoint.metadata\nChunkStorageMetadata\nNN\x86\x81NN\x86b0",
    ),
]


@pytest.mark.parametrize("refusal, rewrite", STATE_REWRITES)
def test_state_set_on_anything_but_a_new_dataclass_is_refused(trained, tmp_path, refusal, rewrite):
    """pickle's BUILD sets attributes on whatever is beneath it: aimed at a class, a shared enum member
    or a path it changes them for the whole process, or makes a path print as one file and open another."""
    import pathlib

    from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING

    _, run = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(run.checkpoints / "step_4", ckpt)
    good = (ckpt / "dcp" / ".metadata").read_bytes()
    assert good[:2] == b"\x80\x04"
    (ckpt / "dcp" / ".metadata").write_bytes(b"\x80\x04" + rewrite + good[2:])
    link = tmp_path / "a_link"
    link.symlink_to(tmp_path)
    with pytest.raises(KilnError, match=refusal):
        read_metadata(ckpt / "dcp" / ".metadata")
    assert "is_symlink" not in vars(pathlib.PosixPath) and link.is_symlink()
    assert [m.value for m in _MEM_FORMAT_ENCODING] == list(range(len(_MEM_FORMAT_ENCODING)))


def test_convert_rebuilds_the_weights_from_a_trusted_sharded_checkpoint(trained, tmp_path):
    _, run = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(run.checkpoints / "step_4", ckpt)
    want = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").unlink()
    from safetensors.torch import load

    consolidate(ckpt)
    got, ref = load((ckpt / "model.safetensors").read_bytes()), load(want)
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_the_refusal_is_one_line_in_a_terminal_too(trained, tmp_path):
    """Outside pytest no log handler is set: torch's reader logs its fallback's traceback to the root
    logger, which Python prints to stderr unless kiln keeps it quiet."""
    import subprocess
    import sys

    _, run = trained
    ckpt = plant(run.root, tmp_path / "evil", tmp_path / "pwned")
    convert = [sys.executable, "-m", "kiln", "convert", "--checkpoint", str(ckpt), "--to", "safetensors"]
    proc = subprocess.run(convert, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "refused" in proc.stderr and not (tmp_path / "pwned").exists()
