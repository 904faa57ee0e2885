"""Throughput of blip2core's preprocessor (fast, exact) against transformers' BLIP image processors.

The images are real photos that ship inside installed packages (scikit-image, scikit-learn,
matplotlib), re-encoded as JPEG (quality 90) and PNG at their own size and with the long side at
1024 and 2048 px, written to a temporary folder. Every method reads the same files from disk
(page cache warm) and produces pixel_values [B, 3, 224, 224] float32, in batches of --batch-size.

    .venv/bin/python benchmarks/preprocess_throughput.py [--batch-size 32] [--threads 0] [--repeats 3]

Not a test. Machines here are shared, so the methods are interleaved batch by batch (every method
runs on a batch before the next batch, in a rotating order), the whole is repeated --repeats times,
and each method keeps its fastest pass per format: load from other processes then hits all methods
alike instead of whichever ran during a busy moment.

Prints images/s for the JPEG files, the PNG files and all files, and the ratio of each method to
transformers' ``BlipImageProcessor``, whose faster input form overall (paths, decoded by torchvision;
or PIL images from ``transformers.image_utils.load_image``) is the baseline; then CPU ms per image
(all threads of the process), which depends much less on that load. The fast path decodes opaque
8-bit PNGs with Wuffs (pywuffs) and the other PNGs with libspng (pyspng); "blip2core fast, PNG by
libspng (no pywuffs)" is the fast path as it runs without pywuffs, and "blip2core fast, PNG by
Pillow" as it runs with neither package.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blip2core.preprocess import ImagePreprocessor, png, wuffs_png  # noqa: E402
from blip2core.preprocess_config import PreprocessConfig  # noqa: E402

SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "moon"
)


def sample_photos() -> dict[str, np.ndarray]:
    """name -> uint8 HWC (or HW) array of every real photo available offline."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS}
    for name, image in zip(("china", "flower"), load_sample_images().images):
        photos[name] = image
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos["grace_hopper"] = np.array(Image.open(handle).convert("RGB"))
    return photos


def write_set(folder: Path, long_sides: tuple[int | None, ...]) -> list[Path]:
    """Each photo at each size (None = its own) as JPEG q90 and PNG; returns the paths."""
    paths = []
    for name, array in sample_photos().items():
        image = Image.fromarray(array)
        for side in long_sides:
            resized = image
            if side is not None:
                scale = side / max(image.size)
                resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            tag = side or "orig"
            for fmt, ext, kwargs in (("JPEG", "jpg", {"quality": 90}), ("PNG", "png", {})):
                path = folder / f"{name}_{tag}.{ext}"
                resized.save(path, fmt, **kwargs)
                paths.append(path)
    return paths


def time_batch(fn, batch: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of fn(batch_of_paths) -> [b, 3, 224, 224]."""
    cpu, start = time.process_time(), time.perf_counter()
    out = fn(batch)
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape == (len(batch), 3, 224, 224), out.shape
    return wall, used


def time_interleaved(methods: dict, subsets: dict[str, list[str]], batch_size: int, repeats: int):
    """Per method and format: (wall, CPU) seconds of the fastest of ``repeats`` passes over the files.

    Batch by batch, every method runs on the same batch before the next batch starts (in an order
    that rotates), so a burst of load from other processes hits all methods alike."""
    names = list(methods)
    best_wall = {name: {fmt: float("inf") for fmt in subsets} for name in names}
    best_cpu = {name: {fmt: float("inf") for fmt in subsets} for name in names}
    for repeat in range(repeats):
        wall = {name: dict.fromkeys(subsets, 0.0) for name in names}
        cpu = {name: dict.fromkeys(subsets, 0.0) for name in names}
        step = repeat
        for fmt, subset in subsets.items():
            for i in range(0, len(subset), batch_size):
                step += 1
                for name in names[step % len(names) :] + names[: step % len(names)]:
                    w, c = time_batch(methods[name], subset[i : i + batch_size])
                    wall[name][fmt] += w
                    cpu[name][fmt] += c
        for name in names:
            for fmt in subsets:
                best_wall[name][fmt] = min(best_wall[name][fmt], wall[name][fmt])
                best_cpu[name][fmt] = min(best_cpu[name][fmt], cpu[name][fmt])
    return best_wall, best_cpu


@contextmanager
def without(pywuffs: bool = True, pyspng: bool = False):
    """The fast path as it runs without pywuffs (libspng decodes every PNG) and / or pyspng."""
    with mock.patch.object(wuffs_png, "_AVAILABLE", not pywuffs), mock.patch.object(png, "_LIB", None if pyspng else png._LIB):
        yield


def _fast_without(preprocessor: ImagePreprocessor, batch: list[str], pyspng: bool):
    with without(pywuffs=True, pyspng=pyspng):
        return preprocessor(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="num_threads of blip2core (0 = auto)")
    parser.add_argument("--sizes", default="orig,1024,2048", help="long sides, 'orig' = the photo's own")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed passes; the fastest is kept")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from transformers import BlipImageProcessor, BlipImageProcessorPil
    from transformers.image_utils import load_image
    import transformers

    config = PreprocessConfig(image_size=224)
    sizes = tuple(None if s == "orig" else int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_set(Path(tmp), sizes)]
        for p in paths:  # page cache warm for everyone
            Path(p).read_bytes()
        megapixels = sum(Image.open(p).width * Image.open(p).height for p in paths) / len(paths) / 1e6
        hf_kwargs = {"size": {"height": 224, "width": 224}, "do_convert_rgb": True}
        hf = BlipImageProcessor(**hf_kwargs)
        hf_pil = BlipImageProcessorPil(**hf_kwargs)
        fast = ImagePreprocessor(config, mode="fast", num_threads=args.threads)
        exact = ImagePreprocessor(config, mode="exact", num_threads=args.threads)
        methods = {
            "blip2core fast": fast,
            "blip2core fast, PNG by libspng (no pywuffs)": lambda b: _fast_without(fast, b, pyspng=False),
            "blip2core fast, PNG by Pillow (no pywuffs/pyspng)": lambda b: _fast_without(fast, b, pyspng=True),
            "blip2core exact": exact,
            "transformers BlipImageProcessor (paths)": lambda b: hf(b, return_tensors="pt")["pixel_values"],
            "transformers BlipImageProcessor (load_image)": lambda b: hf(
                [load_image(p) for p in b], return_tensors="pt"
            )["pixel_values"],
            "transformers BlipImageProcessorPil (load_image)": lambda b: hf_pil(
                [load_image(p) for p in b], return_tensors="pt"
            )["pixel_values"],
        }
        print(
            f"{len(paths)} files ({len(paths) // 2} JPEG + {len(paths) // 2} PNG, mean {megapixels:.2f} MP), "
            f"batch {args.batch_size}, blip2core threads {fast.num_threads}, torch threads {torch.get_num_threads()}, "
            f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
        )
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, Pillow {Image.__version__}")
        print(f"fast-path PNG decoders: {png.describe()}; {args.repeats} passes, interleaved by batch, fastest kept")
        subsets = {"JPEG": [p for p in paths if p.endswith(".jpg")], "PNG": [p for p in paths if p.endswith(".png")]}
        for fn in methods.values():
            fn(subsets["JPEG"][:2] + subsets["PNG"][:2])  # warm-up: imports, thread pools, kernels
        seconds, cpu = time_interleaved(methods, subsets, args.batch_size, args.repeats)
    counts = {fmt: len(subset) for fmt, subset in subsets.items()}
    rates = {
        name: {**{fmt: counts[fmt] / s[fmt] for fmt in s}, "all": len(paths) / sum(s.values())}
        for name, s in seconds.items()
    }
    hf_names = [n for n in rates if n.startswith("transformers BlipImageProcessor (")]
    baseline_name = max(hf_names, key=lambda n: rates[n]["all"])
    baseline = rates[baseline_name]
    print(f"\nimages/s (ratio to {baseline_name})")
    print(f"{'method':<50} {'JPEG':>15} {'PNG':>15} {'all':>15}")
    for name, rate in rates.items():
        cells = [f"{rate[k]:7.1f} ({rate[k] / baseline[k]:4.2f}x)" for k in ("JPEG", "PNG", "all")]
        print(f"{name:<50} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}")
    print("\nCPU ms per image (all threads of the process, fastest pass; less sensitive to other load)")
    print(f"{'method':<50} {'JPEG':>15} {'PNG':>15} {'all':>15}")
    for name, used in cpu.items():
        cells = [f"{1000 * used[k] / counts[k]:7.1f}" for k in ("JPEG", "PNG")]
        cells.append(f"{1000 * sum(used.values()) / len(paths):7.1f}")
        print(f"{name:<50} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}")
    print()
    for name in [n for n in rates if n.startswith("blip2core fast")]:
        rate = rates[name]
        print(
            f"{name} / transformers BlipImageProcessor at batch {args.batch_size}: "
            f"all {rate['all'] / baseline['all']:.2f}x, "
            f"JPEG {rate['JPEG'] / baseline['JPEG']:.2f}x, PNG {rate['PNG'] / baseline['PNG']:.2f}x (target >= 3x)"
        )
    exact = rates["blip2core exact"]
    print(f"exact / transformers BlipImageProcessor: all {exact['all'] / baseline['all']:.2f}x")


if __name__ == "__main__":
    main()
