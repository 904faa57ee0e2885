"""blip2core: BLIP-2-style vision-language pipelines from pluggable components.

A plugin needs only ``from blip2core import hookimpl, PreprocessConfig``.
"""

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

__all__ = [
    "BatchPreprocessor",
    "Blip2Error",
    "Bridge",
    "BridgeOutput",
    "CheckpointError",
    "ComponentSpec",
    "EncoderDecoderLanguageModel",
    "GenerationDefaults",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageEncoding",
    "InstructionAwareBridge",
    "LanguageModel",
    "LanguageModelOutput",
    "LoadsForeignCheckpoints",
    "LoadsOwnWeights",
    "Loss",
    "MissingProtocolError",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "Pipeline",
    "PipelineSpec",
    "PluginError",
    "PreprocessConfig",
    "Preprocessor",
    "Quantizer",
    "SpecError",
    "SupportsPrefixCache",
    "Task",
    "TextBridge",
    "UnknownComponentError",
    "VisionEncoder",
    "hookimpl",
    "load_pipeline",
]
