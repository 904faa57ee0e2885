"""PNG decoders side by side: mean ms per file, one thread, on preprocess_throughput.py's PNGs.

    .venv/bin/python benchmarks/png_decoders.py [--sizes orig,1024,2048] [--repeats 3]

Not a test. Each decoder decodes every file (best of --repeats per file) to 8-bit pixels, and its
output is checked against Pillow's (``decode.load_pil``) before it is timed. Decoders whose package
is not installed are listed as such: blip2core's own (Wuffs through pywuffs, libspng through
pyspng, Pillow) are in requirements.lock; to compare the others, install them somewhere else and
put it on PYTHONPATH (``pip install --target /tmp/png-extra imagecodecs opencv-python-headless
pyvips pyvips-binary``). "zlib inflate only" / "zlib-ng inflate only" decompress the IDAT data
alone: the part of a decode that is not unfiltering.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from blip2core.preprocess import png, wuffs_png  # noqa: E402
from blip2core.preprocess.decode import load_pil  # noqa: E402
from blip2core.preprocess.options import PreprocessOptions  # noqa: E402
from blip2core.preprocess.sources import Source  # noqa: E402
from preprocess_throughput import write_set  # noqa: E402


def idat(data: bytes) -> bytes:
    """The concatenated IDAT payload (the zlib stream)."""
    out, position = [], 8
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT":
            out.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    return b"".join(out)


def decoders() -> dict[str, object]:
    """name -> fn(bytes, grey) -> uint8 [H, W, C] (or None for inflate-only), or a "not installed" string."""
    found: dict[str, object] = {}
    grey_fmt = {True: png._FMT_G8, False: png._FMT_RGB8}
    found["libspng (pyspng, blip2core's ctypes call)"] = (
        (lambda d, g: png.spng_decode(d, grey_fmt[g])) if png.available() else "not installed (pyspng)"
    )
    found["Wuffs (pywuffs)"] = (
        (lambda d, g: wuffs_png._decoder(g).decode(d).pixbuf) if wuffs_png.available() else "not installed (pywuffs)"
    )
    found["Pillow"] = lambda d, g: np.asarray(load_pil(Source(d, "x", 0), PreprocessOptions()))
    try:
        import imagecodecs

        found["libpng (imagecodecs)"] = lambda d, g: imagecodecs.png_decode(d)
        found["libspng (imagecodecs)"] = lambda d, g: imagecodecs.spng_decode(d)
        found["zlib-ng inflate only (imagecodecs)"] = lambda d, g: imagecodecs.zlibng_decode(idat(d)) and None
    except ImportError:
        found["imagecodecs (libpng, libspng, zlib-ng)"] = "not installed (imagecodecs)"
    try:
        import cv2

        cv2.setNumThreads(1)

        def opencv(data: bytes, grey: bool) -> np.ndarray:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            return pixels if grey else pixels[..., ::-1]  # OpenCV gives BGR

        found["OpenCV imdecode"] = opencv
    except ImportError:
        found["OpenCV imdecode"] = "not installed (opencv-python-headless)"
    try:
        import pyvips

        pyvips.cache_set_max(0)
        found["libvips (pyvips)"] = lambda d, g: pyvips.Image.new_from_buffer(d, "", access="sequential").numpy()
    except (ImportError, OSError):
        found["libvips (pyvips)"] = "not installed (pyvips, pyvips-binary)"
    found["zlib inflate only (Python's zlib)"] = lambda d, g: zlib.decompress(idat(d)) and None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="orig,1024,2048", help="long sides, 'orig' = the photo's own")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    sizes = tuple(None if s == "orig" else int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        files = [p.read_bytes() for p in write_set(Path(tmp), sizes) if p.suffix == ".png"]
    references = [np.asarray(load_pil(Source(d, "x", 0), PreprocessOptions())) for d in files]
    print(f"{len(files)} PNGs (8-bit grey and RGB photos), one thread, best of {args.repeats} per file")
    print(f"{'decoder':<45} {'mean ms / file':>15}  pixels")
    for name, fn in decoders().items():
        if isinstance(fn, str):
            print(f"{name:<45} {'-':>15}  {fn}")
            continue
        total, identical = 0.0, True
        for data, reference in zip(files, references):
            grey = data[25] == 0
            out = fn(data, grey)
            if out is not None:
                out = np.asarray(out).reshape(reference.shape[0], reference.shape[1], -1)
                identical &= bool(np.array_equal(out[..., 0] if grey else out, reference[..., 0] if grey else reference))
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn(data, grey)
                best = min(best, time.perf_counter() - start)
            total += best
        verdict = "(inflate only)" if "inflate only" in name else ("identical to Pillow" if identical else "DIFFER")
        print(f"{name:<45} {1000 * total / len(files):>15.1f}  {verdict}")


if __name__ == "__main__":
    main()
