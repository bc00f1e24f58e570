"""Export to Hugging Face and GGUF, import back: the same function, the same bits, offline."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kiln import stages
from kiln.cli import main
from kiln.errors import KilnError
from kiln.evaluate.load import load_checkpoint
from kiln.train.precision import choose_precision
from kiln.transfer.export import export_hf
from kiln.transfer.gguf import export_gguf, permute_rotary
from kiln.transfer.importer import import_hf
from tests.conftest import copy_run, tiny_config

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")  # a dev dependency; the check needs it installed


VARIANTS = {
    "tied": {},
    "untied_gqa": {"model.tie_embeddings": "false", "model.num_kv_heads": "1"},
    "mixtral": {"model.moe.num_experts": "4", "model.moe.top_k": "2", "model.moe.every": "1"},
    # kiln's recipe: QK-norm, untied embeddings, parameter-free norms (Qwen3, its norms written as ones)
    "qwen3_recipe": {
        "model.qk_norm": "true",
        "model.tie_embeddings": "false",
        "model.norm_params": "false",
        "model.num_kv_heads": "2",
        "train.optimizer": "muon",
    },
    "qwen3_gains": {"model.qk_norm": "true"},  # QK-norm with learned gains (Qwen3's own q_norm / k_norm)
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request, tokenized_run, tmp_path_factory, corpus_dir):
    """A 3-step run of a tiny decoder (grouped-query attention): tied head, untied with one kv head,
    experts in every block (Mixtral), or QK-norm (Qwen3) with or without norm gains."""
    _, src = tokenized_run
    run = copy_run(src, tmp_path_factory.mktemp(request.param))
    extra = VARIANTS[request.param]
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "3", **extra})
    stages.train(cfg, run)
    return run.checkpoints / "step_3", cfg


def test_an_exported_decoder_loads_in_transformers_with_the_same_logits(trained, tmp_path):
    checkpoint, cfg = trained
    result = export_hf(checkpoint, tmp_path / "hf")
    check = result["verification"]
    assert check["checked"] and check["max_abs_logit_diff"] <= 1e-4 and check["greedy_tokens_identical"]
    assert check["tokenizer_ids_identical"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    kind = "qwen3" if cfg.model.qk_norm else ("mixtral" if cfg.model.moe.num_experts else "llama")
    assert config["model_type"] == kind
    assert config["num_key_value_heads"] == cfg.model.num_kv_heads < cfg.model.num_heads  # grouped-query attention
    assert config["tie_word_embeddings"] == cfg.model.tie_embeddings
    # independently of the export's own check: another batch, through the Auto classes, offline
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    loaded = load_checkpoint(checkpoint, torch.device("cpu"))
    ids = tok("the union is strong and the people are free", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == loaded.ids.bos  # the exported tokenizer starts with <|bos|>, as kiln reads text
    with torch.no_grad():
        diff = (hf(ids).logits - loaded.model(ids)).abs().max().item()
    assert diff <= 1e-4
    assert not any(p.is_meta for p in hf.parameters())


def test_export_then_import_is_bitwise(trained, tmp_path, monkeypatch):
    checkpoint, _ = trained
    export_hf(checkpoint, tmp_path / "hf", verify=False)
    (tmp_path / "back").mkdir()  # an empty folder, named as `.`
    monkeypatch.chdir(tmp_path / "back")
    import_hf(tmp_path / "hf", Path("."))
    back = tmp_path / "back" / "checkpoints" / "step_0"
    original, imported = load_file(str(checkpoint / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert original.keys() == imported.keys() and all(torch.equal(original[k], imported[k]) for k in original)
    assert (checkpoint / "tokenizer.json").read_bytes() == (back / "tokenizer.json").read_bytes()
    a, b = load_checkpoint(checkpoint, torch.device("cpu")), load_checkpoint(back, torch.device("cpu"))
    assert a.cfg.model == b.cfg.model and a.tokenizer_sha256 == b.tokenizer_sha256
    with pytest.raises(KilnError, match="exists already and is not empty"):
        import_hf(tmp_path / "hf", tmp_path / "back")
    trained_run = checkpoint.parent.parent  # a run directory with training in it is never imported into
    before = sorted(str(p.relative_to(trained_run)) for p in trained_run.rglob("*"))
    with pytest.raises(KilnError, match="not empty"):
        import_hf(tmp_path / "hf", trained_run)
    assert sorted(str(p.relative_to(trained_run)) for p in trained_run.rglob("*")) == before


def test_an_import_is_on_disk_before_it_takes_the_runs_name(trained, tmp_path, monkeypatch):
    """Into a new folder and into an empty one: synced before each rename, the folder after."""
    from tests.conftest import RenameLog

    checkpoint, _ = trained
    export_hf(checkpoint, tmp_path / "hf", verify=False)
    log = RenameLog().install(monkeypatch)
    import_hf(tmp_path / "hf", tmp_path / "new")
    (tmp_path / "empty").mkdir()
    import_hf(tmp_path / "hf", tmp_path / "empty")
    log.check()


def test_a_foreign_llama_imports_with_kilns_special_tokens_added(tmp_path, corpus_dir):
    """A transformers Llama built in the test, with a tokenizer that has only <s> and </s>: kiln adds its
    special tokens after the vocabulary, starts <|bos|> from <s>'s row, and computes the same logits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [p.read_text() for p in sorted(corpus_dir.glob("*.txt"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "foreign")
    hf_tok.save_pretrained(tmp_path / "foreign")
    result = import_hf(tmp_path / "foreign", tmp_path / "run")
    assert len(result["added_special_tokens"]) == 7 and result["vocab_size"] == tok.get_vocab_size() + 7
    loaded = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_0", torch.device("cpu"))
    assert torch.equal(loaded.model.embed.weight[loaded.ids.bos], model.model.embed_tokens.weight[0])
    ids = torch.tensor([[0] + tok.encode("the union is strong").ids])
    with torch.no_grad():
        ours = loaded.model(ids)[..., : tok.get_vocab_size()]
        assert (ours - model(ids).logits).abs().max().item() <= 1e-4
    # the imported checkpoint is a kiln checkpoint: generate works on it
    assert (
        main(["generate", "--run-dir", str(tmp_path / "run"), "--prompt", "the union", "--sample.max_new_tokens", "5"])
        == 0
    )


def test_gguf_export_reads_back_and_the_rotary_permutation_is_llama_cpps(trained, tmp_path):
    checkpoint, cfg = trained
    check = export_gguf(checkpoint, tmp_path / "m.gguf")["verification"]
    assert check["metadata_match"] and check["tensors_identical"] and check["tokens_identical"]
    names = set(gguf.GGUFReader(str(tmp_path / "m.gguf")).fields)
    assert ("qwen3.attention.key_length" in names) == cfg.model.qk_norm
    if isinstance(check["llama_cpp"], dict):  # llama-cpp-python installed: the file runs there, held-out window
        assert check["llama_cpp_agrees"], check["llama_cpp"]
    # permuted rows rotated as interleaved pairs (llama.cpp's rope) equal rotate-half rotation of the originals
    heads, head_dim, dim = 2, 8, 4
    w = torch.randn(heads * head_dim, dim)
    x = torch.randn(dim)
    theta = torch.rand(head_dim // 2)
    cos, sin = theta.cos(), theta.sin()

    def rotate_half(v):  # per head: (v1, v2) halves
        a, b = v[: head_dim // 2], v[head_dim // 2 :]
        return torch.cat([a * cos - b * sin, a * sin + b * cos])

    def rotate_pairs(v):  # per head: interleaved (even, odd)
        out = v.clone()
        out[0::2], out[1::2] = v[0::2] * cos - v[1::2] * sin, v[0::2] * sin + v[1::2] * cos
        return out

    q, qp = (w @ x).view(heads, head_dim), (permute_rotary(w, heads) @ x).view(heads, head_dim)
    for h in range(heads):
        want = rotate_half(q[h])
        got = rotate_pairs(qp[h])
        # the same rotated features, in the permuted order
        assert torch.allclose(permute_rotary(want[:, None], 1)[:, 0], got, atol=1e-6)


def test_families_without_a_matching_class_are_refused_in_one_line(tmp_path):
    from kiln.models.config import ModelConfig, MoEConfig
    from kiln.transfer.hf import hf_config

    with pytest.raises(KilnError, match="family=encoder"):
        hf_config(ModelConfig(family="encoder", dim=64, num_layers=2, num_heads=4), 1, 2, 0)
    every_other = ModelConfig(dim=64, num_layers=2, num_heads=4, moe=MoEConfig(num_experts=4, top_k=2, every=2))
    with pytest.raises(KilnError, match="experts on every 2th block"):
        hf_config(every_other, 1, 2, 0)


def test_export_and_import_through_the_command_line(trained, tmp_path, capsys):
    checkpoint, _ = trained
    assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", str(tmp_path / "hf")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verification"]["logits_match"] and (tmp_path / "hf" / "model.safetensors").exists()
    assert main(["import", "--from", "hf", str(tmp_path / "hf"), "--run-dir", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("step_0")
    text = tmp_path / "held_out.txt"
    text.write_text("the union is strong and the people are free while congress shall act. " * 20)
    assert main(["eval", "--run-dir", str(tmp_path / "run"), "--text", str(text)]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", str(checkpoint), "--text", str(text)]) == 0
    original = json.loads(capsys.readouterr().out)["bpb"]
    # the same model (batched otherwise); the import's config says precision auto, the original's fp32,
    # so where bf16 is measured faster (AMX, Zen 4) the import is scored in bf16
    fp32 = choose_precision("auto", torch.device("cpu")).precision == "fp32"
    assert imported["bpb"] == pytest.approx(original, rel=1e-6 if fp32 else 1e-3) and original > 0


def test_a_corrupt_import_folder_is_one_clear_error(trained, tmp_path):
    checkpoint, _ = trained
    export_hf(checkpoint, tmp_path / "hf", verify=False)
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(KilnError, match="corrupt, truncated"):
        import_hf(tmp_path / "hf", tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no run directory, nothing staged left
    (tmp_path / "empty").mkdir()  # an empty folder (a mount point) is built inside: still nothing left
    with pytest.raises(KilnError, match="corrupt, truncated"):
        import_hf(tmp_path / "hf", tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "hf" / "config.json").write_text("{")
    with pytest.raises(KilnError, match="not valid JSON"):
        import_hf(tmp_path / "hf", tmp_path / "b")


@pytest.mark.parametrize(
    "option, named",
    [({"mlp": "relu2"}, "ReLU-squared"), ({"logit_softcap": 15.0}, "soft-cap"),
     ({"embed_norm": True}, "after the embedding"), ({"residual_scalars": True}, "mixing scalars"),
     ({"value_embeds": True}, "value embeddings")],
)  # fmt: skip
def test_options_no_exported_class_expresses_are_refused(option, named):
    from kiln.models.config import ModelConfig
    from kiln.transfer.hf import hf_config

    with pytest.raises(KilnError, match=named):
        hf_config(ModelConfig(dim=64, num_layers=2, num_heads=4, **option), 1, 2, 0)
    recipe = dict(qk_norm=True, norm_params=False, zero_init_out=True, tie_embeddings=False)
    assert hf_config(ModelConfig(dim=64, num_layers=2, num_heads=4, **recipe), 1, 2, 0)["model_type"] == "qwen3"


def test_an_index_naming_files_outside_the_folder_is_refused(tmp_path):
    from kiln.transfer.importer import read_hf_weights

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": name}}))
        with pytest.raises(KilnError, match="outside"):
            read_hf_weights(folder)
