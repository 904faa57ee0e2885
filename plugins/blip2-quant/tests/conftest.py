"""A tiny random-weight pipeline (timm ViT, Q-Former, Llama with tied embeddings) for the quantizer tests."""

from __future__ import annotations

import copy

import pytest
import torch

from blip2core import load_pipeline

TINY_SPEC = {
    "vision": {"name": "timm", "options": {
        "model_name": "vit_tiny_patch16_224", "image_size": 32,
        "model_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}}},
    "bridge": {"name": "qformer", "options": {
        "num_query_tokens": 4, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128}},
    "llm": {"name": "llama", "options": {"config": {
        "vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}}},
}


def tiny_spec(**changes) -> dict:
    """A deep copy of TINY_SPEC with top-level keys replaced."""
    return {**copy.deepcopy(TINY_SPEC), **changes}


def tiny_pipeline(**load_kwargs):
    """The tiny pipeline; random weights seeded so every call builds the same numbers."""
    torch.manual_seed(0)
    return load_pipeline(tiny_spec(), **load_kwargs)


@pytest.fixture(scope="session")
def inputs():
    """(pixel_values [2, 3, 32, 32], input_ids [2, 6])."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.randint(3, 320, (2, 6), generator=generator)


@pytest.fixture(scope="session")
def reference(inputs):
    """(fp32 pipeline, its logits [2, 4 + 6, 320], its query output [2, 4, 64])."""
    pipe = tiny_pipeline()
    pixels, ids = inputs
    with torch.no_grad():
        return pipe, pipe(pixels, ids).logits, pipe.encode_images(pixels).query_output


@pytest.fixture(scope="session")
def build():
    """``build(**load_pipeline_kwargs)`` -> the tiny pipeline (same random weights every time)."""
    return tiny_pipeline


@pytest.fixture(scope="session")
def make_spec():
    """``make_spec(**top_level_changes)`` -> a fresh copy of the tiny spec dict."""
    return tiny_spec
