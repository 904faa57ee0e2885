"""hf-clip-vision against transformers' CLIPVisionModel hidden states (the oracle)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from blip2core.errors import CheckpointError
from blip2core.protocols import VisionEncoder
from blip2_clip_vit.options import HFClipVisionOptions
from blip2_clip_vit.plugin import build_hf_clip_vision

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, patch_size=8,
             image_size=32, initializer_range=0.02)


@pytest.fixture(scope="module")
def hf_model() -> CLIPVisionModel:
    torch.manual_seed(0)
    model = CLIPVisionModel(CLIPVisionConfig(**SMALL)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.05 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def hidden_states(model: CLIPVisionModel, pixels: torch.Tensor, **kwargs) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True, **kwargs).hidden_states


def test_folder_penultimate_matches_hidden_states(hf_model, pixels, tmp_path):
    hf_model.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    encoder = build_hf_clip_vision(HFClipVisionOptions(model_path=str(tmp_path)))
    assert len(encoder.model.encoder.layers) == 2
    with torch.no_grad():
        got = encoder(pixels)
    want = hidden_states(hf_model, pixels)[-2]
    assert got.shape == (2, 17, 32) and encoder.width == 32
    assert (got - want).abs().max().item() <= 1e-5
    config = encoder.preprocess_config
    assert (config.image_size, config.resize_mode, config.interpolation) == (32, "shortest_edge_crop", "bicubic")
    assert config.crop_pct == pytest.approx(32 / 36)


def test_full_clip_model_folder(tmp_path, pixels):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=SMALL, text_config=dict(hidden_size=16, num_hidden_layers=1,
                                                                      num_attention_heads=2, intermediate_size=32)))
    clip.save_pretrained(tmp_path)
    encoder = build_hf_clip_vision(HFClipVisionOptions(model_path=str(tmp_path), layer=-1, final_norm=True))
    with torch.no_grad():
        want = clip.vision_model.post_layernorm(clip.vision_model(pixel_values=pixels).last_hidden_state)
        assert (encoder(pixels) - want).abs().max().item() <= 1e-5


def test_config_and_foreign_state_dict(hf_model, pixels):
    encoder = build_hf_clip_vision(HFClipVisionOptions(config=SMALL, layer=0))
    state = {"vision_model." + k: v for k, v in hf_model.state_dict().items()}
    missing, unexpected = encoder.load_foreign_state_dict(state, "hf")
    assert missing == []
    assert unexpected == sorted(k for k in state if ".layers.1." in k or ".layers.2." in k)
    with torch.no_grad():
        assert (encoder(pixels) - hidden_states(hf_model, pixels)[1]).abs().max().item() <= 1e-5
    assert isinstance(encoder, VisionEncoder)


def test_image_size_override_interpolates(hf_model):
    encoder = build_hf_clip_vision(HFClipVisionOptions(config=SMALL, image_size=48))
    encoder.load_foreign_state_dict(hf_model.state_dict(), "hf")
    pixels = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        got = encoder(pixels)
    assert got.shape == (1, 37, 32)
    assert (got - hidden_states(hf_model, pixels, interpolate_pos_encoding=True)[-2]).abs().max().item() <= 1e-5
    assert encoder.preprocess_config.image_size == 48


def test_bad_inputs(tmp_path, hf_model):
    with pytest.raises(CheckpointError, match="no config.json"):
        build_hf_clip_vision(HFClipVisionOptions(model_path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="exactly one"):
        HFClipVisionOptions()
    encoder = build_hf_clip_vision(HFClipVisionOptions(config=SMALL))
    state = dict(hf_model.state_dict())
    state["encoder.layers.0.mlp.fc1.weight"] = torch.zeros(65, 32)
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.0\.mlp\.fc1\.weight.*\(64, 32\).*\(65, 32\)"):
        encoder.load_foreign_state_dict(state, "hf")
