"""The plugin SDK: everything a blip2core plugin package may import besides ``blip2core`` itself.

A plugin imports from ``blip2core`` (``hookimpl``, the protocols, ``PreprocessConfig``, the
errors, ``load_pipeline``) and from this module; every other ``blip2core.*`` module is internal
and may change without notice. ``make test`` enforces this for the first-party plugins
(import-linter, ``[tool.importlinter]`` in pyproject.toml). docs/writing-a-plugin.md shows it in use.

Hooks and their callback types:
    hookimpl, Register, RegisterHFConfig, HFConfigReader, HFConfigSource, HFConfigPart

Weights (never unpickles: safetensors, or ``torch.load(weights_only=True)``):
    read_state_dict(path, prefixes=None)  file or folder -> {name: tensor}
    stored_keys(path)                     tensor names of a safetensors file / folder, read lazily
    unwrap_state_dict(obj, source)        the flat state dict inside what ``torch.load`` returned
    copy_into(module, mapped, source=)    copy with shape checks -> (missing, unexpected)
    raise_if_missing(missing, source)     CheckpointError naming what stayed unset

Vision encoders:
    resample_pos_embed(pos, new_grid, num_prefix_tokens=1)  timm's bicubic resampling (needs timm)
    resolve_layer(layer, depth, what)     a block index from a possibly negative one
    open_clip_model_config, open_clip_preprocess_config, image_side   open_clip configs (need open_clip)

Bridges:
    QFormerOptions, build_qformer         the built-in Q-Former, to register it under other defaults
                                          (``build_qformer(options, vision_width=C, llm_hidden_size=D)``)
Language models (transformers ``*ForCausalLM`` behind the LanguageModel protocol):
    LanguageModelOptions, TorchDType, TransformersLanguageModel, load_language_model,
    map_foreign_keys, causal_lm_loss, positions_from_mask

Hugging Face BLIP-2 folders (hook ``register_hf_configs``):
    text_config_reader(name)              the reader for a transformers-backed language model

Tools built on pipelines (training, evaluation, CLI commands):
    get_registry, Registry, Component, PipelineSpec, ComponentSpec, read_structured_file,
    format_validation_error, load_pipeline
"""

from __future__ import annotations

from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.factory import build_qformer
from blip2core.checkpoints.copying import copy_into, raise_if_missing
from blip2core.checkpoints.files import read_state_dict, stored_keys, unwrap_state_dict
from blip2core.checkpoints.hf_blip2 import text_config_reader
from blip2core.errors import (
    Blip2Error,
    CheckpointError,
    DuplicateComponentError,
    PluginError,
    SpecError,
    UnknownComponentError,
)
from blip2core.hookspecs import (
    HFConfigPart,
    HFConfigReader,
    HFConfigSource,
    Register,
    RegisterHFConfig,
    hookimpl,
)
from blip2core.llm import (
    LanguageModelOptions,
    TransformersLanguageModel,
    causal_lm_loss,
    load_language_model,
    map_foreign_keys,
    positions_from_mask,
)
from blip2core.llm.options import TorchDType
from blip2core.loading import load_pipeline
from blip2core.plugins import get_registry
from blip2core.preprocess_config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PreprocessConfig,
)
from blip2core.protocols import (
    Bridge,
    BridgeOutput,
    LanguageModel,
    LanguageModelOutput,
    LoadsForeignCheckpoints,
    Loss,
    Preprocessor,
    Quantizer,
    Task,
    VisionEncoder,
)
from blip2core.registry import Component, Registry, format_validation_error
from blip2core.spec import ComponentSpec, PipelineSpec, read_structured_file
from blip2core.vision.blocks import resolve_layer
from blip2core.vision.open_clip_config import image_side, open_clip_model_config, open_clip_preprocess_config
from blip2core.vision.pos_embed import resample_pos_embed

__all__ = [
    "QFormerOptions",
    "build_qformer",
    "Blip2Error",
    "Bridge",
    "BridgeOutput",
    "CheckpointError",
    "Component",
    "ComponentSpec",
    "DuplicateComponentError",
    "HFConfigPart",
    "HFConfigReader",
    "HFConfigSource",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LanguageModel",
    "LanguageModelOptions",
    "LanguageModelOutput",
    "LoadsForeignCheckpoints",
    "Loss",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PipelineSpec",
    "PluginError",
    "PreprocessConfig",
    "Preprocessor",
    "Quantizer",
    "Register",
    "RegisterHFConfig",
    "Registry",
    "SpecError",
    "Task",
    "TorchDType",
    "TransformersLanguageModel",
    "UnknownComponentError",
    "VisionEncoder",
    "causal_lm_loss",
    "copy_into",
    "format_validation_error",
    "get_registry",
    "hookimpl",
    "image_side",
    "load_language_model",
    "load_pipeline",
    "map_foreign_keys",
    "open_clip_model_config",
    "open_clip_preprocess_config",
    "positions_from_mask",
    "raise_if_missing",
    "read_state_dict",
    "read_structured_file",
    "resample_pos_embed",
    "resolve_layer",
    "stored_keys",
    "text_config_reader",
    "unwrap_state_dict",
]
