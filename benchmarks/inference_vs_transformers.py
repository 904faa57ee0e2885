"""blip2core vs transformers on the same random BLIP-2 weights, in one run.

A base-scale BLIP-2 (ViT-B/16-sized EVA tower 768 x 12 at 224 px, BERT-base Q-Former with 32
queries, OPT-125m-sized LM) is built with transformers, saved with save_pretrained, and loaded by
both libraries. Measured: image encoding (ViT + Q-Former + projection) images/s at batch 8 in fp32
and bf16, and greedy generation of 20 tokens at batch 1. Outputs are checked equal before timing.

    .venv/bin/python benchmarks/inference_vs_transformers.py [--repeats 5] [--threads 2] [--dtypes float32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

from blip2core import load_pipeline

Q = 32
IMAGE_TOKEN = 50264


def base_config() -> Blip2Config:
    return Blip2Config(
        vision_config=dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, layer_norm_eps=1e-6, qkv_bias=True, initializer_range=0.02),
        qformer_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                            cross_attention_frequency=2, encoder_hidden_size=768, initializer_range=0.02),
        text_config=OPTConfig(vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, ffn_dim=3072,
                              num_hidden_layers=12, num_attention_heads=12, init_std=0.02).to_dict(),
        num_query_tokens=Q, image_token_index=IMAGE_TOKEN, initializer_range=0.02,
    )


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="comma-separated; bfloat16 is only fast on CPUs with AMX / avx512_bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        hf = Blip2ForConditionalGeneration(base_config()).eval()
        hf.save_pretrained(folder)
        pixels = torch.randn(8, 3, 224, 224)
        prompt = torch.tensor([[IMAGE_TOKEN] * Q + [2, 100, 200, 300]])
        rows = []
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            hf_model = Blip2ForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
            ours = load_pipeline(Path(folder), dtype=dtype_name)
            with torch.inference_mode():
                a = hf_model.get_image_features(pixels.to(dtype)).pooler_output.float()
                b = ours.encode_images(pixels).llm_inputs.float()
                diff = (a - b).abs().max().item()

                def hf_encode():
                    hf_model.get_image_features(pixels.to(dtype))

                def our_encode():
                    ours.encode_images(pixels)

                def hf_generate():
                    return hf_model.generate(pixel_values=pixels[:1].to(dtype), input_ids=prompt,
                                             max_new_tokens=20, min_new_tokens=20, do_sample=False)

                def our_generate():
                    return ours.generate(pixels[:1], prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False)

                same_tokens = hf_generate()[:, prompt.shape[1]:].tolist() == our_generate().tolist()
                hf_enc, _ = best_of(hf_encode, args.repeats)
                our_enc, _ = best_of(our_encode, args.repeats)
                hf_gen, _ = best_of(hf_generate, args.repeats)
                our_gen, _ = best_of(our_generate, args.repeats)
            rows.append((dtype_name, 8 / hf_enc, 8 / our_enc, hf_gen, our_gen, diff, same_tokens))

    print(f"threads={args.threads} repeats={args.repeats} (best of); base-scale BLIP-2, random weights")
    print(f"{'dtype':<9} {'encode img/s HF':>16} {'ours':>8} {'ratio':>6}   {'greedy20 s HF':>14} {'ours':>7} {'ratio':>6}   max|diff|  same tokens")
    for dtype_name, hf_ips, our_ips, hf_gen, our_gen, diff, same in rows:
        print(f"{dtype_name:<9} {hf_ips:>16.2f} {our_ips:>8.2f} {our_ips / hf_ips:>6.2f}   {hf_gen:>14.3f} {our_gen:>7.3f} "
              f"{hf_gen / our_gen:>6.2f}   {diff:.2e}  {same}")


if __name__ == "__main__":
    main()
