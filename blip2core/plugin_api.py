"""The plugin SDK: everything a blip2core plugin package may import besides ``blip2core`` itself.

A plugin imports from ``blip2core`` (``hookimpl``, the protocols, ``PreprocessConfig``, the
errors, ``load_pipeline``) and from this module; every other ``blip2core.*`` module is internal
and may change without notice. ``make test`` enforces this for the first-party plugins
(import-linter, ``[tool.importlinter]`` in pyproject.toml). docs/writing-a-plugin.md shows it in use.

Hooks and their callback types:
    hookimpl, Register, RegisterHFConfig, RegisterPreset, HFConfigReader, HFConfigSource, HFConfigPart

Weights (never unpickles: safetensors, or ``torch.load(weights_only=True)``):
    read_state_dict(path, prefixes=None)  file or folder -> {name: tensor}
    stored_keys(path)                     tensor names of a safetensors file / folder, read lazily
    unwrap_state_dict(obj, source)        the flat state dict inside what ``torch.load`` returned
    copy_into(module, mapped, source=)    copy with shape checks -> (missing, unexpected)
    check_shapes(own_state, mapped, ...)  the same shape checks alone (own names renamed by hand)
    raise_if_missing(missing, source)     CheckpointError naming what stayed unset
    looks_like_hub_id(name), hub_offline()  the core's rule for hub ids and for downloads being off

Files a reader may see while they are written (temp file / folder beside it, fsync, rename):
    atomic_file(path), atomic_write_text(path, text), atomic_folder(path), is_leftover(path)

Precision:
    DType, DTYPE_CHOICES, TORCH_DTYPES, torch_dtype(name), dtype_name(dtype), checked_dtype, cpu_flags

Linear layers (quantizers that look for them):
    SmallBatchLinear                      the ``nn.Linear`` subclass composed pipelines use (its class
                                          only differs): match ``type(m) in (nn.Linear, SmallBatchLinear)``

Vision encoders:
    resample_pos_embed(pos, new_grid, num_prefix_tokens=1)  timm's bicubic resampling (needs timm)
    resolve_layer(layer, depth, what)     a block index from a possibly negative one
    open_clip_model_config, open_clip_preprocess_config, image_side   open_clip configs (need open_clip)

Bridges:
    QFormerOptions, build_qformer         the built-in Q-Former, to register it under other defaults
                                          (``build_qformer(options, vision_width=C, llm_hidden_size=D)``)
    query_text_similarity(image, text, temperature=None, paired=False)
                                          BLIP-2's ITC similarity: [I, Q, E] x [T, E] -> [I, T], best query

Optional protocols (also exported by ``blip2core``) and checking for them:
    TextBridge, GenerationDefaults, SupportsPrefixCache, BatchPreprocessor, LoadsOwnWeights,
    InstructionAwareBridge, EncoderDecoderLanguageModel
    require_protocol(component, Protocol, needed_by, role, name)  the component, or MissingProtocolError
    is_encoder_decoder(llm)               whether a language model is an encoder-decoder (T5)
Language models (transformers ``*ForCausalLM`` / ``*ForConditionalGeneration`` behind the LanguageModel protocol):
    LanguageModelOptions, TorchDType, TransformersLanguageModel, TransformersSeq2SeqLanguageModel,
    load_language_model, map_foreign_keys, causal_lm_loss, positions_from_mask

Hugging Face BLIP-2 folders (hook ``register_hf_configs``):
    text_config_reader(name)              the reader for a transformers-backed language model

Free-form transformers ``config:`` options (numeric strings coerced, unknown keys refused by name):
    check_config_fields(config_class, fields)   in a pydantic ``field_validator``: errors per key
    hf_config_from_fields(config_class, fields, path)  the config object, or a SpecError naming path.key
    import_config_class("transformers.CLIPVisionConfig")  the class, imported when first needed

Tools built on pipelines (training, evaluation, CLI commands):
    get_registry, Registry, Component, PipelineSpec, ComponentSpec, read_structured_file, dump_yaml,
    format_validation_error, load_pipeline, resolve_spec, parse_quantize, quantize_option
    chat_prompt(tokenizer, messages)      a conversation as the prompt ``Pipeline.chat`` gives the LLM
                                          (its chat template, else "Question: ... Answer:")
    has_chat_template(tokenizer)          whether it has one (its prompt then holds its special tokens)

Batch inference over image sets (``blip2 features``, blip2-ray):
    feature_inputs(args) -> [FeatureInput(path, name)]  images of folders / files, named for resuming
    load_batch(pipe, paths)               pixel_values of the readable ones, failures listed by name
    download_image(url, timeout, cap)     an http(s) URL's bytes (at most cap), or ImageLoadError naming it
    pipeline_fingerprint(pipe) -> Fingerprint   digests of what image features depend on
    caption_pixels, answer_pixels, features_from_pixels   the inference API on preprocessed pixel_values
    GenerationSettings, CAPTION_DEFAULTS, VQA_DEFAULTS, DEFAULT_VQA_TEMPLATE, caption_prompt,
    format_questions                      decoding settings and prompts, as ``caption`` / ``answer`` use them

Serving (blip2-serve):
    AsyncPipeline(pipe)                   awaitable caption / answer / chat / extract_features / match on a shared pipeline
    attention_maps(pipe, images, question), overlay(image, grid, size)   ``blip2 explain``'s maps and heat-map picture

torchrun (one process, or one per rank):
    TorchrunEnv, torchrun_env, join_process_group, leave_process_group, process_group,
    local_device, backend_for
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blip2core.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the same names, eagerly, for type checkers (tests/test_lazy_imports.py keeps them in step)
    from blip2core.atomic import atomic_file, atomic_folder, atomic_write_text, is_leftover
    from blip2core.bridges.qformer.config import QFormerOptions
    from blip2core.bridges.qformer.factory import build_qformer
    from blip2core.bridges.qformer.heads import query_text_similarity
    from blip2core.checkpoints.copying import check_shapes, copy_into, raise_if_missing
    from blip2core.checkpoints.files import read_state_dict, stored_keys, unwrap_state_dict
    from blip2core.checkpoints.hf_blip2 import text_config_reader
    from blip2core.checkpoints.hub import hub_offline, looks_like_hub_id
    from blip2core.cli.inference_commands import parse_quantize, quantize_option
    from blip2core.errors import (
        Blip2Error,
        CheckpointError,
        DuplicateComponentError,
        InputError,
        PluginError,
        SpecError,
        UnknownComponentError,
    )
    from blip2core.hf_config import check_config_fields, hf_config_from_fields, import_config_class
    from blip2core.hookspecs import (
        HFConfigPart,
        HFConfigReader,
        HFConfigSource,
        Register,
        RegisterHFConfig,
        RegisterPreset,
        hookimpl,
    )
    from blip2core.inference import (
        CAPTION_DEFAULTS,
        DEFAULT_VQA_TEMPLATE,
        VQA_DEFAULTS,
        GenerationSettings,
        answer_pixels,
        caption_pixels,
        features_from_pixels,
    )
    from blip2core.inference.async_pipeline import AsyncPipeline
    from blip2core.inference.chat_text import chat_prompt, has_chat_template
    from blip2core.inference.explain import attention_maps, overlay
    from blip2core.inference.feature_inputs import FeatureInput, feature_inputs
    from blip2core.inference.fingerprint import Fingerprint, pipeline_fingerprint
    from blip2core.inference.images import load_batch
    from blip2core.inference.prompts import caption_prompt, format_questions
    from blip2core.llm import (
        LanguageModelOptions,
        TransformersLanguageModel,
        TransformersSeq2SeqLanguageModel,
        causal_lm_loss,
        load_language_model,
        map_foreign_keys,
        positions_from_mask,
    )
    from blip2core.llm.options import TorchDType
    from blip2core.loading import load_pipeline, resolve_spec
    from blip2core.plugins import get_registry
    from blip2core.precision import DTYPE_CHOICES, TORCH_DTYPES, DType, checked_dtype, cpu_flags, dtype_name, torch_dtype
    from blip2core.preprocess.sources import download_image
    from blip2core.preprocess_config import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        PreprocessConfig,
    )
    from blip2core.protocols import (
        BatchPreprocessor,
        Bridge,
        BridgeOutput,
        EncoderDecoderLanguageModel,
        GenerationDefaults,
        InstructionAwareBridge,
        LanguageModel,
        LanguageModelOutput,
        LoadsForeignCheckpoints,
        LoadsOwnWeights,
        Loss,
        MissingProtocolError,
        Preprocessor,
        Quantizer,
        SupportsPrefixCache,
        Task,
        TextBridge,
        VisionEncoder,
        is_encoder_decoder,
        require_protocol,
    )
    from blip2core.registry import Component, Registry, format_validation_error
    from blip2core.small_batch_linear import SmallBatchLinear
    from blip2core.spec import ComponentSpec, PipelineSpec, dump_yaml, read_structured_file
    from blip2core.torchrun import (
        TorchrunEnv,
        backend_for,
        join_process_group,
        leave_process_group,
        local_device,
        process_group,
        torchrun_env,
    )
    from blip2core.vision.blocks import resolve_layer
    from blip2core.vision.open_clip_config import image_side, open_clip_model_config, open_clip_preprocess_config
    from blip2core.vision.pos_embed import resample_pos_embed

#: public name -> the module that defines it; imported on first use, so that a plugin module that
#: imports this one (every ``blip2`` command imports them all) does not import torch
_EXPORTS = {
    **dict.fromkeys(
        (
            "atomic_file",
            "atomic_folder",
            "atomic_write_text",
            "is_leftover",
        ),
        "blip2core.atomic",
    ),
    "QFormerOptions": "blip2core.bridges.qformer.config",
    "SmallBatchLinear": "blip2core.small_batch_linear",
    "build_qformer": "blip2core.bridges.qformer.factory",
    "query_text_similarity": "blip2core.bridges.qformer.heads",
    **dict.fromkeys(
        (
            "check_shapes",
            "copy_into",
            "raise_if_missing",
        ),
        "blip2core.checkpoints.copying",
    ),
    **dict.fromkeys(
        (
            "read_state_dict",
            "stored_keys",
            "unwrap_state_dict",
        ),
        "blip2core.checkpoints.files",
    ),
    "text_config_reader": "blip2core.checkpoints.hf_blip2",
    **dict.fromkeys(
        (
            "hub_offline",
            "looks_like_hub_id",
        ),
        "blip2core.checkpoints.hub",
    ),
    **dict.fromkeys(
        (
            "parse_quantize",
            "quantize_option",
        ),
        "blip2core.cli.inference_commands",
    ),
    **dict.fromkeys(
        (
            "Blip2Error",
            "CheckpointError",
            "DuplicateComponentError",
            "InputError",
            "PluginError",
            "SpecError",
            "UnknownComponentError",
        ),
        "blip2core.errors",
    ),
    **dict.fromkeys(
        (
            "check_config_fields",
            "hf_config_from_fields",
            "import_config_class",
        ),
        "blip2core.hf_config",
    ),
    **dict.fromkeys(
        (
            "HFConfigPart",
            "HFConfigReader",
            "HFConfigSource",
            "Register",
            "RegisterHFConfig",
            "RegisterPreset",
            "hookimpl",
        ),
        "blip2core.hookspecs",
    ),
    "AsyncPipeline": "blip2core.inference.async_pipeline",
    "chat_prompt": "blip2core.inference.chat_text",
    "has_chat_template": "blip2core.inference.chat_text",
    "attention_maps": "blip2core.inference.explain",
    "overlay": "blip2core.inference.explain",
    **dict.fromkeys(
        (
            "CAPTION_DEFAULTS",
            "DEFAULT_VQA_TEMPLATE",
            "VQA_DEFAULTS",
            "GenerationSettings",
            "answer_pixels",
            "caption_pixels",
            "features_from_pixels",
        ),
        "blip2core.inference",
    ),
    **dict.fromkeys(
        (
            "FeatureInput",
            "feature_inputs",
        ),
        "blip2core.inference.feature_inputs",
    ),
    **dict.fromkeys(
        (
            "Fingerprint",
            "pipeline_fingerprint",
        ),
        "blip2core.inference.fingerprint",
    ),
    "load_batch": "blip2core.inference.images",
    **dict.fromkeys(
        (
            "caption_prompt",
            "format_questions",
        ),
        "blip2core.inference.prompts",
    ),
    **dict.fromkeys(
        (
            "LanguageModelOptions",
            "TransformersLanguageModel",
            "TransformersSeq2SeqLanguageModel",
            "causal_lm_loss",
            "load_language_model",
            "map_foreign_keys",
            "positions_from_mask",
        ),
        "blip2core.llm",
    ),
    "TorchDType": "blip2core.llm.options",
    **dict.fromkeys(
        (
            "load_pipeline",
            "resolve_spec",
        ),
        "blip2core.loading",
    ),
    "get_registry": "blip2core.plugins",
    **dict.fromkeys(
        (
            "DTYPE_CHOICES",
            "TORCH_DTYPES",
            "DType",
            "checked_dtype",
            "cpu_flags",
            "dtype_name",
            "torch_dtype",
        ),
        "blip2core.precision",
    ),
    **dict.fromkeys(
        (
            "IMAGENET_MEAN",
            "IMAGENET_STD",
            "OPENAI_CLIP_MEAN",
            "OPENAI_CLIP_STD",
            "PreprocessConfig",
        ),
        "blip2core.preprocess_config",
    ),
    **dict.fromkeys(
        (
            "BatchPreprocessor",
            "Bridge",
            "BridgeOutput",
            "EncoderDecoderLanguageModel",
            "GenerationDefaults",
            "InstructionAwareBridge",
            "LanguageModel",
            "LanguageModelOutput",
            "LoadsForeignCheckpoints",
            "LoadsOwnWeights",
            "Loss",
            "MissingProtocolError",
            "Preprocessor",
            "Quantizer",
            "SupportsPrefixCache",
            "Task",
            "TextBridge",
            "VisionEncoder",
            "is_encoder_decoder",
            "require_protocol",
        ),
        "blip2core.protocols",
    ),
    **dict.fromkeys(
        (
            "Component",
            "Registry",
            "format_validation_error",
        ),
        "blip2core.registry",
    ),
    **dict.fromkeys(
        (
            "ComponentSpec",
            "PipelineSpec",
            "dump_yaml",
            "read_structured_file",
        ),
        "blip2core.spec",
    ),
    **dict.fromkeys(
        (
            "TorchrunEnv",
            "backend_for",
            "join_process_group",
            "leave_process_group",
            "local_device",
            "process_group",
            "torchrun_env",
        ),
        "blip2core.torchrun",
    ),
    "resolve_layer": "blip2core.vision.blocks",
    **dict.fromkeys(
        (
            "image_side",
            "open_clip_model_config",
            "open_clip_preprocess_config",
        ),
        "blip2core.vision.open_clip_config",
    ),
    "resample_pos_embed": "blip2core.vision.pos_embed",
    "download_image": "blip2core.preprocess.sources",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
