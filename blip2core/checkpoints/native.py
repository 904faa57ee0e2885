"""The native format: a spec file plus safetensors of the trainable parts only.

Layout of a saved folder::

    pipeline.yaml          the spec; its ``weights`` list names the frozen parts' sources
                           (absolute paths or hub ids) followed by trainable.safetensors
    trainable.safetensors  the bridge's tensors, keys ``bridge.*``
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import save_file

from blip2core.atomic import atomic_file
from blip2core.spec import PipelineSpec

SPEC_FILE = "pipeline.yaml"
TRAINABLE_FILE = "trainable.safetensors"


class SavablePipeline(Protocol):
    """What ``save_pipeline`` reads of a ``Pipeline`` (typed here so that this module does not
    import ``blip2core.pipeline``, which imports it)."""

    spec: PipelineSpec

    def trainable_state_dict(self) -> Mapping[str, torch.Tensor]: ...


def is_native_folder(folder: Path) -> bool:
    return (folder / SPEC_FILE).is_file()


def save_pipeline(pipeline: SavablePipeline, folder: str | Path) -> Path:
    """Write pipeline.yaml and trainable.safetensors into folder (each atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in pipeline.trainable_state_dict().items()}
    with atomic_file(folder / TRAINABLE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})

    # earlier trainable snapshots are superseded: the new file holds every trainable tensor
    frozen_sources = [str(p.resolve()) for p in pipeline.spec.weight_paths() if p.name != TRAINABLE_FILE]
    # where it ran is not part of the model: load_pipeline(folder, device=...) picks the device
    spec = pipeline.spec.model_copy(update={"weights": [*frozen_sources, TRAINABLE_FILE], "device": "cpu"})
    with atomic_file(folder / SPEC_FILE) as tmp:
        spec.to_file(tmp)
    return folder
