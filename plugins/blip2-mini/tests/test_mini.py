"""`mini`, the embedded default model: it loads by name offline and answers easy-vqa test questions;
`mini-chat`, its chat variant, answers them through `pipe.chat`, in one or two turns.

The 20 questions are fixed (every 480th test question, so every question type appears); the model
card's full-split accuracy comes from `blip2 eval` (see the plugin README), not from this test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import easy_vqa
import pytest
from PIL import Image

from blip2core import load_pipeline
from blip2core.errors import SpecError
from blip2core.inference.explain import PANEL, explain
from blip2core.loading import resolve_spec

REPO = Path(__file__).resolve().parents[3]
RECIPES = sorted((REPO / "recipes").glob("mini-*.yaml"))


@pytest.fixture(scope="module")
def mini():
    return load_pipeline("mini")


def fixed_questions(count: int = 20, stride: int = 480) -> list[tuple[str, str, str]]:
    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    return [(paths[image_ids[i]], questions[i], answers[i]) for i in range(0, count * stride, stride)]


def test_mini_answers_test_questions_it_never_saw(mini):
    picked = fixed_questions()
    kinds = {"yes", "no"} & {a for _, _, a in picked}
    assert kinds == {"yes", "no"} and any(a not in ("yes", "no") for _, _, a in picked)
    answers = [mini.answer(path, question, num_beams=1, max_new_tokens=5)[0] for path, question, _ in picked]
    right = sum(a.strip().lower() == truth for a, (_, _, truth) in zip(answers, picked))
    assert right >= 19, list(zip([q for _, q, _ in picked], answers, [t for _, _, t in picked]))


def test_mini_captions_name_the_colour_and_shape(mini):
    """A prompt-less caption starts from the image alone, as stage 1-3 trained it ("a red circle"):
    starting from SmolLM2's BOS (<|im_start|>) instead gave "assistant"."""
    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    truth: dict[int, dict[str, str]] = {}
    for question, answer, image in zip(questions, answers, image_ids):
        if question.lower().startswith("what color"):
            truth.setdefault(image, {})["colour"] = answer
        elif question.lower().startswith("what shape"):
            truth.setdefault(image, {})["shape"] = answer
    picked = [image for image, known in truth.items() if len(known) == 2][:8]
    captions = mini.caption([paths[image] for image in picked], num_beams=1)
    right = sum(c == f"a {truth[i]['colour']} {truth[i]['shape']}" for c, i in zip(captions, picked))
    assert right >= 7, list(zip(captions, [truth[i] for i in picked]))


def chat_replies(pipe, picked):
    """Each fixed question asked through chat: alone, then after an earlier turn about the same image."""
    replies = []
    for path, question, _ in picked:
        replies.append(pipe.chat(path, [{"role": "user", "content": question}], max_new_tokens=10))
        replies.append(pipe.chat(path, [{"role": "user", "content": "what shape is in the image?"},
                                        {"role": "assistant", "content": "a shape"},
                                        {"role": "user", "content": question}], max_new_tokens=10))
    return replies


def test_mini_chat_answers_test_questions_through_chat_where_mini_does_not(mini):
    picked = fixed_questions(12)
    truths = [truth for _, _, truth in picked for _turn in range(2)]
    tuned = chat_replies(load_pipeline("mini-chat"), picked)
    right = sum(r.strip().lower().rstrip(".") == t for r, t in zip(tuned, truths))
    assert right >= 20, list(zip(tuned, truths))  # of 24: one-word replies, mostly right
    untuned = chat_replies(mini, picked[:4])  # the same questions to mini: sentences, seldom the answer
    assert sum(r.strip().lower().rstrip(".") == t for r, t in zip(untuned, truths)) <= 2, untuned


def test_mini_is_the_documented_composition(mini):
    spec = mini.spec
    assert (spec.vision.name, spec.bridge.name, spec.llm.name) == (
        "efficientnet-lite0", "minilm-qformer", "smollm2-135m-instruct")
    assert mini.reads_instruction and mini.bridge.num_query_tokens == 8
    assert mini.load_report is None or not mini.load_report.missing.get("bridge")


def test_the_shipped_weights_are_small_and_hold_only_the_trainable_state(mini):
    from safetensors import safe_open

    from blip2_mini.model import WEIGHTS_FILE

    assert WEIGHTS_FILE.stat().st_size <= 40 * 1024 * 1024
    with safe_open(str(WEIGHTS_FILE), "pt") as f:
        stored = set(f.keys())
    assert stored == set(mini.trainable_state_dict())
    assert not any(".text_ffn." in k or "text_embeddings" in k for k in stored)  # frozen: MiniLM's own


def test_explain_with_mini_writes_the_picture(mini, tmp_path):
    path, question, _ = fixed_questions(1)[0]
    maps = explain(mini, path, question, tmp_path / "mini.png")
    assert maps.mean.shape == (7, 7) and maps.per_query.shape == (8, 7, 7)
    with Image.open(tmp_path / "mini.png") as picture:
        assert picture.size[0] == 2 * PANEL


def test_an_unknown_model_name_lists_the_registered_ones():
    with pytest.raises(SpecError, match=r"registered models: .*mini"):
        resolve_spec("mnii")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_the_recipes_validate(recipe):
    assert [p.name for p in RECIPES] == ["mini-chat-eval-base.yaml", "mini-chat.yaml", "mini-stage1.yaml",
                                         "mini-stage2.yaml", "mini-stage3.yaml"]  # stages 1-3, the chat variant
    result = subprocess.run([sys.executable, "-m", "blip2core.cli", "train", "--check", str(recipe)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"{recipe}: ok")


def test_blip2_models_lists_mini():
    result = subprocess.run([sys.executable, "-m", "blip2core.cli", "models"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("mini "))
    assert "blip2-mini" in line and "included" in line  # its weights ship with the plugin
