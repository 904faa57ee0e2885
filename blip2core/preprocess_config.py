"""How a vision encoder wants its images prepared.

Every encoder declares one of these next to its definition (as timm does), and every
preprocessor follows it, so the core never needs per-encoder image code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: mean / std of OpenAI CLIP and EVA-CLIP (what BLIP-2 uses).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: mean / std of ImageNet-trained torchvision / timm models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos"]
ResizeMode = Literal["squash", "shortest_edge_crop"]


class PreprocessConfig(BaseModel):
    """Input contract of a vision encoder.

    Attributes:
        image_size: side length S of the square input; pixel_values are [B, 3, S, S].
        mean, std: per-channel normalisation applied after scaling pixels to [0, 1].
        interpolation: resampling filter of the resize.
        resize_mode: ``"squash"`` resizes straight to S x S (BLIP-2, LAVIS, HF BlipImageProcessor);
            ``"shortest_edge_crop"`` resizes the short side to ``S / crop_pct`` then centre-crops S x S
            (CLIP, timm eval transforms).
        crop_pct: only for ``shortest_edge_crop``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(224, gt=0)
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: Interpolation = "bicubic"
    resize_mode: ResizeMode = "squash"
    crop_pct: float = Field(1.0, gt=0, le=1)

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in value):
            raise ValueError(f"every std must be > 0, got {value}")
        return value
