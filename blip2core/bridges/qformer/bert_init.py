"""Initialise a Q-Former from a BERT-architecture checkpoint, as BLIP-2 does from bert-base-uncased.

Copied: word / position embeddings and the embedding LayerNorm, every layer's self-attention, and every
layer's FFN into both ``text_ffn`` and ``query_ffn`` (LAVIS copies ``intermediate``/``output`` into
``intermediate_query``/``output_query``); the MLM head's transform and bias into ``lm_head`` when present.
Not copied: token-type embeddings and the pooler (the Q-Former has neither), next-sentence heads.
Left random: cross-attention, queries, ITC / ITM heads, the LLM projection, layers past the checkpoint's.
A smaller vocabulary (or fewer positions) fills the leading rows; the rest keep their random init.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blip2core.bridges.qformer.checkpoint_keys import BERT
from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.modeling import QFormerBridge
from blip2core.bridges.qformer.weight_loading import apply_plan, plan_copy
from blip2core.checkpoints.files import SAFETENSORS_INDEX, SAFETENSORS_SINGLE, TORCH_SINGLE, read_state_dict
from blip2core.errors import CheckpointError

logger = logging.getLogger(__name__)

#: options that must equal the checkpoint's config.json entries for its weights to mean the same thing
_MUST_MATCH = ("hidden_size", "intermediate_size", "num_attention_heads", "hidden_act")
#: own tables that may be larger than the checkpoint's (e.g. vocab 30523 = BERT's 30522 + "[DEC]")
_LEADING_ROWS_OK = (
    "text_embeddings.word_embeddings.weight",
    "text_embeddings.position_embeddings.weight",
    "lm_head.bias",
)


@dataclass
class InitReport:
    """What ``init_from`` did.

    Attributes:
        source: the checkpoint folder.
        copied: (checkpoint key, own name) pairs, one per own parameter filled.
        partial_rows: own names that received only the checkpoint's leading rows.
        unused_source_keys: checkpoint keys copied nowhere (token types, pooler, extra layers, ...).
        left_random: own names that keep their random init.
    """

    source: str
    copied: list[tuple[str, str]] = field(default_factory=list)
    partial_rows: list[str] = field(default_factory=list)
    unused_source_keys: list[str] = field(default_factory=list)
    left_random: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for logs."""
        return (
            f"qformer init_from {self.source}: copied {len(self.copied)} tensors"
            f" (leading rows only: {self.partial_rows or 'none'});"
            f" unused checkpoint keys: {self.unused_source_keys or 'none'};"
            f" left random: {len(self.left_random)} tensors ({_group(self.left_random)})"
        )


def init_from_bert(bridge: QFormerBridge, folder: str | Path) -> InitReport:
    """Copy a BERT checkpoint's weights into ``bridge`` (in place) and return the report.

    Raises:
        CheckpointError: no weights in the folder, a config that contradicts the options, or a shape mismatch.
    """
    folder = Path(folder)
    check_bert_config(bridge.options, folder)
    source_state = read_checkpoint_folder(folder)
    own_state = bridge.state_dict()
    plan = plan_copy(own_state, source_state, BERT, leading_rows_ok=_LEADING_ROWS_OK)
    left_random = apply_plan(own_state, plan, bridge)
    ignored = [name for name in source_state if BERT.is_ignored(name)]
    report = InitReport(
        source=str(folder),
        copied=[(source, own) for own, (source, _) in plan.assignments.items()],
        partial_rows=sorted(set(plan.partial_rows)),
        unused_source_keys=plan.unexpected + ignored,
        left_random=left_random,
    )
    logger.info(report.summary())
    return report


def read_checkpoint_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face model folder: ``model.safetensors`` (single or sharded with its
    ``.index.json``) or ``pytorch_model.bin``, read by ``blip2core.checkpoints.files.read_state_dict``."""
    if not any((folder / name).is_file() for name in (SAFETENSORS_SINGLE, SAFETENSORS_INDEX, TORCH_SINGLE)):
        raise CheckpointError(
            f"qformer init_from {str(folder)!r}: no {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX} or "
            f"{TORCH_SINGLE} there"
        )
    return read_state_dict(folder)


def check_bert_config(options: QFormerOptions, folder: str | Path) -> None:
    """Fail fast when the checkpoint's ``config.json`` contradicts the options (width, FFN, heads, activation).

    Raises:
        CheckpointError: listing every mismatching field; or the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"qformer init_from {str(folder)!r} is not a folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        return  # the per-tensor shape checks still apply
    config = json.loads(config_path.read_text())
    mismatches = [
        f"{name}={config[name]!r} (options say {getattr(options, name)!r})"
        for name in _MUST_MATCH
        if name in config and config[name] != getattr(options, name)
    ]
    if mismatches:
        raise CheckpointError(
            f"qformer init_from {str(folder)!r} has {', '.join(mismatches)}: set these qformer options "
            f"to the checkpoint's values"
        )


def _group(names: list[str]) -> str:
    """Short description of many parameter names: their module paths without layer indices."""
    groups = sorted({".".join(part for part in name.split(".")[:-1] if not part.isdigit()) or name for name in names})
    return ", ".join(groups)
