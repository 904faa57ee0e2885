"""Read a state dict from disk without ever unpickling arbitrary objects."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from blip2core.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
TORCH_SINGLE = "pytorch_model.bin"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or folder.

    Accepts ``.safetensors``; ``.pth`` / ``.bin`` / ``.pt`` read with ``weights_only=True`` (a
    LAVIS ``{"model": state_dict, ...}`` is unwrapped); or a folder holding ``model.safetensors``,
    a sharded ``model.safetensors.index.json`` or ``pytorch_model.bin``.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None
    if path.suffix in (".pth", ".bin", ".pt"):
        return _read_torch_file(path)
    raise CheckpointError(f"{path}: unsupported checkpoint format {path.suffix!r} (use .safetensors, .pth or .bin)")


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_state_dict(folder / shard))
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise CheckpointError(f"{index}: shards lack tensors the index lists: {', '.join(missing[:10])}")
        return state
    for name in (SAFETENSORS_SINGLE, TORCH_SINGLE):
        if (folder / name).exists():
            return read_state_dict(folder / name)
    raise CheckpointError(
        f"{folder}: no weights found (expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX} or {TORCH_SINGLE})"
    )


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(exc).__name__}: {exc}). "
            "Files that need full unpickling are refused: convert them to safetensors on a trusted machine."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # LAVIS: {"model": state_dict, "optimizer": ..., ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or LAVIS's {{'model': state_dict}})")
    return obj
