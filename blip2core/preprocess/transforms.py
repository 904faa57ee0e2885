"""Resizing and normalisation from a ``PreprocessConfig``; nothing here knows any encoder.

Every path produces uint8 [3, S, S] per image and shares one normalisation, so ``exact`` and
``fast`` differ only in how they decode and resize:

- exact: Pillow resize (the filter the config names), as LAVIS' torchvision-on-PIL transforms and
  transformers' ``BlipImageProcessorPil`` / ``CLIPImageProcessor`` do.
- fast: ``torchvision.transforms.v2.functional.resize`` on uint8 tensors with antialias (torch's
  Pillow-style kernels), one call per same-size group.
- train: RandomResizedCrop(S, scale, ratio) + horizontal flip, with parameters drawn from a per-image
  ``torch.Generator`` so results do not depend on thread scheduling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from blip2core.preprocess_config import PreprocessConfig

PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
#: NEAREST_EXACT picks the same pixels as Pillow's NEAREST (plain NEAREST does not)
TORCH_FILTERS = {
    "bicubic": TF.InterpolationMode.BICUBIC,
    "bilinear": TF.InterpolationMode.BILINEAR,
    "nearest": TF.InterpolationMode.NEAREST_EXACT,
    "lanczos": TF.InterpolationMode.LANCZOS,
}


@dataclass(frozen=True)
class Geometry:
    """Where one image goes: resize to (height, width), then crop (top, left) S x S."""

    height: int
    width: int
    top: int
    left: int


def eval_geometry(height: int, width: int, config: PreprocessConfig) -> Geometry:
    """squash: straight to S x S. shortest_edge_crop: short side to floor(S / crop_pct) (long side
    truncated as torchvision's Resize does), then a centre crop rounded as torchvision's CenterCrop."""
    size = config.image_size
    if config.resize_mode == "squash":
        return Geometry(size, size, 0, 0)
    short = math.floor(size / config.crop_pct)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_h, new_w = short, int(short * width / height)
    return Geometry(new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0)))


# ------------------------------------------------------------------------------------- exact
def resize_pil(image: Image.Image, config: PreprocessConfig) -> Image.Image:
    """RGB image -> RGB S x S by the config's resize mode and filter (Pillow)."""
    geo = eval_geometry(image.height, image.width, config)
    if (image.height, image.width) != (geo.height, geo.width):
        image = image.resize((geo.width, geo.height), PIL_FILTERS[config.interpolation])
    size = config.image_size
    if (geo.height, geo.width) != (size, size):
        image = image.crop((geo.left, geo.top, geo.left + size, geo.top + size))
    return image


def train_pil(image: Image.Image, config: PreprocessConfig, crop: "TrainCrop") -> Image.Image:
    """RGB image -> RGB S x S: crop (top, left, h, w), resize, optional mirror (Pillow)."""
    size = config.image_size
    box = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
    image = image.crop(box).resize((size, size), PIL_FILTERS[config.interpolation])
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if crop.flip else image


# -------------------------------------------------------------------------------------- fast
def _resize_tensor(images: torch.Tensor, height: int, width: int, config: PreprocessConfig) -> torch.Tensor:
    if images.shape[-2:] == (height, width):
        return images
    antialias = config.interpolation != "nearest"
    return TF.resize(images, [height, width], interpolation=TORCH_FILTERS[config.interpolation], antialias=antialias)


def resize_tensor(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 [C, H, W] or [B, C, H, W] (one size) -> uint8 [.., C, S, S] by the config."""
    geo = eval_geometry(images.shape[-2], images.shape[-1], config)
    images = _resize_tensor(images, geo.height, geo.width, config)
    size = config.image_size
    return images[..., geo.top : geo.top + size, geo.left : geo.left + size]


def train_tensor(image: torch.Tensor, config: PreprocessConfig, crop: "TrainCrop") -> torch.Tensor:
    """uint8 [C, H, W] -> uint8 [C, S, S]: crop, resize, optional mirror (torch)."""
    size = config.image_size
    image = image[..., crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    image = _resize_tensor(image.contiguous(), size, size, config)
    return image.flip(-1) if crop.flip else image


# ------------------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainCrop:
    """RandomResizedCrop box (top, left, height, width) in source pixels, and the mirror flag."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def sample_train_crop(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
) -> TrainCrop:
    """torchvision's ``RandomResizedCrop.get_params`` (10 tries, then a centre crop), on ``generator``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
            box = (top, left, h, w)
            break
    if box is None:
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    flip = hflip and bool(torch.rand(1, generator=generator).item() < 0.5)
    return TrainCrop(*box, flip=flip)


# ----------------------------------------------------------------------------- normalisation
def normalize(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 [B, 3, S, S] (any device) -> float32 [B, 3, S, S] = (x / 255 - mean) / std.

    float32 x / 255 equals transformers' float64 x * (1/255) cast to float32 for all 256 values,
    and the subtraction / division are IEEE float32 as in numpy and torchvision's Normalize, so the
    result is bit-identical to ``BlipImageProcessorPil`` and to ToTensor + Normalize (LAVIS).
    """
    mean = torch.tensor(config.mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    return images.to(torch.float32).div_(255).sub_(mean).div_(std)


def normalize_into(image: np.ndarray, out: np.ndarray, config: PreprocessConfig) -> None:
    """uint8 [1 or 3, S, S] (any strides) -> ``out`` float32 [3, S, S], the same float32 operations
    as ``normalize``. numpy, so the per-image work of loader threads starts no OpenMP team (small
    torch ops in many threads cost milliseconds each in OpenMP barriers on a busy machine)."""
    np.divide(image, np.float32(255), out=out, dtype=np.float32)
    np.subtract(out, np.asarray(config.mean, dtype=np.float32).reshape(3, 1, 1), out=out)
    np.divide(out, np.asarray(config.std, dtype=np.float32).reshape(3, 1, 1), out=out)


# ------------------------------------------------------------------------ fast-path tolerance
#: |fast - exact| bound in uint8 levels before normalisation (torch's antialiased kernels round a
#: little differently from Pillow's; decoding is identical). Measured on real photos from 64 px to
#: 2048 px, squash and shortest_edge_crop, bicubic and bilinear: max 2 levels. docs/preprocessing.md.
FAST_MAX_LEVEL_DIFF = 2
#: bound of the mean |fast - exact| after normalisation (measured: 2.4e-05 to 1.4e-04).
FAST_MEAN_ABS_DIFF = 2e-4


def fast_tolerance(config: PreprocessConfig) -> tuple[float, float]:
    """(max, mean) bound of |fast - exact| on normalised pixel_values for this config."""
    return FAST_MAX_LEVEL_DIFF / 255 / min(config.std) + 1e-6, FAST_MEAN_ABS_DIFF
