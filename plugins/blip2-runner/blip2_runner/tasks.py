"""What to train and evaluate: BLIP-2's pre-training stages, captioning, VQA and retrieval.

A task names the example fields it reads (``data_fields``), its losses with their weights
(``losses``; a RUN.yaml may override the weights), and the metrics ``evaluate`` returns. For
training it also turns examples into the text part of a batch (``text_batch``); the trainer adds
the images.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from blip2_runner import metrics as M
from blip2_runner.data import BadImageError, load_image
from blip2_runner.options import (
    CaptionOptions,
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


def left_padded_prompts(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts tokenised (with the tokenizer's special tokens) and padded on the left."""
    rows = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, length - len(row):] = torch.tensor(row)
            mask[i, length - len(row):] = 1
    return ids, mask


@torch.no_grad()
def generate_texts(pipeline, pixel_values: torch.Tensor, prompts: Sequence[str], instruction: Sequence[str] | None = None,
                   **generate_kwargs: Any) -> list[str]:
    """Generate one text per image, continuing [soft prompt ; text prompt]; ``instruction`` (one
    per image) reaches an instruction-aware bridge."""
    llm = pipeline.require_llm() if hasattr(pipeline, "require_llm") else pipeline.llm
    tokenizer = llm.tokenizer
    ids, mask = left_padded_prompts(tokenizer, prompts)
    stops = [*getattr(llm, "stop_token_ids", ())]
    if tokenizer.eos_token_id is not None:
        stops.append(tokenizer.eos_token_id)
    kwargs = {"eos_token_id": stops or None, **generate_kwargs}
    if kwargs.get("num_beams", 1) == 1:
        kwargs.pop("length_penalty", None)
    new_ids = pipeline.generate(pixel_values, input_ids=ids, attention_mask=mask,
                                instruction=None if instruction is None else list(instruction), **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(new_ids, skip_special_tokens=True)]


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

    def evaluate(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        o = self.options
        refs: dict[str, list[str]] = {}
        image_of: dict[str, Any] = {}
        for e in examples:
            refs.setdefault(e["image_id"], []).append(e["caption"])
            image_of.setdefault(e["image_id"], e)
        ids = list(refs)
        predictions: dict[str, str] = {}
        for chunk in self._chunks(ids, o.eval_batch_size, "img"):
            images, kept = _load_images([image_of[i] for i in chunk], self.warn)
            if not images:
                continue
            texts = generate_texts(pipeline, _pixels(pipeline, images), [o.prompt] * len(images),
                                   instruction=[o.prompt] * len(images), max_new_tokens=o.max_new_tokens, min_new_tokens=o.min_new_tokens,
                                   num_beams=o.num_beams, length_penalty=o.length_penalty)
            for k, text in zip(kept, texts):
                predictions[chunk[k]] = text
        scored = [i for i in ids if i in predictions]
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
        if "{}" not in self.options.prompt:
            raise ValueError(f"vqa prompt must contain '{{}}' where the question goes, got {self.options.prompt!r}")

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
        """Generated answers (None for examples whose image could not be read)."""
        o = self.options
        out: list[str | None] = [None] * len(examples)
        positions = list(range(len(examples)))
        for chunk in self._chunks(positions, o.eval_batch_size, "q"):
            images, kept = _load_images([examples[i] for i in chunk], self.warn)
            if not images:
                continue
            questions = [examples[chunk[k]]["question"] for k in kept]
            answers = generate_texts(pipeline, _pixels(pipeline, images), [self.prompt(q) for q in questions],
                                     instruction=[self.question(q) for q in questions],
                                     max_new_tokens=o.max_new_tokens, min_new_tokens=o.min_new_tokens,
                                     num_beams=o.num_beams, length_penalty=o.length_penalty)
            for k, answer in zip(kept, answers):
                out[chunk[k]] = answer
        return out

    def evaluate(self, pipeline, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        predictions = self.predict(pipeline, examples)
        pairs = [(p, e["answers"]) for p, e in zip(predictions, examples) if p is not None]
        if not pairs:
            return {"vqa_accuracy": 0.0, "exact_match": 0.0, "num_examples": 0.0}
        scores = dict(M.vqa_scores([p for p, _ in pairs], [a for _, a in pairs]))
        by_type: dict[str, list[float]] = defaultdict(list)  # data sets that label questions (easy-vqa)
        for p, e in zip(predictions, examples):
            if p is not None and "question_type" in e:
                by_type[str(e["question_type"])].append(M.exact_match(p, e["answers"]))
        for kind in sorted(by_type):
            scores[f"exact_match/{kind}"] = 100.0 * sum(by_type[kind]) / len(by_type[kind])
        return {**scores, "num_examples": float(len(pairs))}


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
        bridge = pipeline.bridge
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
        sim = torch.einsum("iqe,te->iqt", image_embeds, torch.cat(text_embeds)).amax(dim=1)  # [I, T]
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
    "retrieval": (RetrievalTask, RetrievalOptions),
}
