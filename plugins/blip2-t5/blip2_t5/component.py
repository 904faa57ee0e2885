"""The ``t5`` language model: ``T5ForConditionalGeneration`` behind blip2core's LanguageModel and
EncoderDecoderLanguageModel protocols (``blip2core.plugin_api.TransformersSeq2SeqLanguageModel``).

BLIP-2 (LAVIS ``blip2_t5``, transformers ``Blip2ForConditionalGeneration``) conventions it sets up:
- the soft prompt and the prompt go into the encoder, ``[soft prompt | prompt </s> | pad]``: the
  tokenizer pads on the *right*, as LAVIS and ``Blip2Processor`` do (T5's relative positions see
  where the padding sits, so this is what the checkpoints were trained with);
- the decoder generates the text; it ends at EOS (``</s>``) alone: no newline stop as for OPT;
- ``hidden_size`` is ``d_model``; FlanT5 was trained in bfloat16 and overflows in float16, so run
  it in ``float32`` or ``bfloat16``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from blip2core.plugin_api import LanguageModelOptions

if TYPE_CHECKING:  # annotations only: torch and transformers load when the model is built
    from blip2core.plugin_api import TransformersSeq2SeqLanguageModel


class T5Options(LanguageModelOptions):
    """Options of ``t5`` (see ``LanguageModelOptions``): ``path`` e.g. ``google/flan-t5-xl`` or a
    folder; ``config`` with ``T5Config`` fields to build it with random weights."""

    config_class: ClassVar[str | None] = "transformers.T5Config"


def build_t5(options: T5Options) -> TransformersSeq2SeqLanguageModel:
    from transformers import T5Config, T5ForConditionalGeneration

    from blip2core.plugin_api import load_language_model

    llm = load_language_model(
        options, config_class=T5Config, model_class=T5ForConditionalGeneration, padding_side="right"
    )
    set_decoder_start(llm.model)
    return llm


def set_decoder_start(model) -> None:
    """Give a T5 built from bare config fields its decoder start token: the pad id (T5's rule).

    transformers counts ``decoder_start_token_id`` as a generation setting, so a ``text_config``
    read as config fields loses it, and T5 then can neither shift labels nor generate; a
    pretrained folder brings it in its ``generation_config.json``."""
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        start = model.generation_config.decoder_start_token_id
    if start is None:
        start = model.config.pad_token_id
    model.config.decoder_start_token_id = start
    model.generation_config.decoder_start_token_id = start
