"""Options of the ``standard`` preprocessor (what a pipeline spec may set under ``preprocessor.options``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Pillow's own default for ``Image.MAX_IMAGE_PIXELS`` (~89.5 megapixels).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
#: the largest encoded image (file, file object, download) read into memory: 256 MiB.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
#: the options that change the pixel_values an image gives (the others say what is accepted, how fast)
PIXEL_OPTIONS = ("mode", "background", "exif_transpose")


class PreprocessOptions(BaseModel):
    """How images are read and which numeric path prepares them.

    Attributes:
        mode: ``"exact"`` decodes and resizes with Pillow and reproduces transformers'
            ``BlipImageProcessorPil`` / LAVIS numbers; ``"fast"`` decodes JPEG with torchvision.io
            (libjpeg-turbo) and PNG with libspng (the optional pyspng package; Pillow without it),
            both giving Pillow's pixels, and resizes uint8 tensors with torch (within the
            tolerance in docs/preprocessing.md).
        max_image_pixels: width x height above which an image is refused before it is decoded
            (a decompression bomb guard); ``None`` turns this check off. Pillow's own guard
            (``PIL.Image.MAX_IMAGE_PIXELS``, errors at twice it) still applies when Pillow opens a file.
        max_file_bytes: the largest encoded image read: a file, a file object or a download over
            it is refused (a file from its size, before reading) instead of filling memory.
        background: RGB colour transparent pixels are composited on.
        exif_transpose: rotate / mirror images as their EXIF orientation tag says.
        num_threads: threads that load and resize the images of one batch; 0 = min(8, CPU count);
            1 = in the calling thread.
        allow_urls: accept ``http://`` / ``https://`` strings and download them.
        url_timeout: seconds to wait for a download.
        train_scale: RandomResizedCrop area fraction range used when ``train=True``.
        train_ratio: RandomResizedCrop aspect-ratio range used when ``train=True``.
        train_hflip: flip horizontally with probability 0.5 when ``train=True``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["exact", "fast"] = "exact"
    max_image_pixels: int | None = Field(DEFAULT_MAX_IMAGE_PIXELS, gt=0)
    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, gt=0)
    background: tuple[int, int, int] = (255, 255, 255)
    exif_transpose: bool = True
    num_threads: int = Field(0, ge=0)
    allow_urls: bool = True
    url_timeout: float = Field(10.0, gt=0)
    train_scale: tuple[float, float] = (0.5, 1.0)
    train_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    train_hflip: bool = True

    @field_validator("background")
    @classmethod
    def _background_in_range(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= v <= 255 for v in value):
            raise ValueError(f"every background channel must be in 0..255, got {value}")
        return value

    @model_validator(mode="after")
    def _ranges_ordered(self) -> "PreprocessOptions":
        low, high = self.train_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"train_scale must satisfy 0 < low <= high <= 1, got {self.train_scale}")
        low, high = self.train_ratio
        if not 0 < low <= high:
            raise ValueError(f"train_ratio must satisfy 0 < low <= high, got {self.train_ratio}")
        return self
