"""Hugging Face BLIP-2 folders (``config.json`` with ``model_type: blip-2``) as pipeline specs.

The frozen parts are named by the components that implement them (``eva-vit``, ``opt``, ``llama``);
their architectures come from the config's sub-configs and their weights from the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip2core.errors import CheckpointError
from blip2core.spec import PipelineSpec

RETRIEVAL_ARCHITECTURE = "Blip2ForImageTextRetrieval"
#: text_config.model_type -> language-model component
LLM_COMPONENTS = {"opt": "opt", "llama": "llama"}
VISION_OPTION_KEYS = (
    "image_size",
    "patch_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "layer_norm_eps",
    "qkv_bias",
)
QFORMER_OPTION_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "cross_attention_frequency",
    "layer_norm_eps",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "vocab_size",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def read_hf_config(folder: Path) -> dict[str, Any] | None:
    """The folder's config.json if it is a BLIP-2 one, else None."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from None
    return config if config.get("model_type") == "blip-2" else None


def spec_from_hf_config(folder: Path, config: dict[str, Any]) -> PipelineSpec:
    """A spec whose components rebuild the architecture in config; weights: the folder itself."""
    where = folder / "config.json"
    try:
        vision_config = config["vision_config"]
        qformer_config = config["qformer_config"]
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing field {exc.args[0]!r}") from None
    if vision_config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: vision_config.hidden_act {vision_config['hidden_act']!r} is not supported (EVA ViT uses 'gelu')")
    retrieval = RETRIEVAL_ARCHITECTURE in (config.get("architectures") or [])

    bridge_options = {k: qformer_config[k] for k in QFORMER_OPTION_KEYS if k in qformer_config}
    bridge_options["num_query_tokens"] = config.get("num_query_tokens", 32)
    # text embeddings, text FFN and the ITC / ITM heads exist in HF checkpoints trained with text input
    bridge_options["with_text_heads"] = bool(qformer_config.get("use_qformer_text_input", retrieval))
    bridge_options["with_llm_projection"] = not retrieval
    if retrieval:
        bridge_options["embed_dim"] = config.get("image_text_hidden_size", 256)
        if has_tokenizer(folder):
            bridge_options["tokenizer"] = str(folder)

    llm = None
    if not retrieval:
        text_config = config.get("text_config") or {}
        model_type = text_config.get("model_type", "opt")
        if model_type not in LLM_COMPONENTS:
            raise CheckpointError(
                f"{where}: text_config.model_type {model_type!r} has no language-model component "
                f"(supported: {', '.join(LLM_COMPONENTS)})"
            )
        llm_options: dict[str, Any] = {"config": text_config}
        if has_tokenizer(folder):
            llm_options["tokenizer"] = str(folder)
        llm = {"name": LLM_COMPONENTS[model_type], "options": llm_options}

    return PipelineSpec.from_dict(
        {
            "vision": {"name": "eva-vit", "options": {k: vision_config[k] for k in VISION_OPTION_KEYS if k in vision_config}},
            "bridge": {"name": "qformer", "options": bridge_options},
            "llm": llm,
            "image_token_id": config.get("image_token_index", config.get("image_token_id")),
            "weights": [str(folder.resolve())],
        },
        source=str(where),
    )


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).exists() for name in TOKENIZER_FILES)
