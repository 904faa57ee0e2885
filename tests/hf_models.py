"""Random-weight transformers BLIP-2 models saved with save_pretrained: the oracle of the
compatibility tests. Small widths, real structure; ``initializer_range=0.02`` everywhere
(transformers' vision default of 1e-10 would make every weight ~0 and every test trivial)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    LlamaConfig,
    OPTConfig,
)

IMAGE_SIZE = 32
NUM_QUERY_TOKENS = 6
TEXT_VOCAB = 120
IMAGE_TOKEN_ID = TEXT_VOCAB - 1  # the "<image>" placeholder; the last row of the LLM's embeddings

VISION = dict(
    image_size=IMAGE_SIZE, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=80, layer_norm_eps=1e-6, qkv_bias=True, initializer_range=0.02,
)
QFORMER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
    cross_attention_frequency=1, encoder_hidden_size=48, vocab_size=99, max_position_embeddings=64,
    initializer_range=0.02,
)
OPT = dict(
    vocab_size=TEXT_VOCAB, hidden_size=32, word_embed_proj_dim=32, ffn_dim=48, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=128, init_std=0.02, bos_token_id=2, eos_token_id=2,
    pad_token_id=1,
)
LLAMA = dict(
    vocab_size=TEXT_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.02, bos_token_id=1,
    eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
)


def blip2_config(text: str = "opt", *, qformer_text_input: bool = False, **overrides) -> Blip2Config:
    text_config = OPTConfig(**OPT) if text == "opt" else LlamaConfig(**LLAMA)
    return Blip2Config(
        vision_config=Blip2VisionConfig(**VISION).to_dict(),
        qformer_config=Blip2QFormerConfig(**QFORMER, use_qformer_text_input=qformer_text_input).to_dict(),
        text_config=text_config.to_dict(),
        **{"num_query_tokens": NUM_QUERY_TOKENS, "image_token_index": IMAGE_TOKEN_ID, "initializer_range": 0.02,
           **overrides},
    )


def save_generation_model(folder: Path, text: str = "opt", seed: int = 0) -> Blip2ForConditionalGeneration:
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(blip2_config(text)).eval()
    model.save_pretrained(folder)
    return model


def save_retrieval_model(folder: Path, seed: int = 0) -> Blip2ForImageTextRetrieval:
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(blip2_config("opt", qformer_text_input=True, image_text_hidden_size=16, image_token_index=None)).eval()
    model.save_pretrained(folder)
    return model


def hf_prompt_ids(text_ids: torch.Tensor, bos: int) -> torch.Tensor:
    """What Blip2Processor produces: Q image placeholders, BOS, then the text. [B, Q+1+T]"""
    batch = text_ids.shape[0]
    image = torch.full((batch, NUM_QUERY_TOKENS), IMAGE_TOKEN_ID, dtype=torch.long)
    return torch.cat([image, torch.full((batch, 1), bos, dtype=torch.long), text_ids], dim=1)
