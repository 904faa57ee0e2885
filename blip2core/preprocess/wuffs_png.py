"""Opaque 8-bit PNG decoding for the fast path with Wuffs, from the optional ``pywuffs`` package.

Wuffs (Google's memory-safe decoder library) inflates and unfilters a PNG in about 0.66x libspng's
time (its own inflate and filter code; libspng spends most of its time in zlib; measured by
benchmarks/png_decoders.py), releases the GIL, and cannot overflow a buffer by construction. ``png.decode_png`` gives it only the PNGs whose
pixels are plain 8-bit samples with nothing to composite or reinterpret: grey at 1/2/4/8 bits, RGB
at 8 bits and palette images, all without tRNS, after ``png._plain_layout`` has sent EXIF, APNG and
misplaced PLTE / tRNS chunks to Pillow, and ``png.chunks_intact`` has checked every chunk CRC.
Anything else, and any file Wuffs reports an error for, goes on to libspng (then Pillow). Wuffs does
not check the zlib stream's Adler-32: the one case where ``fast`` and ``exact`` disagree on a
damaged file (docs/preprocessing.md, "Damaged files").
"""

from __future__ import annotations

import numpy as np

try:  # optional: without it libspng (or Pillow) decodes every PNG
    from pywuffs import ImageDecoderType, PixelFormat
    from pywuffs.aux import ImageDecoder, ImageDecoderConfig
except ImportError:  # pragma: no cover - exercised by monkeypatching _AVAILABLE in the tests
    ImageDecoder = None

_AVAILABLE = ImageDecoder is not None


def available() -> bool:
    """True when pywuffs is installed and the fast path decodes opaque 8-bit PNGs with it."""
    return _AVAILABLE


def describe() -> str:
    if not _AVAILABLE:
        return "not installed"
    try:
        from importlib.metadata import version

        return f"Wuffs (pywuffs {version('pywuffs')})"
    except Exception:
        return "Wuffs (pywuffs)"


def _decoder(grey: bool) -> "ImageDecoder":
    """A new decoder (about 2 us: cheaper than sharing one between threads, which Wuffs does not allow)."""
    config = ImageDecoderConfig()
    config.enabled_decoders = [ImageDecoderType.PNG]
    config.pixel_format = PixelFormat.Y if grey else PixelFormat.RGB
    return ImageDecoder(config)


def decode_opaque(data: bytes, grey: bool, width: int, height: int) -> np.ndarray | None:
    """An opaque 8-bit-or-less PNG -> uint8 [H, W, 1] (``grey``) or [H, W, 3], or None when Wuffs
    reports an error or gives an image of another size (the caller then tries libspng / Pillow).

    ``width`` / ``height``: the IHDR size the caller has checked against ``max_image_pixels``.
    """
    if not _AVAILABLE:
        return None
    result = _decoder(grey).decode(data)
    if result.error_message:
        return None
    pixels = result.pixbuf
    channels = 1 if grey else 3
    if pixels.dtype != np.uint8 or pixels.shape != (height, width, channels):
        return None
    return pixels
