"""eva-vit against transformers' Blip2VisionModel (the oracle), in HF, LAVIS and raw EVA names."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import Blip2VisionConfig, Blip2VisionModel

from blip2core import PreprocessConfig
from blip2core.errors import CheckpointError
from blip2core.plugins import Plugins
from blip2core.preprocess_config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from blip2core.protocols import LoadsForeignCheckpoints, VisionEncoder
from blip2_eva_clip.options import EvaViTOptions
from blip2_eva_clip.plugin import build_eva_vit

SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, patch_size=4, image_size=32)
TOLERANCE = 1e-4


def make_hf(**dims) -> Blip2VisionModel:
    """A Blip2VisionModel with every weight random (biases, LayerNorms and the k third of qkv.bias too)."""
    torch.manual_seed(0)
    model = Blip2VisionModel(Blip2VisionConfig(**dims, qkv_bias=True, initializer_range=0.02)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.normal_(0, 0.05)
    return model


def hf_names(model: Blip2VisionModel) -> dict[str, torch.Tensor]:
    """The keys a Blip2ForConditionalGeneration checkpoint stores for its vision model."""
    return {"vision_model." + k: v.clone() for k, v in model.state_dict().items()}


def lavis_names(model: Blip2VisionModel) -> dict[str, torch.Tensor]:
    """The same weights as LAVIS stores them (written from transformers' conversion table)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key == "embeddings.class_embedding":
            out["visual_encoder.cls_token"] = value
        elif key == "embeddings.position_embedding":
            out["visual_encoder.pos_embed"] = value
        elif key.startswith("embeddings.patch_embedding."):
            out["visual_encoder.patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("post_layernorm."):
            out["ln_vision." + key.rsplit(".", 1)[1]] = value
        else:
            _, _, i, *rest = key.split(".")
            rest = ".".join(rest)
            prefix = f"visual_encoder.blocks.{i}."
            if rest == "self_attn.qkv.bias":
                q, _k, v = value.chunk(3)
                out[prefix + "attn.q_bias"], out[prefix + "attn.v_bias"] = q, v
                continue
            rest = (
                rest.replace("layer_norm1", "norm1")
                .replace("layer_norm2", "norm2")
                .replace("self_attn.qkv", "attn.qkv")
                .replace("self_attn.projection", "attn.proj")
            )
            out[prefix + rest] = value
    return out


@pytest.fixture(scope="module")
def hf_small() -> Blip2VisionModel:
    return make_hf(**SMALL)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def hf_tokens(model: Blip2VisionModel, pixels: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixels, **kwargs).last_hidden_state


def test_hf_layout_matches_blip2_vision_model(hf_small, pixels):
    encoder = build_eva_vit(EvaViTOptions(**SMALL)).eval()
    missing, unexpected = encoder.load_foreign_state_dict(hf_names(hf_small), "hf")
    assert (missing, unexpected) == ([], [])
    with torch.no_grad():
        got = encoder(pixels)
    want = hf_tokens(hf_small, pixels)
    assert got.shape == want.shape == (2, 65, 48)
    assert (got - want).abs().max().item() <= TOLERANCE


def test_lavis_layout_gives_the_same_numbers(hf_small, pixels):
    encoder = build_eva_vit(EvaViTOptions(**SMALL)).eval()
    assert encoder.load_foreign_state_dict(lavis_names(hf_small), "lavis") == ([], [])
    with torch.no_grad():
        got = encoder(pixels)
    assert (got - hf_tokens(hf_small, pixels)).abs().max().item() <= TOLERANCE


def test_weights_files_in_every_layout(hf_small, pixels, tmp_path):
    want = hf_tokens(hf_small, pixels)
    # a full BLIP-2 HF checkpoint: vision keys plus others that belong to other components
    hf_file = tmp_path / "model.safetensors"
    save_file({**hf_names(hf_small), "qformer.layernorm.weight": torch.ones(4)}, str(hf_file))
    # a LAVIS .pth: {"model": state_dict} with Q-Former keys alongside
    lavis_file = tmp_path / "blip2.pth"
    torch.save({"model": {**lavis_names(hf_small), "Qformer.bert.x": torch.ones(2)}, "epoch": 3}, lavis_file)
    # a standalone Blip2VisionModel.save_pretrained folder (keys without vision_model.)
    folder = tmp_path / "hf_vision"
    hf_small.save_pretrained(folder)
    sharded = tmp_path / "hf_sharded"  # model.safetensors.index.json + shards
    hf_small.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for weights in (hf_file, lavis_file, folder, sharded):
        encoder = build_eva_vit(EvaViTOptions(**SMALL, weights=str(weights))).eval()
        with torch.no_grad():
            assert (encoder(pixels) - want).abs().max().item() <= TOLERANCE, weights


def test_raw_eva_layout_drops_extra_block_and_keeps_ln_vision_apart(hf_small, tmp_path):
    lavis = lavis_names(hf_small)
    eva = {k[len("visual_encoder."):]: v for k, v in lavis.items() if k.startswith("visual_encoder.")}
    eva.update({"blocks.2.norm1.weight": torch.ones(48), "norm.weight": torch.ones(48), "head.weight": torch.ones(10, 48)})
    path = tmp_path / "eva_vit_g.safetensors"
    save_file(eva, str(path))
    encoder = build_eva_vit(EvaViTOptions(**SMALL))
    missing, unexpected = encoder.load_weights_file(path, "auto", strict=True)
    assert missing == ["norm.weight", "norm.bias"]  # ln_vision comes from the BLIP-2 checkpoint
    assert unexpected == ["blocks.2.norm1.weight", "head.weight", "norm.weight"]
    assert torch.equal(encoder.norm.weight, torch.ones(48))


def test_real_eva_vit_g_shape_matches_hf():
    dims = dict(hidden_size=1408, num_hidden_layers=1, num_attention_heads=16, intermediate_size=6144,
                patch_size=14, image_size=224)
    hf = make_hf(**dims)
    encoder = build_eva_vit(EvaViTOptions(num_hidden_layers=1)).eval()
    assert encoder.blocks[0].mlp.fc1.out_features == 6144
    assert encoder.blocks[0].attn.num_heads == 16 and encoder.blocks[0].norm1.eps == 1e-6
    assert encoder.load_foreign_state_dict(hf.state_dict(), "hf") == ([], [])
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = encoder(pixels)
    assert got.shape == (1, 257, 1408)
    assert encoder.width == 1408 and encoder.num_tokens == 257
    assert (got - hf_tokens(hf, pixels)).abs().max().item() <= TOLERANCE


def test_default_options_are_blip2s_vit_g():
    options = EvaViTOptions()
    assert (options.hidden_size, options.num_hidden_layers, options.num_attention_heads) == (1408, 39, 16)
    assert (options.intermediate_size, options.patch_size, options.image_size) == (6144, 14, 224)
    assert options.layer_norm_eps == 1e-6 and options.qkv_bias


def test_position_embedding_interpolates_to_a_new_size(hf_small):
    encoder = build_eva_vit(EvaViTOptions(**{**SMALL, "image_size": 48})).eval()
    assert encoder.load_foreign_state_dict(hf_names(hf_small), "hf") == ([], [])
    assert encoder.pos_embed.shape == (1, 1 + 12 * 12, 48)
    assert torch.equal(encoder.pos_embed[0, 0], hf_small.embeddings.position_embedding[0, 0])  # CLS kept
    pixels = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = encoder(pixels)
    want = hf_tokens(hf_small, pixels, interpolate_pos_encoding=True)  # HF's own bicubic resize
    assert got.shape == (1, 145, 48)
    assert (got - want).abs().max().item() <= TOLERANCE
    assert encoder.preprocess_config.image_size == 48


def test_preprocess_config_and_protocols():
    encoder = build_eva_vit(EvaViTOptions(**SMALL))
    assert encoder.preprocess_config == PreprocessConfig(
        image_size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, interpolation="bicubic", resize_mode="squash"
    )
    assert isinstance(encoder, VisionEncoder) and isinstance(encoder, LoadsForeignCheckpoints)
    assert encoder.width == 48


def test_post_layernorm_eps_option():
    assert build_eva_vit(EvaViTOptions(**SMALL)).norm.eps == 1e-6
    assert build_eva_vit(EvaViTOptions(**SMALL, post_layernorm_eps=1e-5)).norm.eps == 1e-5


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        build_eva_vit(EvaViTOptions(**SMALL, weights=str(path)))


def test_wrong_shape_names_file_key_expected_and_found(hf_small, tmp_path):
    state = hf_names(hf_small)
    state["vision_model.encoder.layers.1.mlp.fc1.weight"] = torch.zeros(97, 48)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        build_eva_vit(EvaViTOptions(**SMALL, weights=str(path)))
    message = str(info.value)
    assert "bad.safetensors" in message and "encoder.layers.1.mlp.fc1.weight" in message
    assert "(96, 48)" in message and "(97, 48)" in message


def test_missing_weights_are_an_error_when_strict(hf_small, tmp_path):
    state = hf_names(hf_small)
    del state["vision_model.encoder.layers.0.mlp.fc2.bias"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors.*blocks\.0\.mlp\.fc2\.bias"):
        build_eva_vit(EvaViTOptions(**SMALL, weights=str(path)))
    build_eva_vit(EvaViTOptions(**SMALL, weights=str(path), strict=False))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.ones(1)}, "config": object()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        build_eva_vit(EvaViTOptions(**SMALL, weights=str(path)))


def test_unknown_layout_is_refused(hf_small):
    with pytest.raises(CheckpointError, match="layout"):
        build_eva_vit(EvaViTOptions(**SMALL)).load_foreign_state_dict(hf_names(hf_small), "timm")


def test_discovered_through_entry_point():
    plugins = Plugins()
    info = next(i for i in plugins.infos if i.distribution == "blip2-eva-clip")
    assert info.status == "ok", info.error
    assert {c.name for c in info.components} == {"eva-vit", "open-clip-eva"}
    component = plugins.registry.get("vision_encoder", "eva-vit")
    encoder = component.build({**SMALL})
    assert encoder.width == 48
