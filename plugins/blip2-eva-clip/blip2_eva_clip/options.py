"""Options of the EVA components (pydantic only: importing this module is cheap)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EvaViTOptions(BaseModel):
    """Options of ``eva-vit``: EVA ViT-g/14 as BLIP-2 uses it. Names follow HF ``Blip2VisionConfig``.

    Attributes:
        image_size: input side S. Weights trained at another size get their position embedding
            interpolated (bicubic, CLS kept), as LAVIS does for 364 px COCO fine-tuning.
        patch_size: P; the encoder returns 1 + (S/P)^2 tokens (257 at 224 px).
        hidden_size: C, the token width (1408 for ViT-g).
        num_hidden_layers: transformer blocks kept (BLIP-2 keeps 39 of EVA's 40).
        num_attention_heads: heads per block (16: head dim 88).
        intermediate_size: MLP hidden width (6144).
        layer_norm_eps: epsilon of every block LayerNorm (1e-6).
        post_layernorm_eps: epsilon of the final LayerNorm (LAVIS ``ln_vision``, HF ``post_layernorm``);
            None uses ``layer_norm_eps`` as HF does (LAVIS itself uses torch's default 1e-5).
        qkv_bias: q and v biases in attention (no k bias, as in EVA).
        weights: a weights file (``.safetensors``, or ``.pth``/``.bin`` read with ``weights_only=True``)
            or a Hugging Face model folder, in HF (``vision_model.*``), LAVIS (``visual_encoder.*`` +
            ``ln_vision.*``) or raw EVA (``blocks.*`` / ``visual.blocks.*``) names. Other keys in the
            file (Q-Former, LLM, text tower) are ignored. None keeps random weights.
        weights_layout: key layout of ``weights``; "auto" tells them apart by their names.
        strict: fail when ``weights`` leaves a parameter unset. Raw EVA files carry no
            ``ln_vision``, so with layout "eva" the final LayerNorm may stay at identity.
    """

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(224, gt=0)
    patch_size: int = Field(14, gt=0)
    hidden_size: int = Field(1408, gt=0)
    num_hidden_layers: int = Field(39, ge=1)
    num_attention_heads: int = Field(16, gt=0)
    intermediate_size: int = Field(6144, gt=0)
    layer_norm_eps: float = Field(1e-6, gt=0)
    post_layernorm_eps: float | None = Field(None, gt=0)
    qkv_bias: bool = True
    weights: str | None = None
    weights_layout: Literal["auto", "hf", "lavis", "eva"] = "auto"
    strict: bool = True

    @model_validator(mode="after")
    def _check_shapes(self) -> "EvaViTOptions":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        return self


class OpenClipEvaOptions(BaseModel):
    """Options of ``open-clip-eva``: the timm EVA tower of an open_clip EVA model, as tokens.

    Attributes:
        model_name: an open_clip model name whose vision tower is a timm EVA (``EVA01-g-14``,
            ``EVA01-g-14-plus``, ``EVA02-B-16``, ``EVA02-L-14``, ``EVA02-L-14-336``, ``EVA02-E-14``, ...)
            or ``local-dir:/path`` to a folder with an ``open_clip_config.json``. Built without
            downloading anything (pretrained=None).
        pretrained: a local open_clip weights file (``open_clip_model.safetensors``,
            ``open_clip_pytorch_model.bin``, a training checkpoint) with ``visual.*`` keys, or a
            vision-only file with ``trunk.*`` keys. None keeps random weights.
        image_size: input side S; default: the model config's. Position embeddings are interpolated.
        layer: index of the block whose output tokens are returned; negative counts from the end
            (-1: last block, -2: penultimate, BLIP-2's choice). Later blocks are dropped.
        final_norm: apply the tower's final LayerNorm to those tokens.
        strict: fail when ``pretrained`` leaves a parameter unset.
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = "EVA01-g-14"
    pretrained: str | None = None
    image_size: int | None = Field(None, gt=0)
    layer: int = -2
    final_norm: bool = False
    strict: bool = True
