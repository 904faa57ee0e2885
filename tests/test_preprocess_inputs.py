"""Every input type, every image mode and corner case, and the bad inputs; both paths."""

from __future__ import annotations

import functools
import http.server
import io
import pickle
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from blip2core.errors import Blip2Error
from blip2core.preprocess import ImageLoadError, ImagePreprocessor, ImageTooLargeError
from blip2core.preprocess.decode import load_pil, load_tensor
from blip2core.preprocess.options import PreprocessOptions
from blip2core.preprocess.sources import flatten_inputs
from blip2core.preprocess.transforms import fast_tolerance
from blip2core.preprocess_config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig

CONFIG = PreprocessConfig(image_size=32)
MODES = ["exact", "fast"]
MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)


def normalised(rgb) -> torch.Tensor:
    """The pixel_values [3, 1, 1] one uint8 RGB colour becomes."""
    return (torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255 - MEAN) / STD


def pre(mode: str, **options) -> ImagePreprocessor:
    return ImagePreprocessor(CONFIG, mode=mode, num_threads=1, **options)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey [H, W] or RGB [H, W, 3] uint16), written by hand (Pillow cannot write 48-bit)."""
    height, width = array.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2 if array.ndim == 3 else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()[::4, ::4].copy()  # real photo, 75 x 113 x 3 uint8


# --------------------------------------------------------------------------------- input types
def test_every_input_type_gives_the_same_pixels(photo, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(photo).save(path)
    data = path.read_bytes()
    chw = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    inputs = {
        "str path": str(path),
        "Path": path,
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "BytesIO": io.BytesIO(data),
        "open file": open(path, "rb"),
        "PIL": Image.fromarray(photo),
        "numpy HWC uint8": photo,
        "numpy HWC float": photo.astype(np.float32) / 255,
        "numpy HWC uint16": photo.astype(np.uint16) * 257,
        "torch CHW uint8": chw,
        "torch CHW float": chw.float() / 255,
        "torch HWC uint8": torch.from_numpy(photo),
    }
    for mode in MODES:
        p = pre(mode)
        reference = p([Image.fromarray(photo)])
        for name, item in inputs.items():
            if hasattr(item, "seek"):
                item.seek(0)
            out = p([item])
            assert torch.equal(out, reference), f"{mode}: {name}"
        batch_chw, batch_hwc = chw.unsqueeze(0).repeat(3, 1, 1, 1), np.stack([photo] * 3)
        batches = {"torch BCHW": batch_chw, "torch BHWC": batch_chw.permute(0, 2, 3, 1), "numpy BHWC": batch_hwc}
        for name, batch in batches.items():
            out = p(batch)
            assert out.shape == (3, 3, 32, 32) and torch.equal(out, reference.expand(3, -1, -1, -1)), f"{mode}: {name}"
    inputs["open file"].close()


def test_grey_arrays_and_single_image_not_in_a_list(photo):
    grey = photo[..., 1]
    for mode in MODES:
        p = pre(mode)
        expected = p([Image.fromarray(grey).convert("RGB")])
        assert torch.equal(p(grey), expected)
        assert torch.equal(p(torch.from_numpy(grey)), expected)
        assert torch.equal(p(grey[..., None]), expected)
        assert p(Image.fromarray(photo)).shape == (1, 3, 32, 32)


def test_input_names_for_errors(tmp_path):
    sources = flatten_inputs([str(tmp_path / "a.jpg"), b"x", Image.new("RGB", (2, 2)), np.zeros((2, 2)), io.BytesIO()])
    assert [s.name for s in sources] == [str(tmp_path / "a.jpg"), "bytes[1]", "item 2", "item 3", "item 4"]


def test_url_input_from_a_local_server(photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "cat.jpg", quality=95)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for mode in MODES:
            out = pre(mode)([f"{base}/cat.jpg"])
            assert torch.equal(out, pre(mode)([tmp_path / "cat.jpg"]))
            with pytest.raises(ImageLoadError, match=r"missing\.jpg: download failed: HTTP 404"):
                pre(mode)([f"{base}/missing.jpg"])
        with pytest.raises(ImageLoadError, match="URLs are disabled"):
            pre("fast", allow_urls=False)([f"{base}/cat.jpg"])
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ImageLoadError, match=r"^http://127\.0\.0\.1:9/x\.jpg: download failed"):
        pre("exact", url_timeout=2)(["http://127.0.0.1:9/x.jpg"])


# -------------------------------------------------------------------------- real-world images
@pytest.mark.parametrize("mode", MODES)
def test_exif_orientation_is_applied(mode, tmp_path):
    """300 x 200 JPEG, left half red / right half blue, EXIF orientation 6 (rotate 90 deg clockwise
    to display): displayed it is 200 x 300 with red on top."""
    array = np.zeros((200, 300, 3), np.uint8)
    array[:, :150] = (255, 0, 0)
    array[:, 150:] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, quality=95, exif=exif.tobytes())
    source = flatten_inputs([path])[0]
    options = PreprocessOptions(mode=mode)
    loaded = load_pil(source, options) if mode == "exact" else load_tensor(source, options)
    size = loaded.size if mode == "exact" else (loaded.shape[2], loaded.shape[1])
    assert size == (200, 300)
    out = pre(mode)([path])[0]
    red, blue = normalised((255, 0, 0)), normalised((0, 0, 255))
    assert (out[:, 2:12, :] - red).abs().max() < 0.1  # top rows red
    assert (out[:, -12:-2, :] - blue).abs().max() < 0.1  # bottom rows blue
    no_exif = ImagePreprocessor(CONFIG, mode=mode, exif_transpose=False)([path])[0]
    assert (no_exif[:, :, 2:12] - red).abs().max() < 0.1  # stored orientation: red on the left


def _half_transparent(mode: str) -> bytes | Image.Image:
    """64 x 64, left half fully transparent, right half opaque green (0, 200, 0)."""
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, 32:] = (0, 200, 0, 255)
    rgba[:, :32] = (0, 0, 0, 0)
    image = Image.fromarray(rgba, "RGBA")
    if mode == "RGBA":
        return encode(image, "PNG")
    if mode == "LA":
        la = Image.fromarray(np.dstack([rgba[..., 1], rgba[..., 3]]), "LA")
        return encode(la, "PNG")
    if mode == "P":
        return encode(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).convert("RGBA").convert("P"), "PNG")
    if mode == "GIF":
        return encode(image, "GIF")
    if mode == "RGBA numpy":
        return rgba
    if mode == "RGBA torch":
        return torch.from_numpy(rgba).permute(2, 0, 1)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["RGBA", "LA", "P", "GIF", "RGBA numpy", "RGBA torch"])
def test_transparent_pixels_become_the_background(kind, mode):
    item = _half_transparent(kind)
    if kind in ("P", "GIF"):
        opened = Image.open(io.BytesIO(item))
        assert opened.mode == "P" and opened.info.get("transparency") is not None
    out = pre(mode)([item])[0]
    assert (out[:, :, :12] - normalised((255, 255, 255))).abs().max() < 1e-6  # transparent -> white
    green = (200, 200, 200) if kind == "LA" else (0, 200, 0)
    assert (out[:, :, -12:] - normalised(green)).abs().max() < 1e-6
    black = ImagePreprocessor(CONFIG, mode=mode, background=(0, 0, 0))([item])[0]
    assert (black[:, :, :12] - normalised((0, 0, 0))).abs().max() < 1e-6


def test_fast_and_exact_composite_partial_alpha_identically():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)  # already S x S: no resize, compositing only
    for item in (rgba, encode(Image.fromarray(rgba, "RGBA"), "PNG")):
        assert torch.equal(pre("exact")([item]), pre("fast")([item]))


def test_cmyk_jpeg(photo):
    data = encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    for mode in MODES:  # CMYK is decoded by Pillow in both paths
        expected = pre(mode)([Image.open(io.BytesIO(data)).convert("RGB")])
        assert torch.equal(pre(mode)([data]), expected), mode
        assert (expected - pre(mode)([photo])).abs().mean() < 0.1  # the same picture, JPEG loss aside
    assert (pre("exact")([data]) - pre("fast")([data])).abs().max() <= fast_tolerance(CONFIG)[0]


def test_16_bit_png_keeps_the_high_byte():
    rng = np.random.default_rng(1)
    for shape in ((20, 30), (20, 30, 3)):
        array = rng.integers(0, 65536, shape, dtype=np.uint16)
        data = png16(array)
        assert Image.open(io.BytesIO(data)).mode in ("I;16", "RGB")
        high = Image.fromarray((array >> 8).astype(np.uint8)).convert("RGB")
        for mode in MODES:
            assert torch.equal(pre(mode)([data]), pre(mode)([high])), mode
            assert torch.equal(pre(mode)([array]), pre(mode)([high])), mode  # uint16 arrays too


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    for mode in MODES:
        out = pre(mode)([buffer.getvalue()])[0]
        assert (out - normalised((255, 0, 0))).abs().max() < 1e-6, mode


@pytest.mark.parametrize("mode", MODES)
def test_one_pixel_images(mode):
    color = (10, 200, 77)
    pixel = Image.new("RGB", (1, 1), color)
    items = [pixel, np.array([[color]], np.uint8), encode(pixel, "PNG"), encode(pixel, "JPEG", quality=100)]
    out = pre(mode)(items)
    assert out.shape == (4, 3, 32, 32)
    assert (out[:3] - normalised(color)).abs().max() < 1e-6
    decoded = Image.open(io.BytesIO(items[3])).convert("RGB").getpixel((0, 0))  # JPEG: its own colour
    assert (out[3] - normalised(decoded)).abs().max() < 1e-6


def test_large_image_within_the_limit(tmp_path):
    y = np.linspace(0, 255, 4000, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, 6000, dtype=np.float32)[None, :]
    array = np.stack(np.broadcast_arrays((x + y) / 2, y, x), -1).astype(np.uint8)  # 4000 x 6000 x 3
    path = tmp_path / "large.jpg"
    Image.fromarray(array).save(path, quality=85)
    exact, fast = pre("exact")([path]), pre("fast")([path])
    assert exact.shape == fast.shape == (1, 3, 32, 32)
    assert (exact - fast).abs().max() <= fast_tolerance(CONFIG)[0]


# -------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("mode", MODES)
def test_decompression_bomb_over_a_configured_limit(mode, tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(ImageTooLargeError, match=r"big\.png: 100x100 = 10,000 pixels is over max_image_pixels=5,000"):
        ImagePreprocessor(CONFIG, mode=mode, max_image_pixels=5000)([path])
    assert ImagePreprocessor(CONFIG, mode=mode, max_image_pixels=10_000)([path]).shape == (1, 3, 32, 32)
    with pytest.raises(ImageTooLargeError, match="item 0"):
        ImagePreprocessor(CONFIG, mode=mode, max_image_pixels=5000)([np.zeros((100, 100, 3), np.uint8)])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose pixel data is junk (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"junk") + chunk(b"IEND", b"")


@pytest.mark.parametrize("mode", MODES)
def test_decompression_bomb_header_is_refused_before_decoding(mode, tmp_path):
    bomb, big = tmp_path / "bomb.png", tmp_path / "big.png"
    bomb.write_bytes(png_header_only(50_000, 50_000))  # over twice Pillow's limit: Pillow refuses at open
    big.write_bytes(png_header_only(9_000, 9_000))  # under Pillow's limit: our max_image_pixels refuses
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: .*decompression bomb"):
        pre(mode)([bomb])
    message = r"big\.png: 9000x9000 = 81,000,000 pixels is over max_image_pixels=1,000"
    with pytest.raises(ImageTooLargeError, match=message):
        ImagePreprocessor(CONFIG, mode=mode, max_image_pixels=1000)([big])
    with pytest.raises(ImageLoadError, match=r"big\.png: truncated or corrupt image data"):  # not refused: decoded
        ImagePreprocessor(CONFIG, mode=mode, max_image_pixels=None)([big])


@pytest.mark.parametrize("mode", MODES)
def test_truncated_files(mode, photo, tmp_path):
    for ext, data in (("jpg", encode(Image.fromarray(photo), "JPEG")), ("png", encode(Image.fromarray(photo), "PNG"))):
        path = tmp_path / f"cut.{ext}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageLoadError, match=rf"cut\.{ext}: truncated or corrupt image data"):
            pre(mode)([path])


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_png_data_is_an_error_not_a_crash(mode, tmp_path):
    """torchvision 0.29's decode_png segfaults on corrupt data; the fast path must not reach it."""
    path = tmp_path / "corrupt.png"
    path.write_bytes(png_header_only(64, 64))
    with pytest.raises(ImageLoadError, match=r"corrupt\.png: truncated or corrupt image data"):
        pre(mode)([path])


@pytest.mark.parametrize("mode", MODES)
def test_text_empty_missing_and_unsupported_inputs(mode, tmp_path):
    text, empty = tmp_path / "notes.jpg", tmp_path / "empty.png"
    text.write_text("this is not a picture\n")
    empty.write_bytes(b"")
    cases = {
        text: r"notes\.jpg: not an image",
        empty: r"empty\.png: empty file \(0 bytes\)",
        tmp_path / "missing.jpg": r"missing\.jpg: no such file",
        tmp_path: r"is a directory",
    }
    for item, pattern in cases.items():
        with pytest.raises(ImageLoadError, match=pattern):
            pre(mode)([item])
    with pytest.raises(ImageLoadError, match=r"^bytes\[0\]: not an image"):
        pre(mode)([b"GIF89a but not really"])
    with pytest.raises(ImageLoadError, match=r"^item 0: unsupported input type dict"):
        pre(mode)([{"image": 1}])
    with pytest.raises(ImageLoadError, match=r"^item 0: float pixels must be in \[0, 1\]"):
        pre(mode)([np.full((4, 4, 3), 200.0)])
    with pytest.raises(ImageLoadError, match=r"^item 0: cannot read an image from an array of shape \(5, 5, 7\)"):
        pre(mode)([np.zeros((5, 5, 7), np.uint8)])
    with pytest.raises(ImageLoadError, match="text mode"):
        with open(text) as handle:
            pre(mode)([handle])


def test_errors_are_blip2_errors_and_survive_pickling():
    error = ImageTooLargeError("a.png", "too big")
    assert isinstance(error, ImageLoadError) and isinstance(error, Blip2Error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ImageTooLargeError
    assert (copy.source, copy.reason, str(copy)) == ("a.png", "too big", "a.png: too big")
