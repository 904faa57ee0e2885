"""Preprocessing rows: real photo files to pixel_values [B, 3, 224, 224]. blip2core's ``fast``
against transformers' ``BlipImageProcessor`` given the paths (torchvision backend, its faster input
form), ``exact`` against the implementation it reproduces, ``BlipImageProcessorPil`` on images read
with ``transformers.image_utils.load_image``. ``preprocess_throughput.py`` compares every variant."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from benchmarks.context import Context
from benchmarks.preprocess_throughput import write_set
from benchmarks.rows import Row
from benchmarks.timing import interleaved

BATCH = 32


def preprocess_rows(ctx: Context) -> list[Row]:
    from transformers import BlipImageProcessor, BlipImageProcessorPil
    from transformers.image_utils import load_image

    from blip2core.preprocess import ImagePreprocessor
    from blip2core.preprocess_config import PreprocessConfig

    warnings.filterwarnings("ignore", module="transformers")
    sizes = (None,) if ctx.quick else (None, 1024, 2048)
    config = PreprocessConfig(image_size=224)
    hf_kwargs = {"size": {"height": 224, "width": 224}, "do_convert_rgb": True}
    hf, hf_pil = BlipImageProcessor(**hf_kwargs), BlipImageProcessorPil(**hf_kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_set(Path(tmp), sizes)]
        batches = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]

        def run(fn):
            return lambda: [fn(batch) for batch in batches]

        def torchvision_paths(batch):
            return hf(batch, return_tensors="pt")["pixel_values"]

        def pil_images(batch):
            return hf_pil([load_image(p) for p in batch], return_tensors="pt")["pixel_values"]

        rows = []
        for mode, theirs, how in (("fast", torchvision_paths, "BlipImageProcessor on the file paths"),
                                  ("exact", pil_images, "BlipImageProcessorPil on load_image(path)")):
            ours = ImagePreprocessor(config, mode=mode)
            diff = (ours(batches[0]) - theirs(batches[0])).abs()
            timing = interleaved({"ours": run(ours), "theirs": run(theirs)}, ctx.rounds,
                                 **{**ctx.timing_options(), "warmup": ctx.warmup})  # decoders warm up per size
            rows.append(Row(f"preprocess {len(paths)} real photos (JPEG + PNG), {mode}, batch {BATCH}",
                            len(paths) / timing["ours"].median, len(paths) / timing["theirs"].median, "img/s",
                            f"max|diff| {diff.max().item():.1e}", f"theirs: {how}",
                            target=">= 3x" if mode == "fast" else ""))
    return rows
