"""Options of the CLIP ViT components (pydantic only: importing this module is cheap)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ClipViTOptions(BaseModel):
    """Options of ``clip-vit``: an open_clip ViT vision tower, as the tokens of one block.

    Attributes:
        model_name: an open_clip model whose vision tower is open_clip's own ViT (``ViT-B-16``,
            ``ViT-L-14``, ``ViT-L-14-quickgelu`` for OpenAI weights, ``ViT-L-14-336``, ``ViT-g-14``, ...)
            or ``local-dir:/path`` to a folder with an ``open_clip_config.json``. Nothing is downloaded.
        pretrained: a local weights file: open_clip / OpenAI names (``visual.*``, text tower ignored),
            a bare tower (``conv1.weight``, ``transformer.resblocks.*``: LAVIS ``clip_vit_L.pth``), or a
            LAVIS BLIP-2 checkpoint (``visual_encoder.*`` and ``ln_vision.*``). None keeps random weights.
        image_size: input side S; default: the config's. Position embeddings are interpolated (bicubic).
        layer: index of the block whose output tokens are returned; negative counts from the end
            (-1: last block; -2: penultimate, BLIP-2's ViT-L variant keeps 23 of 24 blocks). Later
            blocks are never built.
        final_norm: apply the tower's ``ln_post`` to the returned tokens.
        ln_vision: add BLIP-2's extra LayerNorm after the tokens (LAVIS ``ln_vision``, eps 1e-5, run
            in float32); its weights come from a LAVIS checkpoint.
        quick_gelu: force QuickGELU (True, OpenAI-trained weights) or GELU (False); None follows the config.
        strict: fail when ``pretrained`` leaves a parameter unset.
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = "ViT-L-14"
    pretrained: str | None = None
    image_size: int | None = Field(None, gt=0)
    layer: int = -2
    final_norm: bool = False
    ln_vision: bool = False
    quick_gelu: bool | None = None
    strict: bool = True


class HFClipVisionOptions(BaseModel):
    """Options of ``hf-clip-vision``: transformers ``CLIPVisionModel``, as the tokens of one layer.

    Attributes:
        model_path: a local Hugging Face folder (a ``CLIPVisionModel`` or a full ``CLIPModel``, e.g.
            a copy of openai/clip-vit-large-patch14); its ``preprocessor_config.json`` sets the
            preprocessing when present.
        config: ``CLIPVisionConfig`` fields for a randomly initialised model (when no ``model_path``);
            a numeric string (YAML's ``1e-5``) becomes a number, an unknown key is an error.
        image_size: input side S when it differs from the model's; position embeddings are
            interpolated at run time (HF ``interpolate_pos_encoding``).
        layer: index of the encoder layer whose output tokens are returned; negative counts from the
            end (-1: last, -2: penultimate = ``hidden_states[-2]``, as BLIP-2 and LLaVA use). Later
            layers are removed.
        final_norm: apply the model's ``post_layernorm`` to the returned tokens.
    """

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    config: dict[str, Any] | None = None
    image_size: int | None = Field(None, gt=0)
    layer: int = -2
    final_norm: bool = False

    @field_validator("config")
    @classmethod
    def _config_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        from blip2core.plugin_api import check_config_fields, import_config_class  # transformers, torch: only now

        return check_config_fields(import_config_class("transformers.CLIPVisionConfig"), value)

    @model_validator(mode="after")
    def _one_source(self) -> "HFClipVisionOptions":
        if (self.model_path is None) == (self.config is None):
            raise ValueError("set exactly one of model_path (a local HF folder) or config (random weights)")
        return self
