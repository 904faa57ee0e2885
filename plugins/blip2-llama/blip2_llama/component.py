"""The ``llama`` language model: ``LlamaForCausalLM`` (Llama 1/2/3, Vicuna, SmolLM2; grouped-query
attention when ``num_key_value_heads < num_attention_heads``), from a folder, hub id, GGUF file or config.

The tokenizer pads on the left; a tokenizer without a pad token (Llama-2, Vicuna) pads with its
unk (else eos) token, which the attention mask hides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from blip2core.plugin_api import LanguageModelOptions

if TYPE_CHECKING:  # annotations only: torch and transformers load when the model is built
    from blip2core.plugin_api import TransformersLanguageModel


class LlamaOptions(LanguageModelOptions):
    """Options of ``llama`` (see ``LanguageModelOptions``): ``path`` e.g. ``lmsys/vicuna-7b-v1.1``
    or a folder; ``gguf_file`` for llama.cpp files; ``config`` with ``LlamaConfig`` fields."""

    config_class: ClassVar[str | None] = "transformers.LlamaConfig"


def build_llama(options: LanguageModelOptions) -> TransformersLanguageModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    from blip2core.plugin_api import load_language_model

    return load_language_model(options, config_class=LlamaConfig, model_class=LlamaForCausalLM, padding_side="left")
