"""Build a ``Pipeline`` from a validated ``PipelineSpec`` and the plugin registry."""

from __future__ import annotations

from typing import Any

import torch

from blip2core.checkpoints.apply import load_checkpoints
from blip2core.errors import Blip2Error
from blip2core.pipeline import Pipeline
from blip2core.precision import checked_dtype, torch_dtype
from blip2core.protocols import Bridge, LanguageModel, Preprocessor, Quantizer, VisionEncoder
from blip2core.registry import Registry
from blip2core.seeding import seeded_construction
from blip2core.spec import PipelineSpec

DEFAULT_PREPROCESSOR = "standard"


def _expect(instance: Any, protocol: type, what: str, component: Any) -> Any:
    if not isinstance(instance, protocol):
        members = [*getattr(protocol, "__annotations__", {})]
        members += [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
        missing = [name for name in dict.fromkeys(members) if not hasattr(instance, name)]
        raise Blip2Error(
            f"{what} {component.name!r} from plugin {component.plugin!r} returned a "
            f"{type(instance).__name__}, which does not implement {protocol.__name__}"
            + (f" (missing: {', '.join(sorted(missing))})" if missing else "")
        )
    return instance


def build_pipeline(spec: PipelineSpec, registry: Registry, *, strict: bool = True) -> Pipeline:
    """Validate every name and option first; then build, load checkpoints, cast, quantize,
    freeze and move. ``strict``: missing / unexpected checkpoint keys are errors. With
    ``spec.seed``, each component is built under its own seed (``blip2core.seeding``)."""
    options = spec.check_components(registry)

    vision_c = registry.get("vision_encoder", spec.vision.name)
    with seeded_construction(spec.seed, "vision"):
        vision = _expect(vision_c.factory(options["vision"]), VisionEncoder, "vision encoder", vision_c)

    llm = None
    if spec.llm is not None:
        llm_c = registry.get("language_model", spec.llm.name)
        with seeded_construction(spec.seed, "llm"):
            llm = _expect(llm_c.factory(options["llm"]), LanguageModel, "language model", llm_c)

    bridge_c = registry.get("bridge", spec.bridge.name)
    with seeded_construction(spec.seed, "bridge"):
        bridge = bridge_c.factory(
            options["bridge"], vision_width=vision.width, llm_hidden_size=llm.hidden_size if llm is not None else None
        )
    bridge = _expect(bridge, Bridge, "bridge", bridge_c)

    preprocessor = None
    if spec.preprocessor is not None or DEFAULT_PREPROCESSOR in registry.components["preprocessor"]:
        ref_name = spec.preprocessor.name if spec.preprocessor is not None else DEFAULT_PREPROCESSOR
        pre_c = registry.get("preprocessor", ref_name, path="preprocessor.name")
        pre_options = options.get("preprocessor") if spec.preprocessor is not None else pre_c.validate_options({})
        preprocessor = _expect(
            pre_c.factory(pre_options, preprocess_config=vision.preprocess_config), Preprocessor, "preprocessor", pre_c
        )

    parts = {"vision": vision, "bridge": bridge, "llm": llm}
    report = load_checkpoints(parts, spec.weight_paths(), strict=strict) if spec.weights else None

    # dtype auto -> what the device runs natively; a slow request warns (blip2core.precision)
    dtype_name = checked_dtype(spec.dtype, spec.device)
    if dtype_name != spec.dtype:
        base_dir = spec._base_dir
        spec = spec.model_copy(update={"dtype": dtype_name})
        spec._base_dir = base_dir
    device = torch.device(spec.device)
    for frozen in (vision, llm):
        if frozen is not None:
            frozen.to(device=device, dtype=torch_dtype(dtype_name))
    parts = _quantize(spec, registry, options, parts, device)

    pipeline = Pipeline(spec, parts["vision"], parts["bridge"], parts["llm"], preprocessor)
    pipeline.load_report = report
    pipeline.to(device)
    return pipeline.eval()  # inference by default, as from_pretrained; pipeline.train() for training


def _quantize(
    spec: PipelineSpec, registry: Registry, options: dict[str, Any], parts: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """Apply each ``spec.quantize`` entry to its component. The component is already on its device
    (quantizers pick their kernels by the device of the weights); the bridge is moved there first."""
    parts = dict(parts)
    for target, ref in spec.quantize.items():
        if parts[target] is None:
            raise Blip2Error(f"quantize.{target}: this pipeline has no {target} component")
        quant_c = registry.get("quantizer", ref.name, path=f"quantize.{target}.name")
        quantizer = _expect(quant_c.factory(options[f"quantize.{target}"]), Quantizer, "quantizer", quant_c)
        parts[target] = quantizer.quantize(parts[target].to(device))
    return parts
