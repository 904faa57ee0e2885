"""Evaluation predicts what the inference API gives: the vqa task's answers are ``pipe.answer``'s,
the captioning task's captions ``pipe.caption``'s, the retrieval task's top-k ``pipe.retrieve``'s,
for the same images, questions, prompts and decoding options (tiny real instruction-aware pipeline)."""

from __future__ import annotations

import pytest
import torch

from blip2_runner import metrics as M
from blip2_runner.config import DatasetConfig
from blip2_runner.data import load_dataset
from blip2_runner.options import CaptionOptions, ChatVQAOptions, RetrievalOptions, VQAOptions
from blip2_runner.tasks import (
    RETRIEVAL_METRICS,
    CaptioningTask,
    ChatVQATask,
    RetrievalTask,
    VQATask,
    clean_caption,
    clean_question,
)


@pytest.fixture(scope="module")
def pipeline(make_tiny_pipeline):
    pipe = make_tiny_pipeline(instruction_aware=True)  # the question reaches the bridge
    assert pipe.reads_instruction
    return pipe


def easy_vqa(view: str, count: int) -> list[dict]:
    examples = load_dataset("e", DatasetConfig(format="easy-vqa", split="test", view=view, limit=200)).examples
    return list(examples[:: len(examples) // count][:count])


def with_a_missing_image(examples: list[dict], tmp_path) -> list[dict]:
    broken = {**examples[1], "image": str(tmp_path / "gone.png"), "image_id": "gone"}
    return [examples[0], broken, *examples[1:]]


@pytest.mark.parametrize("clean_questions", [True, False])
def test_vqa_predictions_are_pipe_answer(pipeline, tmp_path, clean_questions):
    examples = with_a_missing_image(easy_vqa("questions", 7), tmp_path)
    task = VQATask(VQAOptions(num_beams=1, max_new_tokens=4, eval_batch_size=3, clean_questions=clean_questions,
                              prompt="Question: {} Answer:"))
    warnings = []
    task.warn = warnings.append
    predictions = task.predict(pipeline, examples)  # batches of 3, one with the unreadable image
    assert predictions[1] is None and len(warnings) == 1 and "gone.png" in warnings[0]
    for e, predicted in zip(examples, predictions):
        if predicted is None:
            continue
        question = clean_question(e["question"]) if clean_questions else e["question"]
        assert predicted == pipeline.answer(e["image"], question, template="Question: {} Answer:", num_beams=1,
                                            max_new_tokens=4, min_new_tokens=1, length_penalty=-1.0)[0]


def test_vqa_metrics_score_those_predictions(pipeline, tmp_path):
    examples = with_a_missing_image(easy_vqa("questions", 6), tmp_path)
    task = VQATask(VQAOptions(num_beams=2, max_new_tokens=3, eval_batch_size=4))
    task.warn = lambda message: None
    predictions = task.predict(pipeline, examples)
    scores = task.evaluate(pipeline, examples)
    scored = [(p, e) for p, e in zip(predictions, examples) if p is not None]
    assert scores["num_examples"] == len(scored) == 6
    assert scores["exact_match"] == pytest.approx(100.0 * sum(M.exact_match(p, e["answers"]) for p, e in scored) / 6)
    assert scores["vqa_accuracy"] == pytest.approx(M.vqa_scores([p for p, _ in scored], [e["answers"] for _, e in scored])["vqa_accuracy"])
    for kind in {e["question_type"] for _, e in scored}:
        of_kind = [M.exact_match(p, e["answers"]) for p, e in scored if e["question_type"] == kind]
        assert scores[f"exact_match/{kind}"] == pytest.approx(100.0 * sum(of_kind) / len(of_kind))


def test_chat_vqa_asks_through_pipe_chat_with_an_earlier_turn_about_the_same_image(pipeline, tmp_path):
    examples = with_a_missing_image(easy_vqa("questions", 8), tmp_path)
    task = ChatVQATask(ChatVQAOptions(max_new_tokens=4, eval_batch_size=3, history_probability=0.5))
    warnings = []
    task.warn = warnings.append
    histories = [task.history(e) for e in examples]
    assert {len(h) for h in histories} == {0, 1}  # some examples are second turns, some first
    for e, history in zip(examples, histories):
        for question, answer in history:  # another question of the same image, with its answer
            assert question != e["question"] and [question, answer] in [list(p) for p in e["image_questions"]]
    assert task.history(examples[0]) == histories[0]  # the same draw every time (epochs, evaluation)
    predictions = task.predict(pipeline, examples)
    assert predictions[1] is None and len(warnings) == 1 and "gone.png" in warnings[0]
    for e, predicted in zip(examples, predictions):
        if predicted is not None:
            assert predicted == pipeline.chat(e["image"], task.messages(e), max_new_tokens=4, num_beams=1,
                                              min_new_tokens=1, length_penalty=1.0)
    scores = task.evaluate(pipeline, examples)
    scored = [(p, e) for p, e in zip(predictions, examples) if p is not None]
    assert scores["num_examples"] == len(scored)
    assert scores["contains_answer"] == pytest.approx(
        100.0 * sum(M.contains_answer(p, e["answers"]) for p, e in scored) / len(scored))
    second = [M.exact_match(p, e["answers"]) for p, e in scored if task.history(e)]
    assert scores["exact_match/turns-2"] == pytest.approx(100.0 * sum(second) / len(second))


def test_chat_vqa_trains_on_the_conversation_it_is_asked():
    example = easy_vqa("questions", 4)[0]
    batch = ChatVQATask(ChatVQAOptions(history_probability=1.0)).text_batch([example])
    (messages,) = batch["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == example["question"] == batch["instruction"][0]
    assert batch["target"] == [example["answer"]]
    alone = ChatVQATask(ChatVQAOptions(history_probability=0.0)).text_batch([example])["messages"][0]
    assert alone == [{"role": "user", "content": example["question"]}]


def test_vqa_prompt_needs_one_question_slot():
    with pytest.raises(ValueError, match="once"):
        VQATask(VQAOptions(prompt="Question: {} {} Answer:"))
    with pytest.raises(ValueError, match="once"):
        VQATask(VQAOptions(prompt="Question: Answer:"))


@pytest.mark.parametrize("prompt, num_beams", [("a photo of", 2), ("", 1)])
def test_captioning_predictions_are_pipe_caption(pipeline, tmp_path, prompt, num_beams):
    examples = with_a_missing_image(easy_vqa("captions", 5), tmp_path)
    examples.append({**examples[2], "caption": "another caption of the same image"})  # one prediction per image
    task = CaptioningTask(CaptionOptions(prompt=prompt, num_beams=num_beams, max_new_tokens=5, eval_batch_size=2))
    task.warn = lambda message: None
    predictions = task.predict(pipeline, examples)
    assert list(predictions) == [e["image_id"] for e in examples[:1] + examples[2:6]]
    for e in examples[:1] + examples[2:6]:
        assert predictions[e["image_id"]] == pipeline.caption(e["image"], prompt=prompt, num_beams=num_beams,
                                                              max_new_tokens=5, min_new_tokens=1,
                                                              length_penalty=1.0)[0]
    scores = task.evaluate(pipeline, examples)
    refs = {}
    for e in examples:
        refs.setdefault(e["image_id"], []).append(e["caption"])
    hyps, gts = list(predictions.values()), [refs[i] for i in predictions]
    assert scores == pytest.approx({"bleu4": 100.0 * M.bleu4(hyps, gts), "cider": 100.0 * M.cider_d(hyps, gts),
                                    "num_examples": 5.0})


def test_retrieval_top_k_is_pipe_retrieve(pipeline):
    examples = easy_vqa("captions", 6)
    task = RetrievalTask(RetrievalOptions(k_test=3, eval_batch_size=4))
    i2t, t2i, text_to_image = task.similarity(pipeline, examples)
    assert text_to_image == list(range(6))
    ranked = pipeline.retrieve([e["image"] for e in examples], [clean_caption(e["caption"]) for e in examples], k=3)
    for image, best in enumerate(ranked["image_to_text"]):
        kept = (i2t[image] > -100).nonzero().flatten().tolist()
        assert sorted(kept) == sorted(b["index"] for b in best)
        assert [float(i2t[image, b["index"]]) for b in best] == pytest.approx([b["score"] for b in best], abs=1e-4)
    for text, best in enumerate(ranked["text_to_image"]):
        kept = (t2i[:, text] > -100).nonzero().flatten().tolist()
        assert sorted(kept) == sorted(b["index"] for b in best)
        assert [float(t2i[b["index"], text]) for b in best] == pytest.approx([b["score"] for b in best], abs=1e-4)


def test_itc_only_retrieval_scores_are_pipe_retrieve_itc(pipeline):
    examples = easy_vqa("captions", 6)
    task = RetrievalTask(RetrievalOptions(k_test=0, eval_batch_size=4))
    i2t, t2i, _ = task.similarity(pipeline, examples)
    assert torch.equal(i2t, t2i)
    ranked = pipeline.retrieve([e["image"] for e in examples], [clean_caption(e["caption"]) for e in examples], k=6)
    for image, best in enumerate(ranked["image_to_text"]):
        assert [float(i2t[image, b["index"]]) for b in best] == pytest.approx([b["itc"] for b in best], abs=1e-4)
    scores = task.evaluate(pipeline, examples)
    assert set(scores) == {*RETRIEVAL_METRICS, "num_examples"} and scores["num_examples"] == 6
