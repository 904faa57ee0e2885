"""What to train and evaluate: BLIP-2's pre-training stages, captioning, VQA and retrieval.

A task names the example fields it reads (``data_fields``), its losses with their weights
(``losses``; a RUN.yaml may override the weights), and the metrics ``evaluate`` returns. For
training it also turns examples into the text part of a batch (``text_batch``); the trainer adds
the images.

Evaluation generates through the inference API users call (``Pipeline.answer`` for ``vqa``,
``Pipeline.chat`` for ``chat_vqa``, ``Pipeline.caption`` for captioning), so a task's predictions are the answers and captions a user
gets for the same image, question or prompt and decoding options. Retrieval scores as
``Pipeline.retrieve`` does (the ITC top ``k_test`` re-scored by ITM + ITC, through the bridge's
``TextBridge`` methods), but in batches of ``eval_batch_size``: the inference API has no batched
form of it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from blip2core import TextBridge
from blip2core.plugin_api import query_text_similarity, require_protocol

from blip2_runner import metrics as M
from blip2_runner.data import BadImageError, load_image, stable_hash
from blip2_runner.options import (
    CaptionOptions,
    ChatVQAOptions,
    GenerationOptions,
    RetrievalOptions,
    Stage1Options,
    Stage2Options,
    VQAOptions,
)

RETRIEVAL_METRICS = ("txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "txt_r_mean", "img_r_mean", "r_mean")


# ---------------------------------------------------------------------------------------------
# text processing (LAVIS' BLIP caption / question processors)
# ---------------------------------------------------------------------------------------------


def clean_caption(text: str, max_words: int = 50) -> str:
    """Lower case, punctuation ``.!"()*#:;~`` to spaces, collapsed white space, at most max_words."""
    text = re.sub(r"([.!\"()*#:;~])", " ", str(text).lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def clean_question(text: str, max_words: int = 50) -> str:
    """Lower case, punctuation ``.!"()*#:;~`` removed, at most max_words."""
    text = re.sub(r"([.!\"()*#:;~])", "", str(text).lower()).rstrip(" ")
    return " ".join(text.split(" ")[:max_words])


# ---------------------------------------------------------------------------------------------
# evaluation helpers
# ---------------------------------------------------------------------------------------------


def _load_images(examples: Sequence[Mapping[str, Any]], warn) -> tuple[list[Any], list[int]]:
    """Images of the examples that load; indexes of those examples (bad ones reported and skipped)."""
    images, kept = [], []
    for i, example in enumerate(examples):
        try:
            images.append(load_image(example["image"]))
            kept.append(i)
        except BadImageError as exc:
            warn(f"skipping unreadable image {exc.path}: {exc.reason}")
    return images, kept


def _pixels(pipeline, images: list[Any]) -> torch.Tensor:
    if pipeline.preprocessor is None:
        raise RuntimeError("the pipeline has no preprocessor: evaluation needs one to turn images into pixels")
    return pipeline.preprocessor(images, train=False)


def decoding(options: GenerationOptions) -> dict[str, Any]:
    """A task's generation options as the keyword arguments of ``Pipeline.answer`` / ``Pipeline.caption``."""
    return {"num_beams": options.num_beams, "max_new_tokens": options.max_new_tokens,
            "min_new_tokens": options.min_new_tokens, "length_penalty": options.length_penalty}


def first_example_per_image(examples: Sequence[Mapping[str, Any]]) -> dict[Any, Mapping[str, Any]]:
    """image_id -> the first example with that image, in order of first appearance."""
    image_of: dict[Any, Mapping[str, Any]] = {}
    for e in examples:
        image_of.setdefault(e["image_id"], e)
    return image_of


def text_bridge(pipeline, needed_by: str) -> TextBridge:
    """The pipeline's bridge as a ``TextBridge`` with its text heads, or an error naming ``needed_by``."""
    bridge = require_protocol(pipeline.bridge, TextBridge, needed_by, "bridge", pipeline.spec.bridge.name)
    if not bridge.has_text_heads:
        raise RuntimeError(f"{needed_by} needs a bridge with text heads: build the qformer with with_text_heads")
    return bridge


class _TaskBase:
    """Shared plumbing: option-driven batch size, a warning sink and an optional progress bar."""

    data_fields: tuple[str, ...] = ()
    losses: Mapping[str, float] = {}
    metrics: tuple[str, ...] = ()
    name = "task"

    def __init__(self, options: BaseModel) -> None:
        self.options = options
        self.progress = False
        self.warn = lambda message: print(f"warning: {message}")

    def _chunks(self, items: Sequence[Any], size: int, what: str):
        bar = tqdm(total=len(items), desc=f"eval {self.name}", unit=what, leave=False, disable=not self.progress)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            yield chunk
            bar.update(len(chunk))
        bar.close()


# ---------------------------------------------------------------------------------------------
# captioning-style tasks (stage 2, captioning)
# ---------------------------------------------------------------------------------------------


class CaptioningTask(_TaskBase):
    """Image captioning: LM loss on the caption; BLEU-4 and CIDEr-D of generated captions."""

    name = "captioning"
    data_fields = ("image", "image_id", "caption")
    losses = {"lm": 1.0}
    metrics = ("bleu4", "cider")

    def __init__(self, options: CaptionOptions | None = None) -> None:
        super().__init__(options or CaptionOptions())

    def text_batch(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        o = self.options
        return {"prompt": [o.prompt] * len(examples), "instruction": [o.prompt] * len(examples),
                "target": [clean_caption(e["caption"], o.max_words) for e in examples]}

    def predict(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[Any, str]:
        """image_id -> generated caption, as ``pipeline.caption(image, prompt=options.prompt, ...)``
        gives it (images that could not be read are left out)."""
        o = self.options
        image_of = first_example_per_image(examples)
        ids = list(image_of)
        predictions: dict[Any, str] = {}
        for chunk in self._chunks(ids, o.eval_batch_size, "img"):
            images, kept = _load_images([image_of[i] for i in chunk], self.warn)
            if images:
                texts = pipeline.caption(images, prompt=o.prompt, **decoding(o))
                predictions.update(zip([chunk[k] for k in kept], texts, strict=True))
        return predictions

    def evaluate(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        refs: dict[Any, list[str]] = defaultdict(list)
        for e in examples:
            refs[e["image_id"]].append(e["caption"])
        predictions = self.predict(pipeline, examples)
        scored = [i for i in refs if i in predictions]
        if not scored:
            return {"bleu4": 0.0, "cider": 0.0, "num_examples": 0.0}
        hyps = [predictions[i] for i in scored]
        gts = [refs[i] for i in scored]
        return {"bleu4": 100.0 * M.bleu4(hyps, gts), "cider": 100.0 * M.cider_d(hyps, gts),
                "num_examples": float(len(scored))}


class Stage2Task(CaptioningTask):
    """BLIP-2 stage 2: generative pre-training of the bridge through the frozen LLM."""

    name = "pretrain-stage2"

    def __init__(self, options: Stage2Options | None = None) -> None:
        super().__init__(options or Stage2Options())


# ---------------------------------------------------------------------------------------------
# VQA
# ---------------------------------------------------------------------------------------------


class VQATask(_TaskBase):
    """Visual question answering: LM loss on the answer; VQAv2 accuracy and exact match."""

    name = "vqa"
    data_fields = ("image", "question", "answers", "answer")
    losses = {"lm": 1.0}
    metrics = ("vqa_accuracy", "exact_match")

    def __init__(self, options: VQAOptions | None = None) -> None:
        super().__init__(options or VQAOptions())
        if self.options.prompt.count("{}") != 1:
            raise ValueError(f"vqa prompt must contain '{{}}' once, where the question goes, got {self.options.prompt!r}")

    def question(self, question: str) -> str:
        """The question as the model sees it (cleaned unless ``clean_questions`` is off)."""
        return clean_question(question, self.options.max_words) if self.options.clean_questions else str(question)

    def prompt(self, question: str) -> str:
        return self.options.prompt.replace("{}", self.question(question))

    def text_batch(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        return {"prompt": [self.prompt(e["question"]) for e in examples],
                "instruction": [self.question(e["question"]) for e in examples],
                "target": [str(e["answer"]) for e in examples]}

    def predict(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> list[str | None]:
        """Each example's answer, as ``pipeline.answer(image, self.question(question),
        template=options.prompt, ...)`` gives it (None where the image could not be read)."""
        o = self.options
        out: list[str | None] = [None] * len(examples)
        for chunk in self._chunks(list(range(len(examples))), o.eval_batch_size, "q"):
            images, kept = _load_images([examples[i] for i in chunk], self.warn)
            if images:
                questions = [self.question(examples[chunk[k]]["question"]) for k in kept]
                answers = pipeline.answer(images, questions, template=o.prompt, **decoding(o))
                for k, answer in zip(kept, answers, strict=True):
                    out[chunk[k]] = answer
        return out

    def evaluate(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return answer_scores(self.predict(pipeline, examples), examples)


def answer_scores(predictions: Sequence[str | None], examples: Sequence[Mapping[str, Any]],
                  group: Any = None, metric=M.exact_match, name: str = "exact_match") -> dict[str, float]:
    """VQA accuracy and exact match (percent) of the answered examples (None = image unreadable),
    and ``name/<group>`` per group of ``group(example)`` (default: the easy-vqa question type)."""
    pairs = [(p, e["answers"]) for p, e in zip(predictions, examples) if p is not None]
    if not pairs:
        return {"vqa_accuracy": 0.0, "exact_match": 0.0, "num_examples": 0.0}
    scores = dict(M.vqa_scores([p for p, _ in pairs], [a for _, a in pairs]))
    group = group or (lambda e: e.get("question_type"))
    by_group: dict[str, list[float]] = defaultdict(list)  # data sets that label questions (easy-vqa)
    for p, e in zip(predictions, examples):
        if p is not None and group(e) is not None:
            by_group[str(group(e))].append(metric(p, e["answers"]))
    for kind in sorted(by_group):
        scores[f"{name}/{kind}"] = 100.0 * sum(by_group[kind]) / len(by_group[kind])
    return {**scores, "num_examples": float(len(pairs))}


class ChatVQATask(_TaskBase):
    """VQA as a conversation: the LLM learns to reply to the question as ``Pipeline.chat`` asks it
    (the user's message in the LLM's chat template; the answer is the assistant's reply, ended by
    its end-of-turn token). A share of the examples (``history_probability``) is asked as the
    second turn of a conversation about its image: another question of the same image and its
    answer come first (examples that list ``image_questions``: easy-vqa does).

    Evaluation asks through ``Pipeline.chat`` (earlier turns with their reference answers) and
    reports VQA accuracy and exact match of the reply, ``contains_answer`` (the reference as whole
    words of the reply: fair to a model that answers in sentences) and both per question type and
    per number of turns (``exact_match/turns-1``, ``turns-2``)."""

    name = "chat_vqa"
    data_fields = ("image", "question", "answers", "answer")
    losses = {"lm": 1.0}
    metrics = ("vqa_accuracy", "exact_match", "contains_answer")

    def __init__(self, options: ChatVQAOptions | None = None) -> None:
        super().__init__(options or ChatVQAOptions())

    question = VQATask.question  # the question as the model sees it: the same cleaning rule as ``vqa``

    def history(self, example: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The earlier turn (question, answer) this example is asked after, or none."""
        others = [(q, a) for q, a in example.get("image_questions", ()) if q != example["question"]]
        if not others or self.options.history_probability <= 0:
            return []
        draw = stable_hash("chat-history", example["image"], example["question"])
        if (draw % 10_000) / 10_000 >= self.options.history_probability:
            return []
        question, answer = others[(draw // 10_000) % len(others)]
        return [(self.question(question), str(answer))]

    def messages(self, example: Mapping[str, Any]) -> list[dict[str, str]]:
        out = []
        for question, answer in self.history(example):
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return out + [{"role": "user", "content": self.question(example["question"])}]

    def text_batch(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        return {"messages": [self.messages(e) for e in examples],
                "instruction": [self.question(e["question"]) for e in examples],
                "target": [str(e["answer"]) for e in examples]}

    def predict(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> list[str | None]:
        """Each example's reply from ``pipeline.chat`` (None where the image could not be read)."""
        out: list[str | None] = [None] * len(examples)
        for chunk in self._chunks(list(range(len(examples))), self.options.eval_batch_size, "q"):
            images, kept = _load_images([examples[i] for i in chunk], self.warn)
            for image, k in zip(images, kept, strict=True):
                out[chunk[k]] = pipeline.chat(image, self.messages(examples[chunk[k]]), **decoding(self.options))
        return out

    def evaluate(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        predictions = self.predict(pipeline, examples)
        scores = answer_scores(predictions, examples)
        turns = answer_scores(predictions, examples, group=lambda e: f"turns-{len(self.history(e)) + 1}")
        contains = answer_scores(predictions, examples, metric=M.contains_answer, name="contains_answer")
        answered = [(p, e) for p, e in zip(predictions, examples) if p is not None]
        scores["contains_answer"] = 100.0 * sum(M.contains_answer(p, e["answers"]) for p, e in answered) / max(len(answered), 1)
        scores.update({k: v for k, v in {**turns, **contains}.items() if "/" in k})
        return scores


# ---------------------------------------------------------------------------------------------
# stage 1 / retrieval
# ---------------------------------------------------------------------------------------------


class RetrievalTask(_TaskBase):
    """Image-text retrieval: ITC + ITM; recall@1/5/10 in both directions."""

    name = "retrieval"
    data_fields = ("image", "image_id", "caption")
    losses = {"itc": 1.0, "itm": 1.0}
    metrics = RETRIEVAL_METRICS

    def __init__(self, options: RetrievalOptions | None = None) -> None:
        super().__init__(options or RetrievalOptions())

    def text_batch(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        captions = [clean_caption(e["caption"], self.options.max_words) for e in examples]
        keys = [(str(e["image_id"]), c if self.options.match_identical_captions else f"\0{e['image_id']}")
                for e, c in zip(examples, captions)]
        return {"text_input": captions, "match_key": keys}

    @torch.no_grad()
    def similarity(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Scores for image->text and for text->image ranking ([images, texts] each) and each text's
        image index. ITC alone when ``k_test`` is 0; otherwise each direction's top k re-scored with
        ITM match logit + ITC (LAVIS), everything else -100."""
        o = self.options
        bridge = text_bridge(pipeline, f"the {self.name} evaluation")
        tokenizer = bridge.tokenizer
        image_index: dict[str, int] = {}
        image_examples = []
        for e in examples:
            if e["image_id"] not in image_index:
                image_index[e["image_id"]] = len(image_examples)
                image_examples.append(e)
        vision, embeds, good = [], [], []
        for chunk in self._chunks(list(range(len(image_examples))), o.eval_batch_size, "img"):
            images, kept = _load_images([image_examples[i] for i in chunk], self.warn)
            if not images:
                continue
            tokens = pipeline.encode_vision(_pixels(pipeline, images))
            vision.append(tokens.cpu())
            embeds.append(bridge.image_embeds_proj(bridge.encode_queries(tokens)).cpu())
            good.extend(chunk[k] for k in kept)
        if not good:
            raise RuntimeError("retrieval evaluation: no readable image")
        remap = {old: new for new, old in enumerate(good)}
        vision_t = torch.cat(vision)
        image_embeds = torch.cat(embeds)  # [I, Q, E]
        texts, text_to_image = [], []
        for e in examples:
            old = image_index[e["image_id"]]
            if old in remap:
                texts.append(clean_caption(e["caption"], o.max_words))
                text_to_image.append(remap[old])
        ids_list, mask_list, text_embeds = [], [], []
        for chunk in self._chunks(texts, o.eval_batch_size, "txt"):
            enc = tokenizer(list(chunk), padding="max_length", truncation=True, max_length=o.max_text_length,
                            return_tensors="pt")
            ids, mask = enc["input_ids"].to(pipeline.device), enc["attention_mask"].to(pipeline.device)
            text_embeds.append(bridge.text_embeds_proj(bridge.text_features(ids, mask)).cpu())
            ids_list.append(ids.cpu())
            mask_list.append(mask.cpu())
        sim = query_text_similarity(image_embeds, torch.cat(text_embeds))  # [I, T]
        if o.k_test == 0:
            return sim, sim, text_to_image
        i2t, t2i = self._rerank(pipeline, sim, vision_t, torch.cat(ids_list), torch.cat(mask_list))
        return i2t, t2i, text_to_image

    def _rerank(self, pipeline, sim, vision, ids, mask):
        bridge = pipeline.bridge
        device = pipeline.device
        k = min(self.options.k_test, sim.shape[1])
        i2t = torch.full_like(sim, -100.0)
        for i in range(sim.shape[0]):
            top_sim, top = sim[i].topk(k)
            tokens = vision[i : i + 1].expand(k, -1, -1).to(device)
            score = bridge.itm_logits(tokens, ids[top].to(device), mask[top].to(device))[:, 1].float().cpu()
            i2t[i, top] = score + top_sim
        k_img = min(self.options.k_test, sim.shape[0])
        t2i = torch.full_like(sim, -100.0)
        for t in range(sim.shape[1]):
            top_sim, top = sim[:, t].topk(k_img)
            score = bridge.itm_logits(vision[top].to(device), ids[t : t + 1].expand(k_img, -1).to(device),
                                      mask[t : t + 1].expand(k_img, -1).to(device))[:, 1].float().cpu()
            t2i[top, t] = score + top_sim
        return i2t, t2i

    def evaluate(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        i2t, t2i, text_to_image = self.similarity(pipeline, examples)
        result = M.retrieval_recall(i2t, text_to_image, text_to_image_similarity=t2i)
        result["num_examples"] = float(len(text_to_image))
        return result


class Stage1Task(RetrievalTask):
    """BLIP-2 stage 1: representation learning of the Q-Former with ITC + ITM + ITG."""

    name = "pretrain-stage1"
    losses = {"itc": 1.0, "itm": 1.0, "itg": 1.0}

    def __init__(self, options: Stage1Options | None = None) -> None:
        super().__init__(options or Stage1Options())


TASKS = {
    "pretrain-stage1": (Stage1Task, Stage1Options),
    "pretrain-stage2": (Stage2Task, Stage2Options),
    "captioning": (CaptioningTask, CaptionOptions),
    "vqa": (VQATask, VQAOptions),
    "chat_vqa": (ChatVQATask, ChatVQAOptions),
    "retrieval": (RetrievalTask, RetrievalOptions),
}
