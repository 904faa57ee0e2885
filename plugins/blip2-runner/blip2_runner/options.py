"""Option models of blip2-runner's losses and tasks (pydantic only: imported at plugin discovery,
so ``blip2 plugins`` does not load torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

class ITCOptions(BaseModel):
    """Image-text contrastive loss (BLIP-2 stage 1).

    Attributes:
        label_smoothing: BLIP-2 uses 0.1.
        max_text_length: Q-Former text tokens (BLIP-2: 32).
        min_temperature / max_temperature: the learned temperature is clamped into this range before
            each use (LAVIS: 0.001 .. 0.5).
    """

    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_text_length: int = Field(32, gt=1)
    min_temperature: float = Field(0.001, gt=0)
    max_temperature: float = Field(0.5, gt=0)


class ITMOptions(BaseModel):
    """Image-text matching with hard negatives.

    Attributes:
        max_text_length: Q-Former text tokens.
    """

    model_config = ConfigDict(extra="forbid")
    max_text_length: int = Field(32, gt=1)


class ITGOptions(BaseModel):
    """Image-grounded text generation through the Q-Former's text decoder (UniLM mask).

    Attributes:
        label_smoothing: LAVIS uses 0.1 for the decoder loss.
        max_text_length: Q-Former text tokens.
    """

    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_text_length: int = Field(32, gt=1)


class LMOptions(BaseModel):
    """Stage-2 language-modelling loss through the frozen LLM.

    Attributes:
        max_prompt_length / max_target_length: LLM tokens kept of each (the target is cut, then its
            end token appended).
    """

    model_config = ConfigDict(extra="forbid")
    max_prompt_length: int = Field(64, gt=0)
    max_target_length: int = Field(32, gt=0)


class GenerationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(30, gt=0)
    min_new_tokens: int = Field(1, ge=0)
    num_beams: int = Field(5, gt=0)
    length_penalty: float = 1.0
    eval_batch_size: int = Field(16, gt=0)
    max_words: int = Field(50, gt=0)


class CaptionOptions(GenerationOptions):
    """Captioning: the LLM learns to write ``caption`` after ``prompt``.

    Attributes:
        prompt: text before the caption (BLIP-2 COCO fine-tuning: "a photo of").
        max_new_tokens / min_new_tokens / num_beams / length_penalty: generation for evaluation
            (BLIP-2: 30 / 1 / 5 / 1).
    """

    prompt: str = "a photo of"


class Stage2Options(CaptionOptions):
    """Stage-2 pre-training: captions through the frozen LLM, no prompt by default."""

    prompt: str = ""


class VQAOptions(GenerationOptions):
    """VQA: the LLM learns to write the most common answer after ``prompt`` (with ``{}`` = question).

    Defaults follow BLIP-2's zero-shot OPT setting: "Question: {} Answer:", 5 beams, at most 10 new
    tokens, length penalty -1.

    Attributes:
        clean_questions: lower-case and strip punctuation as LAVIS does; ``False`` keeps each
            question as written, which is what ``Pipeline.answer`` passes at inference.
    """

    prompt: str = "Question: {} Answer:"
    clean_questions: bool = True
    max_new_tokens: int = Field(10, gt=0)
    length_penalty: float = -1.0


class ChatVQAOptions(GenerationOptions):
    """VQA as a conversation (``chat_vqa``): the question is the user's message, the answer the
    assistant's reply, both in the LLM's chat template as ``Pipeline.chat`` writes them.

    Attributes:
        history_probability: the share of examples asked as the second turn of a conversation
            about their image (one other question of the same image, with its answer, first);
            chosen per example by a stable hash, so the same examples every epoch and in evaluation.
        clean_questions: as for ``vqa``; off by default (``Pipeline.chat`` passes messages as written).
    """

    history_probability: float = Field(0.5, ge=0, le=1)
    clean_questions: bool = False
    max_new_tokens: int = Field(10, gt=0)
    num_beams: int = Field(1, gt=0)


class RetrievalOptions(BaseModel):
    """Image-text retrieval.

    Attributes:
        k_test: re-rank the top k candidates of ITC with ITM + ITC (BLIP-2: 128); 0 = ITC only.
        max_text_length: Q-Former text tokens.
        match_identical_captions: identical captions of different images count as positives of each
            other in ITC and are never ITM negatives (the image id always does).
    """

    model_config = ConfigDict(extra="forbid")
    k_test: int = Field(128, ge=0)
    max_text_length: int = Field(32, gt=1)
    eval_batch_size: int = Field(32, gt=0)
    max_words: int = Field(50, gt=0)
    match_identical_captions: bool = True


class Stage1Options(RetrievalOptions):
    """Stage-1 pre-training (ITC + ITM + ITG); evaluated by ITC retrieval (``k_test`` 0)."""

    k_test: int = Field(0, ge=0)


LOSS_OPTIONS = {
    "itc": (ITCOptions, "BLIP-2 image-text contrastive: max over queries, learned temperature, label smoothing, "
                        "negatives from all processes"),
    "itm": (ITMOptions, "BLIP-2 image-text matching with hard negatives sampled from ITC similarities"),
    "itg": (ITGOptions, "BLIP-2 image-grounded text generation (Q-Former decoder, UniLM mask)"),
    "lm": (LMOptions, "stage-2 language modelling through the frozen LLM, on target tokens only"),
}

TASK_OPTIONS = {
    "pretrain-stage1": (Stage1Options, "BLIP-2 stage 1: ITC + ITM + ITG on (image, caption); ITC retrieval recall"),
    "pretrain-stage2": (Stage2Options, "BLIP-2 stage 2: LM loss through the frozen LLM on captions; BLEU-4 / CIDEr-D"),
    "captioning": (CaptionOptions, "captioning with a prompt ('a photo of'); BLEU-4 / CIDEr-D"),
    "vqa": (VQAOptions, "VQA ('Question: {} Answer:'); VQAv2 accuracy and exact match"),
    "chat_vqa": (ChatVQAOptions, "VQA as a conversation in the LLM's chat template (Pipeline.chat); exact match, contains-answer"),
    "retrieval": (RetrievalOptions, "image-text retrieval (ITC + ITM, ITM re-ranking); R@1/5/10 both ways"),
}
