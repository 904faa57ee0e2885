"""The ``t5`` component against transformers (the oracle): a random tiny ``Blip2ForConditionalGeneration``
with a FlanT5-style T5 (gated-gelu, untied output embedding) and a real T5 tokenizer, saved with
``save_pretrained`` and loaded by blip2core; LAVIS names; the runner's LM loss on an encoder-decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoTokenizer,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    T5Config,
)

from blip2core import GenerationDefaults, LanguageModel, SupportsPrefixCache, load_pipeline
from blip2core.compat import lavis
from blip2core.loading import resolve_spec
from blip2core.plugins import get_registry
from blip2core.presets import get_presets
from blip2core.protocols import is_encoder_decoder
from blip2core.testing import TINY_IMAGE_SIZE, TINY_NUM_QUERY_TOKENS, save_tiny_t5_tokenizer, tiny_blip2_config
from blip2_runner.losses import LMLoss
from lavis_names import hf_blip2_to_lavis

ATOL = 1e-4
#: FlanT5's shape of T5 at toy widths: gated-gelu, no decoder-output scaling, untied lm_head
TINY_T5 = dict(
    d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
    relative_attention_max_distance=20, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
QUESTIONS = ["is it a cat?", "what colour is the dog?"]  # different lengths: the batch is padded
TEMPLATE = "Question: {} Short answer:"


def processor_for(folder) -> Blip2Processor:
    """transformers' processor: ``<image>`` x Q, then the prompt and ``</s>``, padded on the right."""
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return Blip2Processor(image_processor, AutoTokenizer.from_pretrained(folder), num_query_tokens=TINY_NUM_QUERY_TOKENS)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """(folder, transformers' model loaded back from it, its processor)."""
    folder = tmp_path_factory.mktemp("blip2-flan-t5")
    save_tiny_t5_tokenizer(folder)
    processor = processor_for(folder)
    processor.tokenizer.save_pretrained(folder)  # with "<image>" added after the vocabulary
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    text_config = T5Config(vocab_size=len(processor.tokenizer), **TINY_T5).to_dict()
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(tiny_blip2_config(text_config, image_token_index=image_token))
    # transformers 5 builds every T5 with lm_head tied to the input embedding; FlanT5's is its own
    model.language_model.lm_head.weight = nn.Parameter(torch.randn_like(model.language_model.lm_head.weight) * 0.5)
    model.save_pretrained(folder)
    oracle = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    assert oracle.language_model.lm_head.weight is not oracle.language_model.shared.weight
    return folder, oracle, processor


@pytest.fixture(scope="module")
def pipe(hf_folder):
    return load_pipeline(hf_folder[0])


def photo(seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((40, 40, 3)) * 255).astype("uint8"))


def test_folder_routes_to_the_t5_component(pipe):
    assert pipe.spec.llm.name == "t5"
    assert pipe.load_report.loaded_slots == {"vision", "bridge", "llm"}
    assert not any(pipe.load_report.missing.values()) and not pipe.load_report.unexpected
    model = pipe.llm.model
    assert model.lm_head.weight is not model.shared.weight  # untied like transformers' loading
    assert model.encoder.embed_tokens.weight is model.shared.weight


def test_component_contract(pipe):
    llm = pipe.llm
    assert isinstance(llm, LanguageModel) and isinstance(llm, GenerationDefaults)
    assert is_encoder_decoder(llm) and not isinstance(llm, SupportsPrefixCache)
    assert llm.hidden_size == 32 and llm.tokenizer.padding_side == "right"
    assert llm.stop_token_ids == () and llm.eos_token_ids == (1,) and llm.pad_token_id == 0
    assert not is_encoder_decoder(get_registry().get("language_model", "opt").build(
        {"config": {"vocab_size": 64, "hidden_size": 16, "ffn_dim": 32, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "word_embed_proj_dim": 16}}))


def test_config_only_build_gets_t5s_decoder_start(hf_folder):
    """transformers drops decoder_start_token_id from config fields: the component restores pad."""
    llm = get_registry().get("language_model", "t5").build({"config": {"vocab_size": 50, **{
        k: v for k, v in TINY_T5.items() if k != "decoder_start_token_id"}}, "tokenizer": str(hf_folder[0])})
    embeds = torch.randn(2, 5, 32)
    assert llm(embeds).logits.shape == (2, 1, 50)
    assert llm.generate(embeds, max_new_tokens=3, min_new_tokens=3).shape == (2, 3)


@torch.no_grad()
def test_logits_and_loss_equal_transformers_on_a_padded_batch(pipe, hf_folder):
    _, oracle, processor = hf_folder
    inputs = processor(images=[photo(1), photo(2)], text=[TEMPLATE.format(q) for q in QUESTIONS], padding=True,
                       return_tensors="pt")
    assert inputs["attention_mask"][1, -1] == 0  # the shorter prompt is padded on the right
    labels = torch.tensor([[5, 6, 7, 1], [8, 9, 1, -100]])
    expected = oracle(**inputs, labels=labels)
    got = pipe(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], labels=labels)
    assert got.logits.shape == expected.logits.shape == (2, 4, oracle.config.text_config.vocab_size)
    assert (got.logits - expected.logits).abs().max() <= ATOL
    assert abs(got.loss.item() - expected.loss.item()) <= ATOL


@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_answers_and_captions_equal_transformers_generate(pipe, hf_folder, num_beams):
    _, oracle, processor = hf_folder
    options = dict(num_beams=num_beams, max_new_tokens=8, min_new_tokens=3)
    image = photo(3)
    inputs = processor(images=[image, image], text=[TEMPLATE.format(q) for q in QUESTIONS], padding=True,
                       return_tensors="pt")
    expected = oracle.generate(**inputs, **options, length_penalty=0.0)
    assert (expected[:, 0] == 0).all()  # transformers returns the decoder start token first; we do not
    got = pipe.generate(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], **options,
                        length_penalty=0.0)
    assert got.tolist() == expected[:, 1:].tolist()
    answers = pipe.answer(image, QUESTIONS, template=TEMPLATE, **options)
    assert answers == [t.strip() for t in processor.batch_decode(expected, skip_special_tokens=True)]
    assert all(answers)

    caption_inputs = processor(images=[image], text=["a photo of"], return_tensors="pt")
    caption = oracle.generate(**caption_inputs, **options, length_penalty=1.0)
    expected_caption = [t.strip() for t in processor.batch_decode(caption, skip_special_tokens=True)]
    assert pipe.caption(image, prompt="a photo of", **options) == expected_caption


def test_lavis_pth_loads_to_the_same_numbers(hf_folder, tmp_path):
    folder, oracle, processor = hf_folder
    state = {("t5_proj." + k[len("opt_proj."):] if k.startswith("opt_proj.") else k): v
             for k, v in hf_blip2_to_lavis(oracle.state_dict(), llm_prefix="t5_model.").items()}
    assert "t5_proj.weight" in state and "t5_model.lm_head.weight" in state
    path = tmp_path / "blip2_pretrained_flant5xl.pth"
    torch.save({"model": state}, path)
    spec = resolve_spec(folder).model_copy(update={"weights": []})  # the architecture only
    ours = load_pipeline(spec, weights=[path])
    assert ours.load_report.sources[0][1] == "lavis"
    assert not any(ours.load_report.missing.values()) and not ours.load_report.unexpected
    inputs = processor(images=[photo(4)], text=["a photo of"], return_tensors="pt")
    labels = torch.tensor([[5, 6, 1]])
    with torch.no_grad():
        expected = oracle(**inputs, labels=labels).logits
        got = ours(inputs["pixel_values"], inputs["input_ids"], labels=labels).logits
    assert (got - expected).abs().max() <= ATOL


def test_lavis_names_resolve_to_the_flan_t5_presets(monkeypatch):
    monkeypatch.delenv(lavis.ENV_VAR, raising=False)
    presets = get_presets()
    for model_type, preset, prompt in (("pretrain_flant5xl", "blip2-flan-t5-xl", ""),
                                       ("pretrain_flant5xxl", "blip2-flan-t5-xxl", ""),
                                       ("caption_coco_flant5xl", "blip2-flan-t5-xl-coco", "a photo of")):
        source, kind, default_prompt = lavis.resolve("blip2_t5", model_type)
        assert kind == "opt" and default_prompt == prompt
        assert presets.get(source).hub_id == f"Salesforce/{preset}" and presets.get(source).plugin == "blip2-t5"


def test_runner_lm_loss_is_transformers_loss_and_training_lowers_it(hf_folder):
    """The LM loss puts [soft prompt ; prompt] into the encoder and the target into the decoder, as
    transformers' Blip2ForConditionalGeneration(labels=...) does; two AdamW steps on the bridge lower it."""
    folder, oracle, processor = hf_folder
    pipe = load_pipeline(folder)
    prompts, targets = [TEMPLATE.format(q) for q in QUESTIONS], ["brown", "no"]
    images = [photo(5), photo(6)]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    batch = {"pixel_values": pixel_values, "prompt": prompts, "target": targets}
    loss = LMLoss()
    first = loss(pipe, dict(batch))

    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    labels = processor.tokenizer(targets, padding=True, return_tensors="pt")
    labels = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    with torch.no_grad():
        expected = oracle(**inputs, labels=labels).loss
    assert abs(first.item() - expected.item()) <= ATOL

    with torch.no_grad():  # transformers leaves the random folder's queries at 0, where the Q-Former's
        pipe.bridge.query_tokens.normal_(std=0.02)  # input LayerNorm has a 1e6 gain; BLIP-2 draws them so
    trainable = [p for p in pipe.bridge.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    frozen = {k: v.clone() for k, v in pipe.llm.state_dict().items()}
    losses = []
    for _ in range(2):
        value = loss(pipe, dict(batch))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    with torch.no_grad():
        after = loss(pipe, dict(batch)).item()
    assert after < losses[1] < losses[0]
    assert all(torch.equal(v, pipe.llm.state_dict()[k]) for k, v in frozen.items())
