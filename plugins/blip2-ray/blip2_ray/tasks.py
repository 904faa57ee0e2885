"""What a run computes per image: a caption, an answer to one question, or Q-Former features.

``make_job`` checks the task and its options on the driver, before anything starts on the
cluster; ``Job.columns`` runs it on the preprocessed pixel_values of a batch, inside a worker,
with the same functions (and the same defaults) as ``Pipeline.caption`` / ``answer`` /
``extract_features``, so a row holds what the serial call gives for that image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from blip2core.plugin_api import (
    CAPTION_DEFAULTS,
    DEFAULT_VQA_TEMPLATE,
    VQA_DEFAULTS,
    GenerationSettings,
    InputError,
    answer_pixels,
    caption_pixels,
    caption_prompt,
    features_from_pixels,
    format_questions,
)

TASKS = ("caption", "answer", "features")
DECODING_OPTIONS = tuple(f.name for f in fields(GenerationSettings))
#: options a task takes besides the decoding ones
PROMPT_OPTIONS = {"caption": ("style", "prompt"), "answer": ("template",), "features": ()}
#: the Parquet columns holding each task's result (features: one fixed-size float32 list per field)
RESULT_COLUMNS = {"caption": ("caption",), "answer": ("answer",),
                  "features": ("image_embeds", "image_embeds_proj")}


@dataclass(frozen=True)
class Job:
    """One task with its options, checked.

    Attributes:
        task: "caption", "answer" or "features".
        question: the question asked of every image (answer only).
        prompt_options: style / prompt (caption), template (answer).
        settings: decoding (caption, answer); None for features.
    """

    task: str
    question: str | None = None
    prompt_options: dict[str, Any] = field(default_factory=dict)
    settings: GenerationSettings | None = None

    def identity(self) -> dict[str, Any]:
        """What the rows depend on besides the model, as JSON data (stored in every shard)."""
        return {"task": self.task, "question": self.question, "prompt_options": dict(self.prompt_options),
                "decoding": asdict(self.settings) if self.settings is not None else None}

    def columns(self, pipe: Any, pixel_values: torch.Tensor) -> dict[str, Any]:
        """pixel_values [G, 3, S, S] -> {column: G values}: strings for caption / answer; for
        features float32 tensors [G, Q, H] (image_embeds) and [G, Q, E] (image_embeds_proj, absent
        when the bridge has no ITC heads)."""
        if self.task == "caption":
            text = caption_prompt(self.prompt_options.get("style"), self.prompt_options.get("prompt"), pipe.spec.styles)
            return {"caption": caption_pixels(pipe, pixel_values, text, self.settings)}
        if self.task == "answer":
            template = self.prompt_options.get("template", DEFAULT_VQA_TEMPLATE)
            prompts = format_questions(template, [self.question])
            return {"answer": answer_pixels(pipe, pixel_values, prompts, self.settings, instructions=[self.question])}
        features = features_from_pixels(pipe, pixel_values, [], "image").to_dict()
        return {name: tensor.detach().to("cpu", torch.float32) for name, tensor in features.items()}


def make_job(task: str, question: str | None = None, **options: Any) -> Job:
    """Check ``task`` and its options (InputError naming the bad one) -> a Job.

    Options: caption: style, prompt and the decoding ones (``GenerationSettings``: num_beams,
    max_new_tokens, ...); answer: template and the decoding ones; features: none. Defaults are
    ``Pipeline.caption``'s / ``Pipeline.answer``'s. One output per image: num_return_sequences
    must stay 1.
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if (task == "answer") != (question is not None):
        raise InputError("the answer task needs a question" if task == "answer"
                         else f"a question is for the answer task, not {task}")
    if task == "answer" and (not isinstance(question, str) or not question.strip()):
        raise InputError(f"the question must be a non-empty string, got {question!r}")
    allowed = PROMPT_OPTIONS[task] + (DECODING_OPTIONS if task != "features" else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"unknown option(s) for {task}: {', '.join(unknown)}; "
                         f"expected {', '.join(allowed) if allowed else 'none'}")
    prompt_options = {k: v for k, v in options.items() if k in PROMPT_OPTIONS[task] and v is not None}
    if task == "features":
        return Job(task)
    defaults = CAPTION_DEFAULTS if task == "caption" else VQA_DEFAULTS
    settings = defaults.with_(**{k: v for k, v in options.items() if k in DECODING_OPTIONS})
    if settings.num_return_sequences != 1:
        raise InputError("num_return_sequences must be 1: a run stores one result per image")
    if task == "answer":
        try:
            format_questions(prompt_options.get("template", DEFAULT_VQA_TEMPLATE), [question])
        except (TypeError, ValueError) as exc:
            raise InputError(str(exc)) from None
    return Job(task, question, prompt_options, settings)
