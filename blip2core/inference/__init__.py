"""Inference on a ``Pipeline``: captions, answers, features, matching, retrieval, classification.

Every function takes the pipeline first; ``Pipeline`` has the same operations as methods
(``pipe.caption(images)`` is ``caption(pipe, images)``). Images may be paths, bytes, PIL images,
numpy arrays or tensors, mixed; outputs are strings, floats, dicts and tensors.

Modules (one job each): ``prompts`` (caption styles, VQA template), ``generation`` (decoding
settings), ``images`` (inputs -> pixel_values), ``text`` (Q-Former tokenisation), ``textgen``
(image-conditioned generation), ``prefix_cache`` (the LLM cache of an image prefix),
``captioning``, ``vqa``, ``features``, ``matching``, ``retrieval``, ``state`` (locks for
thread safety), ``async_pipeline`` (``AsyncPipeline``: those calls awaitable from asyncio),
``feature_store`` (resumable feature files), ``ranks`` (torchrun sharding).
"""

from blip2core.inference.async_pipeline import AsyncPipeline
from blip2core.inference.captioning import caption, caption_pixels
from blip2core.inference.features import Features, extract_features, features_from_pixels
from blip2core.inference.generation import CAPTION_DEFAULTS, VQA_DEFAULTS, GenerationSettings
from blip2core.inference.matching import match, match_pixels
from blip2core.inference.prompts import BUILTIN_STYLES, DEFAULT_VQA_TEMPLATE, available_styles
from blip2core.inference.retrieval import classify, retrieve
from blip2core.inference.vqa import answer, answer_pixels

__all__ = [
    "AsyncPipeline",
    "BUILTIN_STYLES",
    "CAPTION_DEFAULTS",
    "DEFAULT_VQA_TEMPLATE",
    "Features",
    "GenerationSettings",
    "VQA_DEFAULTS",
    "answer",
    "answer_pixels",
    "available_styles",
    "caption",
    "caption_pixels",
    "classify",
    "extract_features",
    "features_from_pixels",
    "match",
    "match_pixels",
    "retrieve",
]
