"""Transformers causal LMs as blip2core language models (shared by the ``opt`` and ``llama`` plugins).

Public API:
    TransformersLanguageModel: the ``LanguageModel`` implementation (wraps a ``*ForCausalLM``).
    TransformersSeq2SeqLanguageModel: the encoder-decoder one (wraps a ``T5ForConditionalGeneration``).
    LanguageModelOptions: the options every transformers-backed LLM component takes.
    load_language_model: options + the family's transformers classes -> TransformersLanguageModel.
    causal_lm_loss, positions_from_mask: the loss and position rule ``forward`` uses.
    map_foreign_keys: HF / LAVIS BLIP-2 checkpoint names -> causal-LM names.
    blip2_cache_root, gguf_cache_folder: where dequantised GGUF weights are cached.

Each name is imported from its module on first use (``blip2core.lazy_exports``): a plugin's options
class built on ``LanguageModelOptions`` does not import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blip2core.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the same names, eagerly, for type checkers (tests/test_lazy_imports.py keeps them in step)
    from blip2core.llm.foreign import map_foreign_keys
    from blip2core.llm.gguf_cache import gguf_cache_folder
    from blip2core.llm.loading import load_language_model
    from blip2core.llm.loss import causal_lm_loss, positions_from_mask
    from blip2core.llm.options import LanguageModelOptions
    from blip2core.llm.seq2seq import TransformersSeq2SeqLanguageModel
    from blip2core.llm.sources import blip2_cache_root
    from blip2core.llm.wrapper import TransformersLanguageModel

#: public name -> the module that defines it
_EXPORTS = {
    "map_foreign_keys": "blip2core.llm.foreign",
    "gguf_cache_folder": "blip2core.llm.gguf_cache",
    "load_language_model": "blip2core.llm.loading",
    "causal_lm_loss": "blip2core.llm.loss",
    "positions_from_mask": "blip2core.llm.loss",
    "LanguageModelOptions": "blip2core.llm.options",
    "TransformersSeq2SeqLanguageModel": "blip2core.llm.seq2seq",
    "blip2_cache_root": "blip2core.llm.sources",
    "TransformersLanguageModel": "blip2core.llm.wrapper",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
