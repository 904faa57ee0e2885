"""Inputs -> pixel_values through the pipeline's preprocessor (``blip2core.preprocess``).

Accepted, alone or mixed in a list: file paths, ``bytes``, binary file objects, PIL images, numpy
arrays and torch tensors (see ``blip2core.preprocess.sources``; a 4-D array / tensor counts as a
batch). A tensor is an *image* here (uint8, or float intensities in [0, 1]), not normalised
pixel_values: functions that take pixel_values say so in their names (``*_pixels``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from blip2core.errors import Blip2Error
from blip2core.protocols import BatchPreprocessor, Preprocessor

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline
    from blip2core.preprocess import BatchResult


def _preprocessor(pipe: Pipeline) -> Preprocessor:
    if pipe.preprocessor is None:
        raise Blip2Error(
            "this pipeline has no preprocessor (no 'standard' component registered and none in its spec): "
            "pass pixel_values to the *_pixels functions instead of images"
        )
    return pipe.preprocessor


def load_images(pipe: Pipeline, images: Any) -> torch.Tensor:
    """images -> pixel_values [B, 3, S, S] float32 (on the CPU).

    Raises:
        ValueError: no images given.
        ImageLoadError: an input could not be read; the error names it (``BatchLoadError``
            lists every bad input of the batch).
    """
    if images is None or (isinstance(images, (list, tuple)) and len(images) == 0):
        raise ValueError("no images given")
    pixel_values = _preprocessor(pipe)(images)
    if pixel_values.shape[0] == 0:
        raise ValueError("no images given")
    return pixel_values


def load_batch(pipe: Pipeline, images: Any) -> BatchResult:
    """Like ``load_images`` but bad inputs are listed (``result.failures``: index, name, message)
    instead of raised; ``result.pixel_values`` [G, 3, S, S] holds the G good ones. A preprocessor
    without ``blip2core.protocols.BatchPreprocessor`` loads all or nothing (its error is raised)."""
    preprocessor = _preprocessor(pipe)
    if isinstance(preprocessor, BatchPreprocessor):
        return preprocessor.preprocess_batch(images)
    from blip2core.preprocess import BatchResult

    values = preprocessor(images)
    count = values.shape[0]
    return BatchResult(values, list(range(count)), [f"item {i}" for i in range(count)], [])


def check_pixel_values(pipe: Pipeline, pixel_values: Any, what: str = "pixel_values") -> torch.Tensor:
    """pixel_values must be a float tensor [B, 3, S, S] with B >= 1; returns it."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [B, 3, S, S], got {type(pixel_values).__name__}")
    if pixel_values.dim() == 3:
        pixel_values = pixel_values.unsqueeze(0)
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or pixel_values.shape[0] == 0:
        raise ValueError(f"{what} must be [B, 3, S, S] with B >= 1, got {list(pixel_values.shape)}")
    if not pixel_values.is_floating_point():
        raise TypeError(f"{what} must be floating point (normalised by the preprocessor), got {pixel_values.dtype}")
    return pixel_values
