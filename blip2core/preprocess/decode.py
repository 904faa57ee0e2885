"""Image loading: any input -> an RGB ``PIL.Image`` (exact path) or a uint8 tensor (fast path).

Both paths apply the same rules, so they see the same pixels before resizing:

- EXIF orientation is applied (``exif_transpose``).
- Transparency (RGBA, LA, PA, P or L/RGB with a ``transparency`` key) is composited on
  ``background`` exactly as ``PIL.Image.alpha_composite`` does (and as transformers' ``convert_to_rgb``).
- 16-bit images keep their high byte (what Pillow does for 16-bit RGB PNGs); CMYK, YCbCr, LAB,
  palette and 1-bit images go through ``Image.convert("RGB")``; a GIF or TIFF gives its first frame.
- Float arrays / tensors are read as intensities in [0, 1] and rounded to uint8.
- An image over ``max_image_pixels`` is refused from its header, before decoding.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torchvision.io as tio
from PIL import Image, ImageOps, UnidentifiedImageError

from blip2core.preprocess import png
from blip2core.preprocess.errors import ImageLoadError, ImageTooLargeError
from blip2core.preprocess.options import PreprocessOptions
from blip2core.preprocess.sources import ENCODED, Source, read_encoded

_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_ORIENTATION = 0x0112
#: JPEG modes torchvision (libjpeg-turbo) decodes in the fast path. PNG goes to libspng (``png``, when
#: pyspng is installed), never to torchvision: torchvision 0.29's decode_png kills the process (SIGSEGV)
#: on any libpng error, i.e. on every corrupt PNG tried (tests/test_preprocess_inputs.py keeps this in
#: check). Every other image goes via Pillow.
_TV_JPEG_MODES = {"RGB": tio.ImageReadMode.RGB, "L": tio.ImageReadMode.GRAY}


# ----------------------------------------------------------------------------------- Pillow path
def open_encoded(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """Parse the header only (lazy) and refuse unreadable or over-large images."""
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes), not an image")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageLoadError(name, f"not an image, or a format Pillow cannot read ({len(data)} bytes)") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(name, f"refused by Pillow's decompression-bomb guard: {exc}") from None
    except Exception as exc:  # corrupt headers raise SyntaxError, struct.error, ValueError, ...
        raise ImageLoadError(name, f"corrupt image header ({type(exc).__name__}: {exc})") from None
    check_pixels(image.size, name, max_pixels)
    return image


def check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    """size (width, height); raises ImageTooLargeError above max_pixels, ImageLoadError when empty."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(name, f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            name,
            f"{width}x{height} = {width * height:,} pixels is over max_image_pixels={max_pixels:,} "
            "(a decompression bomb?); raise max_image_pixels to accept it",
        )


def _load(image: Image.Image, name: str) -> None:
    try:
        image.load()
    except Exception as exc:
        raise ImageLoadError(name, f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from None


def pil_to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> mode "RGB", transparency composited on ``background``."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _ALPHA_MODES or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    return image.convert("RGB")


def load_pil(source: Source, options: PreprocessOptions) -> Image.Image:
    """Any input -> an RGB ``PIL.Image`` (decoded with Pillow; the exact path)."""
    name = source.name
    if source.kind == ENCODED:
        data = read_encoded(source, options)
        image = open_encoded(data, name, options.max_image_pixels)
    elif isinstance(source.item, Image.Image):
        image = source.item
        check_pixels(image.size, name, options.max_image_pixels)
    else:
        chw = to_uint8_chw(source.item, name, options.max_image_pixels)
        return pil_to_rgb(_chw_to_pil(chw), options.background)
    _load(image, name)
    if options.exif_transpose:
        image = _exif_transpose(image, name)
    try:
        return pil_to_rgb(image, options.background)
    except Exception as exc:  # decoded but inconsistent, e.g. a tRNS chunk longer than the palette
        raise ImageLoadError(name, f"corrupt image data ({type(exc).__name__}: {exc})") from None


def _exif_transpose(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation (2..8); images without one are returned as they are (not copied)."""
    try:
        if image.getexif().get(_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block must not lose the image
        warnings.warn(f"{name}: EXIF orientation ignored ({exc})", stacklevel=3)
    return image


def _chw_to_pil(chw: torch.Tensor) -> Image.Image:
    hwc = chw.permute(1, 2, 0).numpy()
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[hwc.shape[2]]
    return Image.fromarray(hwc[:, :, 0] if mode == "L" else hwc, mode)


# ------------------------------------------------------------------------------ arrays, tensors
def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8: uint16 keeps the high byte, floats are [0, 1] intensities."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < -1e-3 or np.nanmax(array) > 1 + 1e-3):
            raise ValueError(
                f"float pixels must be in [0, 1], got [{np.nanmin(array):.4g}, {np.nanmax(array):.4g}] "
                "(pass uint8 for 0..255 values)"
            )
        return np.rint(np.nan_to_num(np.clip(array, 0, 1)) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        high = int(array.max()) if array.size else 0
        if array.dtype == np.uint16 or high > 255:
            return (np.clip(array, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported pixel dtype {array.dtype}")


def to_uint8_chw(item: np.ndarray | torch.Tensor, name: str, max_pixels: int | None) -> torch.Tensor:
    """An array / tensor image -> uint8 [C, H, W], C in 1..4 (transparency not yet composited).

    numpy: [H, W] or [H, W, C] (or [C, H, W] when only that fits). torch: [H, W], [C, H, W] or
    [H, W, C] (channels-first when both fit).
    """
    if isinstance(item, torch.Tensor):
        array = item.detach().cpu()
        if array.ndim == 3 and array.shape[0] not in (1, 2, 3, 4) and array.shape[-1] in (1, 2, 3, 4):
            array = array.permute(2, 0, 1)
        array = array.numpy() if array.dtype != torch.bfloat16 else array.float().numpy()
        channels_first = True
    else:
        array = np.asarray(item)
        channels_first = array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4) and array.shape[0] in (1, 2, 3, 4)
    if array.ndim == 2:
        array, channels_first = array[None], True
    if array.ndim != 3 or (array.shape[0] if channels_first else array.shape[-1]) not in (1, 2, 3, 4):
        raise ImageLoadError(name, f"cannot read an image from an array of shape {tuple(array.shape)}")
    if not channels_first:
        array = np.moveaxis(array, -1, 0)
    check_pixels((array.shape[2], array.shape[1]), name, max_pixels)
    try:
        array = _to_uint8(array)
    except ValueError as exc:
        raise ImageLoadError(name, str(exc)) from None
    return torch.from_numpy(np.ascontiguousarray(array))


def composite(chw: torch.Tensor, background: tuple[int, int, int]) -> torch.Tensor:
    """uint8 [C, H, W], C in 1..4 -> uint8 [1 or 3, H, W]: alpha composited on ``background`` by
    Pillow's ``alpha_composite``, exactly as ``load_pil`` does. An alpha channel that is opaque
    everywhere is just dropped (a view, no copy), since compositing would not change a pixel."""
    channels = chw.shape[0]
    if channels in (1, 3):
        return chw
    hwc = chw.permute(1, 2, 0).numpy()
    if int(hwc[..., -1].min()) == 255:
        return chw[:-1]
    mode = "LA" if channels == 2 else "RGBA"
    image = Image.frombuffer(mode, (hwc.shape[1], hwc.shape[0]), np.ascontiguousarray(hwc), "raw", mode, 0, 1)
    return pil_to_chw(pil_to_rgb(image, background))


# ---------------------------------------------------------------------------------- fast path
def _tv_decode(data: bytes, image: Image.Image, options: PreprocessOptions) -> torch.Tensor | None:
    """torchvision decode of an RGB / grey JPEG -> uint8 [3 or 1, H, W]; None means "let Pillow do it"."""
    if image.format != "JPEG" or image.mode not in _TV_JPEG_MODES:
        return None
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        return tio.decode_jpeg(buffer, mode=_TV_JPEG_MODES[image.mode], apply_exif_orientation=options.exif_transpose)
    except RuntimeError:
        return None  # truncated / unusual: Pillow decides, and names the problem


def _png_decode(data: bytes, image: Image.Image, options: PreprocessOptions) -> torch.Tensor | None:
    """libspng decode of a PNG -> uint8 [1 or 3, H, W], transparency composited; None = Pillow."""
    if image.format != "PNG":
        return None
    decoded = png.decode_png(data, image.info.get("transparency") is not None, options.exif_transpose)
    return None if decoded is None else composite(decoded, options.background)


def load_tensor(source: Source, options: PreprocessOptions) -> torch.Tensor:
    """Any input -> uint8 [1 or 3, H, W] (1 = grey; the fast path; expand after resizing).

    JPEG (RGB / grey) is decoded by torchvision.io (libjpeg-turbo, EXIF applied by it), PNG by
    libspng (``png``: the same pixels as Pillow; files it does not reproduce exactly are left to
    Pillow); anything else, and any file those decoders refuse, by Pillow exactly as in ``load_pil``.
    """
    if source.kind == ENCODED:
        data = read_encoded(source, options)
        image = open_encoded(data, source.name, options.max_image_pixels)
        decoded = _tv_decode(data, image, options)
        if decoded is None:
            decoded = _png_decode(data, image, options)
        if decoded is None:
            return pil_to_chw(load_pil(Source(data, source.name, source.index), options))
        return decoded
    if isinstance(source.item, Image.Image):
        return pil_to_chw(load_pil(source, options))
    return composite(to_uint8_chw(source.item, source.name, options.max_image_pixels), options.background)


def pil_to_chw(image: Image.Image) -> torch.Tensor:
    """RGB ``PIL.Image`` -> uint8 [3, H, W]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
