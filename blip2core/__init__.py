"""blip2core: BLIP-2-style vision-language pipelines from pluggable components.

A plugin needs only ``from blip2core import hookimpl, PreprocessConfig``.

``import blip2core`` is cheap: it imports no plugin and no torch. Each public name below is imported
from its module the first time it is used (``blip2core.lazy_exports``, PEP 562), so
``from blip2core import Pipeline`` costs torch and ``from blip2core import hookimpl`` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blip2core.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the same names, eagerly, for type checkers (tests/test_lazy_imports.py keeps them in step)
    from blip2core.encoding import ImageEncoding
    from blip2core.errors import Blip2Error, CheckpointError, PluginError, SpecError, UnknownComponentError
    from blip2core.hookspecs import hookimpl
    from blip2core.loading import load_pipeline
    from blip2core.pipeline import Pipeline
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
    )
    from blip2core.spec import ComponentSpec, PipelineSpec

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "ImageEncoding": "blip2core.encoding",
    **dict.fromkeys(
        ("Blip2Error", "CheckpointError", "PluginError", "SpecError", "UnknownComponentError"), "blip2core.errors"
    ),
    "hookimpl": "blip2core.hookspecs",
    "load_pipeline": "blip2core.loading",
    "Pipeline": "blip2core.pipeline",
    **dict.fromkeys(
        ("IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "PreprocessConfig"),
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
        ),
        "blip2core.protocols",
    ),
    **dict.fromkeys(("ComponentSpec", "PipelineSpec"), "blip2core.spec"),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
