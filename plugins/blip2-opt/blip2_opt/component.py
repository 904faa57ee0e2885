"""The ``opt`` language model: ``OPTForCausalLM`` behind blip2core's LanguageModel protocol.

BLIP-2 conventions it sets up:
- the tokenizer pads on the left (batched generation continues from the right edge);
- ``stop_token_ids`` holds the id of ``"\\n"``: BLIP-2 (LAVIS) ends OPT captions and answers at
  the first newline, so callers pass ``eos_token_id=[*llm.stop_token_ids, ...]``;
- ``hidden_size`` is ``word_embed_proj_dim`` (OPT-350m projects 512-wide embeddings to 1024).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from blip2core.plugin_api import LanguageModelOptions

if TYPE_CHECKING:  # annotations only: torch and transformers load when the model is built
    from blip2core.plugin_api import TransformersLanguageModel

NEWLINE = "\n"


class OPTOptions(LanguageModelOptions):
    """Options of ``opt`` (see ``LanguageModelOptions``): ``path`` e.g. ``facebook/opt-2.7b`` or a
    folder; ``config`` with ``OPTConfig`` fields to build it with random weights."""

    config_class: ClassVar[str | None] = "transformers.OPTConfig"


def build_opt(options: OPTOptions) -> TransformersLanguageModel:
    from transformers import OPTConfig, OPTForCausalLM

    from blip2core.plugin_api import load_language_model

    return load_language_model(
        options, config_class=OPTConfig, model_class=OPTForCausalLM, padding_side="left", stop_strings=(NEWLINE,)
    )
