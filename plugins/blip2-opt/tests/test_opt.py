"""The ``opt`` component against transformers' own OPT (the oracle), through the plugin registry.

The tiny OPT has ``word_embed_proj_dim`` (8) != ``hidden_size`` (16), like OPT-350m, so the
input embeddings are narrower than the decoder and project_in / project_out are exercised.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig, OPTForCausalLM

from blip2core.errors import CheckpointError
from blip2core.testing import save_tiny_tokenizer
from blip2core.plugins import get_registry
from blip2core.protocols import LanguageModel

TINY_OPT = dict(
    vocab_size=320,
    hidden_size=16,
    word_embed_proj_dim=8,
    ffn_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    init_std=0.02,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=2,
)
GENERATE = dict(pad_token_id=1, do_sample=False)


def build(**options):
    return get_registry().get("language_model", "opt").build(options)


@pytest.fixture(scope="module")
def opt_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-opt")
    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig(**TINY_OPT)).save_pretrained(folder)
    save_tiny_tokenizer(folder, vocab_size=320)
    return folder


@pytest.fixture(scope="module")
def reference(opt_folder):
    return OPTForCausalLM.from_pretrained(opt_folder).eval()


@pytest.fixture(scope="module")
def llm(opt_folder):
    return build(path=str(opt_folder))


def embeds(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, 8, generator=torch.Generator().manual_seed(seed)) * 0.5


def test_registered_and_shaped_like_blip2_expects(llm):
    assert isinstance(llm, LanguageModel)
    assert llm.hidden_size == 8  # word_embed_proj_dim, the width inputs_embeds must have
    assert llm.tokenizer.padding_side == "left"
    newline = llm.tokenizer("\n", add_special_tokens=False).input_ids
    assert llm.stop_token_ids == (newline[0],) and len(newline) == 1
    assert llm.embed_tokens(torch.tensor([[2, 7]])).shape == (1, 2, 8)


@torch.no_grad()
def test_logits_and_loss_equal_transformers(llm, reference):
    x = embeds(2, 6)
    mask = torch.ones(2, 6, dtype=torch.long)
    labels = torch.randint(0, 320, (2, 6), generator=torch.Generator().manual_seed(2))
    labels[0, :2] = -100
    ours = llm(x, mask, labels=labels)
    theirs = reference(inputs_embeds=x, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=0, atol=1e-5)


@torch.no_grad()
def test_left_padded_logits_equal_transformers(llm, reference):
    """OPT derives positions from the mask itself: ours must agree at every real position."""
    x = embeds(2, 6, seed=4)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    ours = llm(x, mask).logits
    theirs = reference(inputs_embeds=x, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-4)


@torch.no_grad()
def test_greedy_generation_equals_transformers(llm, reference):
    x = embeds(1, 4)
    mask = torch.ones(1, 4, dtype=torch.long)
    ours = llm.generate(x, mask, max_new_tokens=8, **GENERATE)
    assert torch.equal(ours, reference.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=8, **GENERATE))
    assert torch.equal(ours[:, 0], llm(x, mask).logits[:, -1].argmax(-1))


@torch.no_grad()
def test_beam_search_batch_left_padded_equals_transformers(llm, reference):
    x = embeds(2, 5, seed=7)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    kwargs = dict(max_new_tokens=6, num_beams=3, **GENERATE)
    ours = llm.generate(x, mask, **kwargs)
    assert ours.shape[0] == 2
    assert torch.equal(ours, reference.generate(inputs_embeds=x, attention_mask=mask, **kwargs))


@torch.no_grad()
def test_stop_token_ends_generation(llm):
    """Passing the newline id as an extra EOS stops there (LAVIS captioning behaviour)."""
    x = embeds(1, 3)
    newline = llm.stop_token_ids[0]
    free = llm.generate(x, max_new_tokens=6, **GENERATE)
    forced = llm.generate(
        x, max_new_tokens=6, eos_token_id=[newline, 2], **GENERATE,
        sequence_bias={(newline,): 100.0},
    )
    assert free.shape[1] >= 1
    assert forced.tolist() == [[newline]]


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


@pytest.fixture(scope="module")
def blip2():
    return tiny_blip2(OPTConfig(**TINY_OPT).to_dict())


def llm_keys(state: dict, prefixes=("language_model.", "lm_head.")) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


@torch.no_grad()
def assert_same_language_model(llm, blip2):
    x = embeds(2, 5, seed=9)
    torch.testing.assert_close(
        llm(x).logits, blip2.language_model(inputs_embeds=x).logits, rtol=0, atol=1e-4
    )


def test_hf_blip2_state_dict(blip2):
    llm = build(config=blip2.config.text_config.to_dict())
    missing, unexpected = llm.load_foreign_state_dict(llm_keys(blip2.state_dict()), "hf")
    assert missing == [] and unexpected == []
    assert_same_language_model(llm, blip2)


def test_hf_blip2_saved_file_without_tied_lm_head(blip2, tmp_path):
    blip2.save_pretrained(tmp_path)
    saved = llm_keys(load_file(tmp_path / "model.safetensors"))
    assert "language_model.lm_head.weight" not in saved  # tied to the input embedding: not written
    assert "language_model.model.decoder.project_in.weight" in saved
    llm = build(config=blip2.config.text_config.to_dict())
    missing, unexpected = llm.load_foreign_state_dict(saved, "hf")
    assert missing == [] and unexpected == []
    assert_same_language_model(llm, blip2)


def test_lavis_opt_model_names(blip2):
    lavis = {f"opt_model.{k[len('language_model.'):]}": v for k, v in llm_keys(blip2.state_dict()).items()}
    lavis["opt_proj.weight"] = torch.zeros(1)  # the bridge's: not ours
    llm = build(config=TINY_OPT)
    missing, unexpected = llm.load_foreign_state_dict(lavis, "lavis")
    assert missing == [] and unexpected == ["opt_proj.weight"]
    assert_same_language_model(llm, blip2)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope: no such model folder"):
        build(path=str(tmp_path / "nope"))


def test_uncached_hub_id_offline_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"'blip2core-tests/opt-nowhere'.*HF_HUB_OFFLINE=1"):
        build(path="blip2core-tests/opt-nowhere")
