"""What training produced, as a model: a run's output folder and its ``checkpoints/step-N`` folders.

Layout written by ``blip2 train`` (plugin blip2-runner)::

    runs/vqa/                      the run's output_dir
        run.yaml                   the run config, its ``pipeline`` the composed spec
        checkpoints/
            step-00000500/
                pipeline.yaml      the spec (frozen sources + trainable.safetensors): a native folder
                trainable.safetensors   the bridge's tensors, keys ``bridge.*``
                ...                optimizer / RNG / data state for resuming

A run folder loads as its newest checkpoint. A checkpoint written before checkpoints carried their
own ``pipeline.yaml`` loads with the ``pipeline`` of the run's ``run.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path

from blip2core.errors import CheckpointError
from blip2core.spec import PipelineSpec, read_structured_file

CHECKPOINTS_DIR = "checkpoints"
RUN_FILE = "run.yaml"
TRAINABLE_FILE = "trainable.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def list_steps(run_folder: Path) -> list[Path]:
    """Complete checkpoints of a run (``checkpoints/step-N`` holding trainable weights), oldest first."""
    root = Path(run_folder) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / TRAINABLE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def is_run_folder(folder: Path) -> bool:
    """A training run's output folder (``run.yaml`` or a ``checkpoints`` folder inside)."""
    return (folder / RUN_FILE).is_file() or (folder / CHECKPOINTS_DIR).is_dir()


def is_step_folder(folder: Path) -> bool:
    """One ``checkpoints/step-N`` folder of a run."""
    return bool(_STEP_DIR.match(folder.name)) and folder.parent.name == CHECKPOINTS_DIR and (
        folder / TRAINABLE_FILE).is_file()


def newest_step(folder: Path) -> Path:
    """The checkpoint a run folder (or its ``checkpoints`` folder) stands for: the newest.

    Raises:
        CheckpointError: the run has no complete checkpoint yet.
    """
    run = folder.parent if folder.name == CHECKPOINTS_DIR and not (folder / RUN_FILE).is_file() else folder
    steps = list_steps(run)
    if not steps:
        raise CheckpointError(
            f"{folder}: a training run's folder without a checkpoint yet (blip2 train writes "
            f"{CHECKPOINTS_DIR}/step-N every training.checkpoint_every steps and at the end)"
        )
    return steps[-1]


def legacy_step_spec(step: Path) -> PipelineSpec:
    """The spec of a checkpoint without its own ``pipeline.yaml``: the run.yaml's ``pipeline``
    with the checkpoint's trainable weights applied last."""
    run_file = step.parent.parent / RUN_FILE
    if not run_file.is_file():
        raise CheckpointError(f"{step}: a checkpoint without pipeline.yaml, and its run has no {RUN_FILE} to "
                              "say which pipeline it trained")
    data = read_structured_file(run_file)
    pipeline = data.get("pipeline") if isinstance(data, dict) else None
    if not isinstance(pipeline, dict):
        raise CheckpointError(f"{run_file}: 'pipeline' is not a spec mapping")
    spec = PipelineSpec.from_dict(pipeline, source=f"{run_file}: pipeline")
    spec._base_dir = run_file.parent
    weights = [str(p) for p in spec.weight_paths() if p.name != TRAINABLE_FILE] + [str(step / TRAINABLE_FILE)]
    out = PipelineSpec.from_dict({**spec.model_dump(), "weights": weights}, source=str(run_file))
    out._base_dir = step
    return out
