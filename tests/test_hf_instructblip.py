"""transformers is the oracle for InstructBLIP: random-weight ``InstructBlipForConditionalGeneration``
folders (Vicuna's Llama and a FlanT5-style T5) written with ``InstructBlipProcessor`` and
``save_pretrained`` load with blip2core to the same logits and the same tokens; the same weights
under LAVIS's ``blip2_vicuna_instruct`` / ``blip2_t5_instruct`` names load from a .pth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from blip2core import load_pipeline
from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.errors import CheckpointError
from blip2core.lavis_names import resolve as resolve_lavis
from blip2core.loading import resolve_spec
from lavis_names import hf_blip2_to_lavis
from tiny_models import IMAGE_SIZE, instructblip_processor_for, save_instructblip_folder

ATOL = 1e-4
#: different lengths: both tokenizers pad the batch
QUESTIONS = ["what colour is the cat on the mat?", "is it a dog?"]


@pytest.fixture(scope="module", params=["llama", "t5"])
def instructblip(request, tmp_path_factory, one_torch_thread):
    """(text model, folder, transformers' model loaded back from it, its processor, our pipeline)."""
    folder = tmp_path_factory.mktemp(f"instructblip-{request.param}")
    oracle = save_instructblip_folder(folder, request.param)
    return request.param, folder, oracle, instructblip_processor_for(folder), load_pipeline(folder)


def photo(seed: int) -> Image.Image:
    """Random pixels at the model's size (no resampling, whose last bits differ between libraries)."""
    return Image.fromarray((np.random.default_rng(seed).random((IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype("uint8"))


def test_folder_becomes_an_instruction_aware_qformer_without_matching_heads(instructblip):
    text, folder, _, _, pipe = instructblip
    assert pipe.spec.vision.name == "eva-vit" and pipe.spec.bridge.name == "qformer"
    assert pipe.spec.llm.name == text
    assert pipe.reads_instruction and not pipe.bridge.has_text_heads
    assert pipe.bridge.itm_head is None and pipe.bridge.lm_head is None and pipe.bridge.temp is None
    assert pipe.bridge.tokenizer.name_or_path == str(folder / "qformer_tokenizer")
    assert pipe.load_report.loaded_slots == {"vision", "bridge", "llm"}
    assert not any(pipe.load_report.missing.values()) and not pipe.load_report.unexpected


@torch.no_grad()
def test_query_output_follows_the_instruction_as_in_transformers(instructblip):
    _, _, oracle, processor, pipe = instructblip
    inputs = processor(images=[photo(1), photo(1)], text=QUESTIONS, padding=True, return_tensors="pt")
    expected = oracle.get_image_features(
        inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
        qformer_attention_mask=inputs["qformer_attention_mask"],
    ).pooler_output
    got = pipe.encode_images(inputs["pixel_values"], instruction=QUESTIONS).llm_inputs
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= ATOL
    assert not torch.allclose(got[0], got[1], atol=ATOL)  # one image, two instructions: two soft prompts


@torch.no_grad()
def test_logits_equal_transformers_on_a_padded_batch(instructblip):
    """The Q-Former reads two instructions of different lengths (padded). T5's prompts are padded
    on the right too; the Llama prompt is one length for both rows, since transformers' forward (not
    its generate) counts left padding into the positions, which blip2core does not."""
    text, _, oracle, processor, pipe = instructblip
    inputs = processor(images=[photo(2), photo(3)], text=QUESTIONS, padding=True, return_tensors="pt")
    assert inputs["qformer_attention_mask"][1, -1] == 0
    if text == "llama":
        prompt = processor(images=[photo(2), photo(3)], text=[QUESTIONS[0]] * 2, return_tensors="pt")
        inputs["input_ids"], inputs["attention_mask"] = prompt["input_ids"], prompt["attention_mask"]
    labels = torch.tensor([[5, 6, 7, 1], [8, 9, 1, -100]]) if text == "t5" else None
    expected = oracle(**inputs, labels=labels)
    got = pipe(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], labels=labels,
               instruction=QUESTIONS)
    assert got.logits.shape == expected.logits.shape
    assert (got.logits - expected.logits).abs().max() <= ATOL
    if labels is not None:
        assert abs(got.loss.item() - expected.loss.item()) <= ATOL


@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_answers_equal_transformers_generate(instructblip, num_beams):
    """``pipe.answer`` with the question as the whole prompt (InstructBLIP's form): the LLM reads
    [soft prompt, BOS (Llama), question], the Q-Former reads the question."""
    text, _, oracle, processor, pipe = instructblip
    options = dict(num_beams=num_beams, max_new_tokens=8, min_new_tokens=3)
    image = photo(4)
    inputs = processor(images=[image, image], text=QUESTIONS, padding=True, return_tensors="pt")
    expected = oracle.generate(**inputs, **options, length_penalty=0.0)
    # a decoder-only LLM returns the prompt before the new tokens; T5 its decoder start token
    new = expected[:, inputs["input_ids"].shape[1]:] if text == "llama" else expected[:, 1:]
    got = pipe.generate(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"],
                        instruction=QUESTIONS, **options, length_penalty=0.0)
    assert got.tolist() == new.tolist()
    answers = pipe.answer(image, QUESTIONS, template="{}", **options)
    assert answers == [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]


def lavis_state_dict(oracle, text: str) -> dict[str, torch.Tensor]:
    """The oracle's weights under LAVIS ``blip2_vicuna_instruct`` / ``blip2_t5_instruct`` names."""
    llm, projection = ("llm_model.", "llm_proj.") if text == "llama" else ("t5_model.", "t5_proj.")
    state = hf_blip2_to_lavis(oracle.state_dict(), llm_prefix=llm)
    return {(projection + k[len("opt_proj."):] if k.startswith("opt_proj.") else k): v for k, v in state.items()}


def test_lavis_instruct_pth_loads_to_the_same_numbers(instructblip, tmp_path):
    text, folder, oracle, processor, _ = instructblip
    state = lavis_state_dict(oracle, text)
    assert {"Qformer.bert.embeddings.word_embeddings.weight", "Qformer.bert.embeddings.LayerNorm.weight"} <= set(state)
    path = tmp_path / f"instruct_blip_{text}.pth"
    torch.save({"model": state}, path)
    spec = resolve_spec(folder).model_copy(update={"weights": []})  # the architecture only
    ours = load_pipeline(spec, weights=[path])
    assert ours.load_report.sources[0][1] == "lavis"
    assert not any(ours.load_report.missing.values()) and not ours.load_report.unexpected
    inputs = processor(images=[photo(5)], text=[QUESTIONS[0]], return_tensors="pt")
    labels = torch.tensor([[5, 6, 1]]) if text == "t5" else None
    with torch.no_grad():
        expected = oracle(**inputs, labels=labels).logits
        got = ours(inputs["pixel_values"], inputs["input_ids"], labels=labels, instruction=[QUESTIONS[0]]).logits
    assert (got - expected).abs().max() <= ATOL


def test_lavis_instruct_names_resolve_to_instructblip_presets():
    assert resolve_lavis("blip2_vicuna_instruct", "vicuna7b") == ("instructblip-vicuna-7b", "opt", "")
    assert resolve_lavis("blip2_vicuna_instruct", "vicuna13b")[0] == "instructblip-vicuna-13b"
    assert resolve_lavis("blip2_t5_instruct", "flant5xl") == ("instructblip-flan-t5-xl", "opt", "")
    assert resolve_lavis("blip2_t5_instruct", "flant5xxl")[0] == "instructblip-flan-t5-xxl"


def test_a_folder_without_its_qformer_tokenizer_is_one_clear_error(instructblip, tmp_path):
    _, folder, _, _, _ = instructblip
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(CheckpointError, match=r"config\.json: an InstructBLIP folder needs the Q-Former's tokenizer in "
                                              r".*qformer_tokenizer .*it is missing"):
        load_pipeline(tmp_path)


def test_without_matching_heads_text_operations_say_why(instructblip):
    _, _, _, _, pipe = instructblip
    with pytest.raises(RuntimeError, match="with_matching_heads=False: its text side is an instruction input only"):
        pipe.bridge.text_embeds_proj(torch.zeros(1, 3, pipe.bridge.hidden_size))
    with pytest.raises(ValueError, match="with_matching_heads=False needs with_text_heads=True"):
        QFormerOptions(with_text_heads=False, with_matching_heads=False)
