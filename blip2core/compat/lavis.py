"""LAVIS-compatible entry point: code written for Salesforce LAVIS's BLIP-2 runs by changing one import.

    # from lavis.models import load_model_and_preprocess
    from blip2core.compat.lavis import load_model_and_preprocess

    model, vis_processors, _ = load_model_and_preprocess(
        name="blip2_opt", model_type="pretrain_opt2.7b", is_eval=True, device=device)
    image = vis_processors["eval"](raw_image).unsqueeze(0).to(device)
    model.generate({"image": image, "prompt": "Question: which city is this? Answer:"})

LAVIS names map to named models (presets, ``blip2core.lavis_names.MODELS``; ``blip2 models``
lists them) that ``blip2core.load_pipeline`` loads, downloading the checkpoint on first use
(offline: from the local Hugging Face cache; ``blip2 download NAME`` fetches it beforehand). To point a name somewhere else (a local HF folder,
a spec file, a folder written by ``Pipeline.save``, another hub id), either

- call ``register("blip2_opt", "pretrain_opt2.7b", "/models/my-blip2")``, or
- set ``BLIP2_LAVIS_MODELS`` to a JSON object, or the path of a JSON file holding one, that maps
  ``"name:model_type"`` to a source: ``{"blip2_opt:pretrain_opt2.7b": "/models/my-blip2"}``.

``register`` wins over the variable, which wins over ``MODELS``.

The returned model offers LAVIS's methods with LAVIS's signatures and defaults: ``generate``,
``predict_answers`` (OPT models), ``extract_features`` and ``forward(samples, match_head=...)``
(Q-Former models). Images in ``samples["image"]`` are the processors' pixel_values [B, 3, S, S].
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from blip2core.errors import Blip2Error
from blip2core.lavis_names import ENV_VAR, MODELS, Kind, register, resolve, unregister
from blip2core.protocols import TextBridge

__all__ = ["ENV_VAR", "MODELS", "Kind", "register", "resolve", "unregister", "load_model_and_preprocess"]

# --------------------------------------------------------------------------------- processors
class BlipImageEvalProcessor:
    """``vis_processors["eval"]``: one image (PIL, path, array, tensor) -> pixel_values [3, S, S]
    through the pipeline's preprocessor (LAVIS ``blip_image_eval``: resize to S x S, bicubic,
    CLIP normalisation, following the encoder's PreprocessConfig)."""

    train = False

    def __init__(self, preprocessor: Any) -> None:
        self.preprocessor = preprocessor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.preprocessor([image], train=self.train)[0]


class Blip2ImageTrainProcessor(BlipImageEvalProcessor):
    """``vis_processors["train"]``: as eval plus BLIP-2's augmentation (random resized crop, flip)."""

    train = True


class BlipCaptionProcessor:
    """LAVIS ``blip_caption``: lowercase, punctuation ``.!"()*#:;~`` -> space, spaces collapsed,
    at most ``max_words`` words, ``prompt`` prepended."""

    def __init__(self, prompt: str = "", max_words: int = 50) -> None:
        self.prompt = prompt
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
        caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
        return self.prompt + " ".join(caption.split(" ")[: self.max_words])


class BlipQuestionProcessor:
    """LAVIS ``blip_question``: lowercase, punctuation ``.!"()*#:;~`` removed, at most ``max_words`` words."""

    def __init__(self, max_words: int = 50) -> None:
        self.max_words = max_words

    def __call__(self, question: str) -> str:
        question = re.sub(r"([.!\"()*#:;~])", "", question.lower()).rstrip(" ")
        return " ".join(question.split(" ")[: self.max_words])


# ---------------------------------------------------------------------------------------- model
class LavisBlip2(nn.Module):
    """A pipeline behind LAVIS's BLIP-2 model methods.

    Attributes:
        pipeline: the ``blip2core.Pipeline``.
        kind: "opt" (generate, predict_answers) or "qformer" (extract_features, forward).
        prompt: the default caption prompt of ``generate`` (LAVIS: "" pretrained, "a photo of" COCO).
    """

    def __init__(self, pipeline: nn.Module, kind: Kind, prompt: str = "") -> None:
        super().__init__()
        self.pipeline = pipeline
        self.kind = kind
        self.prompt = prompt

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def _pixels(self, samples: dict[str, Any]) -> torch.Tensor:
        if not isinstance(samples, dict) or "image" not in samples:
            raise Blip2Error('samples must be a dict with "image": pixel_values [B, 3, S, S] from vis_processors')
        image = samples["image"]
        if isinstance(image, torch.Tensor) and image.dim() == 3:
            image = image.unsqueeze(0)
        return image

    @torch.no_grad()
    def generate(
        self,
        samples: dict[str, Any],
        use_nucleus_sampling: bool = False,
        num_beams: int = 5,
        max_length: int = 30,
        min_length: int = 1,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
        num_captions: int = 1,
        temperature: float = 1,
    ) -> list[str]:
        """LAVIS ``Blip2OPT.generate``: samples {"image": [B, 3, S, S], "prompt": str or B strs
        (default ``self.prompt``)} -> B * num_captions texts. Lengths count new tokens."""
        from blip2core.inference.captioning import caption_pixels
        from blip2core.inference.generation import GenerationSettings

        self._require("opt", "generate")
        settings = GenerationSettings(
            num_beams=num_beams, max_new_tokens=max_length, min_new_tokens=min_length, length_penalty=length_penalty,
            do_sample=use_nucleus_sampling, top_p=top_p, temperature=temperature,
            repetition_penalty=repetition_penalty, num_return_sequences=num_captions,
        )
        return caption_pixels(self.pipeline, self._pixels(samples), samples.get("prompt", self.prompt), settings)

    @torch.no_grad()
    def predict_answers(
        self,
        samples: dict[str, Any],
        num_beams: int = 5,
        inference_method: str = "generate",
        max_len: int = 10,
        min_len: int = 1,
        num_ans_candidates: int = 128,
        answer_list: list[str] | None = None,
        prompt: str = "",
        length_penalty: float = 0,
        **kwargs: Any,
    ) -> list[str]:
        """LAVIS ``Blip2OPT.predict_answers``: samples {"image", "text_input": str or list} ->
        answers. With ``prompt`` (e.g. "Question: {} Answer:") each question is put into it;
        without, the question itself is the prompt (as in LAVIS)."""
        from blip2core.inference.generation import GenerationSettings
        from blip2core.inference.vqa import answer_pixels

        self._require("opt", "predict_answers")
        if inference_method != "generate":
            raise Blip2Error(f"predict_answers: inference_method {inference_method!r} is not supported; use 'generate'")
        questions = samples.get("text_input")
        questions = [questions] if isinstance(questions, str) else list(questions or [])
        if not questions:
            raise Blip2Error('predict_answers: samples needs "text_input" (a question or a list of them)')
        prompts = [prompt.format(q) for q in questions] if prompt else questions
        settings = GenerationSettings(
            num_beams=num_beams, max_new_tokens=max_len, min_new_tokens=min_len, length_penalty=length_penalty
        )
        return answer_pixels(self.pipeline, self._pixels(samples), prompts, settings, instructions=questions)

    @torch.no_grad()
    def extract_features(self, samples: dict[str, Any], mode: str = "multimodal") -> Any:
        """LAVIS ``Blip2Qformer.extract_features``: samples {"image", "text_input"} -> features
        with ``image_embeds`` [B, Q, H], ``image_embeds_proj`` [B, Q, E], ``text_embeds`` [B, L, H],
        ``text_embeds_proj`` [B, L, E], ``multimodal_embeds`` [B, Q, H] (the mode's fields)."""
        from blip2core.inference.features import features_from_pixels

        texts = samples.get("text_input")
        texts = [texts] if isinstance(texts, str) else (list(texts) if texts is not None else [])
        if mode in ("text", "multimodal") and not texts:
            raise Blip2Error(f'extract_features(mode={mode!r}) needs samples["text_input"]')
        pixels = self._pixels(samples) if mode in ("image", "multimodal") else None
        return features_from_pixels(self.pipeline, pixels, texts, mode)

    @torch.no_grad()
    def forward(self, samples: dict[str, Any], match_head: str = "itm") -> torch.Tensor:
        """LAVIS ``Blip2ITM.forward``: samples {"image", "text_input"} -> ITM logits [B, 2]
        (``match_head="itm"``) or ITC cosine similarity [B, 1] (``"itc"``)."""
        from blip2core.inference.matching import pair_scores

        self._require("qformer", "forward")
        texts = samples.get("text_input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        scores = pair_scores(self.pipeline, self._pixels(samples), texts, match_head)
        return scores if match_head == "itm" else scores.unsqueeze(-1)

    def _require(self, kind: Kind, what: str) -> None:
        if self.kind != kind:
            have = "an image-to-text (OPT) model" if self.kind == "opt" else "a Q-Former feature / matching model"
            raise Blip2Error(f"{what} is not available on {have}; load a LAVIS "
                             + ("blip2_opt" if kind == "opt" else "blip2_feature_extractor / blip2_image_text_matching")
                             + " model for it")


def load_model_and_preprocess(
    name: str, model_type: str = "pretrain", is_eval: bool = True, device: str | torch.device = "cpu"
) -> tuple[LavisBlip2, dict[str, BlipImageEvalProcessor], dict[str, BlipCaptionProcessor]]:
    """LAVIS's ``lavis.models.load_model_and_preprocess`` for the BLIP-2 names.

    Returns:
        (model, vis_processors {"eval", "train"}, txt_processors {"eval", "train"}).

    Raises:
        Blip2Error: unknown name / model type, a model blip2core cannot load, or a checkpoint of
            the wrong kind (e.g. a feature extractor pointed at a captioning-only checkpoint).
    """
    from blip2core.loading import load_pipeline

    source, kind, prompt = resolve(name, model_type)
    pipeline = load_pipeline(source, device=str(device))
    if kind == "opt" and pipeline.llm is None:
        raise Blip2Error(f"{name}/{model_type} -> {source}: has no language model, so it cannot generate text")
    if kind == "qformer" and not (isinstance(pipeline.bridge, TextBridge) and pipeline.bridge.has_text_heads):
        raise Blip2Error(f"{name}/{model_type} -> {source}: its Q-Former has no ITC / ITM heads "
                         "(a Blip2ForImageTextRetrieval checkpoint has them)")
    if pipeline.preprocessor is None:
        raise Blip2Error(f"{name}/{model_type} -> {source}: the pipeline has no image preprocessor")
    model = LavisBlip2(pipeline, kind, prompt)
    model.train(not is_eval)
    vis_processors = {
        "eval": BlipImageEvalProcessor(pipeline.preprocessor),
        "train": Blip2ImageTrainProcessor(pipeline.preprocessor),
    }
    txt_processors = {"eval": BlipCaptionProcessor(), "train": BlipCaptionProcessor()}
    return model, vis_processors, txt_processors
