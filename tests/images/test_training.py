"""An image+text run on the one trainer: it learns to name colours above chance, resumes bitwise,
and its checkpoint captions an image file and evaluates through the CLI."""

import json
from pathlib import Path

import torch
from PIL import Image

from kiln.cli import main
from kiln.evaluate.load import load_checkpoint
from kiln.evaluate.verbs import caption_image
from kiln.images.evaluate import image_prompt
from kiln.images.modality import evaluate_captions
from kiln.images.patches import fit_image
from kiln.images.shards import ImageShardSet
from kiln.stages import parts_for
from kiln.train.build import build_trainer
from tests.conftest import copy_run
from tests.images.conftest import vlm_config
from tests.train.test_trainer import straight_and_resumed


def test_a_tiny_run_learns_to_name_colours_of_unseen_pairs(vlm_run, corpus_dir, tmp_path):
    _, src = vlm_run
    run = copy_run(src, tmp_path / "run")
    cfg = vlm_config(
        corpus_dir,
        **{
            "train.max_steps": "250",
            "train.micro_batch_size": "16",
            "train.lr": "1e-2",
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "train.precision": "fp32",  # the accuracy after 250 steps on every CPU, not bf16's rounding on AMX
        },
    )
    trainer = build_trainer(cfg, run, parts_for(cfg))
    before = trainer.validate(None)["loss"]
    figures = trainer.fit()
    assert figures["val_loss"] < before - 1.0 and figures["objective"] == "caption_lm"
    result = evaluate_captions(run.checkpoints / "step_250")
    unseen, chance = result["attributes"]["groups"]["unseen"], result["attributes"]["chance"]
    # colour-shape pairs no training image shows: the colour word is right far above one in six
    assert chance["colour"] == 1 / 6 and unseen["colour"] >= 0.5, result["attributes"]
    texts = {item["text"] for item in ImageShardSet(run.image_split("val")).items()}
    assert 1 / len(texts) < result["retrieval_top1"] <= 1 and result["retrieval_captions"] == len(texts)
    assert (run.evals / "step_250" / "captions.md").exists()


def test_an_image_run_resumes_bitwise(vlm_run, corpus_dir, tmp_path):
    _, src = vlm_run
    cfg = vlm_config(
        corpus_dir,
        **{
            "train.max_steps": "6",
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "model.vision.encoder": "vit",
        },
    )
    a, b = straight_and_resumed(cfg, src, tmp_path, cut=3)
    assert any(k.startswith("vision.blocks") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def prompt_logits(loaded, picture: Path) -> torch.Tensor:
    """The captioning prompt's logits (1, T, V) for one image file."""
    vision = loaded.cfg.model.vision
    pixels = torch.from_numpy(fit_image(Image.open(picture).convert("RGB"), vision.image_size))[None, None]
    tokens = torch.tensor([image_prompt(loaded.ids, 1, vision.patches, [])])
    with torch.no_grad():
        return loaded.model(tokens, images=pixels, image_mask=tokens == loaded.ids.image)


def test_generate_captions_an_image_file_and_eval_reports_image_figures(vlm_run, tmp_path, capsys):
    _, src = vlm_run
    run = copy_run(src, tmp_path / "run")
    flags = ["--train.max_steps", "4", "--train.eval_every", "0", "--train.checkpoint_every", "0"]
    assert main(["train", "--run-dir", str(run.root), "--overwrite", *flags]) == 0
    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 30, 30)).save(picture)
    capsys.readouterr()
    checkpoint = str(run.checkpoints / "step_4")
    flags = ["--image", str(picture), "--sample.max_new_tokens", "6"]
    assert main(["generate", "--checkpoint", checkpoint, *flags]) == 0
    printed = capsys.readouterr().out
    own = caption_image(Path(checkpoint), picture, "", {"sample.max_new_tokens": "6"})
    assert printed == own + "\n" and own  # the model's own caption, printed
    assert main(["generate", "--checkpoint", checkpoint, *flags, "--prompt", "A", "--prompt", "The"]) == 0
    assert capsys.readouterr().out.count("\n---\n") == 1  # one continuation for each prompt
    # the picture reaches the model: the caption prompt's logits move with its pixels
    loaded = load_checkpoint(Path(checkpoint), torch.device("cpu"))
    blue = tmp_path / "blue.png"
    Image.new("RGB", (40, 30), (30, 30, 220)).save(blue)
    assert not torch.equal(prompt_logits(loaded, picture), prompt_logits(loaded, blue))
    assert main(["generate", "--checkpoint", checkpoint, "--image", str(tmp_path / "none.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", checkpoint]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"caption_bpb", "retrieval_top1", "attributes"} <= out.keys()


def test_a_users_webdataset_tar_goes_through_the_same_stages(corpus_dir, tmp_path):
    import io
    import tarfile

    from kiln import stages
    from kiln.rundir import RunDir
    from tests.images.test_curate import photo

    shard = tmp_path / "pairs-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(60):
            for name, data in ((f"{i:05d}.png", photo(i)), (f"{i:05d}.txt", f"picture {i} of the union")):
                buffer = io.BytesIO()
                if isinstance(data, str):
                    buffer.write(data.encode())
                else:
                    data.save(buffer, format="PNG")
                info = tarfile.TarInfo(name)
                info.size = buffer.tell()
                buffer.seek(0)
                tar.addfile(info, buffer)
    cfg = vlm_config(
        corpus_dir,
        **{"images.source": str(shard), "images.val_fraction": "0.2", "images.dedup_near": "true"},
        **{"train.max_steps": "3", "train.eval_every": "0", "train.checkpoint_every": "0"},
    )
    run = RunDir(tmp_path / "run")
    stages.curate(cfg, run)
    stages.tokenizer(cfg, run)
    stages.tokenize(cfg, run)
    stages.train(cfg, run)
    result = evaluate_captions(run.checkpoints / "step_3")
    assert "attributes" not in result and result["retrieval_captions"] == result["retrieval_images"] > 0
    card = json.loads((run.curated_images / "data_card.json").read_text())
    assert card["read"] == 60 and sum(card["kept"].values()) == 60


def test_captions_that_read_the_same_once_cut_are_one_retrieval_candidate(vlm_run):
    """Captions equal after max_text_tokens would tie, and each tie counted as found; they are one
    candidate, and chance is one in the candidates left."""
    from kiln.images.evaluate import retrieval
    from kiln.images.shards import encode_doc
    from kiln.models.build import build_model
    from kiln.tokenizer import load_tokenizer, objective_ids

    cfg, run = vlm_run
    tok = load_tokenizer(run.tokenizer)
    ids = objective_ids(tok)
    shards = ImageShardSet(run.image_split("val"))
    shards.manifest["max_text_tokens"] = 2  # the shapes' captions differ later than their first words
    patches = (shards.manifest["image_size"] // shards.manifest["patch_size"]) ** 2
    texts = {item["text"] for item in shards.items()}
    rows = {tuple(encode_doc(text, 1, tok, ids, patches, 2)[0]) for text in texts}
    assert 1 < len(rows) < len(texts)
    torch.manual_seed(0)
    model = build_model(cfg.model, torch.device("cpu"))
    result = retrieval(model, shards, tok, ids, "fp32", num_images=8)
    assert result["retrieval_captions"] == len(rows) and result["retrieval_chance"] == 1 / len(rows)
