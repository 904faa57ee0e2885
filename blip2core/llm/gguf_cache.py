"""Dequantised GGUF weights, cached as a ``save_pretrained``-style folder of safetensors.

transformers dequantises a GGUF file to float32 on every ``from_pretrained`` (~24 s for a 135M
model, plus ~15 s to read its tokenizer and config). The first load writes the result once::

    <cache root>/gguf/<file stem>-<key>/
        config.json             (quantization_config dropped)
        generation_config.json
        model.safetensors       (float32, tied output embedding stored once)
        tokenizer.json, tokenizer_config.json, ...
        source.json             (which GGUF file it came from)

``key`` hashes the GGUF file's absolute path, size, modification time and the transformers
version, so a changed file gets a fresh entry. Later loads read the folder (well under a second)
and give identical logits. Nothing is unpickled: the cache holds safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from blip2core.atomic import atomic_folder
from blip2core.errors import CheckpointError
from blip2core.llm.sources import blip2_cache_root

WEIGHTS_NAME = "model.safetensors"
_REQUIRED = ("config.json", WEIGHTS_NAME, "source.json")


def gguf_cache_folder(gguf: Path, root: Path | None = None) -> Path:
    """The cache folder for this GGUF file (whether or not it exists yet)."""
    import transformers

    stat = gguf.stat()
    ident = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return (root or blip2_cache_root()) / "gguf" / f"{gguf.stem}-{key}"


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED)


def dequantised_gguf_folder(gguf: Path, model_class: Any, root: Path | None = None) -> Path:
    """The cache folder of ``gguf``, dequantising into it first when it is not there yet.

    Args:
        gguf: a local ``.gguf`` file.
        model_class: the transformers ``*ForCausalLM`` class that reads it.
        root: cache root; default ``blip2_cache_root()``.
    """
    folder = gguf_cache_folder(gguf, root)
    if not is_complete(folder):
        _write_cache(gguf, model_class, folder)
    return folder


def _write_cache(gguf: Path, model_class: Any, folder: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    try:
        model = model_class.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{gguf}: cannot read as a {model_class.__name__} GGUF file: {exc}") from None

    # another process may finish the same entry first: a complete folder is kept, a half-written one
    # (left by a crash) replaced
    with atomic_folder(folder, keep_existing=is_complete) as tmp:
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_file(_unique_tensors(model.state_dict()), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        stat = gguf.stat()
        source = {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n")


def _unique_tensors(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop every tensor that shares storage with an earlier one (a tied ``lm_head``)."""
    seen: set[tuple] = set()
    unique = {}
    for key, tensor in state_dict.items():
        identity = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride())
        if identity in seen:
            continue
        seen.add(identity)
        unique[key] = tensor.contiguous()
    return unique
