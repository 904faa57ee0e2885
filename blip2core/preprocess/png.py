"""PNG decoding for the fast path: which decoder gets which PNG (``decode_png``), and libspng, from
the optional ``pyspng`` wheel, called through ctypes.

``decode_png`` gives opaque PNGs of up to 8 bits with intact chunks to Wuffs (``wuffs_png``, from the
optional ``pywuffs``: about 0.66x libspng's time), the rest, and what Wuffs refuses, to libspng, and
returns None for Pillow when neither may or can decode a file.

Why libspng, and why not through ``pyspng.load``:

- Pillow spends about 1.7x the CPU time of libspng on a PNG (docs/preprocessing.md), and PNG
  decoding is most of the fast path's time on a PNG.
- torchvision's ``decode_png`` (libpng) kills the process on corrupt files; libspng reports every
  problem as an error code (no ``longjmp``): 9,000 corrupted files never crashed it, and the fast
  path gave exactly exact's result on each before Wuffs (with Wuffs: on all but the files whose only
  defect is the zlib Adler-32, see ``chunks_intact``; tests/test_preprocess_png.py, whose test runs
  30 of them in a subprocess).
- ``pyspng.load`` holds the GIL for the whole decode (so the loader threads decode one PNG at a
  time), does not apply palette transparency (it passes no ``SPNG_DECODE_TRNS``) and copies the
  input. pyspng's extension links libspng statically and exports its C API; ctypes calls it with
  the GIL released, decodes straight into a numpy buffer and passes the flags we need.

Only PNGs whose pixels libspng gives exactly as ``decode.load_pil`` does are decoded here (checked
per colour type, bit depth, palette, tRNS and interlacing by the tests); for everything else, and on
any libspng error, ``decode_png`` returns None and Pillow decodes the file (and names the problem).
Without pyspng (or with a build that does not export libspng's API) Pillow decodes every PNG.
"""

from __future__ import annotations

import ctypes
import struct
import zlib

import numpy as np
import torch

from blip2core.preprocess import wuffs_png

#: the libspng release the ctypes declarations below were checked against (pyspng 0.1.4 ships it)
SPNG_VERSION = "0.7.4"

# spng.h (0.7.x)
_FMT_RGBA8, _FMT_RGB8, _FMT_GA8, _FMT_G8, _FMT_PNG = 1, 4, 16, 64, 256
_DECODE_TRNS = 1
_CRC_ERROR = 0
_CHUNK_LIMIT = 64 << 20  # bytes of one ancillary chunk / of all of them kept (pyspng's own limits)

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_TEXT = b"Raw profile type exif\x00"  # ImageMagick's EXIF-in-a-text-chunk, which Pillow reads


class _IHDR(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("bit_depth", ctypes.c_uint8),
        ("color_type", ctypes.c_uint8),
        ("compression_method", ctypes.c_uint8),
        ("filter_method", ctypes.c_uint8),
        ("interlace_method", ctypes.c_uint8),
    ]


def _load_libspng() -> ctypes.CDLL | None:
    """libspng's C API from pyspng's extension module, or None (pyspng missing / another libspng)."""
    try:
        import pyspng._pyspng_c as extension

        lib = ctypes.CDLL(extension.__file__)  # CDLL: every call releases the GIL
        lib.spng_version_string.restype = ctypes.c_char_p
        lib.spng_version_string.argtypes = []
        if not lib.spng_version_string().decode().startswith(SPNG_VERSION.rsplit(".", 1)[0] + "."):
            return None  # another 0.x may change the API (it is not stable before 1.0)
        void_p, size_t, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        signatures = {
            "spng_ctx_new": (void_p, [c_int]),
            "spng_ctx_free": (None, [void_p]),
            "spng_set_png_buffer": (c_int, [void_p, ctypes.c_char_p, size_t]),
            "spng_set_crc_action": (c_int, [void_p, c_int, c_int]),
            "spng_set_chunk_limits": (c_int, [void_p, size_t, size_t]),
            "spng_get_ihdr": (c_int, [void_p, ctypes.POINTER(_IHDR)]),
            "spng_decoded_image_size": (c_int, [void_p, c_int, ctypes.POINTER(size_t)]),
            "spng_decode_image": (c_int, [void_p, void_p, size_t, c_int, c_int]),
            "spng_decode_chunks": (c_int, [void_p]),
            "spng_strerror": (ctypes.c_char_p, [c_int]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        return lib
    except Exception:  # ImportError, OSError, AttributeError (a symbol not exported): use Pillow
        return None


_LIB = _load_libspng()


def available() -> bool:
    """True when PNGs can be decoded with libspng (pyspng installed and usable)."""
    return _LIB is not None


def describe() -> str:
    """Which decoders the fast path uses for PNG, for logs and benchmarks."""
    decoders = []
    if wuffs_png.available():
        decoders.append(f"{wuffs_png.describe()} for opaque PNGs of up to 8 bits")
    if _LIB is not None:
        try:
            from importlib.metadata import version

            package = f"pyspng {version('pyspng')}"
        except Exception:
            package = "pyspng"
        decoders.append(f"libspng {_LIB.spng_version_string().decode()} ({package}, via ctypes, GIL released)")
    if not decoders:
        return "Pillow (neither pywuffs nor pyspng installed)"
    return "; ".join(decoders) + "; Pillow for the rest"


class SpngError(RuntimeError):
    """libspng refused the file (the caller falls back to Pillow)."""


def _plain_layout(data: bytes, color_type: int, exif_transpose: bool) -> bool:
    """Walk the chunk list; False (Pillow decodes the file) for what libspng and Pillow may read
    differently: an animated PNG (acTL); EXIF (eXIf, or a text chunk with a raw EXIF profile) when
    the orientation is applied; and any PLTE / tRNS that is not a single, well-formed chunk in its
    place (PLTE, then tRNS, then IDAT), since the two libraries treat misplaced or malformed ones
    differently (fuzzing with the corrupter in tests/test_preprocess_png.py found these)."""
    position, end = 8, len(data)
    palette_entries: int | None = None
    seen_trns = seen_idat = False
    while position + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT":
            seen_idat = True
        elif kind == b"PLTE":
            if palette_entries is not None or seen_trns or seen_idat or color_type not in (2, 3, 6) or length % 3:
                return False
            palette_entries = length // 3
        elif kind == b"tRNS":
            if seen_trns or seen_idat or color_type in (4, 6):
                return False
            if color_type == 3 and (palette_entries is None or length > palette_entries):
                return False
            if color_type in (0, 2) and length != (2 if color_type == 0 else 6):
                return False
            seen_trns = True
        elif kind == b"acTL":
            return False
        elif exif_transpose and (
            kind == b"eXIf"
            or (kind in (b"tEXt", b"zTXt", b"iTXt") and data.startswith(_EXIF_TEXT, position + 8))
        ):
            return False
        elif kind == b"IEND":
            break
        position += 12 + length
    return True


def chunks_intact(data: bytes) -> bool:
    """True when every chunk, from IHDR to an IEND, is whole and has a correct CRC-32.

    Wuffs checks neither chunk CRCs nor the zlib stream's Adler-32, and stops reading at the end of
    the image data, where Pillow and libspng read on to IEND; files that fail this are left to
    libspng, so a file damaged in storage or transit is an error on both paths. What this cannot
    catch is a file whose CRCs were recomputed over altered pixel data (only the Adler-32 tells):
    Wuffs decodes it, Pillow refuses it (docs/preprocessing.md). ``zlib.crc32`` releases the GIL and
    runs at about 2.5 GB/s here: ~1 ms on a 2048 x 1365 photo's 2 to 3 MB PNG.
    """
    position, end = 8, len(data)
    with memoryview(data) as view:
        while position + 12 <= end:
            length, kind = struct.unpack_from(">I4s", data, position)
            stop = position + 8 + length
            if stop + 4 > end or zlib.crc32(view[position + 4 : stop]) != struct.unpack_from(">I", data, stop)[0]:
                return False
            if kind == b"IEND":
                return True
            position = stop + 4
    return False


def _output_format(color_type: int, bit_depth: int, transparency: bool) -> int | None:
    """The libspng output format that gives load_pil's pixels before compositing, or None (Pillow).

    A tRNS colour key (grey / RGB) is applied here only at 8 bits: at 2 and 4 bits Pillow compares
    the key, in the file's sample scale, with pixels it has scaled to 0..255, and at 16 bits with the
    8-bit pixels it keeps (or converts I;16 + transparency through a saturating path); libspng
    applies the key to the samples, so the pixels differ from load_pil's. Those files, and 1-bit ones
    with a key, are left to Pillow.
    """
    if transparency and color_type != 3 and bit_depth != 8:
        return None
    if color_type == 0:  # grey: 1/2/4/8-bit scaled to 0..255 as Pillow does; 16-bit raw, high byte below
        if bit_depth == 16:
            return _FMT_PNG
        return _FMT_GA8 if transparency else _FMT_G8
    if color_type in (2, 3):  # RGB, palette (8-bit entries; tRNS gives palette / key alpha)
        return _FMT_RGBA8 if transparency else _FMT_RGB8
    if color_type in (4, 6):  # grey + alpha (libspng has no GA8 for it: RGBA, R = G = B), RGBA
        return _FMT_RGBA8
    return None


_CHANNELS = {_FMT_RGBA8: 4, _FMT_RGB8: 3, _FMT_GA8: 2, _FMT_G8: 1, _FMT_PNG: 1}


def _check(result: int, lib: ctypes.CDLL, step: str) -> None:
    if result != 0:
        raise SpngError(f"libspng {step}: {lib.spng_strerror(result).decode(errors='replace')}")


def spng_decode(data: bytes, fmt: int, apply_trns: bool = True) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, C] in libspng format ``fmt`` (16-bit grey -> its high byte);
    ``apply_trns``: tRNS gives the alpha channel (palette alpha, colour key).

    Raises SpngError on any libspng error (and MemoryError when the output cannot be allocated).
    """
    lib = _LIB
    if lib is None:
        raise SpngError("libspng is not available (pip install pyspng)")
    ctx = lib.spng_ctx_new(0)
    if not ctx:
        raise MemoryError("spng_ctx_new")
    try:
        _check(lib.spng_set_crc_action(ctx, _CRC_ERROR, _CRC_ERROR), lib, "crc action")  # any bad CRC -> Pillow
        _check(lib.spng_set_chunk_limits(ctx, _CHUNK_LIMIT, _CHUNK_LIMIT), lib, "chunk limits")
        _check(lib.spng_set_png_buffer(ctx, data, len(data)), lib, "buffer")  # no copy; `data` outlives ctx
        ihdr = _IHDR()
        _check(lib.spng_get_ihdr(ctx, ctypes.byref(ihdr)), lib, "header")
        size = ctypes.c_size_t()
        _check(lib.spng_decoded_image_size(ctx, fmt, ctypes.byref(size)), lib, "image size")
        out = np.empty(size.value, np.uint8)
        flags = _DECODE_TRNS if apply_trns else 0
        _check(lib.spng_decode_image(ctx, out.ctypes.data, size.value, fmt, flags), lib, "decode")
        _check(lib.spng_decode_chunks(ctx), lib, "chunks after the image")  # read to IEND, as Pillow does
    finally:
        lib.spng_ctx_free(ctx)
    height, width = ihdr.height, ihdr.width
    if fmt == _FMT_PNG:  # 16-bit grey, host-endian: keep the high byte (load_pil's rule for I;16)
        if ihdr.bit_depth != 16 or out.size != height * width * 2:
            raise SpngError("unexpected raw format")
        return (out.view(np.uint16) >> 8).astype(np.uint8).reshape(height, width, 1)
    return out.reshape(height, width, _CHANNELS[fmt])


def decode_png(data: bytes, transparency: bool, exif_transpose: bool) -> torch.Tensor | None:
    """A PNG (already opened by Pillow: header valid, size checked) -> uint8 [C, H, W], C in 1..4
    (alpha not yet composited), or None when Pillow must decode it (see the module docstring).

    Opaque grey / RGB / palette PNGs of at most 8 bits go to Wuffs first (``wuffs_png``, when
    pywuffs is installed); everything else, and any file Wuffs refuses, to libspng.

    ``transparency``: Pillow found a tRNS chunk (``image.info["transparency"]``).
    """
    if len(data) < 33 or not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    if _LIB is None and not wuffs_png.available():
        return None
    width, height = struct.unpack_from(">II", data, 16)
    bit_depth, color_type = data[24], data[25]
    fmt = _output_format(color_type, bit_depth, transparency)
    if fmt is None or not _plain_layout(data, color_type, exif_transpose):
        return None
    hwc = None
    if not transparency and bit_depth <= 8 and color_type in (0, 2, 3) and chunks_intact(data):
        hwc = wuffs_png.decode_opaque(data, color_type == 0, width, height)
    if hwc is None and _LIB is not None:
        try:
            hwc = spng_decode(data, fmt, apply_trns=transparency)
        except (SpngError, MemoryError, ValueError, OverflowError):
            return None  # Pillow decides, and names the problem
    return None if hwc is None else torch.from_numpy(hwc).permute(2, 0, 1)
