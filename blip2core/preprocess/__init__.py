"""Image preprocessing that follows each vision encoder's ``PreprocessConfig``.

    from blip2core.preprocess import ImagePreprocessor
    pre = ImagePreprocessor(encoder.preprocess_config, mode="fast")
    pixel_values = pre(["cat.jpg", pil_image, uint8_array])      # [B, 3, S, S] float32
    result = pre.preprocess_batch(many_paths)                    # bad files listed, not raised

Modules: ``sources`` (what an input is, its name, its bytes), ``decode`` (any input -> RGB PIL or
uint8 tensor), ``png`` (the fast path's libspng PNG decoder, optional: pyspng), ``transforms``
(exact / fast / train resizing and normalisation), ``preprocessor``
(the class and ``BatchResult``), ``folder`` (Dataset + DataLoader), ``plugin`` (registers ``standard``).
See docs/preprocessing.md.

The heavy modules (torchvision, DataLoader, tqdm) load on first use, so plugin discovery, which
imports ``blip2core.preprocess.plugin``, stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from blip2core.preprocess.errors import BatchLoadError, ImageLoadError, ImageTooLargeError
from blip2core.preprocess.options import DEFAULT_MAX_IMAGE_PIXELS, PreprocessOptions

_LAZY = {
    "BatchResult": "preprocessor",
    "Failure": "preprocessor",
    "ImagePreprocessor": "preprocessor",
    "build_standard_preprocessor": "preprocessor",
    "IMAGE_EXTENSIONS": "folder",
    "BatchCollator": "folder",
    "ImageFolderDataset": "folder",
    "folder_loader": "folder",
    "iter_folder": "folder",
    "list_images": "folder",
}

__all__ = [
    "BatchCollator",
    "BatchLoadError",
    "BatchResult",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "Failure",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageLoadError",
    "ImagePreprocessor",
    "ImageTooLargeError",
    "PreprocessOptions",
    "build_standard_preprocessor",
    "folder_loader",
    "iter_folder",
    "list_images",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
