"""The ``timm`` encoder: token shapes for a ViT and a CNN, checked against timm itself."""

from __future__ import annotations

import pytest
import timm
import timm.data
import torch
from safetensors.torch import save_file

from blip2core.errors import CheckpointError, SpecError
from blip2core.plugins import Plugins
from blip2core.protocols import LoadsForeignCheckpoints, VisionEncoder
from blip2_timm.options import TimmOptions
from blip2_timm.plugin import build_timm

SMALL_VIT = dict(patch_size=8, embed_dim=32, depth=2, num_heads=4)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """(path, model): a small timm ViT at 32 px with random weights, saved with its classifier."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10, **SMALL_VIT).eval()
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_vit_tokens_match_forward_features(vit_file):
    path, model = vit_file
    options = TimmOptions(model_name="vit_tiny_patch16_224", checkpoint_path=str(path), image_size=32, model_kwargs=SMALL_VIT)
    encoder = build_timm(options).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = encoder(pixels)
        want = model.forward_features(pixels)
    assert tokens.shape == (2, 1 + 4 * 4, 32) and encoder.width == 32
    assert (tokens - want).abs().max().item() <= 1e-5
    assert isinstance(encoder, VisionEncoder) and isinstance(encoder, LoadsForeignCheckpoints)
    config = encoder.preprocess_config  # from timm's pretrained_cfg for this architecture
    assert (config.image_size, config.mean, config.crop_pct, config.resize_mode) == (
        32, (0.5, 0.5, 0.5), 0.9, "shortest_edge_crop")


def test_vit_drop_prefix_tokens(vit_file):
    path, model = vit_file
    options = TimmOptions(model_name="vit_tiny_patch16_224", checkpoint_path=str(path), image_size=32,
                          model_kwargs=SMALL_VIT, drop_prefix_tokens=True)
    encoder = build_timm(options).eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (encoder(pixels) - model.forward_features(pixels)[:, 1:]).abs().max().item() <= 1e-5


def test_vit_checkpoint_at_another_size_is_resampled_by_timm(vit_file):
    path, model = vit_file
    options = TimmOptions(model_name="vit_tiny_patch16_224", checkpoint_path=str(path), image_size=48, model_kwargs=SMALL_VIT)
    encoder = build_timm(options).eval()
    assert encoder.trunk.pos_embed.shape == (1, 1 + 6 * 6, 32)
    assert torch.equal(encoder.trunk.pos_embed[0, 0], model.pos_embed[0, 0])
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 48, 48)).shape == (1, 37, 32)


def test_cnn_feature_map_becomes_h_times_w_tokens(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    encoder = build_timm(TimmOptions(model_name="resnet18", checkpoint_path=str(path))).eval()
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = encoder(pixels)
        feature_map = model.forward_features(pixels)  # [1, 512, 7, 7]
    assert tokens.shape == (1, 49, 512) and encoder.width == 512
    assert torch.allclose(tokens, feature_map.flatten(2).transpose(1, 2), atol=1e-5)
    assert torch.allclose(tokens[0, 8], feature_map[0, :, 1, 1], atol=1e-5)  # row-major: token 8 = (1, 1)
    timm_eval = timm.data.resolve_data_config({}, model=model)  # resnet18.a1_in1k: crop_pct 0.95, bicubic
    config = encoder.preprocess_config
    assert (config.image_size, config.crop_pct, config.interpolation, config.mean) == (
        224, timm_eval["crop_pct"], timm_eval["interpolation"], timm_eval["mean"])
    missing, unexpected = encoder.load_foreign_state_dict(model.state_dict(), "timm")
    assert missing == [] and unexpected == ["fc.bias", "fc.weight"]


def test_cnn_random_init_other_size():
    encoder = build_timm(TimmOptions(model_name="resnet18", image_size=64)).eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 64, 64)).shape == (1, 4, 512)
    assert encoder.preprocess_config.image_size == 64


def test_bad_inputs(vit_file, tmp_path):
    path, model = vit_file
    with pytest.raises(CheckpointError, match="nothing.pth"):
        build_timm(TimmOptions(model_name="resnet18", checkpoint_path=str(tmp_path / "nothing.pth")))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(128, 31)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    options = TimmOptions(model_name="vit_tiny_patch16_224", checkpoint_path=str(bad), image_size=32, model_kwargs=SMALL_VIT)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*blocks\.1\.mlp\.fc1\.weight.*\(128, 32\).*\(128, 31\)"):
        build_timm(options)
    with pytest.raises(SpecError, match="unknown timm model"):
        build_timm(TimmOptions(model_name="no_such_net"))


def test_discovered_through_entry_point():
    info = next(i for i in Plugins().infos if i.distribution == "blip2-timm")
    assert info.status == "ok", info.error
    assert {c.name for c in info.components} == {"timm", "efficientnet-lite0"}
