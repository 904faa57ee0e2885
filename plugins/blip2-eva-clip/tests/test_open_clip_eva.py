"""open-clip-eva against open_clip itself (the oracle), with a tiny EVA02 model config."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from blip2core.errors import CheckpointError, SpecError
from blip2core.protocols import VisionEncoder
from blip2_eva_clip.open_clip_eva import open_clip_model_config
from blip2_eva_clip.options import OpenClipEvaOptions
from blip2_eva_clip.plugin import build_open_clip_eva

TINY_EVA02 = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_tiny_patch14_224", "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    "custom_text": True,
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A local-dir open_clip model with random weights saved as open_clip_model.safetensors."""
    folder = tmp_path_factory.mktemp("tiny_eva02")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_EVA02, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")
    with torch.no_grad():
        for name, param in model.visual.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.05 * torch.randn_like(param))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def block_outputs(model, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Every trunk block's output, captured with hooks while open_clip encodes the image."""
    outputs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for b in model.visual.trunk.blocks]
    with torch.no_grad():
        model.encode_image(pixels)
    for handle in handles:
        handle.remove()
    return outputs


def test_penultimate_tokens_match_open_clip(tiny_dir):
    oracle = open_clip.create_model(f"local-dir:{tiny_dir}").eval()  # open_clip loads the file itself
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    want = block_outputs(oracle, pixels)
    weights = str(tiny_dir / "open_clip_model.safetensors")
    encoder = build_open_clip_eva(OpenClipEvaOptions(model_name=f"local-dir:{tiny_dir}", pretrained=weights)).eval()
    assert len(encoder.visual.trunk.blocks) == 11  # the 12th block is dropped
    with torch.no_grad():
        got = encoder(pixels)
    assert got.shape == (2, 257, 192) and encoder.width == 192
    assert (got - want[-2]).abs().max().item() <= 1e-4

    last = build_open_clip_eva(
        OpenClipEvaOptions(model_name=f"local-dir:{tiny_dir}", pretrained=weights, layer=-1, final_norm=True)
    ).eval()
    with torch.no_grad():
        normed = oracle.visual.trunk.norm(want[-1])
        assert (last(pixels) - normed).abs().max().item() <= 1e-4


def test_preprocess_and_protocol(tiny_dir):
    encoder = build_open_clip_eva(OpenClipEvaOptions(model_name=f"local-dir:{tiny_dir}", layer=0))
    assert isinstance(encoder, VisionEncoder)
    config = encoder.preprocess_config
    assert config.image_size == 224 and config.resize_mode == "shortest_edge_crop" and config.crop_pct == 1.0
    assert config.interpolation == "bicubic" and config.mean == open_clip.OPENAI_DATASET_MEAN


def test_image_size_override_resamples_position_embedding(tiny_dir):
    weights = str(tiny_dir / "open_clip_model.safetensors")
    encoder = build_open_clip_eva(
        OpenClipEvaOptions(model_name=f"local-dir:{tiny_dir}", pretrained=weights, image_size=112, layer=1)
    ).eval()
    with torch.no_grad():
        tokens = encoder(torch.randn(1, 3, 112, 112))
    assert tokens.shape == (1, 1 + 8 * 8, 192)
    assert encoder.preprocess_config.image_size == 112


def test_builtin_names_resolve_to_timm_eva_towers():
    assert open_clip_model_config("EVA01-g-14")[0]["vision_cfg"]["timm_model_name"] == "eva_giant_patch14_224"
    assert open_clip_model_config("EVA02-L-14")[0]["vision_cfg"]["timm_model_name"].startswith("eva02_large")
    with pytest.raises(SpecError, match="EVA"):
        build_open_clip_eva(OpenClipEvaOptions(model_name="ViT-B-32"))
    with pytest.raises(SpecError, match="unknown open_clip model"):
        build_open_clip_eva(OpenClipEvaOptions(model_name="EVA99"))


def test_bad_weights(tiny_dir, tmp_path):
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        build_open_clip_eva(OpenClipEvaOptions(model_name=f"local-dir:{tiny_dir}", pretrained=str(tmp_path / "missing.safetensors")))
    path = tmp_path / "wrong.safetensors"
    save_file({"visual.trunk.cls_token": torch.zeros(1, 1, 7)}, str(path))
    with pytest.raises(CheckpointError, match=r"wrong\.safetensors.*visual\.trunk\.cls_token.*\(1, 1, 192\).*\(1, 1, 7\)"):
        build_open_clip_eva(OpenClipEvaOptions(model_name=f"local-dir:{tiny_dir}", pretrained=str(path)))
