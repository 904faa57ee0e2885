"""Captions without a prompt from a Hugging Face BLIP-2 folder whose tokenizer adds no BOS
(SmolLM2-style): generation starts from the image and the text config's BOS, token for token as
transformers' ``Blip2ForConditionalGeneration.generate`` without ``input_ids``; and an OPT folder
whose tokenizer splits "\\n" loads, stopping at EOS with a warning."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration

import tiny_models as T
from blip2core import load_pipeline
from blip2core.inference import textgen
from blip2core.inference.generation import GenerationSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a random LM repeats one token without a penalty; short, greedy and beam settings
SETTINGS = [dict(num_beams=1, max_new_tokens=8, repetition_penalty=1.5),
            dict(num_beams=3, max_new_tokens=6, repetition_penalty=1.5)]


@pytest.fixture(scope="module")
def no_bos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-llama-no-bos")
    hf = T.save_generation_folder(folder, "llama", add_bos=False)
    pipe = load_pipeline(folder)
    assert pipe.llm.tokenizer([""]).input_ids == [[]]  # the case: no token at all for a prompt-less caption
    return folder, hf, pipe


def new_tokens(pipe, pixel_values, prompts, settings) -> list[list[int]]:
    ids, mask = textgen.tokenize_prompts(pipe, prompts)
    encoding = pipe.encode_images(pixel_values)
    return textgen.generate_ids(pipe, encoding, ids, mask, GenerationSettings(**settings)).tolist()


def hf_kwargs(pipe, settings) -> dict:
    stops, pad = textgen.stop_and_pad_ids(pipe)
    return GenerationSettings(**settings).generate_kwargs(stops, pad)


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "beams"])
def test_a_prompt_less_caption_equals_transformers_generate_without_input_ids(no_bos, photos, settings):
    _, hf, pipe = no_bos
    pixel_values = pipe.preprocessor(photos[:2])
    with torch.no_grad():
        out = hf.generate(pixel_values=pixel_values, **hf_kwargs(pipe, settings))
    start = T.NUM_QUERY_TOKENS + 1  # transformers starts from <image> x Q and the text config's BOS
    expected = out[:, start:].tolist()
    assert new_tokens(pipe, pixel_values, ["", ""], settings) == expected
    texts = [t.strip() for t in pipe.llm.tokenizer.batch_decode(expected, skip_special_tokens=True)]
    assert pipe.caption(photos[:2], **settings) == texts and any(texts)


def test_a_prompt_less_caption_and_a_prompted_one_both_equal_transformers(no_bos, photos):
    """A batch mixing no prompt and a prompt: the prompt-less row starts from BOS, the other
    from its own tokens (no BOS added), each as transformers generates it alone."""
    folder, hf, pipe = no_bos
    settings = SETTINGS[0]
    mixed = new_tokens(pipe, pipe.preprocessor(photos[:2]), ["", "a photo of"], settings)
    alone = new_tokens(pipe, pipe.preprocessor(photos[:1]), [""], settings)
    assert mixed[0][:len(alone[0])] == alone[0]
    processor = T.processor_for(folder)
    encoded = processor(images=[Image.open(p) for p in photos[:2]], text=["a photo of"] * 2, return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(pixel_values=pipe.preprocessor(photos[:2]), input_ids=encoded["input_ids"],
                          attention_mask=encoded["attention_mask"], **hf_kwargs(pipe, settings))
    expected = out[:, encoded["input_ids"].shape[1]:].tolist()
    assert new_tokens(pipe, pipe.preprocessor(photos[:2]), ["a photo of"] * 2, settings) == expected
    assert mixed[1][:len(expected[1])] == expected[1] or expected[1][:len(mixed[1])] == mixed[1]


def test_without_any_bos_the_caption_starts_from_the_image_alone(no_bos, photos):
    """No BOS in the config nor the tokenizer: the image alone, as transformers given only the
    <image> placeholders (Blip2Processor with an empty text)."""
    folder, hf, _ = no_bos
    pipe = load_pipeline(folder)
    pipe.llm.config.bos_token_id = None
    pipe.llm.tokenizer.bos_token = None
    settings = SETTINGS[0]
    processor = T.processor_for(folder)
    encoded = processor(images=[Image.open(p) for p in photos[:2]], text=["", ""], return_tensors="pt")
    assert encoded["input_ids"].shape[1] == T.NUM_QUERY_TOKENS
    with torch.no_grad():
        out = hf.generate(pixel_values=pipe.preprocessor(photos[:2]), input_ids=encoded["input_ids"],
                          attention_mask=encoded["attention_mask"], **hf_kwargs(pipe, settings))
    expected = out[:, T.NUM_QUERY_TOKENS:].tolist()
    assert new_tokens(pipe, pipe.preprocessor(photos[:2]), ["", ""], settings) == expected
    assert len(pipe.caption(photos[:2], **settings)) == 2


def test_an_opt_tokenizer_that_splits_the_newline_loads_and_stops_at_eos(hf_opt_folder, photos, tmp_path):
    """A tokenizer that adds a prefix space makes "\\n" two tokens ("Ġ", "Ċ"): no newline stop."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    folder = tmp_path / "opt-split-newline"
    shutil.copytree(hf_opt_folder, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.save_pretrained(folder)
    assert len(AutoTokenizer.from_pretrained(folder)("\n", add_special_tokens=False).input_ids) == 2

    with pytest.warns(UserWarning, match=r"'\\n' is 2 tokens.*stops at EOS only"):
        pipe = load_pipeline(folder)
    assert pipe.llm.stop_token_ids == ()
    assert textgen.stop_and_pad_ids(pipe) == ([2], 1)  # EOS, pad
    hf = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    settings = SETTINGS[0]
    with torch.no_grad():
        out = hf.generate(pixel_values=pipe.preprocessor(photos[:2]), **hf_kwargs(pipe, settings))
    expected = out[:, T.NUM_QUERY_TOKENS + 1:].tolist()
    assert new_tokens(pipe, pipe.preprocessor(photos[:2]), ["", ""], settings) == expected
