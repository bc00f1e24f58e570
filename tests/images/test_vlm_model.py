"""The image+text decoder: caption positions see the image, stay causal, and without images it is
the decoder; the ViT encoder's blocks are among those FSDP wraps."""

import pytest
import torch

from kiln.models.build import build_model
from kiln.models.config import ModelConfig, VisionConfig
from kiln.models.decoder import Decoder

IMAGE = 5


def _model(encoder="linear"):
    torch.manual_seed(0)
    cfg = ModelConfig(
        family="vlm", vocab_size=64, dim=32, num_layers=2, num_heads=2, max_seq_len=32,
        vision=VisionConfig(image_size=16, patch_size=8, encoder=encoder, encoder_layers=1),
    )  # fmt: skip
    return build_model(cfg, torch.device("cpu")), cfg


def _tokens():
    # bos, start, 4 patches, end, caption
    return torch.tensor([[1, 6, IMAGE, IMAGE, IMAGE, IMAGE, 7, 20, 21, 22, 23, 24]])


@pytest.mark.parametrize("encoder", ["linear", "vit"])
def test_caption_logits_depend_on_the_image_and_not_on_the_future(encoder):
    model, _ = _model(encoder)
    tokens = _tokens()
    mask = tokens == IMAGE
    a = torch.randint(0, 256, (1, 1, 16, 16, 3), dtype=torch.uint8)
    b = torch.randint(0, 256, (1, 1, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        la = model(tokens, images=a, image_mask=mask)
        lb = model(tokens, images=b, image_mask=mask)
        assert not torch.allclose(la[:, 7:], lb[:, 7:], atol=1e-4)  # the caption sees the image
        assert torch.equal(la[:, :1], lb[:, :1])  # the position before the image does not
        later = tokens.clone()
        later[0, 10:] = 40
        lc = model(later, images=a, image_mask=mask)
        assert torch.allclose(la[:, :10], lc[:, :10], atol=1e-6)  # causal


def test_without_images_it_is_the_decoder():
    model, cfg = _model()
    plain = Decoder(cfg)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("vision.")})
    tokens = torch.randint(8, 64, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(tokens), plain(tokens))
    assert model.repeated_blocks() == [model.blocks]
    vit, _ = _model("vit")
    assert any(blocks is vit.vision.blocks for blocks in vit.repeated_blocks())


def test_rows_with_fewer_images_take_only_theirs():
    model, _ = _model()
    tokens = torch.cat([_tokens(), torch.tensor([[1, 30, 31, 32, 33, 34, 35, 20, 21, 22, 23, 24]])])
    images = torch.randint(0, 256, (2, 1, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        both = model(tokens, images=images, image_mask=tokens == IMAGE)
        alone = model(tokens[:1], images=images[:1], image_mask=tokens[:1] == IMAGE)
        text = model(tokens[1:])
    assert torch.allclose(both[:1], alone, atol=1e-5) and torch.allclose(both[1:], text, atol=1e-5)
