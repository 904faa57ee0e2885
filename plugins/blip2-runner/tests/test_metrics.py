"""Metrics against hand-worked values and the official VQAv2 normalisation examples."""

from __future__ import annotations

import math

import pytest
import torch

from blip2_runner import metrics as M


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a dog.", "dog"),  # period stripped, article dropped
        ("The Dog", "dog"),
        ("two", "2"),
        ("Two.", "2"),
        ("none", "0"),
        ("twenty two", "twenty 2"),  # word by word: only zero..ten are mapped, as in vqaEval.py
        ("it's", "it's"),  # "it's" is not in the contraction table and stays
        ("its", "its"),
        ("dont", "don't"),
        ("yes!", "yes"),
        ("1,000", "1000"),  # comma between digits is removed
        ("3.5", "3.5"),  # a period between digits is kept
        ("left/right", "left right"),  # no space around '/': replaced by a space
        ("  red\n", "red"),
    ],
)
def test_vqa_normalisation_matches_the_official_rules(raw, expected):
    assert M.normalize_vqa_answer(raw) == expected


def test_vqa_accuracy_official_formula_with_ten_answers():
    # prediction "two" -> "2"; human answers are not digit-mapped (official script)
    answers = ["2"] * 3 + ["3"] * 7
    # each "2" answer leaves 2 matching others -> 2/3; each "3" answer leaves 3 -> 1
    assert M.vqa_accuracy("two", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert M.vqa_accuracy("3", answers) == pytest.approx(1.0)
    answers = ["2"] + ["3"] * 9  # one human said "2": 0 for its own subset, 1/3 for the 9 others
    assert M.vqa_accuracy("2", answers) == pytest.approx(9 * (1 / 3) / 10)
    assert M.vqa_accuracy("four", answers) == 0.0


def test_vqa_accuracy_with_one_reference_is_normalised_exact_match():
    assert M.vqa_accuracy("A Circle.", ["circle"]) == 1.0
    assert M.vqa_accuracy("two", ["2"]) == 1.0
    assert M.vqa_accuracy("square", ["circle"]) == 0.0
    with pytest.raises(ValueError):
        M.vqa_accuracy("x", [])


def test_exact_match_and_vqa_scores():
    assert M.exact_match("the dog", ["cat", "dog"]) == 1.0
    assert M.exact_match("dogs", ["dog"]) == 0.0
    scores = M.vqa_scores(["yes", "no"], [["yes"], ["yes"]])
    assert scores == {"vqa_accuracy": 50.0, "exact_match": 50.0}


@pytest.mark.parametrize("reply, answers, expected", [
    ("The shape is red.", ["red"], 1.0),
    ("red", ["red"], 1.0),
    ("It is reddish.", ["red"], 0.0),       # whole words only
    ("Two circles.", ["2"], 1.0),           # normalised like VQA answers
    ("The image does contain a circle.", ["no"], 0.0),
    ("anything", ["", "  "], 0.0),          # an empty reference matches nothing
])
def test_contains_answer_finds_the_reference_as_whole_words(reply, answers, expected):
    assert M.contains_answer(reply, answers) == expected


def test_bleu_hand_worked_single_sentence():
    # pred 6 words, ref 7 words: precisions 6/6, 4/5, 3/4, 2/3; brevity penalty exp(1 - 7/6)
    pred = ["the cat is on the mat"]
    refs = [["the cat is on the red mat"]]
    expected = (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25 * math.exp(1 - 7 / 6)
    assert M.bleu4(pred, refs) == pytest.approx(expected, rel=1e-6)
    b1, b2, b3, _ = M.bleu(pred, refs)
    assert b1 == pytest.approx(math.exp(1 - 7 / 6), rel=1e-6)
    assert b2 == pytest.approx((4 / 5) ** 0.5 * math.exp(1 - 7 / 6), rel=1e-6)
    assert b3 == pytest.approx((4 / 5 * 3 / 4) ** (1 / 3) * math.exp(1 - 7 / 6), rel=1e-6)


def test_bleu_clipping_closest_reference_and_corpus_aggregation():
    # clipped unigrams 5/6 ("the" twice is allowed by ref 1), bigrams 3/5, trigrams 1/4, 4-grams 0/3
    pred = ["the cat sat on the mat"]
    refs = [["the cat is on the mat", "there is a cat on the mat"]]
    b1, b2, b3, b4 = M.bleu(pred, refs)
    assert (b1, b2, b3) == pytest.approx((5 / 6, (5 / 6 * 3 / 5) ** 0.5, (5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3)), rel=1e-6)
    assert b4 < 1e-3  # a zero 4-gram precision gives ~0, as in pycocoevalcap
    # closest reference length: 6 words vs refs of 5 and 7 -> tie, the shorter (5) wins: no penalty
    # (all unigrams match ref 2; with r = 7 the penalty exp(1 - 7/6) would apply)
    assert M.bleu(["a b c d e f"], [["a b c d e", "a b c d e f g"]])[0] == pytest.approx(1.0, rel=1e-6)
    # corpus level: counts are summed over sentences before the geometric mean
    preds = ["a b", "a b c d"]
    refs2 = [["a b"], ["a x c d"]]
    # unigrams (2+3)/(2+4); bigrams (1+1)/(1+3); trigrams 0/(0+2)...
    b1, b2, _, _ = M.bleu(preds, refs2)
    assert b1 == pytest.approx(5 / 6, rel=1e-6)
    assert b2 == pytest.approx((5 / 6 * 2 / 4) ** 0.5, rel=1e-6)


def test_caption_tokens_lowercase_and_strip_punctuation():
    assert M.caption_tokens("A man, riding a horse!") == ["a", "man", "riding", "a", "horse"]


def test_cider_d_hand_worked_tiny_corpus():
    ln2 = math.log(2)
    # two images; refs "a cat" / "a dog": idf("a") = 0, idf of every other n-gram = ln 2
    # perfect "a dog": n=1 and n=2 cosines are 1, n=3,4 empty -> mean 0.5 -> x10 = 5
    assert M.cider_d_per_example(["a cat", "a dog"], [["a cat"], ["a dog"]]) == pytest.approx([5.0, 5.0])
    # "a cat cat": n=1: clipped min(2ln2, ln2)*ln2 / (2ln2*ln2) = 1/2;
    #   n=2: {"a cat": ln2, "cat cat": ln2 (df 0 -> idf ln2)} vs {"a cat": ln2} -> ln2^2/(sqrt2 ln2 * ln2) = 1/sqrt2;
    #   n=3: ref empty -> 0; bigram lengths 2 vs 1 -> penalty exp(-1/72)
    expected_a = (0.5 + 1 / math.sqrt(2)) / 4 * math.exp(-1 / (2 * 36)) * 10
    scores = M.cider_d_per_example(["a cat cat", "a dog"], [["a cat"], ["a dog"]])
    assert scores == pytest.approx([expected_a, 5.0], rel=1e-9)
    assert M.cider_d(["a cat cat", "a dog"], [["a cat"], ["a dog"]]) == pytest.approx((expected_a + 5.0) / 2)
    # several references: the per-reference similarities are averaged
    two_refs = M.cider_d_per_example(["a cat", "a dog"], [["a cat", "a dog"], ["a dog"]])
    assert 0 < two_refs[0] < 5.0
    assert ln2 > 0


def test_caption_metric_input_errors():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        M.bleu4(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        M.cider_d(["a"], [[]])


def test_retrieval_recall_hand_example():
    # 3 images, 4 texts; texts 0 and 1 belong to image 0, text 2 to image 1, text 3 to image 2
    sim = torch.tensor([
        [0.9, 0.1, 0.5, 0.2],  # image 0: best text 0 (own) -> rank 0
        [0.8, 0.3, 0.4, 0.7],  # image 1: own text 2 ranks 3rd (0.8, 0.7, 0.4)
        [0.1, 0.2, 0.3, 0.6],  # image 2: own text 3 ranks 1st
    ])
    r = M.retrieval_recall(sim, [0, 0, 1, 2], ks=(1, 2))
    assert r["txt_r1"] == pytest.approx(200 / 3)
    assert r["txt_r2"] == pytest.approx(200 / 3)
    # text -> image: text0 col [0.9,0.8,0.1] -> img0 rank 0; text1 [0.1,0.3,0.2] -> img0 rank 2;
    # text2 [0.5,0.4,0.3] -> img1 rank 1; text3 [0.2,0.7,0.6] -> img2 rank 1
    assert r["img_r1"] == pytest.approx(25.0)
    assert r["img_r2"] == pytest.approx(75.0)
    assert r["r_mean"] == pytest.approx((r["txt_r_mean"] + r["img_r_mean"]) / 2)
    with pytest.raises(ValueError, match="4 entries for 3 texts"):
        M.retrieval_recall(sim[:, :3], [0, 0, 1, 2])
