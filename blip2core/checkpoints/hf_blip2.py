"""Hugging Face BLIP-2 folders (``config.json`` with ``model_type: blip-2``, or ``instructblip``:
``blip2core.checkpoints.hf_instructblip``) as pipeline specs.

The Q-Former is the core's own; the other two parts are asked of the plugins: each plugin claims
the ``vision_config`` / ``text_config`` model types it can rebuild (hook ``register_hf_configs``)
and returns its component spec. The architectures come from the sub-configs, the weights from the
folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blip2core.checkpoints import hf_instructblip
from blip2core.errors import Blip2Error, CheckpointError
from blip2core.hookspecs import HFConfigReader, HFConfigSource
from blip2core.registry import HF_CONFIG_PARTS
from blip2core.spec import PipelineSpec

if TYPE_CHECKING:
    from blip2core.registry import Registry

RETRIEVAL_ARCHITECTURE = "Blip2ForImageTextRetrieval"
#: the model_type a sub-config without one has: what transformers' Blip2Config fills in
DEFAULT_MODEL_TYPES = {"vision": "blip_2_vision_model", "text": "opt"}
#: part -> how its components are called in messages
PART_KINDS = {"vision": "vision-encoder", "text": "language-model"}
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
    """The folder's config.json if it is a BLIP-2 (or InstructBLIP) one, else None."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from None
    return config if config.get("model_type") in ("blip-2", hf_instructblip.MODEL_TYPE) else None


def spec_from_hf_config(folder: Path, config: dict[str, Any], registry: Registry | None = None) -> PipelineSpec:
    """A spec whose components rebuild the architecture in config; weights: the folder itself.

    Args:
        folder: the Hugging Face folder.
        config: its ``config.json``.
        registry: whose ``register_hf_configs`` readers to ask (default: every discovered plugin).
    """
    where = folder / "config.json"
    try:
        vision_config = config["vision_config"]
        qformer_config = config["qformer_config"]
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing field {exc.args[0]!r}") from None
    if registry is None:
        from blip2core.plugins import get_registry

        registry = get_registry()
    source = HFConfigSource(folder=folder, config_file=where, config=config, has_tokenizer=has_tokenizer(folder))
    retrieval = RETRIEVAL_ARCHITECTURE in (config.get("architectures") or [])

    bridge_options = {k: qformer_config[k] for k in QFORMER_OPTION_KEYS if k in qformer_config}
    bridge_options["num_query_tokens"] = config.get("num_query_tokens", 32)
    # text embeddings, text FFN and the ITC / ITM heads exist in HF checkpoints trained with text input
    bridge_options["with_text_heads"] = bool(qformer_config.get("use_qformer_text_input", retrieval))
    bridge_options["with_llm_projection"] = not retrieval
    if retrieval:
        bridge_options["embed_dim"] = config.get("image_text_hidden_size", 256)
        if source.has_tokenizer:
            bridge_options["tokenizer"] = str(folder)
    if hf_instructblip.is_instructblip(config):
        vision_config = hf_instructblip.blip2_vision_config(vision_config)
        bridge_options.update(hf_instructblip.instruction_bridge_options(folder, qformer_config))

    vision = component_from_sub_config(registry, "vision", vision_config, source)
    llm = None
    if not retrieval:
        llm = component_from_sub_config(registry, "text", config.get("text_config") or {}, source)

    return PipelineSpec.from_dict(
        {
            "vision": vision,
            "bridge": {"name": "qformer", "options": bridge_options},
            "llm": llm,
            "image_token_id": config.get("image_token_index", config.get("image_token_id")),
            "bos_for_empty_prompt": True,  # transformers' generate starts from BOS without input_ids
            "weights": [str(folder.resolve())],
        },
        source=str(where),
    )


def component_from_sub_config(
    registry: Registry, part: str, sub_config: Mapping[str, Any], source: HFConfigSource
) -> dict[str, Any]:
    """Ask the plugin that claimed ``(part, sub_config.model_type)`` for its component spec.

    Raises:
        CheckpointError: no plugin claims that model type (the message lists those that are
            claimed), or the reader failed on something other than a blip2core error.
        DuplicateComponentError: more than one plugin claims it.
    """
    key = HF_CONFIG_PARTS[part][0]
    model_type = sub_config.get("model_type", DEFAULT_MODEL_TYPES[part])
    claim = registry.hf_config(part, model_type)
    if claim is None:
        raise CheckpointError(
            f"{source.config_file}: {key}.model_type {model_type!r} has no {PART_KINDS[part]} component "
            f"(supported: {', '.join(registry.hf_config_types(part)) or 'none: is its plugin installed?'})"
        )
    try:
        spec = claim.reader(sub_config, source)
    except Blip2Error:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{source.config_file}: {key} ({model_type}): the reader of plugin {claim.plugin!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return dict(spec)


def text_config_reader(name: str) -> HFConfigReader:
    """The reader for a transformers-backed language model named ``name``: the ``text_config`` becomes
    its ``config`` option (random weights: the folder's checkpoint fills them), and the folder its
    ``tokenizer`` when it holds one. For ``register_hf_configs``::

        register("text", "qwen2", text_config_reader("qwen2"))
    """

    def read(sub_config: Mapping[str, Any], source: HFConfigSource) -> dict[str, Any]:
        options: dict[str, Any] = {"config": _readable_fields(sub_config)}
        if source.has_tokenizer:
            options["tokenizer"] = str(source.folder)
        return {"name": name, "options": options}

    return read


def _readable_fields(sub_config: Mapping[str, Any]) -> dict[str, Any]:
    """The sub-config without the keys its transformers config class would store unread: a
    ``config.json`` of an older transformers carries many (``prefix``, ``num_beams``, ...), which a
    component's ``config`` option refuses (``blip2core.hf_config``)."""
    from transformers import CONFIG_MAPPING

    from blip2core.hf_config import known_fields_only

    model_type = sub_config.get("model_type", DEFAULT_MODEL_TYPES["text"])
    if model_type not in CONFIG_MAPPING:
        return dict(sub_config)
    return known_fields_only(CONFIG_MAPPING[model_type], sub_config)


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).exists() for name in TOKENIZER_FILES)
