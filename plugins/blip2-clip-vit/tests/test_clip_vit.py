"""clip-vit against open_clip itself (the oracle) with random weights and small configs."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from blip2core.errors import CheckpointError, SpecError
from blip2core.plugins import Plugins
from blip2core.protocols import LoadsForeignCheckpoints, VisionEncoder
from blip2_clip_vit.options import ClipViTOptions
from blip2_clip_vit.plugin import build_clip_vit

TINY_VIT = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(local-dir folder, open_clip model) with random weights saved as open_clip_model.safetensors."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_VIT}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")
    with torch.no_grad():
        for name, param in model.visual.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                param.add_(0.05 * torch.randn_like(param))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    oracle = open_clip.create_model(f"local-dir:{folder}").eval()  # open_clip loads the file itself
    return folder, oracle


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def block_outputs(model, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Every resblock's output (batch first), captured with hooks while open_clip encodes the image."""
    outputs: list[torch.Tensor] = []
    blocks = model.visual.transformer.resblocks
    handles = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for b in blocks]
    with torch.no_grad():
        model.encode_image(pixels)
    for handle in handles:
        handle.remove()
    batch_first = model.visual.transformer.batch_first
    return [o if batch_first else o.transpose(0, 1) for o in outputs]


def weights_file(tiny) -> str:
    return str(tiny[0] / "open_clip_model.safetensors")


def test_penultimate_layer_matches_open_clip(tiny, pixels):
    folder, oracle = tiny
    want = block_outputs(oracle, pixels)
    encoder = build_clip_vit(ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=weights_file(tiny))).eval()
    assert len(encoder.visual.transformer.resblocks) == 3  # 3 of 4 blocks built
    with torch.no_grad():
        got = encoder(pixels)
    assert got.shape == (2, 1 + 4 * 4, 64) and encoder.width == 64
    assert (got - want[-2]).abs().max().item() <= 1e-5


def test_last_layer_with_ln_post(tiny, pixels):
    folder, oracle = tiny
    want = block_outputs(oracle, pixels)[-1]
    options = ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=weights_file(tiny), layer=-1, final_norm=True)
    encoder = build_clip_vit(options).eval()
    with torch.no_grad():
        assert (encoder(pixels) - oracle.visual.ln_post(want)).abs().max().item() <= 1e-5


def test_lavis_layout_with_ln_vision(tiny, pixels, tmp_path):
    folder, oracle = tiny
    want = block_outputs(oracle, pixels)[-2]
    visual = {k[len("visual."):]: v for k, v in oracle.state_dict().items() if k.startswith("visual.")}
    ln_weight, ln_bias = 1 + 0.1 * torch.randn(64), 0.1 * torch.randn(64)
    lavis = {"visual_encoder." + k: v for k, v in visual.items() if not k.startswith(("ln_post", "proj"))}
    lavis.update({"ln_vision.weight": ln_weight, "ln_vision.bias": ln_bias, "Qformer.x": torch.ones(1)})
    path = tmp_path / "blip2_vit_l.pth"
    torch.save({"model": lavis}, path)
    options = ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=str(path), ln_vision=True)
    encoder = build_clip_vit(options).eval()
    expected = torch.nn.functional.layer_norm(want, (64,), ln_weight, ln_bias, eps=1e-5)
    with torch.no_grad():
        assert (encoder(pixels) - expected).abs().max().item() <= 1e-5
    # a bare tower file (LAVIS clip_vit_L.pth) loads too
    bare = tmp_path / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in visual.items()}, str(bare))
    encoder = build_clip_vit(ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=str(bare))).eval()
    with torch.no_grad():
        assert (encoder(pixels) - want).abs().max().item() <= 1e-5


def test_image_size_override_resamples_positions(tiny):
    folder, oracle = tiny
    options = ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=weights_file(tiny), image_size=48)
    encoder = build_clip_vit(options).eval()
    assert encoder.visual.positional_embedding.shape == (1 + 6 * 6, 64)
    assert torch.equal(encoder.visual.positional_embedding[0], oracle.visual.positional_embedding[0])
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 48, 48)).shape == (1, 37, 64)
    assert encoder.preprocess_config.image_size == 48


def test_blip2_vit_l_real_shape():
    """ViT-L/14 at its real width (only blocks 0..1 built, so this stays cheap)."""
    encoder = build_clip_vit(ClipViTOptions(model_name="ViT-L-14", layer=1)).eval()
    with torch.no_grad():
        tokens = encoder(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 257, 1024) and encoder.width == 1024
    config = encoder.preprocess_config
    assert (config.image_size, config.resize_mode, config.crop_pct, config.interpolation) == (
        224, "shortest_edge_crop", 1.0, "bicubic")
    assert config.mean == open_clip.OPENAI_DATASET_MEAN and config.std == open_clip.OPENAI_DATASET_STD
    assert isinstance(encoder, VisionEncoder) and isinstance(encoder, LoadsForeignCheckpoints)


def test_layer_out_of_range_and_non_vit_towers():
    with pytest.raises(SpecError, match="out of range"):
        build_clip_vit(ClipViTOptions(model_name="ViT-B-32", layer=12))
    with pytest.raises(SpecError, match="open-clip-eva"):
        build_clip_vit(ClipViTOptions(model_name="EVA02-B-16"))


def test_bad_weights(tiny, tmp_path):
    folder, _ = tiny
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        build_clip_vit(ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=str(tmp_path / "absent.safetensors")))
    path = tmp_path / "wrong.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(64, 3, 4, 4)}, str(path))
    with pytest.raises(CheckpointError, match=r"wrong\.safetensors.*visual\.conv1\.weight.*\(64, 3, 8, 8\).*\(64, 3, 4, 4\)"):
        build_clip_vit(ClipViTOptions(model_name=f"local-dir:{folder}", pretrained=str(path)))


def test_discovered_through_entry_point():
    info = next(i for i in Plugins().infos if i.distribution == "blip2-clip-vit")
    assert info.status == "ok", info.error
    assert {c.name for c in info.components} == {"clip-vit", "hf-clip-vision"}
