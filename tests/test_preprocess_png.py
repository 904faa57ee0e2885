"""The fast path's PNG decoders (Wuffs from pywuffs for opaque 8-bit PNGs, libspng from pyspng for the
rest, ``blip2core.preprocess.png``): Pillow's pixels for every kind of PNG (or a fallback to Pillow),
and corrupt files are errors, never a crash.

The crash fuzz runs the decoder in a subprocess, so a segfault fails the test instead of killing the
test runner. A larger run of the same fuzz: ``.venv/bin/python tests/test_preprocess_png.py 3000 [first seed]``.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blip2core.preprocess import ImagePreprocessor, png, wuffs_png
from blip2core.preprocess.decode import load_pil, load_tensor, pil_to_chw
from blip2core.preprocess.options import PreprocessOptions
from blip2core.preprocess.sources import Source
from blip2core.preprocess_config import PreprocessConfig

needs_libspng = pytest.mark.skipif(not png.available(), reason="pyspng not installed: PNG is decoded by Pillow")
needs_wuffs = pytest.mark.skipif(not wuffs_png.available(), reason="pywuffs not installed: libspng or Pillow decode")

# ----------------------------------------------------------------------------- a PNG writer
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _scanlines(samples: np.ndarray, bit_depth: int) -> bytes:
    """[h, w, c] samples -> filter-type-0 scanlines (sub-byte depths packed MSB first)."""
    height = samples.shape[0]
    if height == 0 or samples.shape[1] == 0:
        return b""
    rows = samples.reshape(height, -1)
    if bit_depth >= 8:
        rows = rows.astype(">u2" if bit_depth == 16 else np.uint8)
        return b"".join(b"\x00" + row.tobytes() for row in rows)
    per_byte = 8 // bit_depth
    shifts = (np.arange(per_byte - 1, -1, -1) * bit_depth).astype(np.uint8)
    out = []
    for row in rows.astype(np.uint8):
        row = np.concatenate([row, np.zeros(-len(row) % per_byte, np.uint8)]).reshape(-1, per_byte)
        out.append(b"\x00" + (row << shifts).sum(1).astype(np.uint8).tobytes())
    return b"".join(out)


def make_png(samples, color_type: int, bit_depth: int = 8, interlace: bool = False, palette=None, trns=None, extra=()):
    """Any PNG colour type / bit depth (Pillow cannot write most of them), optionally Adam7-interlaced."""
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    height, width, channels = samples.shape
    assert channels == CHANNELS[color_type]
    if interlace:
        raw = b"".join(_scanlines(samples[y0::dy, x0::dx], bit_depth) for x0, y0, dx, dy in ADAM7)
    else:
        raw = _scanlines(samples, bit_depth)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(chunk(kind, data) for kind, data in extra)
    if palette is not None:
        out += chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def encode(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def png_kinds() -> dict[str, bytes]:
    """Every colour type and bit depth, palettes with and without tRNS, colour keys, Adam7, ancillary
    chunks, and Pillow's own files; from a real photo (37 x 53, odd sizes for the interlace passes)."""
    import skimage.data

    rng = np.random.default_rng(0)
    photo = skimage.data.chelsea()[::7, ::7][:37, :53].copy()
    grey = photo.mean(-1).astype(np.uint8)
    alpha = rng.integers(0, 256, grey.shape, dtype=np.uint8)
    alpha[:5], alpha[-5:] = 0, 255
    grey16 = grey.astype(np.uint16) * 257 + rng.integers(0, 256, grey.shape).astype(np.uint16)
    rgb16 = photo.astype(np.uint16) * 257 + rng.integers(0, 256, photo.shape).astype(np.uint16)
    alpha16 = alpha.astype(np.uint16) * 257 + 3
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, grey.shape, dtype=np.uint8)
    kinds = {}
    for interlace in (False, True):
        tag = ", Adam7" if interlace else ""
        kinds[f"RGB 8{tag}"] = make_png(photo, 2, 8, interlace)
        kinds[f"RGBA 8{tag}"] = make_png(np.dstack([photo, alpha]), 6, 8, interlace)
        kinds[f"grey 8{tag}"] = make_png(grey, 0, 8, interlace)
        kinds[f"grey+alpha 8{tag}"] = make_png(np.dstack([grey, alpha]), 4, 8, interlace)
        for depth in (1, 2, 4, 8):
            levels = grey >> (8 - depth)
            indices = index >> (8 - depth)
            if depth < 8:
                kinds[f"grey {depth}{tag}"] = make_png(levels, 0, depth, interlace)
                kinds[f"grey {depth} + tRNS key{tag}"] = make_png(
                    levels, 0, depth, interlace, trns=struct.pack(">H", int(levels[0, 0]))
                )
            kinds[f"palette {depth}{tag}"] = make_png(indices, 3, depth, interlace, palette=palette[: 1 << depth])
            alphas = bytes(rng.integers(0, 256, max(1, (1 << depth) - 1), dtype=np.uint8))
            kinds[f"palette {depth} + tRNS{tag}"] = make_png(
                indices, 3, depth, interlace, palette=palette[: 1 << depth], trns=alphas
            )
        kinds[f"grey 16{tag}"] = make_png(grey16, 0, 16, interlace)
        kinds[f"RGB 16{tag}"] = make_png(rgb16, 2, 16, interlace)
        kinds[f"RGBA 16{tag}"] = make_png(np.dstack([rgb16, alpha16]), 6, 16, interlace)
        kinds[f"grey+alpha 16{tag}"] = make_png(np.dstack([grey16, alpha16]), 4, 16, interlace)
        kinds[f"grey 8 + tRNS key{tag}"] = make_png(grey, 0, 8, interlace, trns=struct.pack(">H", int(grey[0, 0])))
        kinds[f"RGB 8 + tRNS key{tag}"] = make_png(
            photo, 2, 8, interlace, trns=struct.pack(">HHH", *map(int, photo[0, 0]))
        )
        kinds[f"grey 16 + tRNS key{tag}"] = make_png(
            grey16, 0, 16, interlace, trns=struct.pack(">H", int(grey16[0, 0]))
        )
        kinds[f"RGB 16 + tRNS key{tag}"] = make_png(
            rgb16, 2, 16, interlace, trns=struct.pack(">HHH", *map(int, rgb16[0, 0]))
        )
        ancillary = [(b"gAMA", struct.pack(">I", 100000)), (b"sBIT", b"\x05\x06\x05"), (b"sRGB", b"\x00")]
        kinds[f"RGB 8 + gAMA, sBIT, sRGB{tag}"] = make_png(photo, 2, 8, interlace, extra=ancillary)
    rgba = Image.fromarray(np.dstack([photo, alpha]), "RGBA")
    for mode in ("1", "L", "LA", "RGB", "RGBA", "P"):
        kinds[f"Pillow {mode}"] = encode(rgba.convert(mode))
    kinds["Pillow I;16"] = encode(Image.fromarray(grey16))
    kinds["Pillow P, 16 colours, transparency"] = encode(
        rgba.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), transparency=3
    )
    kinds["Pillow L, transparency"] = encode(Image.fromarray(grey), transparency=int(grey[0, 0]))
    rotated = Image.fromarray(photo)
    exif = rotated.getexif()
    exif[0x0112] = 6
    kinds["Pillow RGB, eXIf orientation 6"] = encode(rotated, exif=exif.tobytes())
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    kinds["Pillow APNG, 2 frames"] = buffer.getvalue()
    return kinds


KINDS = png_kinds()
#: kinds libspng must decode itself (the rest may fall back to Pillow, and some must)
_PILLOW_ONLY = ("16 + tRNS", "grey 1 +", "grey 2 +", "grey 4 +", "eXIf", "APNG")
LIBSPNG_KINDS = [k for k in KINDS if not any(s in k for s in _PILLOW_ONLY)]
MUST_FALL_BACK = ["grey 16 + tRNS key", "RGB 16 + tRNS key", "grey 2 + tRNS key", "Pillow APNG, 2 frames"]


def _wuffs_eligible(data: bytes) -> bool:
    """Opaque (no tRNS) grey / RGB / palette PNG of at most 8 bits: the files Wuffs is given."""
    return data[24] <= 8 and data[25] in (0, 2, 3) and "transparency" not in Image.open(io.BytesIO(data)).info


#: kinds Wuffs must decode itself (opaque grey 1-8 bits, RGB 8, palettes, Pillow's 1 / L / RGB / P, Adam7)
WUFFS_KINDS = [k for k in LIBSPNG_KINDS if _wuffs_eligible(KINDS[k])]


def _pillow_pixels(data: bytes, options: PreprocessOptions) -> torch.Tensor:
    return pil_to_chw(load_pil(Source(data, "x", 0), options))


def _fast_pixels(data: bytes, options: PreprocessOptions) -> torch.Tensor:
    chw = load_tensor(Source(data, "x", 0), options)
    return chw.expand(3, -1, -1) if chw.shape[0] == 1 else chw


# --------------------------------------------------------------------------------- pixels
@pytest.mark.parametrize("background", [(255, 255, 255), (10, 120, 250)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_fast_png_pixels_equal_pillows(kind, background):
    """Whatever decodes it, the fast path's pixels (before resizing) are load_pil's, transparency
    composited on the configured background, 16-bit reduced to the high byte, EXIF applied."""
    options = PreprocessOptions(mode="fast", background=background)
    assert torch.equal(_fast_pixels(KINDS[kind], options), _pillow_pixels(KINDS[kind], options))


@needs_libspng
@pytest.mark.parametrize("kind", LIBSPNG_KINDS)
def test_libspng_decodes_the_common_kinds_itself(kind, monkeypatch):
    monkeypatch.setattr(wuffs_png, "_AVAILABLE", False)  # libspng alone, as without pywuffs
    image = Image.open(io.BytesIO(KINDS[kind]))
    decoded = png.decode_png(KINDS[kind], image.info.get("transparency") is not None, True)
    assert decoded is not None
    assert torch.equal(_fast_pixels(KINDS[kind], PreprocessOptions(mode="fast")), _pillow_pixels(KINDS[kind], PreprocessOptions()))


def test_wuffs_is_given_the_opaque_8_bit_kinds():
    assert len(WUFFS_KINDS) >= 20, WUFFS_KINDS
    assert {"RGB 8", "RGB 8, Adam7", "grey 1", "grey 4, Adam7", "palette 8", "Pillow RGB", "Pillow L"} <= set(WUFFS_KINDS)
    assert not any("RGBA" in k or "alpha" in k or "16" in k or "tRNS" in k for k in WUFFS_KINDS)


@needs_wuffs
@pytest.mark.parametrize("kind", WUFFS_KINDS)
def test_wuffs_decodes_the_opaque_8_bit_kinds_itself(kind):
    """Wuffs' own output (not a fallback) is Pillow's pixels, grey as one channel."""
    data = KINDS[kind]
    width, height = struct.unpack_from(">II", data, 16)
    hwc = wuffs_png.decode_opaque(data, data[25] == 0, width, height)
    assert hwc is not None, kind
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    assert chw.shape[0] == (1 if data[25] == 0 else 3)
    assert torch.equal(chw.expand(3, -1, -1), _pillow_pixels(data, PreprocessOptions()))


@needs_wuffs
def test_a_damaged_chunk_keeps_a_png_from_wuffs(monkeypatch):
    """Wuffs checks no CRC and stops before IEND: a bad CRC anywhere, or a missing IEND, sends the file
    to libspng (then Pillow), so both paths fail it alike."""
    data = KINDS["RGB 8"]
    assert png.chunks_intact(data)
    idat = data.index(b"IDAT")
    bad_idat_crc = bytearray(data)
    bad_idat_crc[idat + 4 + struct.unpack_from(">I", data, idat - 4)[0]] ^= 1
    bad_tail = data[:-4] + b"\0\0\0\0"
    calls = []
    monkeypatch.setattr(wuffs_png, "decode_opaque", lambda *a: calls.append(a) or None)
    for damaged in (bytes(bad_idat_crc), bad_tail, data[:-12], data[:-1]):
        assert not png.chunks_intact(damaged)
        png.decode_png(damaged, False, True)
    assert calls == []
    png.decode_png(data, False, True)
    assert len(calls) == 1


@needs_libspng
def test_kinds_libspng_would_get_wrong_fall_back_to_pillow():
    for kind in MUST_FALL_BACK + [k for k in KINDS if "eXIf" in k]:
        image = Image.open(io.BytesIO(KINDS[kind]))
        assert png.decode_png(KINDS[kind], image.info.get("transparency") is not None, True) is None, kind
    exif = KINDS["Pillow RGB, eXIf orientation 6"]
    assert png.decode_png(exif, False, exif_transpose=False) is not None  # EXIF ignored: no need for Pillow


@pytest.mark.parametrize("kind", ["RGBA 8", "RGB 8"])
def test_without_pywuffs_and_pyspng_pillow_decodes_png(kind, monkeypatch):
    data = KINDS[kind]
    options = PreprocessOptions(mode="fast")
    with_decoders = _fast_pixels(data, options)
    monkeypatch.setattr(png, "_LIB", None)
    monkeypatch.setattr(wuffs_png, "_AVAILABLE", False)
    assert not png.available() and "Pillow" in png.describe()
    assert png.decode_png(data, False, True) is None
    assert torch.equal(_fast_pixels(data, options), with_decoders)


def test_opaque_alpha_is_dropped_without_a_copy():
    from blip2core.preprocess.decode import composite

    rgba = torch.from_numpy(np.dstack([np.arange(24, dtype=np.uint8).reshape(2, 4, 3), np.full((2, 4), 255, np.uint8)]))
    out = composite(rgba.permute(2, 0, 1), (0, 0, 0))
    assert out.shape == (3, 2, 4) and out.data_ptr() == rgba.data_ptr()
    assert torch.equal(out, rgba[..., :3].permute(2, 0, 1))


@needs_libspng
def test_libspng_releases_the_gil():
    """A ctypes.CDLL (not a PyDLL): the loader threads decode PNGs in parallel."""
    import ctypes

    assert isinstance(png._LIB, ctypes.CDLL) and not isinstance(png._LIB, ctypes.PyDLL)
    assert f"libspng {png.SPNG_VERSION}" in png.describe()


def test_fast_png_batch_within_tolerance_of_exact():
    import skimage.data

    from blip2core.preprocess.transforms import fast_tolerance

    config = PreprocessConfig(image_size=64)
    items = [encode(Image.fromarray(getattr(skimage.data, n)())) for n in ("astronaut", "coffee", "camera")]
    fast = ImagePreprocessor(config, mode="fast")(items)
    exact = ImagePreprocessor(config, mode="exact")(items)
    max_tol, mean_tol = fast_tolerance(config)
    assert (fast - exact).abs().max().item() <= max_tol
    assert (fast - exact).abs().mean().item() <= mean_tol


# ------------------------------------------------------------------------------ crash fuzz
def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 8
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def _build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, data) for kind, data in chunks)


def _flip(data: bytes, rng: np.random.Generator, count: int, start: int = 0) -> bytes:
    buffer = bytearray(data)
    if len(buffer) <= start:
        return bytes(buffer)
    for position in rng.integers(start, len(buffer), count):
        buffer[position] = int(rng.integers(0, 256))
    return bytes(buffer)


def corrupt(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One corrupted copy of a valid PNG. Most kinds recompute the chunk CRCs, so the damage reaches
    the decoder instead of being caught by a checksum (as a crafted file would)."""
    chunks = _chunks(data)
    idat = b"".join(d for k, d in chunks if k == b"IDAT")
    before = [(k, d) for k, d in chunks if k not in (b"IDAT", b"IEND")]
    kind = str(rng.choice(
        ["flip", "flip, CRC fixed", "truncate", "junk IDAT", "flip deflate", "bad scanlines", "IHDR", "palette",
         "chunk length", "chunk order"]
    ))
    if kind == "flip":
        return kind, _flip(data, rng, int(rng.integers(1, 16)), 8)
    if kind == "flip, CRC fixed":
        flipped = _chunks(_flip(data, rng, int(rng.integers(1, 16)), 8))
        return kind, _build(flipped if flipped else chunks)
    if kind == "truncate":
        return kind, data[: int(rng.integers(8, len(data)))]
    if kind == "junk IDAT":
        junk = rng.integers(0, 256, int(rng.integers(1, 2 * len(idat) + 2)), dtype=np.uint8).tobytes()
        return kind, _build(before + [(b"IDAT", junk), (b"IEND", b"")])
    if kind == "flip deflate":
        return kind, _build(before + [(b"IDAT", _flip(idat, rng, int(rng.integers(1, 8)))), (b"IEND", b"")])
    if kind == "bad scanlines":  # valid deflate of damaged rows: bad filter types, short / long data
        raw = bytearray(zlib.decompress(idat))
        for position in rng.integers(0, max(1, len(raw)), int(rng.integers(1, 8))):
            if raw:
                raw[position] = int(rng.integers(0, 256))
        cut = int(rng.integers(0, len(raw) + 1))
        raw = raw[:cut] if rng.random() < 0.5 else raw + rng.integers(0, 256, cut, dtype=np.uint8).tobytes()
        return kind, _build(before + [(b"IDAT", zlib.compress(bytes(raw))), (b"IEND", b"")])
    if kind == "IHDR":  # any size, depth, colour type, interlace, with the original pixel data
        width, height = (int(v) for v in rng.integers(0, 1 << int(rng.integers(1, 16)), 2))
        fields = struct.pack(
            ">IIBBBBB", width, height, int(rng.choice([0, 1, 2, 3, 4, 8, 16, 255])),
            int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7])), int(rng.integers(0, 2)), int(rng.integers(0, 2)),
            int(rng.integers(0, 3)),
        )
        return kind, _build([(b"IHDR", fields)] + before[1:] + [(b"IDAT", idat), (b"IEND", b"")])
    if kind == "palette":  # short / empty / oversized PLTE, tRNS longer than it or on any colour type
        entries = int(rng.integers(0, 300))
        palette = rng.integers(0, 256, 3 * entries + int(rng.integers(0, 3)), dtype=np.uint8).tobytes()
        trns = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        extra = [(b"PLTE", palette)] + ([(b"tRNS", trns)] if rng.random() < 0.7 else [])
        head = [(k, d) for k, d in before if k not in (b"PLTE", b"tRNS")]
        return kind, _build(head + extra + [(b"IDAT", idat), (b"IEND", b"")])
    if kind == "chunk length":
        buffer = bytearray(data)
        starts, position = [], 8
        while position + 8 <= len(data):
            starts.append(position)
            position += 12 + struct.unpack_from(">I", data, position)[0]
        target = starts[int(rng.integers(0, len(starts)))]
        length = rng.choice([0, 1, 2**31 - 1, 2**32 - 1, rng.integers(0, 2**16)])
        buffer[target : target + 4] = struct.pack(">I", int(length))
        return kind, bytes(buffer)
    # chunk order: duplicated, dropped or swapped chunks (two IHDRs, IDAT before PLTE, no IEND, ...)
    shuffled = list(chunks)
    for _ in range(int(rng.integers(1, 4))):
        i, j = (int(v) for v in rng.integers(0, len(shuffled), 2))
        action = rng.integers(0, 3)
        if action == 0:
            shuffled.insert(j, shuffled[i])
        elif action == 1 and len(shuffled) > 1:
            del shuffled[i]
        else:
            shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    return kind, _build(shuffled)


#: run in a child process: decode every file given on the command line (the fast path; libspng directly
#: in every output format; pyspng's own ``load``, which ignores CRCs and so gets further into damaged
#: files; Wuffs directly, grey and RGB), print one line per file before and after, exit 0.
#: "adler-only": fast gave an image where exact raised, and the one defect Pillow saw is the zlib
#: stream's Adler-32 (chunk CRCs all valid: a crafted file): Wuffs does not check it (documented).
_CHILD = r"""
import sys, warnings, zlib
warnings.simplefilter("ignore")
import torch
from blip2core.preprocess import png, wuffs_png
from blip2core.preprocess.decode import load_pil, load_tensor, pil_to_chw
from blip2core.preprocess.errors import ImageLoadError
from blip2core.preprocess.options import PreprocessOptions
from blip2core.preprocess.sources import Source
options = PreprocessOptions(mode="fast")
formats = [png._FMT_RGBA8, png._FMT_RGB8, png._FMT_GA8, png._FMT_G8, png._FMT_PNG]

def idat(data):
    out, position = [], 8
    while position + 8 <= len(data):
        length, kind = int.from_bytes(data[position:position + 4], "big"), data[position + 4:position + 8]
        if kind == b"IDAT":
            out.append(data[position + 8:position + 8 + length])
        position += 12 + length
    return b"".join(out)

def only_adler_is_wrong(data):
    if not (wuffs_png.available() and png.chunks_intact(data)):
        return False
    try:
        zlib.decompress(idat(data))
    except zlib.error as exc:
        return "incorrect data check" in str(exc)
    return False

for path in sys.argv[1:]:
    print("start", path, flush=True)
    data = open(path, "rb").read()
    try:
        fast = load_tensor(Source(data, path, 0), options)
        fast = fast.expand(3, -1, -1) if fast.shape[0] == 1 else fast
    except ImageLoadError:
        fast = None
    try:
        exact = pil_to_chw(load_pil(Source(data, path, 0), options))
    except ImageLoadError:
        exact = None
    outcome = "error" if fast is None else "image"
    if (fast is None) != (exact is None) or (fast is not None and not torch.equal(fast, exact)):
        outcome = "adler-only" if exact is None and only_adler_is_wrong(data) else "differs-from-exact"
    direct = 0
    ok_header = len(data) >= 24 and int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big") <= 4_000_000
    for fmt in formats if ok_header and png.available() else []:
        try:
            png.spng_decode(data, fmt)
            direct += 1
        except (png.SpngError, MemoryError, ValueError):
            pass
    if ok_header and png.available():
        import pyspng
        try:
            pyspng.load(data)
        except Exception:
            pass
    if ok_header and wuffs_png.available():
        for grey in (False, True):
            wuffs_png._decoder(grey).decode(data)
    print("done", path, outcome, direct, flush=True)
"""


def run_fuzz(folder: Path, count: int, seed: int = 0, timeout: float = 600) -> dict[str, int]:
    """Write ``count`` corrupted PNGs, decode them in a child process; raise if it crashes."""
    rng = np.random.default_rng(seed)
    bases = list(KINDS.values())
    paths, kinds = [], {}
    for i in range(count):
        kind, data = corrupt(bases[i % len(bases)], rng)
        kinds[kind] = kinds.get(kind, 0) + 1
        paths.append(folder / f"fuzz_{i:05d}.png")
        paths[-1].write_bytes(data)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, paths)],
        capture_output=True, text=True, timeout=timeout, cwd=root,
    )
    done = [line.split() for line in result.stdout.splitlines() if line.startswith("done ")]
    started = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("start ")]
    if result.returncode != 0 or len(done) != count:
        last = started[-1] if started else "(none)"
        raise AssertionError(
            f"decoder child exited with {result.returncode} after {len(done)} of {count} files; "
            f"last file started: {last}\n{result.stderr[-2000:]}"
        )
    outcomes = {"image": 0, "error": 0, "adler-only": 0, "differs-from-exact": 0}
    for _, path, outcome, _ in done:
        outcomes[outcome] += 1
    differing = [path for _, path, outcome, _ in done if outcome == "differs-from-exact"]
    assert not differing, f"fast and exact disagree (image vs error, or pixels) on {differing}"
    direct = sum(int(count) for *_, count in done)
    kinds = {f"kind: {k}": v for k, v in sorted(kinds.items())}
    return {**outcomes, "libspng direct calls that decoded": direct, **kinds}


@needs_libspng
def test_corrupt_pngs_are_errors_not_crashes(tmp_path):
    """30 corrupted PNGs (bytes flipped with and without fixed CRCs, truncated, junk / damaged deflate
    data, bad scanline filters, wrong IHDR, broken palettes and tRNS, bad chunk lengths and order):
    the child process must survive all of them (a segfault would give a negative exit code)."""
    stats = run_fuzz(tmp_path, 30, seed=1)  # also: fast == exact on each (same pixels, or both errors)
    assert stats["image"] + stats["error"] + stats["adler-only"] == 30


if __name__ == "__main__":  # the larger fuzz run quoted in docs/preprocessing.md
    import tempfile

    total = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    first_seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        stats = {}
        for start in range(0, total, 500):  # a child per 500 files
            part = run_fuzz(Path(tmp), min(500, total - start), seed=first_seed + start)
            for key, value in part.items():
                stats[key] = stats.get(key, 0) + value
            for old in Path(tmp).iterdir():
                old.unlink()
    print(f"{total} corrupted PNGs, no crash:", stats)
