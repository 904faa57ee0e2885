"""Build a ``Pipeline`` from a validated ``PipelineSpec`` and the plugin registry."""

from __future__ import annotations

from typing import Any

import torch

from blip2core.errors import Blip2Error
from blip2core.pipeline import DTYPES, Pipeline
from blip2core.protocols import Bridge, LanguageModel, Preprocessor, Quantizer, VisionEncoder
from blip2core.registry import Registry
from blip2core.spec import PipelineSpec

DEFAULT_PREPROCESSOR = "standard"


def _expect(instance: Any, protocol: type, what: str, component: Any) -> Any:
    if not isinstance(instance, protocol):
        missing = [
            name
            for name in getattr(protocol, "__protocol_attrs__", ())
            if not hasattr(instance, name)
        ]
        raise Blip2Error(
            f"{what} {component.name!r} from plugin {component.plugin!r} returned a "
            f"{type(instance).__name__}, which does not implement {protocol.__name__}"
            + (f" (missing: {', '.join(sorted(missing))})" if missing else "")
        )
    return instance


def build_pipeline(spec: PipelineSpec, registry: Registry) -> Pipeline:
    """Validate every name and option first, then build, quantize, freeze, move and cast."""
    options = spec.check_components(registry)

    vision_c = registry.get("vision_encoder", spec.vision.name)
    vision = _expect(vision_c.factory(options["vision"]), VisionEncoder, "vision encoder", vision_c)

    llm_c = registry.get("language_model", spec.llm.name)
    llm = _expect(llm_c.factory(options["llm"]), LanguageModel, "language model", llm_c)

    bridge_c = registry.get("bridge", spec.bridge.name)
    bridge = bridge_c.factory(options["bridge"], vision_width=vision.width, llm_hidden_size=llm.hidden_size)
    bridge = _expect(bridge, Bridge, "bridge", bridge_c)

    preprocessor = None
    if spec.preprocessor is not None or DEFAULT_PREPROCESSOR in registry.components["preprocessor"]:
        ref_name = spec.preprocessor.name if spec.preprocessor is not None else DEFAULT_PREPROCESSOR
        pre_c = registry.get("preprocessor", ref_name, path="preprocessor.name")
        pre_options = options.get("preprocessor") if spec.preprocessor is not None else pre_c.validate_options({})
        preprocessor = _expect(
            pre_c.factory(pre_options, preprocess_config=vision.preprocess_config), Preprocessor, "preprocessor", pre_c
        )

    dtype = DTYPES[spec.dtype]
    vision.to(dtype=dtype)
    llm.to(dtype=dtype)
    parts = {"vision": vision, "bridge": bridge, "llm": llm}
    for target, ref in spec.quantize.items():
        quant_c = registry.get("quantizer", ref.name)
        quantizer = _expect(quant_c.factory(options[f"quantize.{target}"]), Quantizer, "quantizer", quant_c)
        parts[target] = quantizer.quantize(parts[target])

    pipeline = Pipeline(spec, parts["vision"], parts["bridge"], parts["llm"], preprocessor)
    pipeline.to(torch.device(spec.device))
    return pipeline
