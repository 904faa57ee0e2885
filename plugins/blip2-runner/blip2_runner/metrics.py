"""Evaluation metrics, pure Python (no Java, no network).

- VQA accuracy with the official VQAv2 answer normalisation (``vqaEval.py`` of the VQA challenge).
- Exact match after that normalisation.
- BLEU-4 and CIDEr-D computed as ``pycocoevalcap`` computes them (corpus BLEU with the "closest"
  reference length; CIDEr-D with document frequencies from the reference corpus, sigma 6, clipping,
  x10). The only difference: captions are tokenised here by :func:`caption_tokens` (lower case,
  punctuation removed, split on white space) instead of the Stanford PTB tokenizer (Java).
- Retrieval recall R@1/5/10 in both directions from a similarity matrix.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import torch

# ---------------------------------------------------------------------------------------------
# VQA normalisation (official VQAv2 evaluation)
# ---------------------------------------------------------------------------------------------

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQAv2 normalisation of a predicted answer.

    ``"A dog."`` -> ``"dog"``; ``"two"`` -> ``"2"``; ``"twenty two"`` -> ``"twenty 2"`` (word by word; only zero..ten are mapped);
    ``"dont"`` -> ``"don't"``; ``"it's"`` stays ``"it's"``; ``"yes!"`` -> ``"yes"``.
    """
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(answer))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 accuracy of one prediction against the human answers.

    With several answers (VQAv2 has 10) this is the official formula: for each human answer,
    ``min(1, #other humans who gave the prediction / 3)``, averaged over the answers (the official
    script normalises the human answers' punctuation only, and only when they disagree).
    With a single reference answer (easy-vqa, custom data) the official formula would always give 0,
    so it is the normalised exact match instead.
    """
    if not answers:
        raise ValueError("vqa_accuracy: no reference answers")
    pred = normalize_vqa_answer(prediction)
    if len(answers) == 1:
        return float(pred == normalize_vqa_answer(answers[0]))
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(gts)) > 1:
        gts = [_process_punctuation(a) for a in gts]
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(1 for a in others if a == pred) / 3.0))
    return sum(accs) / len(accs)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference."""
    pred = normalize_vqa_answer(prediction)
    return float(any(pred == normalize_vqa_answer(a) for a in answers))


def contains_answer(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when a normalised reference appears in the normalised prediction as whole words
    ("The shape is red." contains "red"; "reddish" does not): fair to a model that answers in
    sentences, though it cannot judge a yes/no question answered without "yes" or "no"."""
    words = f" {normalize_vqa_answer(prediction)} "
    return float(any(f" {normalize_vqa_answer(a)} " in words for a in answers if a.strip()))


# ---------------------------------------------------------------------------------------------
# Caption metrics (pycocoevalcap-compatible, pure Python)
# ---------------------------------------------------------------------------------------------

_CAPTION_PUNCT = re.compile(r"[^\w\s']|_")


def caption_tokens(text: str) -> list[str]:
    """Lower case, drop punctuation (keeps apostrophes inside words), split on white space."""
    return _CAPTION_PUNCT.sub(" ", text.lower()).split()


def _ngrams(words: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _check_pairs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("no predictions to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings")


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as pycocoevalcap computes it; returns ``[bleu1, ..., bleu_n]``.

    Clipped n-gram precisions are summed over the corpus; the brevity penalty uses, for each
    prediction, the reference length closest to it (ties: the shorter). Like pycocoevalcap, a
    precision of 0 gives a score of ~0 (tiny=1e-15, small=1e-9 guard the division).
    """
    _check_pairs(predictions, references)
    tiny, small = 1e-15, 1e-9
    guess = [0] * n
    correct = [0] * n
    test_len_total = 0
    ref_len_total = 0
    for pred, refs in zip(predictions, references):
        words = caption_tokens(pred)
        ref_words = [caption_tokens(r) for r in refs]
        max_counts: dict[tuple, int] = {}
        for rw in ref_words:
            for ngram, count in _ngrams(rw, n).items():
                max_counts[ngram] = max(max_counts.get(ngram, 0), count)
        test_len = len(words)
        ref_len = min((abs(len(rw) - test_len), len(rw)) for rw in ref_words)[1]
        test_len_total += test_len
        ref_len_total += ref_len
        for k in range(1, n + 1):
            guess[k - 1] += max(0, test_len - k + 1)
        for ngram, count in _ngrams(words, n).items():
            correct[len(ngram) - 1] += min(count, max_counts.get(ngram, 0))
    scores = []
    product = 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len_total + tiny) / (ref_len_total + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (see :func:`bleu`)."""
    return bleu(predictions, references, 4)[3]


def cider_d(
    predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> float:
    """Corpus CIDEr-D as pycocoevalcap's ``Cider`` computes it (the mean of per-image scores).

    tf-idf vectors of 1..n-grams with document frequencies counted over the references of the
    corpus (an n-gram counts once per image); per n, the clipped cosine
    ``sum min(h, r) * r / (|h| |r|)`` times the Gaussian length penalty ``exp(-d^2 / (2 sigma^2))``
    where d is the difference of the *bigram* counts (as pycocoevalcap does); averaged over n and
    over the references, times 10.
    """
    return float(sum(cider_d_per_example(predictions, references, n, sigma)) / len(predictions))


def cider_d_per_example(
    predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> list[float]:
    """Per-image CIDEr-D scores (see :func:`cider_d`)."""
    _check_pairs(predictions, references)
    tests = [_ngrams(caption_tokens(p), n) for p in predictions]
    refs = [[_ngrams(caption_tokens(r), n) for r in rs] for rs in references]
    doc_freq: Counter = Counter()
    for image_refs in refs:
        for ngram in {g for r in image_refs for g in r}:
            doc_freq[ngram] += 1
    log_num_docs = math.log(float(len(refs)))

    def to_vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ngram, tf in counts.items():
            df = math.log(max(1.0, doc_freq[ngram]))
            k = len(ngram) - 1
            vec[k][ngram] = float(tf) * (log_num_docs - df)
            norm[k] += vec[k][ngram] ** 2
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for test, image_refs in zip(tests, refs):
        vec, norm, length = to_vector(test)
        total = [0.0] * n
        for ref in image_refs:
            vec_r, norm_r, length_r = to_vector(ref)
            delta = float(length - length_r)
            for k in range(n):
                val = sum(min(v, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, v in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total[k] += val * math.exp(-(delta**2) / (2 * sigma**2))
        scores.append(sum(total) / n / len(image_refs) * 10.0)
    return scores


# ---------------------------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------------------------


def retrieval_recall(
    similarity: torch.Tensor,
    text_to_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    text_to_image_similarity: torch.Tensor | None = None,
) -> dict[str, float]:
    """Recall@k in both directions (percent), as the BLIP/BLIP-2 retrieval evaluation reports it.

    Args:
        similarity: [num_images, num_texts] scores (higher = more similar).
        text_to_image: for each text, the index of its image (an image may have several texts).
        text_to_image_similarity: [num_images, num_texts] scores to rank images for each text, when
            they differ from ``similarity`` (ITM re-ranking scores each direction's own top k).

    Returns ``txt_r{k}`` (image -> text: an image counts as found when any of its texts ranks
    within the top k), ``img_r{k}`` (text -> image), their means ``txt_r_mean`` / ``img_r_mean`` and
    ``r_mean``.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be [num_images, num_texts], got shape {tuple(sim.shape)}")
    num_images, num_texts = sim.shape
    t2i = torch.as_tensor(list(text_to_image), dtype=torch.long)
    if t2i.numel() != num_texts:
        raise ValueError(f"text_to_image has {t2i.numel()} entries for {num_texts} texts")
    if num_texts and (t2i.min() < 0 or t2i.max() >= num_images):
        raise ValueError("text_to_image refers to an image index outside the similarity matrix")
    # image -> text: best (lowest) rank among the image's texts.
    order = torch.argsort(sim, dim=1, descending=True)  # [I, T]
    ranks_of_text = torch.empty_like(order)
    ranks_of_text.scatter_(1, order, torch.arange(num_texts).expand(num_images, -1).contiguous())
    txt_rank = torch.full((num_images,), num_texts, dtype=torch.long)
    for text_index in range(num_texts):
        image = int(t2i[text_index])
        txt_rank[image] = min(int(txt_rank[image]), int(ranks_of_text[image, text_index]))
    has_text = torch.zeros(num_images, dtype=torch.bool)
    has_text[t2i] = True
    txt_rank = txt_rank[has_text]
    # text -> image: rank of the text's own image.
    sim_t = sim if text_to_image_similarity is None else torch.as_tensor(text_to_image_similarity, dtype=torch.float64)
    if sim_t.shape != sim.shape:
        raise ValueError(f"text_to_image_similarity has shape {tuple(sim_t.shape)}, expected {tuple(sim.shape)}")
    order_t = torch.argsort(sim_t.t(), dim=1, descending=True)  # [T, I]
    img_rank = (order_t == t2i[:, None]).float().argmax(dim=1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"txt_r{k}"] = 100.0 * float((txt_rank < k).double().mean()) if txt_rank.numel() else 0.0
    for k in ks:
        out[f"img_r{k}"] = 100.0 * float((img_rank < k).double().mean()) if img_rank.numel() else 0.0
    out["txt_r_mean"] = sum(out[f"txt_r{k}"] for k in ks) / len(ks)
    out["img_r_mean"] = sum(out[f"img_r{k}"] for k in ks) / len(ks)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def vqa_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> Mapping[str, float]:
    """``vqa_accuracy`` and ``exact_match`` averaged over examples, in percent."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    return {
        "vqa_accuracy": 100.0 * mean([vqa_accuracy(p, a) for p, a in zip(predictions, answers)]),
        "exact_match": 100.0 * mean([exact_match(p, a) for p, a in zip(predictions, answers)]),
    }
