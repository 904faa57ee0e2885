"""Read a state dict from disk without ever unpickling arbitrary objects.

This is the one weights reader of blip2core and its plugins. Files are read without executing
code: ``.safetensors`` directly, torch files with ``torch.load(..., weights_only=True)``. A folder is
read as a Hugging Face model folder.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from blip2core.errors import CheckpointError, SpecError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
TORCH_SINGLE = "pytorch_model.bin"

TORCH_SUFFIXES = (".pth", ".bin", ".pt", ".ckpt")
#: keys under which training scripts nest the state dict (LAVIS: "model", Lightning/open_clip:
#: "state_dict", some DDP savers: "module"), tried in this order and unwrapped repeatedly
NESTING_KEYS = ("model", "state_dict", "module")


def read_state_dict(
    path: str | Path, prefixes: str | Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or folder, by their stored names.

    Accepts ``.safetensors``; ``.pth`` / ``.bin`` / ``.pt`` / ``.ckpt`` read with
    ``weights_only=True`` (a state dict nested under ``"model"`` (LAVIS), ``"state_dict"`` or
    ``"module"`` is unwrapped, values that are not tensors are dropped, and a ``module.`` prefix
    on every key (DistributedDataParallel) is removed); or a folder holding a sharded
    ``model.safetensors.index.json``, ``model.safetensors`` or ``pytorch_model.bin`` (in that
    order of preference), else every ``*.safetensors`` file in it, else every torch file in it.
    A file with another suffix is tried as a weights-only torch file.

    Args:
        path: a file or folder (``~`` is expanded).
        prefixes: keep only keys starting with one of these (None keeps every key). With
            safetensors only those tensors are read from disk, and of a sharded folder only the
            shards that hold them.

    Raises:
        CheckpointError: the path does not exist, or cannot be read safely; the message names it.
    """
    path = Path(path).expanduser()
    keep = _prefix_tuple(prefixes)
    if path.is_dir():
        return _read_folder(path, keep)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, keep)
    if path.suffix in TORCH_SUFFIXES:
        return _keep(_read_torch_file(path), keep)
    try:
        return _keep(_read_torch_file(path), keep)
    except CheckpointError:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {path.suffix!r} (use .safetensors, .pth or .bin)"
        ) from None


def check_weights_exist(weights: Sequence[str], paths: Sequence[Path], source: str = "spec") -> None:
    """Raise SpecError naming every ``weights`` entry whose file or folder does not exist
    (``paths``: the entries resolved, ``PipelineSpec.weight_paths()``), one line each:
    ``<source>: weights[1]: <path>: no such file or folder``."""
    problems = [
        f"{source}: weights[{i}]: {path}: no such file or folder" + (f" (given as {entry!r})" if entry != str(path) else "")
        for i, (entry, path) in enumerate(zip(weights, paths, strict=True))
        if not Path(path).expanduser().exists()
    ]
    if problems:
        raise SpecError("\n".join(problems))


def stored_keys(path: str | Path) -> list[str] | None:
    """The tensor names ``read_state_dict(path)`` would return, read without loading any tensor.

    Only known for safetensors files and folders whose weights are safetensors (from the
    index of a sharded folder, or the files' headers). Returns None for torch files (their names
    are known only after reading them) and for paths that do not exist or hold no weights
    (``read_state_dict`` reports those).

    Raises:
        CheckpointError: an unreadable safetensors header or index.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        index = path / SAFETENSORS_INDEX
        if index.is_file():
            return list(_weight_map(index))
        files = _weight_files(path)
        if not files or any(f.suffix != ".safetensors" for f in files):
            return None
        return [key for file in files for key in _safetensors_keys(file)]
    if path.is_file() and path.suffix == ".safetensors":
        return _safetensors_keys(path)
    return None


def _prefix_tuple(prefixes: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if prefixes is None:
        return None
    return (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)


def _keep(state: dict[str, torch.Tensor], keep: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    return state if keep is None else {k: v for k, v in state.items() if k.startswith(keep)}


def _weight_map(index: Path) -> dict[str, str]:
    try:
        return json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None


def _weight_files(folder: Path) -> list[Path]:
    """The weights files of a folder without an index (empty when it has none)."""
    for name in (SAFETENSORS_SINGLE, TORCH_SINGLE):
        if (folder / name).is_file():
            return [folder / name]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in TORCH_SUFFIXES)
    return found


def _read_folder(folder: Path, keep: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        weight_map = {k: f for k, f in _weight_map(index).items() if keep is None or k.startswith(keep)}
        for shard in sorted(set(weight_map.values())):
            state.update(read_state_dict(folder / shard, keep))
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise CheckpointError(f"{index}: shards lack tensors the index lists: {', '.join(missing[:10])}")
        return state
    files = _weight_files(folder)
    if not files:
        raise CheckpointError(
            f"{folder}: no weights found (expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX} or {TORCH_SINGLE})"
        )
    for file in files:
        state.update(read_state_dict(file, keep))
    return state


def _safetensors_keys(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None


def _read_safetensors(path: Path, keep: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    try:
        if keep is None:
            return load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(keep)}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch checkpoint: it needs full unpickling, which is "
            f"refused ({_unpickler_reason(exc)}); only .safetensors files and torch files that load with "
            "weights_only=True are accepted (convert it to safetensors on a trusted machine)"
        ) from None
    except Exception as exc:
        reason = " ".join(str(exc).split(". ")[0].split())
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {reason}); only .safetensors files "
            "and torch files that load with weights_only=True are accepted"
        ) from None
    return unwrap_state_dict(obj, source=str(path))


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused (``Unsupported global: GLOBAL print ...``), without
    its advice to unpickle fully."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|\. Please|$)", str(exc), re.S)
    return " ".join((match.group(1) if match else str(exc).split("\n")[0]).split())


def unwrap_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The flat name -> tensor mapping inside what ``torch.load`` returned.

    Unwraps ``{"model" | "state_dict" | "module": state_dict, ...}`` (repeatedly), drops values
    that are not tensors, and removes a ``module.`` prefix that every key carries.

    Raises:
        CheckpointError: ``obj`` holds no mapping with tensors; the message starts with ``source``.
    """
    while isinstance(obj, Mapping):
        nested = next((obj[k] for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested  # LAVIS: {"model": state_dict, "optimizer": ..., ...}
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not state:
        raise CheckpointError(
            f"{source}: expected a state dict of tensors (or one nested under "
            f"{' / '.join(repr(k) for k in NESTING_KEYS)}, as LAVIS's {{'model': state_dict}})"
        )
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
