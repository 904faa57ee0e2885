"""Key names of the language model inside BLIP-2 checkpoints written by other libraries.

What the checkpoints really hold (checked against transformers 5.24 ``save_pretrained``):

- layout ``hf``: ``Blip2ForConditionalGeneration.language_model`` is a whole ``*ForCausalLM``, so
  its keys are ``language_model.model.*`` (OPT: ``language_model.model.decoder.*``) plus
  ``language_model.lm_head.weight``; the latter is left out of the file when the embeddings are
  tied (OPT, SmolLM2; not Llama-2 / Vicuna). Older exports kept a bare base model
  (``language_model.decoder.*`` / ``language_model.layers.*``) with a top-level ``lm_head.*``.
- layout ``lavis``: ``opt_model.*`` (OPT) or ``llm_model.*`` (Vicuna/Llama), each a whole
  ``*ForCausalLM`` again (``opt_model.model.decoder.*``, ``opt_model.lm_head.weight``), or
  ``t5_model.*`` (FlanT5), a whole ``T5ForConditionalGeneration`` (``t5_model.shared.weight``,
  ``t5_model.encoder.block.*``, ``t5_model.lm_head.weight``).

The target names are those of the transformers model (``*ForCausalLM``: ``model.*``, ``lm_head.*``;
``T5ForConditionalGeneration``: ``shared.*``, ``encoder.*``, ``decoder.*``, ``lm_head.*``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from blip2core.errors import CheckpointError

#: layout -> prefixes whose subtree belongs to the language model
LAYOUT_PREFIXES: dict[str, tuple[str, ...]] = {
    "hf": ("language_model.", ""),
    "lavis": ("opt_model.", "llm_model.", "t5_model."),
}
_BARE_ALLOWED = ("lm_head.",)  # with the empty prefix, only a top-level lm_head belongs to the LLM


def map_foreign_keys(
    keys: Iterable[str], layout: str, own_keys: Collection[str]
) -> tuple[dict[str, str], list[str]]:
    """Match checkpoint keys to a ``*ForCausalLM``'s state-dict keys.

    Args:
        keys: the checkpoint's full key names.
        layout: ``"hf"`` or ``"lavis"``.
        own_keys: the causal LM's own state-dict keys (``model.*``, ``lm_head.*``).

    Returns:
        (source key -> own key, source keys that match nothing).
    """
    if layout not in LAYOUT_PREFIXES:
        raise CheckpointError(
            f"language model: unknown checkpoint layout {layout!r} (known: {', '.join(LAYOUT_PREFIXES)})"
        )
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for key in keys:
        target = _target(key, LAYOUT_PREFIXES[layout], own_keys)
        if target is None:
            unexpected.append(key)
        else:
            mapping[key] = target
    return mapping, unexpected


def _target(key: str, prefixes: tuple[str, ...], own_keys: Collection[str]) -> str | None:
    for prefix in prefixes:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if not prefix and not rest.startswith(_BARE_ALLOWED):
            continue
        for candidate in (rest, f"model.{rest}"):  # whole causal LM, or a bare base model
            if candidate in own_keys:
                return candidate
    return None
