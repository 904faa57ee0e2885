"""transformers is the oracle: random-weight HF BLIP-2 models saved with save_pretrained and
loaded with blip2core give the same numbers and the same tokens."""

from __future__ import annotations

import pytest
import torch

from blip2core import load_pipeline
from hf_models import IMAGE_SIZE, NUM_QUERY_TOKENS, hf_prompt_ids, save_generation_model

ATOL = 1e-4


@pytest.fixture(scope="module", params=["opt", "llama"])
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"hf-{request.param}")
    hf = save_generation_model(folder, request.param)
    ours = load_pipeline(folder)
    return request.param, hf, ours


def images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def test_folder_becomes_the_expected_components(pair):
    text, _, ours = pair
    assert ours.spec.vision.name == "eva-vit" and ours.spec.bridge.name == "qformer"
    assert ours.spec.llm.name == text
    assert ours.load_report.loaded_slots == {"vision", "bridge", "llm"}
    assert not any(ours.load_report.missing.values()) and not ours.load_report.unexpected


def test_vision_tower_alone_matches(pair):
    _, hf, ours = pair
    pixel_values = images(2)
    with torch.no_grad():
        expected = hf.vision_model(pixel_values).last_hidden_state
        got = ours.vision(pixel_values)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= ATOL


def test_logits_match_with_hf_style_image_placeholders(pair):
    _, hf, ours = pair
    pixel_values = images(2)
    text = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(2))
    input_ids = hf_prompt_ids(text, hf.config.text_config.bos_token_id)
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values, input_ids=input_ids).logits
        got = ours(pixel_values, input_ids).logits
    assert got.shape == expected.shape == (2, NUM_QUERY_TOKENS + 8, hf.config.text_config.vocab_size)
    assert (got - expected).abs().max() <= ATOL


def test_prepending_the_soft_prompt_gives_the_same_logits_as_placeholders(pair):
    _, hf, ours = pair
    pixel_values = images(1)
    bos = hf.config.text_config.bos_token_id
    text = torch.tensor([[bos, 5, 17, 33, 9]])
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values, input_ids=hf_prompt_ids(text[:, 1:], bos)).logits
        got = ours(pixel_values, text).logits
    assert (got - expected).abs().max() <= ATOL


def test_loss_matches(pair):
    _, hf, ours = pair
    pixel_values = images(2)
    text = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    input_ids = hf_prompt_ids(text, hf.config.text_config.bos_token_id)
    labels = input_ids.clone()
    labels[:, : NUM_QUERY_TOKENS + 1] = -100
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values, input_ids=input_ids, labels=labels).loss
        got = ours(pixel_values, input_ids, labels=labels).loss
    assert abs(got.item() - expected.item()) <= ATOL


def _generate_both(hf, ours, pixel_values, input_ids, attention_mask, **kwargs):
    with torch.no_grad():
        expected = hf.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        got = ours.generate(pixel_values, input_ids, attention_mask, **kwargs)
    return expected[:, input_ids.shape[1]:], got


def test_greedy_tokens_match(pair):
    _, hf, ours = pair
    pixel_values = images(2)
    text = torch.randint(3, 100, (2, 4), generator=torch.Generator().manual_seed(4))
    input_ids = hf_prompt_ids(text, hf.config.text_config.bos_token_id)
    expected, got = _generate_both(
        hf, ours, pixel_values, input_ids, torch.ones_like(input_ids), max_new_tokens=10, min_new_tokens=10
    )
    assert got.tolist() == expected.tolist()


def test_beam_search_tokens_match_for_a_left_padded_batch(pair):
    _, hf, ours = pair
    bos, pad = hf.config.text_config.bos_token_id, hf.config.text_config.pad_token_id
    pixel_values = images(2)
    long = hf_prompt_ids(torch.tensor([[11, 12, 13, 14, 15]]), bos)
    short = hf_prompt_ids(torch.tensor([[21, 22]]), bos)
    short = torch.cat([torch.full((1, 3), pad), short], dim=1)  # pad on the left
    input_ids = torch.cat([long, short])
    attention_mask = (torch.arange(input_ids.shape[1]) >= torch.tensor([[0], [3]])).long()
    expected, got = _generate_both(
        hf, ours, pixel_values, input_ids, attention_mask, num_beams=3, max_new_tokens=8, min_new_tokens=8
    )
    assert got.tolist() == expected.tolist()


def test_real_blip2_widths_with_fewer_layers(tmp_path):
    """EVA ViT-g (1408 wide, patch 14, 224 px, 16 heads, MLP 6144) and a BERT-base Q-Former with 32
    queries at their true widths; only the depths are cut (1 ViT block, 2 Q-Former layers)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    torch.manual_seed(0)
    config = Blip2Config(
        vision_config=dict(image_size=224, patch_size=14, hidden_size=1408, num_hidden_layers=1,
                           num_attention_heads=16, intermediate_size=6144, layer_norm_eps=1e-6, qkv_bias=True,
                           initializer_range=0.02),
        qformer_config=dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=12, intermediate_size=3072,
                            cross_attention_frequency=2, encoder_hidden_size=1408, initializer_range=0.02),
        text_config=OPTConfig(vocab_size=64, hidden_size=64, word_embed_proj_dim=64, ffn_dim=128,
                              num_hidden_layers=1, num_attention_heads=4, init_std=0.02).to_dict(),
        num_query_tokens=32, image_token_index=63, initializer_range=0.02,
    )
    hf = Blip2ForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    ours = load_pipeline(tmp_path)
    pixel_values = torch.randn(1, 3, 224, 224)
    input_ids = torch.tensor([[63] * 32 + [2, 10, 11]])
    with torch.no_grad():
        encoding = ours.encode_images(pixel_values)
        expected = hf(pixel_values=pixel_values, input_ids=input_ids).logits
        got = ours(pixel_values, input_ids).logits
    assert encoding.vision_tokens.shape == (1, 257, 1408)
    assert encoding.query_output.shape == (1, 32, 768)
    assert (got - expected).abs().max() <= ATOL
