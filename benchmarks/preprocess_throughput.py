"""Throughput of blip2core's preprocessor (fast, exact) against transformers' BLIP image processors.

The images are real photos that ship inside installed packages (scikit-image, scikit-learn,
matplotlib), re-encoded as JPEG (quality 90) and PNG at their own size and with the long side at
1024 and 2048 px, written to a temporary folder. Every method reads the same files from disk
(page cache warm) and produces pixel_values [B, 3, 224, 224] float32, in batches of --batch-size.

    .venv/bin/python benchmarks/preprocess_throughput.py [--batch-size 32] [--threads 0]

One timed pass per method and format (not a test; numbers are noisy on shared machines). Prints
images/s for the JPEG files, the PNG files and all files, and the ratio of each method to
transformers' ``BlipImageProcessor``, whose faster input form overall (paths, decoded by
torchvision; or PIL images from ``transformers.image_utils.load_image``) is the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blip2core.preprocess import ImagePreprocessor  # noqa: E402
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


def time_method(fn, paths: list[str], batch_size: int) -> float:
    """Seconds for fn(batch_of_paths) -> [b, 3, 224, 224] over all paths, one pass."""
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        out = fn(paths[i : i + batch_size])
        assert out.shape == (len(paths[i : i + batch_size]), 3, 224, 224), out.shape
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="num_threads of blip2core (0 = auto)")
    parser.add_argument("--sizes", default="orig,1024,2048", help="long sides, 'orig' = the photo's own")
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
        subsets = {"JPEG": [p for p in paths if p.endswith(".jpg")], "PNG": [p for p in paths if p.endswith(".png")]}
        seconds = {}
        for name, fn in methods.items():
            fn(paths[:2])  # warm-up: imports, thread pools, kernels
            seconds[name] = {fmt: time_method(fn, subset, args.batch_size) for fmt, subset in subsets.items()}
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
    fast = rates["blip2core fast"]
    print(
        f"\nfast / transformers BlipImageProcessor at batch {args.batch_size}: "
        f"all {fast['all'] / baseline['all']:.2f}x, "
        f"JPEG {fast['JPEG'] / baseline['JPEG']:.2f}x, PNG {fast['PNG'] / baseline['PNG']:.2f}x (target >= 3x)"
    )
    exact = rates["blip2core exact"]
    print(f"exact / transformers BlipImageProcessor: all {exact['all'] / baseline['all']:.2f}x")


if __name__ == "__main__":
    main()
