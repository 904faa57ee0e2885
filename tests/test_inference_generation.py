"""caption / answer against transformers: random-weight HF BLIP-2 folders with a real tokenizer,
prompts tokenised by transformers' own Blip2Processor, the same pixel_values and settings; the
texts (and token ids) must be identical. Plus batching, prefix caching, styles, seeds, errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration

from blip2core import load_pipeline
import tiny_models as T
from blip2core.inference.generation import GenerationSettings
from blip2core.inference.textgen import stop_and_pad_ids
from blip2core.loading import resolve_spec
from blip2core.preprocess import ImageLoadError

QUESTIONS = ["what is it?", "who is there", "is it red or blue?"]
T_DETAILED = "Question: Describe this image in detail. Answer:"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def opt(hf_opt_folder):
    folder = hf_opt_folder
    hf = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    return folder, hf, T.processor_for(folder), load_pipeline(folder)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-llama")
    hf = T.save_generation_folder(folder, "llama")
    return folder, hf, T.processor_for(folder), load_pipeline(folder)


def hf_texts(hf, processor, pipe, photos, prompts, **settings) -> tuple[list[str], list[list[int]]]:
    """What transformers generates: Blip2Processor builds the input ids (<image> x Q, BOS, prompt,
    left padding); pixel_values are the pipeline's own; stops = the LLM's "\\n" then EOS."""
    encoded = processor(images=[Image.open(p) for p in photos], text=prompts, padding="longest", return_tensors="pt")
    stops, pad = stop_and_pad_ids(pipe)
    kwargs = GenerationSettings(**settings).generate_kwargs(stops, pad)
    with torch.no_grad():
        out = hf.generate(
            pixel_values=pipe.preprocessor(photos), input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"], **kwargs,
        )
    new = out[:, encoded["input_ids"].shape[1]:]
    texts = [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return texts, new.tolist()


def test_the_opt_pipeline_stops_on_newline_then_eos(opt):
    _, _, processor, pipe = opt
    newline = processor.tokenizer("\n", add_special_tokens=False).input_ids
    assert len(newline) == 1
    assert stop_and_pad_ids(pipe) == ([newline[0], 2], 1)


def test_captions_with_blip2_defaults_equal_transformers(opt, photos):
    _, hf, processor, pipe = opt
    got = pipe.caption(photos[:2])
    expected, _ = hf_texts(hf, processor, pipe, photos[:2], ["", ""], num_beams=5, max_new_tokens=30)
    assert got == expected and len(got) == 2 and all(got)


@pytest.mark.parametrize("how", ["prompt", "style", "spec-style"])
def test_caption_prompts_and_styles_equal_transformers_with_that_prompt(opt, photos, how):
    folder, hf, processor, pipe = opt
    text = {"prompt": "a photo of", "style": T_DETAILED, "spec-style": "two people riding"}[how]
    settings = dict(num_beams=2, max_new_tokens=6, repetition_penalty=1.5)
    if how == "prompt":
        got = pipe.caption(photos[:2], prompt=text, **settings)
    elif how == "style":
        got = pipe.caption(photos[:2], style="detailed", **settings)
    else:
        spec = resolve_spec(folder).model_copy(update={"styles": {"bikes": text}})
        got = load_pipeline(spec).caption(photos[:2], style="bikes", **settings)
    expected, _ = hf_texts(hf, processor, pipe, photos[:2], [text, text], **settings)
    assert got == expected
    assert got != pipe.caption(photos[:2], **settings)  # the prompt mattered


def test_answers_equal_transformers_for_a_left_padded_batch(opt, photos):
    _, hf, processor, pipe = opt
    settings = dict(repetition_penalty=1.5)  # a random LM otherwise repeats one token
    got = pipe.answer(photos[:3], QUESTIONS, **settings)
    prompts = [f"Question: {q} Answer:" for q in QUESTIONS]
    expected, ids = hf_texts(hf, processor, pipe, photos[:3], prompts, max_new_tokens=10, length_penalty=0.0,
                             **settings)
    assert got == expected
    assert len({tuple(row) for row in ids}) == 3  # three different answers: the test can tell them apart


def test_batched_answers_equal_one_by_one(opt, photos):
    _, _, _, pipe = opt
    batched = pipe.answer(photos[:3], QUESTIONS, repetition_penalty=1.5, num_beams=3)
    single = [pipe.answer(p, q, repetition_penalty=1.5, num_beams=3)[0] for p, q in zip(photos[:3], QUESTIONS)]
    assert batched == single
    chunked = pipe.answer(photos[:3], QUESTIONS, repetition_penalty=1.5, num_beams=3, batch_size=2)
    assert chunked == batched


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_prefix_cached_answers_equal_uncached_one_by_one_and_transformers(family, opt, llama, photos):
    _, hf, processor, pipe = opt if family == "opt" else llama
    settings = dict(repetition_penalty=1.5, num_beams=3)
    cached = pipe.answer(photos[1], QUESTIONS, **settings)
    uncached = pipe.answer(photos[1], QUESTIONS, prefix_cache=False, **settings)
    single = [pipe.answer(photos[1], q, **settings)[0] for q in QUESTIONS]
    prompts = [f"Question: {q} Answer:" for q in QUESTIONS]
    expected, ids = hf_texts(hf, processor, pipe, [photos[1]] * 3, prompts, max_new_tokens=10, length_penalty=0.0,
                             **settings)
    assert cached == uncached == single == expected
    assert len({tuple(row) for row in ids}) > 1
    assert pipe.answer(photos[1], QUESTIONS, batch_size=1, **settings) == cached  # the cache reused per batch


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_the_prefix_cache_gives_the_logits_of_a_full_pass(family, opt, llama, photos):
    """The mechanism itself: the LLM over [question] with the image prefix cached gives, at every
    real position, the logits of one pass over [image | pad | question] (left-padded batch)."""
    from blip2core.inference.prefix_cache import build_prefix_cache
    from blip2core.llm.kv_cache import cache_argument, expanded_copy
    from blip2core.inference.textgen import expand_encoding, tokenize_prompts
    from blip2core.llm import positions_from_mask

    pipe = (opt if family == "opt" else llama)[3]
    model = pipe.llm.model
    with torch.no_grad():
        encoding = pipe.encode_images(pipe.preprocessor(photos[:1]))
        ids, mask = tokenize_prompts(pipe, [f"Question: {q} Answer:" for q in QUESTIONS])
        embeds, full_mask = pipe.build_llm_inputs(expand_encoding(encoding, 3), ids, mask)
        positions = positions_from_mask(full_mask)
        queries = encoding.llm_inputs.shape[1]
        full = model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions).logits[:, queries:]
        cache = expanded_copy(build_prefix_cache(pipe.llm, encoding.llm_inputs), 3)
        cached = model(inputs_embeds=embeds[:, queries:], attention_mask=full_mask,
                       position_ids=positions[:, queries:], **{cache_argument(model): cache}).logits
    real = mask.bool()
    assert mask.sum(1).unique().numel() > 1  # the batch really is padded
    torch.testing.assert_close(cached[real], full[real], rtol=0, atol=1e-4)


def test_prefix_cache_encodes_the_image_once(opt, photos, monkeypatch):
    _, _, _, pipe = opt
    calls = []
    original = pipe.encode_images
    monkeypatch.setattr(pipe, "encode_images", lambda pv: calls.append(pv.shape[0]) or original(pv))
    pipe.answer(photos[0], QUESTIONS, max_new_tokens=3, batch_size=1)
    assert calls == [1]


def test_several_sequences_per_image_equal_transformers(opt, photos):
    _, hf, processor, pipe = opt
    got = pipe.caption(photos[:2], num_beams=3, num_return_sequences=2, max_new_tokens=5, repetition_penalty=1.5)
    expected, _ = hf_texts(hf, processor, pipe, photos[:2], ["", ""], num_beams=3, num_return_sequences=2,
                           max_new_tokens=5, repetition_penalty=1.5)
    assert got == expected and len(got) == 4


def test_sampling_with_a_seed_repeats_and_leaves_the_global_rng_alone(opt, photos):
    _, _, _, pipe = opt
    state = torch.get_rng_state()
    first = pipe.caption(photos[:2], do_sample=True, seed=7, num_beams=1, max_new_tokens=8)
    again = pipe.caption(photos[:2], do_sample=True, seed=7, num_beams=1, max_new_tokens=8)
    other = pipe.caption(photos[:2], do_sample=True, seed=8, num_beams=1, max_new_tokens=8)
    assert first == again and first != other
    assert torch.equal(torch.get_rng_state(), state)


def test_mixed_input_types_give_the_same_captions(opt, photos):
    _, _, _, pipe = opt
    import numpy as np

    path = photos[0]
    inputs = [str(path), path.read_bytes(), Image.open(path), np.asarray(Image.open(path).convert("RGB"))]
    captions = pipe.caption(inputs, num_beams=1, max_new_tokens=4)
    assert len(set(captions)) == 1


def test_bad_inputs_give_errors_that_name_them(opt, photos, tmp_path):
    _, _, _, pipe = opt
    with pytest.raises(ValueError, match=r"unknown caption style 'poem'; known styles: detailed, short"):
        pipe.caption(photos[0], style="poem")
    with pytest.raises(ValueError, match=r"min_new_tokens \(5\) must not exceed max_new_tokens \(2\)"):
        pipe.caption(photos[0], min_new_tokens=5, max_new_tokens=2)
    with pytest.raises(ImageLoadError, match=r"missing\.png: no such file"):
        pipe.caption([photos[0], tmp_path / "missing.png"])
    with pytest.raises(ValueError, match=r"got 2 images and 3 questions"):
        pipe.answer(photos[:2], QUESTIONS)
    with pytest.raises(ValueError, match=r"needs exactly one '\{\}'"):
        pipe.answer(photos[0], "why?", template="Question: Answer:")
    with pytest.raises(TypeError, match=r"question 1 must be a string, got int|questions\[1\] must be a string"):
        pipe.answer(photos[0], ["why?", 3])
    with pytest.raises(ValueError, match=r"the prompt is \d+ tokens; .* more than the language model's 256"):
        pipe.caption(photos[0], prompt="a cat sitting on a mat " * 60)
    with pytest.raises(ValueError, match="no images given"):
        pipe.caption([])
