"""The ``llama`` component against transformers' own Llama (the oracle), through the plugin registry.

The tiny Llama uses grouped-query attention (2 key/value heads for 4 query heads), as SmolLM2
and Llama-3 do.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import Blip2Config, Blip2ForConditionalGeneration, LlamaConfig, LlamaForCausalLM

from blip2core.errors import CheckpointError
from blip2core.testing import save_tiny_tokenizer
from blip2core.plugins import get_registry
from blip2core.protocols import LanguageModel

TINY_LLAMA = dict(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    initializer_range=0.02,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
GENERATE = dict(pad_token_id=1, do_sample=False)


def build(**options):
    return get_registry().get("language_model", "llama").build(options)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).save_pretrained(folder)
    save_tiny_tokenizer(folder, vocab_size=320, bos="<s>")
    return folder


@pytest.fixture(scope="module")
def reference(llama_folder):
    return LlamaForCausalLM.from_pretrained(llama_folder).eval()


@pytest.fixture(scope="module")
def llm(llama_folder):
    return build(path=str(llama_folder))


def embeds(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, 32, generator=torch.Generator().manual_seed(seed)) * 0.5


def test_registered_with_grouped_query_attention(llm):
    assert isinstance(llm, LanguageModel)
    assert llm.hidden_size == 32
    config = llm.model.config
    assert config.num_key_value_heads < config.num_attention_heads
    assert llm.model.model.layers[0].self_attn.k_proj.out_features == 2 * 8  # kv heads * head_dim
    assert llm.tokenizer.padding_side == "left" and llm.stop_token_ids == ()


@torch.no_grad()
def test_logits_and_loss_equal_transformers(llm, reference):
    x = embeds(2, 6)
    mask = torch.ones(2, 6, dtype=torch.long)
    labels = torch.randint(0, 320, (2, 6), generator=torch.Generator().manual_seed(2))
    labels[1, :4] = -100
    ours = llm(x, mask, labels=labels)
    theirs = reference(inputs_embeds=x, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=0, atol=1e-5)


@torch.no_grad()
def test_greedy_generation_equals_transformers(llm, reference):
    x = embeds(2, 4)
    mask = torch.ones(2, 4, dtype=torch.long)
    ours = llm.generate(x, mask, max_new_tokens=8, **GENERATE)
    assert torch.equal(ours, reference.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=8, **GENERATE))


@torch.no_grad()
def test_beam_search_batch_left_padded_equals_transformers(llm, reference):
    x = embeds(2, 5, seed=7)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    kwargs = dict(max_new_tokens=6, num_beams=3, **GENERATE)
    ours = llm.generate(x, mask, **kwargs)
    assert ours.shape[0] == 2
    assert torch.equal(ours, reference.generate(inputs_embeds=x, attention_mask=mask, **kwargs))


def test_torch_dtype_option(llama_folder):
    llm = build(path=str(llama_folder), torch_dtype="bfloat16")
    assert llm.model.dtype == torch.bfloat16
    out = llm.generate(embeds(1, 3).bfloat16(), max_new_tokens=2, **GENERATE)
    assert out.dtype == torch.long and out.shape[0] == 1


# -- BLIP-2 checkpoints of transformers and LAVIS ----------------------------------------------
def tiny_blip2(text_config: dict) -> Blip2ForConditionalGeneration:
    torch.manual_seed(1)
    config = Blip2Config(
        vision_config=dict(
            image_size=30, patch_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, initializer_range=0.02,
        ),
        qformer_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            encoder_hidden_size=32, initializer_range=0.02,
        ),
        text_config=text_config,
        num_query_tokens=10,
        image_token_index=319,
        initializer_range=0.02,
    )
    return Blip2ForConditionalGeneration(config).eval()


def llm_keys(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(("language_model.", "lm_head."))}


@torch.no_grad()
def assert_same_language_model(llm, blip2):
    x = embeds(2, 5, seed=9)
    torch.testing.assert_close(llm(x).logits, blip2.language_model(inputs_embeds=x).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("tied", [False, True], ids=["vicuna-like", "smollm2-like"])
def test_hf_blip2_saved_file(tmp_path, tied):
    blip2 = tiny_blip2(LlamaConfig(**TINY_LLAMA, tie_word_embeddings=tied).to_dict())
    blip2.save_pretrained(tmp_path)
    saved = llm_keys(load_file(tmp_path / "model.safetensors"))
    assert ("language_model.lm_head.weight" in saved) is not tied
    assert "language_model.model.layers.1.self_attn.k_proj.weight" in saved
    llm = build(config=blip2.config.text_config.to_dict())
    missing, unexpected = llm.load_foreign_state_dict(saved, "hf")
    assert missing == [] and unexpected == []
    assert_same_language_model(llm, blip2)


def test_lavis_llm_model_names():
    blip2 = tiny_blip2(LlamaConfig(**TINY_LLAMA).to_dict())
    lavis = {f"llm_model.{k[len('language_model.'):]}": v for k, v in llm_keys(blip2.state_dict()).items()}
    llm = build(config=TINY_LLAMA)
    missing, unexpected = llm.load_foreign_state_dict(lavis, "lavis")
    assert missing == [] and unexpected == []
    assert_same_language_model(llm, blip2)


def test_lavis_without_lm_head_reports_it_missing():
    blip2 = tiny_blip2(LlamaConfig(**TINY_LLAMA).to_dict())
    lavis = {f"llm_model.{k[len('language_model.'):]}": v for k, v in llm_keys(blip2.state_dict()).items()}
    del lavis["llm_model.lm_head.weight"]
    missing, _ = build(config=TINY_LLAMA).load_foreign_state_dict(lavis, "lavis")
    assert missing == ["model.lm_head.weight"]


# -- bad input ---------------------------------------------------------------------------------
def test_missing_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="vicuna: no such model folder"):
        build(path=str(tmp_path / "vicuna"))


def test_uncached_hub_id_offline_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"'lmsys-tests/vicuna-nowhere'.*HF_HUB_OFFLINE=1"):
        build(path="lmsys-tests/vicuna-nowhere")
    with pytest.raises(CheckpointError, match=r"'lmsys-tests/gguf-nowhere'.*HF_HUB_OFFLINE=1.*'m.gguf'"):
        build(path="lmsys-tests/gguf-nowhere", gguf_file="m.gguf")


def test_not_a_gguf_file_is_named(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="broken.gguf: not a readable GGUF file"):
        build(gguf_file=str(bad))
