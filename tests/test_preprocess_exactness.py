"""The numbers: exact == transformers / LAVIS, fast within its documented tolerance, configs followed.

Real photos that ship inside installed packages (scikit-image, scikit-learn, matplotlib) are
re-encoded as JPEG and PNG in a temporary folder.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from blip2core.preprocess import ImagePreprocessor
from blip2core.preprocess.transforms import fast_tolerance
from blip2core.preprocess_config import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig

CLIP_224 = PreprocessConfig(image_size=224)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {name: getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "camera")}
    out["china"], out["flower"] = load_sample_images().images
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        out["grace_hopper"] = np.array(Image.open(handle).convert("RGB"))
    return out


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory) -> list[str]:
    """Each photo as JPEG (q90) and PNG at its own size, plus a 64 px (upsampled) JPEG of each."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name, array in photos.items():
        image = Image.fromarray(array)
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
            paths.append(folder / f"{name}.{ext}")
            image.save(paths[-1], fmt, quality=90)
        small = image.resize((64, max(1, round(64 * image.height / image.width))), Image.BICUBIC)
        paths.append(folder / f"{name}_64.jpg")
        small.save(paths[-1], "JPEG", quality=90)
    return [str(p) for p in paths]


def _hf(cls_name: str, **kwargs):
    import transformers

    defaults = {"size": {"height": 224, "width": 224}, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}
    return getattr(transformers, cls_name)(do_convert_rgb=True, **{**defaults, **kwargs})


def _hf_pixels(processor, images) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return processor(images, return_tensors="pt")["pixel_values"]


def test_exact_equals_transformers_blip_image_processor_pil(photo_files):
    """transformers 5.x names the Pillow implementation BlipImageProcessorPil (4.x: BlipImageProcessor)."""
    ours = ImagePreprocessor(CLIP_224, mode="exact")(photo_files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pil_images = [Image.open(p) for p in photo_files]
        reference = _hf_pixels(_hf("BlipImageProcessorPil"), pil_images)
    assert ours.shape == (len(photo_files), 3, 224, 224) and ours.dtype == torch.float32
    assert (ours - reference).abs().max().item() == 0.0  # bit-identical, not just <= 1e-6


def test_exact_equals_transformers_for_pil_and_numpy_inputs(photos):
    arrays = list(photos.values())
    reference = _hf_pixels(_hf("BlipImageProcessorPil"), [Image.fromarray(a).convert("RGB") for a in arrays])
    pre = ImagePreprocessor(CLIP_224, mode="exact")
    assert torch.equal(pre([Image.fromarray(a) for a in arrays]), reference)
    assert torch.equal(pre(arrays), reference)


def test_exact_equals_lavis_torchvision_transforms(photo_files):
    """LAVIS blip_image_eval: Resize((s, s), BICUBIC) -> ToTensor -> Normalize on PIL images."""
    from torchvision import transforms as T

    lavis = T.Compose(
        [
            T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ]
    )
    reference = torch.stack([lavis(Image.open(p).convert("RGB")) for p in photo_files])
    ours = ImagePreprocessor(CLIP_224, mode="exact")(photo_files)
    assert (ours - reference).abs().max().item() <= 1e-6


@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
def test_exact_shortest_edge_crop_equals_torchvision_clip_timm_eval(photo_files, crop_pct):
    """CLIP / timm eval: Resize(floor(S / crop_pct)) on the short side, CenterCrop(S) (Pillow)."""
    from torchvision import transforms as T

    config = PreprocessConfig(
        image_size=160, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="shortest_edge_crop", crop_pct=crop_pct
    )
    reference_tf = T.Compose(
        [
            T.Resize(int(160 / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(160),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    reference = torch.stack([reference_tf(Image.open(p).convert("RGB")) for p in photo_files])
    exact = ImagePreprocessor(config, mode="exact")(photo_files)
    assert exact.shape == (len(photo_files), 3, 160, 160)
    assert (exact - reference).abs().max().item() <= 1e-6
    fast = ImagePreprocessor(config, mode="fast")(photo_files)
    max_tol, mean_tol = fast_tolerance(config)
    assert (fast - exact).abs().max().item() <= max_tol
    assert (fast - exact).abs().mean().item() <= mean_tol


def test_fast_equals_transformers_default_torchvision_blip_image_processor(photos):
    """transformers 5.x BlipImageProcessor resizes uint8 tensors with torchvision, as ``fast`` does;
    only the normalisation arithmetic differs (fused (x - 255 m) / 255 s)."""
    images = [Image.fromarray(a).convert("RGB") for a in photos.values()]
    reference = _hf_pixels(_hf("BlipImageProcessor"), images)
    ours = ImagePreprocessor(CLIP_224, mode="fast")(images)
    assert (ours - reference).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "config",
    [
        CLIP_224,
        PreprocessConfig(image_size=364),
        PreprocessConfig(image_size=96, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ],
    ids=["224-bicubic", "364-bicubic", "96-bilinear-imagenet"],
)
def test_fast_within_documented_tolerance_of_exact(photo_files, config):
    exact = ImagePreprocessor(config, mode="exact")(photo_files)
    fast = ImagePreprocessor(config, mode="fast")(photo_files)
    diff = (fast - exact).abs()
    max_tol, mean_tol = fast_tolerance(config)
    assert diff.max().item() <= max_tol, f"max {diff.max().item():.5f} > {max_tol:.5f}"
    assert diff.mean().item() <= mean_tol, f"mean {diff.mean().item():.2e} > {mean_tol:.1e}"


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest", "lanczos"])
def test_config_is_followed_size_mean_std_interpolation(photos, interpolation):
    config = PreprocessConfig(image_size=48, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation=interpolation)
    image = Image.fromarray(photos["chelsea"])
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
    resized = np.asarray(image.resize((48, 48), filters[interpolation]), dtype=np.float32) / 255
    expected = torch.from_numpy((resized - np.float32(config.mean)) / np.float32(config.std)).permute(2, 0, 1)
    exact = ImagePreprocessor(config, mode="exact")([image])
    assert exact.shape == (1, 3, 48, 48)
    assert (exact[0] - expected).abs().max().item() <= 1e-6
    fast = ImagePreprocessor(config, mode="fast")([image])
    assert (fast - exact).abs().max().item() <= fast_tolerance(config)[0]
    if interpolation == "nearest":  # NEAREST_EXACT picks Pillow's pixels
        assert torch.equal(fast, exact)
