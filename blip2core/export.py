"""Writing a loaded pipeline out to share it: ``blip2 export SOURCE OUT``.

Formats:
    native: ``Pipeline.save`` (pipeline.yaml + trainable.safetensors; the frozen parts stay
        referenced by path or hub id). Works for every pipeline.
    hf: a self-contained Hugging Face BLIP-2 folder (config.json, model.safetensors, tokenizer and
        processor files) that transformers' ``Blip2ForConditionalGeneration`` /
        ``Blip2ForImageTextRetrieval`` load. Possible when the frozen parts came from one Hugging Face
        BLIP-2 folder and the bridge is the core's ``qformer`` (its weights map back onto the HF names,
        ``blip2core.bridges.qformer.checkpoint_keys.HF``): the folder's tensors are copied with the
        Q-Former, query tokens, projections and heads replaced by the pipeline's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from blip2core.atomic import atomic_folder
from blip2core.bridges.qformer.checkpoint_keys import HF
from blip2core.checkpoints.files import read_state_dict
from blip2core.checkpoints.hf_blip2 import read_hf_config
from blip2core.checkpoints.layouts import PREFIXES
from blip2core.checkpoints.native import TRAINABLE_FILE
from blip2core.errors import CheckpointError

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

FORMATS = ("native", "hf")
#: files of a Hugging Face folder that are not weights and travel unchanged
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def hf_source_folder(pipe: Pipeline) -> Path | None:
    """The Hugging Face BLIP-2 folder the pipeline's frozen parts came from, None when they did not
    all come from one (or its bridge is not the core's ``qformer``)."""
    sources = [p for p in pipe.spec.weight_paths() if p.name != TRAINABLE_FILE]
    if pipe.spec.bridge.name != "qformer" or len(sources) != 1 or not sources[0].is_dir():
        return None
    return sources[0] if read_hf_config(sources[0]) is not None else None


def export_pipeline(pipe: Pipeline, out: str | Path, fmt: str = "native") -> Path:
    """Write ``pipe`` to ``out`` in ``fmt`` (``native`` or ``hf``); returns ``out``.

    Raises:
        CheckpointError: ``hf`` asked of a pipeline whose parts have no Hugging Face form, or
            ``out`` exists and is not empty.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: exists and is not an empty folder; choose a new output folder")
    if fmt == "native":
        with atomic_folder(out) as tmp:
            pipe.save(tmp)
        return out
    source = hf_source_folder(pipe)
    if source is None:
        raise CheckpointError(
            f"{out}: this pipeline has no Hugging Face BLIP-2 form (that needs the frozen parts from one HF "
            f"BLIP-2 folder and the core's qformer bridge; its bridge is {pipe.spec.bridge.name!r}, its weights "
            f"{[str(p) for p in pipe.spec.weight_paths()]}); export it with --format native"
        )
    state = read_state_dict(source)
    replaced = _replace_bridge_tensors(state, pipe.trainable_state_dict())
    with atomic_folder(out) as tmp:
        for item in source.iterdir():
            if item.is_file() and not item.name.endswith(_WEIGHT_SUFFIXES) and item.name not in _WEIGHT_INDEXES:
                shutil.copy2(item, tmp / item.name)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "exported_by": "blip2core", "replaced_tensors": str(replaced)})
    return out


def _replace_bridge_tensors(state: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor]) -> int:
    """Put the pipeline's bridge tensors under their HF names in ``state``; returns how many.

    Raises:
        CheckpointError: a trained tensor has no HF key to go to (other than the parts HF never
            stores: the ITG head and the temperature).
    """
    bridge_prefixes = [prefix for prefix, slot in PREFIXES["hf"] if slot == "bridge"]
    used: set[str] = set()
    for key in list(state):
        if not any(key.startswith(p) if p.endswith(".") else key == p for p in bridge_prefixes):
            continue
        for own in HF.own_names(key):
            trained = trainable.get(f"bridge.{own}")
            if trained is not None:
                state[key] = trained.detach().to("cpu", state[key].dtype).reshape(state[key].shape)
                used.add(own)
                break
    left = sorted(k[len("bridge."):] for k in trainable if k[len("bridge."):] not in used
                  and not HF.cannot_store(k[len("bridge."):]))
    if left:
        raise CheckpointError(
            f"trained bridge tensors with no place in the Hugging Face folder: {', '.join(left[:5])}"
            + (" ..." if len(left) > 5 else "") + "; export with --format native"
        )
    return len(used)
