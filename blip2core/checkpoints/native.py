"""The native format: a spec file plus safetensors of what a load could not re-create.

Layout of a saved folder::

    pipeline.yaml          the spec; its ``weights`` list names the frozen parts' sources
                           (absolute paths or hub ids) followed by trainable.safetensors
    trainable.safetensors  the bridge's trainable tensors, keys ``bridge.*``; plus the whole
                           state (``vision.*``, ``bridge.*``, ``llm.*``) of every component whose
                           weights nothing else re-creates (see ``unrecreatable_slots``)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from safetensors.torch import save_file
from torch import nn

from blip2core.atomic import atomic_file
from blip2core.checkpoints.layouts import SLOTS
from blip2core.errors import Blip2Error
from blip2core.protocols import LoadsOwnWeights
from blip2core.spec import PipelineSpec

if TYPE_CHECKING:
    from blip2core.checkpoints.apply import LoadReport

SPEC_FILE = "pipeline.yaml"
TRAINABLE_FILE = "trainable.safetensors"


class SavablePipeline(Protocol):
    """What ``save_pipeline`` reads of a ``Pipeline`` (typed here so that this module does not
    import ``blip2core.pipeline``, which imports it)."""

    spec: PipelineSpec
    vision: nn.Module
    bridge: nn.Module
    llm: nn.Module | None
    load_report: LoadReport | None

    def trainable_state_dict(self) -> Mapping[str, torch.Tensor]: ...

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


def is_native_folder(folder: Path) -> bool:
    return (folder / SPEC_FILE).is_file()


def unrecreatable_slots(pipeline: SavablePipeline) -> list[str]:
    """Components whose weights loading the saved spec would not give back: those drawn at random
    with no ``spec.seed`` to draw them again, that loaded no pretrained weights of their own
    (``LoadsOwnWeights``) and that the spec's checkpoints did not cover completely."""
    if pipeline.spec.seed is not None:
        return []
    report = pipeline.load_report
    out = []
    for slot in SLOTS:
        module = getattr(pipeline, slot, None)
        if module is None or not module.state_dict():
            continue
        if isinstance(module, LoadsOwnWeights) and module.weights_loaded:
            continue
        if report is not None and slot in report.loaded_slots and not report.missing.get(slot):
            continue
        out.append(slot)
    return out


def tensors_to_save(pipeline: SavablePipeline, superseded: list[str]) -> dict[str, torch.Tensor]:
    """The trainable state, the whole state of each ``unrecreatable_slots`` component, and every
    key the ``superseded`` native files held (the new file replaces them), as CPU copies."""
    slots = unrecreatable_slots(pipeline)
    quantized = [slot for slot in slots if slot in pipeline.spec.quantize]
    if quantized:
        raise Blip2Error(
            f"cannot save: the {', '.join(quantized)} weights are random (no pretrained weights, no checkpoint, "
            "no spec seed) and quantized, so they can be neither re-created nor stored; set 'seed' in the spec, "
            "or save the pipeline before quantizing"
        )
    report = pipeline.load_report
    state = pipeline.state_dict()
    wanted = {key for key in state if key.split(".", 1)[0] in slots}
    for source in superseded:
        wanted |= set(report.native_keys.get(source, ())) if report is not None else set()
    lost = sorted(key for key in wanted if key not in state)
    if lost:
        raise Blip2Error(
            f"cannot save: {len(lost)} tensor(s) of the snapshot this save replaces are no longer in the pipeline "
            f"(e.g. {lost[0]}; a quantized component?)"
        )
    tensors = {key: state[key] for key in wanted}
    tensors.update(pipeline.trainable_state_dict())
    # clone: tied weights share memory, which safetensors refuses
    return {key: value.detach().to("cpu").clone().contiguous() for key, value in tensors.items()}


def save_pipeline(pipeline: SavablePipeline, folder: str | Path) -> Path:
    """Write pipeline.yaml and trainable.safetensors into folder (each atomically)."""
    folder = Path(folder)
    weight_paths = pipeline.spec.weight_paths()
    # earlier trainable snapshots are superseded: the new file holds every tensor they held
    superseded = [str(p) for p in weight_paths if p.name == TRAINABLE_FILE]
    tensors = tensors_to_save(pipeline, superseded)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / TRAINABLE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})

    frozen_sources = [str(p.resolve()) for p in weight_paths if p.name != TRAINABLE_FILE]
    # where it ran is not part of the model: load_pipeline(folder, device=...) picks the device
    spec = pipeline.spec.model_copy(update={"weights": [*frozen_sources, TRAINABLE_FILE], "device": "cpu"})
    with atomic_file(folder / SPEC_FILE) as tmp:
        spec.to_file(tmp)
    return folder
