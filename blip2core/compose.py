"""Build a ``Pipeline`` from a validated ``PipelineSpec`` and the plugin registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from blip2core.checkpoints.apply import load_checkpoints, slots_in_checkpoints
from blip2core.checkpoints.deferred import keep_checkpoint_dtypes, meta_tensor_names, parameters_on_meta
from blip2core.errors import Blip2Error
from blip2core.pipeline import Pipeline
from blip2core.precision import checked_dtype, torch_dtype
from blip2core.protocols import Bridge, LanguageModel, Preprocessor, Quantizer, VisionEncoder
from blip2core.registry import Registry
from blip2core.seeding import seeded_construction
from blip2core.small_batch_linear import use_small_batch_linears
from blip2core.spec import PipelineSpec

DEFAULT_PREPROCESSOR = "standard"
log = logging.getLogger(__name__)


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
    ``spec.seed``, each component is built under its own seed (``blip2core.seeding``).

    A component the spec's checkpoints hold tensors for is built with its parameters on ``meta``
    (no random initialisation, no memory; ``blip2core.checkpoints.deferred``), cast to its dtype,
    and takes the checkpoint's memory-mapped tensors themselves. One the checkpoints leave
    incomplete is then built the ordinary way and loaded again, so what they do not cover keeps
    its usual (seeded) random values.

    A frozen component whose quantizer quantizes while loading (``Quantizer.quantizes_while_loading``)
    is not cast first on the CPU: it keeps its checkpoint's dtype (memory-mapped) and the quantizer
    casts one layer at a time, so the whole component never exists in the pipeline's dtype.

    Last, every plain ``nn.Linear`` becomes a ``SmallBatchLinear`` (``blip2core.small_batch_linear``:
    the same layer, faster for 2-128 rows at inference on the CPU)."""
    options = spec.check_components(registry)
    # dtype auto -> what the device runs natively; a slow request warns (blip2core.precision)
    dtype_name = checked_dtype(spec.dtype, spec.device)
    device = torch.device(spec.device)
    quantizers = _quantizers(spec, registry, options)
    streamed = {  # on the CPU only: elsewhere the uncast component would first go to the device whole
        slot for slot, quantizer in quantizers.items()
        if slot != "bridge" and quantizes_while_loading(quantizer) and device.type == "cpu"
    }
    deferred = slots_in_checkpoints(spec.weight_paths()) if spec.weights else set()
    parts: dict[str, Any] = {"vision": None, "bridge": None, "llm": None}

    def build(slot: str) -> Any:
        with seeded_construction(spec.seed, slot):
            return _build_component(slot, registry, spec, options, parts)

    for slot in ("vision", "llm", "bridge"):  # the bridge reads the others' widths
        if slot == "llm" and spec.llm is None:
            continue
        if slot in deferred:
            parts[slot] = _build_deferred(slot, build, dtype_name, keep_checkpoint_dtype=slot in streamed)
            if parts[slot] is None:
                deferred.discard(slot)
                parts[slot] = build(slot)
        else:
            parts[slot] = build(slot)
    vision = parts["vision"]

    preprocessor = None
    if spec.preprocessor is not None or DEFAULT_PREPROCESSOR in registry.components["preprocessor"]:
        ref_name = spec.preprocessor.name if spec.preprocessor is not None else DEFAULT_PREPROCESSOR
        pre_c = registry.get("preprocessor", ref_name, path="preprocessor.name")
        pre_options = options.get("preprocessor") if spec.preprocessor is not None else pre_c.validate_options({})
        preprocessor = _expect(
            pre_c.factory(pre_options, preprocess_config=vision.preprocess_config), Preprocessor, "preprocessor", pre_c
        )

    report = load_checkpoints(parts, spec.weight_paths(), strict=strict) if spec.weights else None
    incomplete = {slot for slot in deferred if meta_tensor_names(parts[slot])}
    if incomplete:  # the checkpoints left parts unset: build those components with their random init
        for slot in incomplete:
            parts[slot] = build(slot)
        again = load_checkpoints(parts, spec.weight_paths(), strict=strict, only=incomplete)
        assert report is not None
        report.missing.update({slot: again.missing[slot] for slot in incomplete if slot in again.missing})

    if dtype_name != spec.dtype:
        base_dir = spec._base_dir
        spec = spec.model_copy(update={"dtype": dtype_name})
        spec._base_dir = base_dir
    for slot in ("vision", "llm"):
        if parts[slot] is None:
            continue
        if slot in streamed:  # the quantizer casts layer by layer
            parts[slot].to(device=device)
        else:
            parts[slot].to(device=device, dtype=torch_dtype(dtype_name))
    parts = _quantize(quantizers, parts, device, torch_dtype(dtype_name), streamed)
    for part in parts.values():  # a few rows (beam search, prefixes, queries) run faster on the CPU
        if part is not None:
            use_small_batch_linears(part)

    pipeline = Pipeline(spec, parts["vision"], parts["bridge"], parts["llm"], preprocessor)
    pipeline.load_report = report
    pipeline.to(device)
    return pipeline.eval()  # inference by default, as from_pretrained; pipeline.train() for training


def _build_component(slot: str, registry: Registry, spec: PipelineSpec, options: dict[str, Any], parts: dict) -> Any:
    """Call the factory of ``slot`` (vision / llm / bridge; the bridge reads ``parts``' widths)."""
    if slot == "vision":
        vision_c = registry.get("vision_encoder", spec.vision.name)
        return _expect(vision_c.factory(options["vision"]), VisionEncoder, "vision encoder", vision_c)
    if slot == "llm":
        llm_c = registry.get("language_model", spec.llm.name)
        return _expect(llm_c.factory(options["llm"]), LanguageModel, "language model", llm_c)
    bridge_c = registry.get("bridge", spec.bridge.name)
    llm = parts["llm"]
    bridge = bridge_c.factory(
        options["bridge"], vision_width=parts["vision"].width, llm_hidden_size=llm.hidden_size if llm is not None else None
    )
    return _expect(bridge, Bridge, "bridge", bridge_c)


def _build_deferred(slot: str, build: Callable[[str], Any], dtype_name: str, keep_checkpoint_dtype: bool = False) -> Any:
    """``build(slot)`` with its parameters on ``meta``, the frozen parts (vision, llm) cast to
    ``dtype_name`` (free on meta: the checkpoint's tensors are then cast once, as they are assigned),
    or, with ``keep_checkpoint_dtype``, marked to take the checkpoint's tensors in their own dtype.
    None when the factory cannot build on meta (it read a parameter's values): build it as usual."""
    try:
        with parameters_on_meta():
            component = build(slot)
    except (NotImplementedError, RuntimeError) as error:
        log.debug("%s: cannot be built on the meta device (%s); building it with random weights", slot, error)
        return None
    if slot == "bridge":
        return component
    if keep_checkpoint_dtype:
        keep_checkpoint_dtypes(component)
    else:
        component.to(dtype=torch_dtype(dtype_name))
    return component


def _quantizers(spec: PipelineSpec, registry: Registry, options: dict[str, Any]) -> dict[str, Quantizer]:
    """component -> its quantizer, for each ``spec.quantize`` entry (built before anything loads)."""
    quantizers = {}
    for target, ref in spec.quantize.items():
        quant_c = registry.get("quantizer", ref.name, path=f"quantize.{target}.name")
        quantizers[target] = _expect(quant_c.factory(options[f"quantize.{target}"]), Quantizer, "quantizer", quant_c)
    return quantizers


def quantizes_while_loading(quantizer: Quantizer) -> bool:
    """Whether the quantizer opts in (``quantizes_while_loading = True``, see ``Quantizer``)."""
    return getattr(quantizer, "quantizes_while_loading", False) is True


def _quantize(
    quantizers: dict[str, Quantizer], parts: dict[str, Any], device: torch.device, dtype: torch.dtype, streamed: set[str]
) -> dict[str, Any]:
    """Apply each quantizer to its component. The component is already on its device (quantizers
    pick their kernels by the device of the weights); the bridge is moved there first. A component
    in ``streamed`` is still in its checkpoint's dtype: its quantizer gets ``dtype`` to cast to."""
    parts = dict(parts)
    for target, quantizer in quantizers.items():
        if parts[target] is None:
            raise Blip2Error(f"quantize.{target}: this pipeline has no {target} component")
        if target in streamed:
            parts[target] = quantizer.quantize(parts[target], dtype=dtype)
        else:
            parts[target] = quantizer.quantize(parts[target].to(device))
    return parts
