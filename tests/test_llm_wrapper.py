"""blip2core.llm: the transformers causal-LM wrapper both LLM plugins use.

transformers is the oracle: a tiny random Llama (grouped-query attention) is saved with
``save_pretrained``, loaded through ``load_language_model`` and compared with the same folder
loaded by transformers itself.
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from blip2core.errors import CheckpointError
from blip2core.llm import (
    LanguageModelOptions,
    TransformersLanguageModel,
    causal_lm_loss,
    gguf_cache_folder,
    load_language_model,
    map_foreign_keys,
    positions_from_mask,
)
from blip2core.checkpoints.hub import looks_like_hub_id
from blip2core.testing import save_tiny_tokenizer
from blip2core.protocols import LanguageModel, LoadsForeignCheckpoints

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


def load(folder, **options) -> TransformersLanguageModel:
    return load_language_model(
        LanguageModelOptions(path=str(folder), **options), config_class=LlamaConfig, model_class=LlamaForCausalLM
    )


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
    return load(llama_folder)


def embeds(batch: int, length: int, width: int = 32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, width, generator=generator) * 0.5


# -- the protocol ------------------------------------------------------------------------------
def test_implements_the_protocols(llm):
    assert isinstance(llm, LanguageModel)
    assert isinstance(llm, LoadsForeignCheckpoints)
    assert llm.hidden_size == 32 and llm.vocab_size == 320
    assert llm.weights_loaded and not llm.training
    assert llm.tokenizer.padding_side == "left"
    assert llm.tokenizer.pad_token_id == 1


def test_embed_tokens_is_the_input_embedding(llm, reference):
    ids = torch.tensor([[0, 5, 9, 2]])
    torch.testing.assert_close(llm.embed_tokens(ids), reference.get_input_embeddings()(ids), rtol=0, atol=0)


@torch.no_grad()
def test_logits_and_loss_equal_transformers(llm, reference):
    x = embeds(2, 7)
    mask = torch.ones(2, 7, dtype=torch.long)
    labels = torch.randint(0, 320, (2, 7), generator=torch.Generator().manual_seed(3))
    labels[:, :3] = -100
    ours = llm(x, mask, labels=labels)
    theirs = reference(inputs_embeds=x, attention_mask=mask, labels=labels)
    assert ours.logits.shape == (2, 7, 320)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=0, atol=1e-5)
    assert llm(x).loss is None


@torch.no_grad()
def test_padding_does_not_move_real_tokens(llm):
    """Left padding, and a gap between a prefix and text, leave the real tokens' logits unchanged."""
    x = embeds(1, 5)
    plain = llm(x, torch.ones(1, 5, dtype=torch.long)).logits
    padded = torch.cat([torch.zeros(1, 2, 32), x], dim=1)
    left = llm(padded, torch.tensor([[0, 0, 1, 1, 1, 1, 1]])).logits[:, 2:]
    torch.testing.assert_close(left, plain, rtol=0, atol=1e-5)
    gapped = torch.cat([x[:, :2], torch.zeros(1, 2, 32), x[:, 2:]], dim=1)
    gap = llm(gapped, torch.tensor([[1, 1, 0, 0, 1, 1, 1]])).logits[:, [0, 1, 4, 5, 6]]
    torch.testing.assert_close(gap, plain, rtol=0, atol=1e-5)


def test_causal_lm_loss_shifts_and_ignores():
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[-100, 1, 2, -100], [5, -100, 0, 3]])
    expected = torch.nn.functional.cross_entropy(
        torch.stack([logits[0, 0], logits[0, 1], logits[1, 1], logits[1, 2]]), torch.tensor([1, 2, 0, 3])
    )
    torch.testing.assert_close(causal_lm_loss(logits, labels), expected)


def test_positions_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 0, 2, 3]]


@torch.no_grad()
def test_greedy_generation_equals_transformers(llm, reference):
    x = embeds(2, 4)
    mask = torch.ones(2, 4, dtype=torch.long)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=1)
    ours = llm.generate(x, mask, **kwargs)
    assert ours.shape[0] == 2 and 1 <= ours.shape[1] <= 6  # new tokens only
    assert torch.equal(ours, reference.generate(inputs_embeds=x, attention_mask=mask, **kwargs))
    # the first new token is the argmax of forward's last logits
    assert torch.equal(ours[:, 0], llm(x, mask).logits[:, -1].argmax(-1))


@torch.no_grad()
def test_beam_search_with_left_padding_equals_transformers(llm, reference):
    x = embeds(2, 6, seed=5)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    kwargs = dict(max_new_tokens=5, num_beams=3, num_return_sequences=2, do_sample=False, pad_token_id=1)
    ours = llm.generate(x, mask, **kwargs)
    assert ours.shape[0] == 4
    assert torch.equal(ours, reference.generate(inputs_embeds=x, attention_mask=mask, **kwargs))


@torch.no_grad()
def test_padding_between_prefix_and_text_generates_like_left_padding(llm, reference):
    """The pipeline builds [soft prompt | left-padded text]; HF BLIP-2 builds [pad | prompt | text].
    Both layouts must beam-search to the same tokens."""
    prefix, text = embeds(2, 3, seed=8), embeds(2, 4, seed=9)
    text_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    gap = torch.cat([prefix, text], dim=1)
    gap_mask = torch.cat([torch.ones(2, 3, dtype=torch.long), text_mask], dim=1)
    left = torch.stack([gap[0], torch.cat([text[1, :2], prefix[1], text[1, 2:]])])
    left_mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    kwargs = dict(max_new_tokens=5, num_beams=3, do_sample=False, pad_token_id=1)
    expected = reference.generate(inputs_embeds=left, attention_mask=left_mask, **kwargs)
    assert torch.equal(llm.generate(gap, gap_mask, **kwargs), expected)


# -- random init from config, foreign checkpoints ----------------------------------------------
def test_config_builds_random_weights_without_tokenizer():
    llm = load_language_model(
        LanguageModelOptions(config={**TINY_LLAMA, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}),
        config_class=LlamaConfig,
        model_class=LlamaForCausalLM,
    )
    assert llm.tokenizer is None and not llm.weights_loaded
    assert llm.model.config.num_key_value_heads == 2


def test_load_foreign_state_dict_reports_missing_and_unexpected(reference):
    llm = load_language_model(
        LanguageModelOptions(config=TINY_LLAMA), config_class=LlamaConfig, model_class=LlamaForCausalLM
    )
    state = {f"llm_model.{k}": v for k, v in reference.state_dict().items()}
    del state["llm_model.model.norm.weight"]
    state["llm_model.model.extra.weight"] = torch.zeros(1)
    state["Qformer.bert.x"] = torch.zeros(1)
    missing, unexpected = llm.load_foreign_state_dict(state, "lavis")
    assert missing == ["model.model.norm.weight"]
    assert sorted(unexpected) == ["Qformer.bert.x", "llm_model.model.extra.weight"]
    torch.testing.assert_close(llm.model.lm_head.weight, reference.lm_head.weight, rtol=0, atol=0)


def test_load_foreign_state_dict_rejects_wrong_shapes(reference):
    llm = load_language_model(
        LanguageModelOptions(config={**TINY_LLAMA, "vocab_size": 300}),
        config_class=LlamaConfig,
        model_class=LlamaForCausalLM,
    )
    state = {f"language_model.{k}": v for k, v in reference.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"language_model.model.embed_tokens.weight: shape \(320, 32\)"):
        llm.load_foreign_state_dict(state, "hf")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout 'timm'"):
        llm.load_foreign_state_dict(state, "timm")


def test_map_foreign_keys_handles_every_real_layout():
    own = {"model.decoder.embed_tokens.weight", "model.decoder.layers.0.fc1.weight", "lm_head.weight"}
    keys = [
        "language_model.model.decoder.embed_tokens.weight",  # transformers 5: whole causal LM
        "language_model.decoder.layers.0.fc1.weight",  # older export: bare base model
        "lm_head.weight",  # ... with a top-level lm_head
        "language_projection.weight",
        "language_model.model.decoder.nope",
    ]
    mapping, unexpected = map_foreign_keys(keys, "hf", own)
    assert mapping == {
        "language_model.model.decoder.embed_tokens.weight": "model.decoder.embed_tokens.weight",
        "language_model.decoder.layers.0.fc1.weight": "model.decoder.layers.0.fc1.weight",
        "lm_head.weight": "lm_head.weight",
    }
    assert unexpected == ["language_projection.weight", "language_model.model.decoder.nope"]
    mapping, unexpected = map_foreign_keys(["opt_model.lm_head.weight", "language_model.lm_head.weight"], "lavis", own)
    assert mapping == {"opt_model.lm_head.weight": "lm_head.weight"}
    assert unexpected == ["language_model.lm_head.weight"]


# -- bad input ---------------------------------------------------------------------------------
def test_missing_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/nope: no such model folder"):
        load(tmp_path / "nope")


def test_uncached_hub_id_offline_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        load("blip2core-tests/no-such-model")
    message = str(info.value)
    assert "'blip2core-tests/no-such-model'" in message and "HF_HUB_OFFLINE=1" in message


def test_folder_of_another_family_is_refused(tmp_path):
    OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=8, ffn_dim=8, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path
    )
    with pytest.raises(CheckpointError, match="holds a 'opt' model, but this component loads 'llama' models"):
        load(tmp_path)


def test_folder_without_tokenizer_says_which_option(tmp_path):
    LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="set the tokenizer option"):
        load(tmp_path)


def test_config_of_another_family_is_refused():
    with pytest.raises(CheckpointError, match="model_type 'opt' is not 'llama'"):
        load_language_model(
            LanguageModelOptions(config={"model_type": "opt"}), config_class=LlamaConfig, model_class=LlamaForCausalLM
        )


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="has no GGUF file 'x.gguf'"):
        load(tmp_path, gguf_file="x.gguf")
    with pytest.raises(CheckpointError, match="/nowhere/y.gguf: no such GGUF file"):
        load_language_model(
            LanguageModelOptions(gguf_file="/nowhere/y.gguf"), config_class=LlamaConfig, model_class=LlamaForCausalLM
        )


def test_options_need_one_source():
    with pytest.raises(ValueError, match="give path"):
        LanguageModelOptions()
    with pytest.raises(ValueError, match="not both"):
        LanguageModelOptions(config={}, gguf_file="a.gguf")
    with pytest.raises(ValueError, match="torch_dtype"):
        LanguageModelOptions(path="x", torch_dtype="int8")


def test_hub_ids_and_paths_are_told_apart():
    assert looks_like_hub_id("facebook/opt-2.7b") and looks_like_hub_id("gpt2", bare_names=True)
    assert not any(looks_like_hub_id(p, bare_names=True) for p in ["/data/opt", "./opt", "~/opt", "a/b/c", "../x"])


def test_gguf_cache_key_follows_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BLIP2_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"abc")
    first = gguf_cache_folder(gguf)
    assert first.parent == tmp_path / "cache" / "gguf" and first.name.startswith("m-")
    assert gguf_cache_folder(gguf) == first
    os.utime(gguf, ns=(1, 1))
    assert gguf_cache_folder(gguf) != first
