"""Out of memory on a too-large batch: the batch is split in halves until it fits, with one warning
line naming the batch size that fits, and the results are those of small batches; what still does
not fit is one ``Error: out of memory ...`` line, exit 1, no traceback.

The real case runs ``blip2 features`` in a child process whose address space is limited
(RLIMIT_AS) to what it uses after a warm-up run (batches of 16) plus a budget: a batch of 128
224-px images needs more than that budget, a batch of 64 does not (measured here: 64 fits in
110 MiB, 128 needs over 115 and fits in 130).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from blip2core.errors import InputError
from blip2core.inference.feature_store import read_features
from blip2core.inference.memory import BatchFitter, BatchSizeWarning, is_out_of_memory

CHILD = textwrap.dedent("""
    import resource, sys, threading
    threading.stack_size(512 * 1024)  # threads take little address space under the limit
    from blip2core.cli.main import main

    def blip2(*args):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            return exc.code or 0
        return 0

    spec, images, warm, out, budget_mib, batch = sys.argv[1:7]
    assert blip2("features", images, "--out", warm, "--spec", spec, "--batch-size", 16, "--no-progress") == 0
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + int(budget_mib) * 2**20, resource.RLIM_INFINITY))
    sys.exit(blip2("features", images, "--out", out, "--spec", spec, "--batch-size", batch, "--no-progress"))
""")


@pytest.fixture(scope="module")
def big_image_pipeline(tmp_path_factory):
    """A spec (eva-vit at 224 px: 257 tokens, tiny widths; a Q-Former) and 128 small PNGs."""
    from blip2_runner.testing import tiny_pipeline_spec

    folder = tmp_path_factory.mktemp("oom")
    spec = tiny_pipeline_spec(folder, image_size=224, patch_size=14)
    spec.pop("llm")
    spec["seed"] = 0
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(128):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    return folder / "spec.yaml", images


def run_limited(spec: Path, images: Path, out_dir: Path, budget_mib: int, batch: int) -> subprocess.CompletedProcess:
    # a fixed mmap threshold: large buffers are returned to the OS when freed (glibc's dynamic
    # threshold would keep some mapped, and what fits would vary from run to run)
    env = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", CHILD, spec, images, out_dir / "warm.safetensors", out_dir / "out.safetensors",
         str(budget_mib), str(batch)],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_a_batch_that_runs_out_of_memory_is_split_and_names_the_size_that_fits(big_image_pipeline, tmp_path):
    spec, images = big_image_pipeline
    done = run_limited(spec, images, tmp_path, budget_mib=115, batch=128)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: out of memory")]
    assert len(warnings) >= 1 and "on a batch of 128; going on with 64 (pass --batch-size 64" in warnings[0]
    names, tensors = read_features(tmp_path / "out.safetensors")
    warm_names, warm = read_features(tmp_path / "warm.safetensors")
    assert names == warm_names and len(names) == 128
    for field, tensor in warm.items():
        torch.testing.assert_close(tensors[field], tensor, rtol=1e-4, atol=1e-5)


def test_what_does_not_fit_at_all_is_one_line(big_image_pipeline, tmp_path):
    spec, images = big_image_pipeline
    done = run_limited(spec, images, tmp_path, budget_mib=4, batch=128)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: out of memory"), done.stderr
    assert not (tmp_path / "out.safetensors").exists()


class Allocates:
    """A model call whose slices over ``fits`` rows fail as torch's CPU allocator fails."""

    def __init__(self, fits: int, error: type[BaseException] = RuntimeError) -> None:
        self.fits, self.error, self.calls = fits, error, []

    def __call__(self, start: int, stop: int) -> list[int]:
        self.calls.append((start, stop))
        if stop - start > self.fits:
            raise self.error("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return list(range(start, stop))


@pytest.mark.parametrize("error", [RuntimeError, MemoryError, torch.OutOfMemoryError])
def test_the_fitter_halves_until_a_slice_fits_and_keeps_that_size(error):
    fitter, call = BatchFitter(16), Allocates(fits=5, error=error)
    with pytest.warns(BatchSizeWarning, match=r"batch of 16; going on with 8"):
        parts = fitter.run(call, 20)
    assert [i for part in parts for i in part] == list(range(20))  # every row once, in order
    assert fitter.size == 4
    second = Allocates(fits=5)
    assert [i for part in fitter.run(second, 6) for i in part] == list(range(6))
    assert second.calls == [(0, 4), (4, 6)]  # the size that fitted is kept: no new failure


def test_one_row_that_does_not_fit_and_other_errors():
    with pytest.raises(InputError, match="out of memory on a single image"), pytest.warns(BatchSizeWarning):
        BatchFitter(4).run(Allocates(fits=0), 4)
    with pytest.raises(ValueError, match="not memory"):
        BatchFitter(4).run(lambda a, b: (_ for _ in ()).throw(ValueError("not memory")), 4)
    assert not is_out_of_memory(RuntimeError("can't start new thread"))
