"""Hugging Face InstructBLIP folders (``config.json`` with ``model_type: instructblip``) as BLIP-2 specs.

``InstructBlipForConditionalGeneration`` is BLIP-2 with an instruction-aware Q-Former: the
instruction's tokens (a BERT tokenizer, saved by ``InstructBlipProcessor`` in the folder's
``qformer_tokenizer/``) join the queries in one bi-directional pass, and only the query positions
go on to the language model. The vision tower and the language model are BLIP-2's, so the folder
becomes the same spec as a ``blip-2`` one (``blip2core.checkpoints.hf_blip2``) with these Q-Former
options on top. Its weights use the ``hf`` layout; the Q-Former's embeddings sit at
``qformer.embeddings.*`` (``blip2core.bridges.qformer.checkpoint_keys``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip2core.errors import CheckpointError

MODEL_TYPE = "instructblip"
#: where ``InstructBlipProcessor.save_pretrained`` writes the Q-Former's BERT tokenizer
QFORMER_TOKENIZER_FOLDER = "qformer_tokenizer"
#: InstructBLIP's vision tower is BLIP-2's (same config fields, same weights' names)
VISION_MODEL_TYPES = {"instructblip_vision_model": "blip_2_vision_model"}


def is_instructblip(config: dict[str, Any]) -> bool:
    return config.get("model_type") == MODEL_TYPE


def blip2_vision_config(vision_config: dict[str, Any]) -> dict[str, Any]:
    """The vision sub-config with InstructBLIP's model type renamed to BLIP-2's (the plugin that
    rebuilds ``blip_2_vision_model`` rebuilds this one)."""
    model_type = vision_config.get("model_type", "instructblip_vision_model")
    return {**vision_config, "model_type": VISION_MODEL_TYPES.get(model_type, model_type)}


def instruction_bridge_options(folder: Path, qformer_config: dict[str, Any]) -> dict[str, Any]:
    """The Q-Former options an InstructBLIP folder adds to BLIP-2's: the text side as an input only
    (no ITC / ITM / ITG heads: the checkpoint has none), instruction-aware, the BERT tokenizer of
    ``qformer_tokenizer/``; instructions are cut only where the position embeddings end, as
    transformers' processor does not cut them.

    Raises:
        CheckpointError: the folder has no ``qformer_tokenizer/`` (the instruction could not be
            tokenized).
    """
    tokenizer = folder / QFORMER_TOKENIZER_FOLDER
    if not tokenizer.is_dir():
        raise CheckpointError(
            f"{folder / 'config.json'}: an InstructBLIP folder needs the Q-Former's tokenizer in "
            f"{tokenizer} (InstructBlipProcessor.save_pretrained writes it); it is missing"
        )
    options: dict[str, Any] = {
        "with_text_heads": True,
        "with_matching_heads": False,
        "instruction_aware": True,
        "tokenizer": str(tokenizer),
        "max_instruction_length": int(qformer_config.get("max_position_embeddings", 512)),
    }
    if qformer_config.get("pad_token_id") is not None:
        options["pad_token_id"] = int(qformer_config["pad_token_id"])
    return options
