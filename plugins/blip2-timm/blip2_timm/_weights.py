"""Reading weight files safely and copying named tensors into a module.

Identical copies of this module live in blip2-eva-clip, blip2-clip-vit and blip2-timm so that
each plugin installs on its own; it belongs in the core (``blip2core.checkpoints``) once the core
offers a reader.

Files are read without executing code: ``.safetensors`` directly, anything else with
``torch.load(..., weights_only=True)``. A folder is read as a Hugging Face model folder
(``model.safetensors`` / sharded ``*.safetensors`` with an index / ``pytorch_model.bin``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from blip2core.errors import CheckpointError

#: keys under which training scripts nest the state dict (LAVIS: "model", open_clip: "state_dict")
_NESTING_KEYS = ("model", "state_dict", "module")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_state_dict(path: str | Path, prefixes: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a weights file or Hugging Face folder, by their stored names.

    Args:
        path: a ``.safetensors`` file, a torch file (``.pth``/``.pt``/``.bin``), or a folder.
        prefixes: keep only keys starting with one of these (None keeps every key). With
            safetensors only those tensors are read from disk.

    Raises:
        CheckpointError: the path does not exist, or the file cannot be read safely.
    """
    path = Path(path).expanduser()
    keep = tuple(prefixes) if prefixes is not None else None
    if path.is_dir():
        files = _files_in_folder(path, keep)
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(_read_file(file, keep))
        return state
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    return _read_file(path, keep)


def stored_keys(path: str | Path) -> list[str] | None:
    """The tensor names in a safetensors file or HF folder without reading tensors.

    Returns None for torch files (their names are only known after reading them) and for paths
    that do not exist (``read_state_dict`` reports those).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            return list(json.loads(index.read_text())["weight_map"])
        files = sorted(path.glob("*.safetensors"))
        if not files:
            return None
        return [k for file in files for k in _safetensors_keys(file)]
    if path.is_file() and path.suffix == ".safetensors":
        return _safetensors_keys(path)
    return None


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _files_in_folder(folder: Path, keep: tuple[str, ...] | None) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        shards = sorted({f for k, f in weight_map.items() if keep is None or k.startswith(keep)})
        return [folder / shard for shard in shards]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        found = sorted(p for p in folder.iterdir() if p.suffix in _TORCH_SUFFIXES)
    if not found:
        raise CheckpointError(f"{folder}: folder holds no .safetensors or .bin/.pth weights file")
    return found


def _read_file(path: Path, keep: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                state = {k: handle.get_tensor(k) for k in handle.keys() if keep is None or k.startswith(keep)}
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
        return state
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot be read as tensors with torch.load(weights_only=True) "
            f"(arbitrary pickled objects are never loaded): {first_line}"
        ) from None
    state = _unnest(loaded, path)
    return {k: v for k, v in state.items() if keep is None or k.startswith(keep)}


def _unnest(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the flat name -> tensor mapping inside what torch.load returned."""
    while isinstance(loaded, Mapping):
        nested = next((loaded[k] for k in _NESTING_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if nested is None:
            break
        loaded = nested
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict of named tensors")
    state = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def copy_into(
    module: nn.Module,
    mapped: Mapping[str, tuple[str, torch.Tensor]],
    *,
    source: str,
) -> tuple[list[str], list[str]]:
    """Copy tensors into ``module`` by its own parameter/buffer names.

    Args:
        mapped: own name -> (name in the source, tensor).
        source: where the tensors came from, for error messages (a file path or a layout).

    Returns:
        (missing, unexpected): own names that got no tensor, in ``state_dict`` order, and
        source names whose own name does not exist in ``module``.

    Raises:
        CheckpointError: a tensor's shape differs from the parameter it is meant for.
    """
    own = module.state_dict()
    usable: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for own_key, (source_key, tensor) in mapped.items():
        target = own.get(own_key)
        if target is None:
            unexpected.append(source_key)
            continue
        if tuple(target.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key {source_key!r} (for {own_key!r}) has the wrong shape: "
                f"expected {tuple(target.shape)}, found {tuple(tensor.shape)}"
            )
        usable[own_key] = tensor
    module.load_state_dict(usable, strict=False)
    missing = [k for k in own if k not in usable]
    return missing, sorted(set(unexpected))


def raise_if_missing(missing: list[str], source: str, allowed: Iterable[str] = ()) -> None:
    """CheckpointError listing the parameters a weights file left unset (``allowed`` excepted)."""
    allowed = set(allowed)
    left = [k for k in missing if k not in allowed]
    if left:
        shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
        raise CheckpointError(f"{source}: weights missing for {shown}")
