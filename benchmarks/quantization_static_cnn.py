"""Would calibrated *static* int8 make the real EfficientNet-Lite0 faster on this CPU?

    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/quantization_static_cnn.py

``int8-dynamic`` leaves EfficientNet-Lite0 unchanged (it has no ``nn.Linear`` in its feature
path), so the only int8 route for its convolutions is static quantization: torch.ao FX graph mode
(``prepare_fx`` / ``convert_fx``, the x86 and fbgemm engines), calibrated on real photos
(skimage) and easy-vqa images, then scored on other images. Prints the per-image feature cosine
against float32 and the median time of a batch of 4 (float32 and int8 alternated).
"""

from __future__ import annotations

import copy
import glob
import sys
import warnings
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from torch import nn

from blip2core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a script: benchmarks.* importable
from benchmarks.timing import median_seconds  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class Features(nn.Module):
    """The timm trunk's ``forward_features`` as a traceable module: [B, 3, S, S] -> [B, 1280, S/32, S/32]."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(pixels)


def pixels(image: np.ndarray) -> torch.Tensor:
    """An RGB array -> [3, 224, 224], ImageNet-normalised (resized, not cropped: enough for a comparison)."""
    resized = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BICUBIC)
    return (torch.from_numpy(np.asarray(resized)).permute(2, 0, 1).float() / 255 - MEAN) / STD


def median_ms(calls: dict, rounds: int = 7) -> dict[str, float]:
    return {name: 1000 * seconds for name, seconds in median_seconds(calls, rounds).items()}


@torch.no_grad()
def main() -> None:
    warnings.filterwarnings("ignore")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    encoder = get_registry().get("vision_encoder", "efficientnet-lite0").build({}).eval()
    reference = Features(encoder.trunk).eval()
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(),
              skimage.data.hubble_deep_field(), skimage.data.immunohistochemistry()]
    import easy_vqa
    folder = easy_vqa.__path__[0] + "/data/train/images/*.png"
    shapes = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(glob.glob(folder))[:12]]
    calibration = torch.stack([pixels(i) for i in photos[:3] + shapes[:8]])
    test = torch.stack([pixels(i) for i in photos[3:] + shapes[8:]])
    expected = reference(test)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; calibration {len(calibration)} images, "
          f"test {len(test)}")
    print("| engine | feature cosine per test image (min / mean) | fp32 ms (batch 4) | int8 ms | speed-up |")
    print("|---|---|---|---|---|")
    for engine in ("x86", "fbgemm"):
        torch.backends.quantized.engine = engine
        prepared = prepare_fx(copy.deepcopy(reference), get_default_qconfig_mapping(engine), (calibration[:1],))
        prepared(calibration)
        quantized = convert_fx(prepared)
        cos = nn.functional.cosine_similarity(quantized(test).flatten(1), expected.flatten(1), dim=1)
        batch = test[:4]
        ms = median_ms({"fp32": lambda: reference(batch), "int8": lambda: quantized(batch)})
        print(f"| {engine} | {cos.min():.3f} / {cos.mean():.3f} | {ms['fp32']:.1f} | {ms['int8']:.1f} | "
              f"{ms['fp32'] / ms['int8']:.2f}x |")


if __name__ == "__main__":
    main()
