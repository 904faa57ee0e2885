"""Training checkpoints: trainable weights + optimizer/scheduler/RNG/data state, written atomically.

Layout under ``<output_dir>/checkpoints/``::

    step-00000500/
        trainable.safetensors   the bridge's parameters and buffers (Pipeline.trainable_state_dict)
        optimizer.safetensors   every tensor of the optimizer state, as ``state.<param>.<name>``
        rng.safetensors         torch CPU (and CUDA) generator states
        state.json              step, scheduler, data positions, optimizer param groups and
                                non-tensor state, python/numpy RNG state, run digest

A checkpoint is written into a hidden ``.tmp-step-...`` folder, each file fsynced, and then
renamed into place (one atomic ``rename``, by the SDK's ``atomic_folder``), so a reader sees a
complete checkpoint or none. Only
``keep`` most recent checkpoints stay. Nothing is pickled: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from blip2core.plugin_api import CheckpointError, PipelineSpec, atomic_folder, is_leftover
from blip2core.plugin_api import atomic_write_text  # noqa: F401  (trainer.py and cli.py import it from here)

CHECKPOINT_DIR = "checkpoints"
#: the spec file that makes a checkpoint folder loadable as a model (the core's native format)
SPEC_FILE = "pipeline.yaml"
TRAINABLE_FILE = "trainable.safetensors"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


# ---------------------------------------------------------------------------------------------
# optimizer state <-> (tensors, JSON)
# ---------------------------------------------------------------------------------------------


def optimizer_state_to_files(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    return tensors, meta


def optimizer_state_from_files(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------------------------------------
# RNG
# ---------------------------------------------------------------------------------------------


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    py_state = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    if "torch_cpu" in tensors:
        torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    if "python" in meta:
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in meta:
        name, keys, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------
# save / find / load
# ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    path: Path
    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]


def checkpoint_root(output_dir: Path | str) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def save_checkpoint(
    output_dir: Path | str,
    step: int,
    trainable: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    state: Mapping[str, Any],
    keep: int,
    metadata: Mapping[str, str] | None = None,
    spec: PipelineSpec | None = None,
) -> Path:
    """Write ``checkpoints/step-<step>`` atomically and keep only the ``keep`` newest.

    With ``spec`` (the pipeline's, see ``loadable_spec``) the folder also gets ``pipeline.yaml``, which
    makes it a model folder: ``load_pipeline(folder)``, ``--model runs/x/checkpoints/step-N``."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    with atomic_folder(final) as tmp:  # re-reaching a step after resuming from an older checkpoint replaces it
        weights = {k: v.detach().cpu().contiguous() for k, v in trainable.items()}
        save_file(weights, str(tmp / "trainable.safetensors"), metadata={"format": "pt", **(metadata or {})})
        opt_tensors, opt_meta = optimizer_state_to_files(optimizer_state)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
        rng_tensors, rng_meta = capture_rng()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        payload = {**state, "step": step, "optimizer": opt_meta, "rng": rng_meta}
        (tmp / "state.json").write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
        if spec is not None:
            spec.to_file(tmp / SPEC_FILE)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def loadable_spec(spec: PipelineSpec) -> PipelineSpec:
    """The spec to store beside a checkpoint's trainable weights: the frozen parts' sources as
    absolute paths, then ``trainable.safetensors`` (relative: the folder's own), on the CPU (where
    it ran is not part of the model), as ``Pipeline.save`` writes it."""
    frozen = [str(p.resolve()) for p in spec.weight_paths() if p.name != TRAINABLE_FILE]
    return spec.model_copy(update={"weights": [*frozen, TRAINABLE_FILE], "device": "cpu"})


def list_checkpoints(output_dir: Path | str) -> list[Path]:
    """Complete checkpoints, oldest first (hidden temp folders are never listed)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def clean_partial(output_dir: Path | str) -> list[Path]:
    """Remove leftovers of interrupted writes (``.tmp-*`` / ``.trash-*``); returns what was removed."""
    root = checkpoint_root(output_dir)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if is_leftover(p):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint folder from a folder path, a run's output folder (its newest checkpoint), or a
    ``trainable.safetensors`` path's parent."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent
    if (path / "state.json").is_file() or (path / "trainable.safetensors").is_file():
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    if path.name == CHECKPOINT_DIR:
        found = list_checkpoints(path.parent)
        if found:
            return found[-1]
    raise CheckpointError(f"{path}: no checkpoint here (expected a step-NNNNNNNN folder, a run's output "
                          "folder, or a .safetensors file)")


def load_trainable(path: Path | str) -> dict[str, torch.Tensor]:
    """The trainable weights of a checkpoint folder or a .safetensors file."""
    path = Path(path)
    file = path if path.suffix == ".safetensors" else resolve_checkpoint(path) / "trainable.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file}: no such file")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file: {exc}") from None


def load_checkpoint(path: Path | str) -> Checkpoint:
    folder = resolve_checkpoint(path)
    for name in FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: incomplete checkpoint, {name} is missing")
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("state.json is not a mapping with an integer 'step'")
        trainable = load_file(str(folder / "trainable.safetensors"))
        optimizer = optimizer_state_from_files(load_file(str(folder / "optimizer.safetensors")), state["optimizer"])
        rng_tensors = load_file(str(folder / "rng.safetensors"))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder}: unreadable checkpoint: {type(exc).__name__}: {exc}") from None
    return Checkpoint(folder, state["step"], trainable, optimizer, state, rng_tensors)


def load_trainable_into(pipeline: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``bridge.*`` weights into the pipeline; every key must match in name and shape."""
    own = pipeline.trainable_state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the pipeline's bridge"
            + (f"; missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + (f"; unexpected: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
        )
    for key, value in weights.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the pipeline's is {tuple(own[key].shape)}")
    bridge_state = {k[len("bridge."):]: v for k, v in weights.items()}
    # every trainable key was checked above; frozen bridge parameters are not stored and keep their values
    pipeline.bridge.load_state_dict(bridge_state, strict=False)
