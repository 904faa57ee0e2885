"""Batch API (bad inputs reported, not raised), train augmentation, folder DataLoader, the plugin."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from blip2core.errors import SpecError
from blip2core.plugins import Plugins
from blip2core.preprocess import (
    BatchLoadError,
    BatchResult,
    Failure,
    ImageLoadError,
    ImagePreprocessor,
    PreprocessOptions,
    folder_loader,
    iter_folder,
    list_images,
)
from blip2core.preprocess.transforms import fast_tolerance
from blip2core.preprocess_config import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from blip2core.protocols import Preprocessor

CONFIG = PreprocessConfig(image_size=32)
MODES = ["exact", "fast"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five real photos (JPEG / PNG) in two sub-folders, plus one corrupt file and one text file."""
    import skimage.data

    root = tmp_path_factory.mktemp("images")
    (root / "a").mkdir()
    (root / "b").mkdir()
    for i, name in enumerate(("astronaut", "chelsea", "coffee", "rocket", "camera")):
        image = Image.fromarray(getattr(skimage.data, name)()[::4, ::4])
        image.save(root / ("a" if i % 2 else "b") / f"{i}_{name}.{'jpg' if i % 2 else 'png'}")
    good = (root / "a" / "1_chelsea.jpg").read_bytes()
    (root / "a" / "9_corrupt.jpg").write_bytes(good[: len(good) // 3])
    (root / "b" / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------------------------ batches
@pytest.mark.parametrize("mode", MODES)
def test_one_bad_file_among_good_ones_is_reported_by_name(folder, mode):
    paths = list_images(folder)
    assert len(paths) == 6 and paths[2].name == "9_corrupt.jpg"
    pre = ImagePreprocessor(CONFIG, mode=mode, num_threads=2)
    result = pre.preprocess_batch(paths)
    assert isinstance(result, BatchResult) and not result.ok
    assert result.pixel_values.shape == (5, 3, 32, 32)
    assert result.indices == [0, 1, 3, 4, 5]
    assert result.names == [str(p) for i, p in enumerate(paths) if i != 2]
    [failure] = result.failures
    assert isinstance(failure, Failure)
    assert (failure.index, failure.name) == (2, str(paths[2]))
    assert "truncated or corrupt image data" in failure.message
    good = pre([p for i, p in enumerate(paths) if i != 2])
    assert torch.equal(result.pixel_values, good)  # the good ones are untouched by the bad one
    with pytest.raises(ImageLoadError, match=r"9_corrupt\.jpg: truncated or corrupt"):
        pre(paths)


def test_several_bad_inputs_raise_one_error_listing_all():
    pre = ImagePreprocessor(CONFIG, num_threads=1)
    with pytest.raises(BatchLoadError) as info:
        pre([np.zeros((8, 8, 3), np.uint8), b"", b"junk", {"x": 1}])
    error = info.value
    assert isinstance(error, ImageLoadError)
    assert [f.index for f in error.failures] == [1, 2, 3]
    assert str(error).startswith("3 of 4 images: could not be loaded: bytes[1]: empty file")
    assert "bytes[2]: not an image" in str(error) and "item 3: unsupported input type dict" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)


def test_empty_batch_and_all_bad():
    pre = ImagePreprocessor(CONFIG)
    assert pre([]).shape == (0, 3, 32, 32)
    result = pre.preprocess_batch([b"x", b"y"])
    assert result.pixel_values.shape == (0, 3, 32, 32) and len(result.failures) == 2


def test_threads_do_not_change_results(folder):
    paths = [p for p in list_images(folder) if "corrupt" not in p.name]
    for mode in MODES:
        one = ImagePreprocessor(CONFIG, mode=mode, num_threads=1)(paths)
        many = ImagePreprocessor(CONFIG, mode=mode, num_threads=3)(paths)
        assert torch.equal(one, many)


# -------------------------------------------------------------------------------------- train
@pytest.mark.parametrize("mode", MODES)
def test_train_augmentation_is_random_shape_correct_and_seeded(folder, mode):
    paths = [p for p in list_images(folder) if "corrupt" not in p.name]
    pre = ImagePreprocessor(CONFIG, mode=mode, num_threads=2)
    torch.manual_seed(0)
    first = pre(paths, train=True)
    second = pre(paths, train=True)
    torch.manual_seed(0)
    again = ImagePreprocessor(CONFIG, mode=mode, num_threads=1)(paths, train=True)
    assert first.shape == (5, 3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, again)  # same seed -> same crops and flips, whatever the threads
    assert not torch.equal(first, second)  # random from call to call
    assert not torch.equal(first, pre(paths))  # not the eval transform


def test_train_fast_and_exact_use_the_same_crops():
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(noise).resize((800, 600)))
    torch.manual_seed(3)
    exact = ImagePreprocessor(CONFIG, mode="exact")([image] * 4, train=True)
    torch.manual_seed(3)
    fast = ImagePreprocessor(CONFIG, mode="fast")([image] * 4, train=True)
    assert (exact - fast).abs().max() <= fast_tolerance(CONFIG)[0]


def test_train_crop_scale_and_flip_follow_the_options():
    """scale (1, 1) with the image's own aspect ratio keeps the whole image: only the flip remains."""
    array = np.zeros((32, 32, 3), np.uint8)
    array[:, :16] = 255  # left half white
    pre = ImagePreprocessor(CONFIG, train_scale=(1.0, 1.0), train_ratio=(1.0, 1.0))
    torch.manual_seed(0)
    out = pre([array] * 16, train=True)
    left_white = out[:, 0, :, :16].mean(dim=(1, 2)) > out[:, 0, :, 16:].mean(dim=(1, 2))
    assert 0 < int(left_white.sum()) < 16  # some flipped, some not
    eval_out = pre([array])
    for sample, white in zip(out, left_white):
        assert torch.equal(sample, eval_out[0] if white else eval_out[0].flip(-1))
    no_flip = ImagePreprocessor(CONFIG, train_scale=(1.0, 1.0), train_ratio=(1.0, 1.0), train_hflip=False)
    assert torch.equal(no_flip([array] * 4, train=True), eval_out.expand(4, -1, -1, -1))


def test_one_pixel_image_in_train_mode():
    out = ImagePreprocessor(CONFIG)([np.full((1, 1, 3), 9, np.uint8)], train=True)
    assert out.shape == (1, 3, 32, 32)


# ------------------------------------------------------------------------------------- folder
def test_folder_loader_batches_and_carries_failures(folder):
    pre = ImagePreprocessor(CONFIG, mode="fast")
    loader = folder_loader(folder, pre, batch_size=4, num_workers=0)
    assert loader.pin_memory == torch.cuda.is_available()
    batches = list(loader)
    assert [len(b.indices) + len(b.failures) for b in batches] == [4, 2]
    names = [n for b in batches for n in b.names]
    failures = [f for b in batches for f in b.failures]
    assert [f.name for f in failures] == [str(folder / "a" / "9_corrupt.jpg")]
    good_paths = [p for p in list_images(folder) if "corrupt" not in p.name]
    assert names == [str(p) for p in good_paths]
    pixels = torch.cat([b.pixel_values for b in batches])
    assert torch.equal(pixels, pre(good_paths))


def test_iter_folder_with_worker_processes_and_train(folder):
    pre = ImagePreprocessor(CONFIG, mode="exact")
    batches = list(iter_folder(folder, pre, batch_size=3, num_workers=2, progress=False))
    assert sum(len(b.indices) for b in batches) == 5 and sum(len(b.failures) for b in batches) == 1
    torch.manual_seed(0)
    train = list(folder_loader(folder, pre, batch_size=6, num_workers=0, train=True))
    assert train[0].pixel_values.shape == (5, 3, 32, 32)
    paths = list_images(folder)  # shuffled in train mode; indices still name the files
    assert sorted(train[0].indices) == [0, 1, 3, 4, 5]
    assert [str(paths[i]) for i in train[0].indices] == train[0].names


def test_batch_result_pin_memory_and_to():
    result = BatchResult(torch.zeros(2, 3, 4, 4), [0, 2], ["a", "c"], [Failure(1, "b", "bad")])
    moved = result.to("cpu")
    assert moved.indices == [0, 2] and moved.failures == result.failures
    if torch.cuda.is_available():
        assert result.pin_memory().pixel_values.is_pinned()


# ------------------------------------------------------------------------------------- plugin
def test_standard_preprocessor_is_registered_with_options():
    registry = Plugins(include=set()).registry
    component = registry.get("preprocessor", "standard")
    assert component.options is PreprocessOptions and component.plugin == "blip2core"
    config = PreprocessConfig(
        image_size=48, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="shortest_edge_crop", crop_pct=0.875
    )
    options = {"mode": "fast", "max_image_pixels": 10_000, "background": [0, 0, 0]}
    pre = component.build(options, preprocess_config=config)
    assert isinstance(pre, Preprocessor) and pre.config is config
    assert (pre.options.mode, pre.options.max_image_pixels, pre.options.background) == ("fast", 10_000, (0, 0, 0))
    assert pre([np.zeros((40, 60, 3), np.uint8)]).shape == (1, 3, 48, 48)
    default = component.build({}, preprocess_config=config)
    assert default.options.mode == "exact"
    for bad in ({"mode": "turbo"}, {"background": [0, 0, 300]}, {"train_scale": [0.9, 0.5]}, {"typo": 1}):
        with pytest.raises(SpecError, match=r"preprocessor\.options"):
            component.validate_options(bad, path="preprocessor.options")


def test_preprocessor_pickles_for_worker_processes(folder):
    pre = ImagePreprocessor(CONFIG, mode="fast", num_threads=2)
    paths = [p for p in list_images(folder) if "corrupt" not in p.name]
    before = pre(paths)
    copy = pickle.loads(pickle.dumps(pre))
    assert torch.equal(copy(paths), before)
    pre.close()
    assert torch.equal(pre(paths), before)  # threads restart after close()
