"""Reference points for `mini`'s accuracy: ``python -m blip2_mini.baselines``.

- question-text prior: each test question answered with the most common *training* answer to
  the same question text (no image at all);
- majority answer: the most common training answer for every question.
"""

from __future__ import annotations

from collections import Counter, defaultdict


def question_prior_accuracy() -> dict[str, float]:
    """Exact-match accuracy (percent) of the two image-blind baselines on the whole test split."""
    import easy_vqa

    train_q, train_a, _ = easy_vqa.get_train_questions()
    test_q, test_a, _ = easy_vqa.get_test_questions()
    by_text: dict[str, Counter] = defaultdict(Counter)
    for q, a in zip(train_q, train_a):
        by_text[q][a] += 1
    overall = Counter(train_a).most_common(1)[0][0]
    prior = [by_text[q].most_common(1)[0][0] if q in by_text else overall for q in test_q]
    n = len(test_q)
    return {
        "question_prior": 100.0 * sum(p == a for p, a in zip(prior, test_a)) / n,
        "majority_answer": 100.0 * sum(overall == a for a in test_a) / n,
        "test_questions": float(n),
    }


if __name__ == "__main__":
    for name, value in question_prior_accuracy().items():
        print(f"{name}: {value:.2f}")
