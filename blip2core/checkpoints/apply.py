"""Copy checkpoint tensors into a composed pipeline, component by component."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from blip2core.checkpoints.copying import copy_into, frozen_parameter_names
from blip2core.checkpoints.files import read_state_dict, stored_keys
from blip2core.checkpoints.layouts import SLOTS, detect_layout, split_by_slot
from blip2core.errors import CheckpointError
from blip2core.protocols import LoadsForeignCheckpoints, LoadsOwnWeights

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What loading checkpoints did.

    Attributes:
        sources: each checkpoint with the layout it was read as.
        loaded_slots: components that received weights.
        native_keys: each checkpoint in the native layout -> the keys it held (``Pipeline.save``
            re-writes those of a snapshot its new file supersedes).
        missing: component -> its keys that no checkpoint provided (for components that got weights).
        unexpected: keys of the checkpoints that no component took.
    """

    sources: list[tuple[str, str]] = field(default_factory=list)
    loaded_slots: set[str] = field(default_factory=set)
    native_keys: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        named = ", ".join(f"{path} ({layout} layout)" for path, layout in self.sources) or "no checkpoint"
        lines = [f"loaded {', '.join(sorted(self.loaded_slots)) or 'nothing'} from {named}"]
        for slot, keys in self.missing.items():
            if keys:
                lines.append(f"{slot}: {len(keys)} missing key(s): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected key(s): {', '.join(self.unexpected[:8])}")
        return "\n".join(lines)


def slots_in_checkpoints(sources: list[str | Path]) -> set[str]:
    """The components (vision / bridge / llm) that ``sources`` hold tensors for, judged from the
    tensor names alone (safetensors headers, a sharded folder's index); every slot when some
    source's names are only known by reading it (a torch file) or cannot be read (loading reports that)."""
    slots: set[str] = set()
    for source in sources:
        try:
            keys = stored_keys(source)
            if keys is None:
                return set(SLOTS)
            parts, _ = split_by_slot(dict.fromkeys(keys), detect_layout(keys, source=str(source)))
        except CheckpointError:
            return set(SLOTS)
        slots |= {slot for slot, part in parts.items() if part}
    return slots


def load_checkpoints(
    components: dict[str, nn.Module | None],
    sources: list[str | Path],
    *,
    strict: bool = True,
    only: set[str] | None = None,
) -> LoadReport:
    """Apply each checkpoint in order (later ones override earlier ones).

    Args:
        components: slot name (vision / bridge / llm) -> module (None when the pipeline has no such part).
        sources: files or folders (see ``read_state_dict``).
        strict: raise CheckpointError when a component that received weights is left with missing
            keys, or a checkpoint key belongs to no component; otherwise only log them.
        only: load these slots alone (the others' keys are neither written nor reported).
    """
    report = LoadReport()
    # a component that loaded its own pretrained weights (``weights_loaded = True``) is complete
    # already: a checkpoint may update part of it (LAVIS saves ln_vision but not the ViT)
    still_missing: dict[str, set[str]] = {
        slot: set() for slot, module in components.items() if isinstance(module, LoadsOwnWeights) and module.weights_loaded
    }
    if only is not None:
        still_missing = {slot: keys for slot, keys in still_missing.items() if slot in only}
    for source in sources:
        state = read_state_dict(source)
        layout = detect_layout(state.keys(), source=str(source))
        report.sources.append((str(source), layout))
        if layout == "native":
            report.native_keys[str(source)] = list(state)
        parts, unrouted = split_by_slot(state, layout)
        report.unexpected += unrouted if only is None else []
        for slot in SLOTS:
            if not parts[slot] or (only is not None and slot not in only):
                continue
            module = components.get(slot)
            if module is None:
                report.unexpected += list(parts[slot])
                continue
            if layout == "native":  # keys are "<slot>." + the module's own names
                own = {key[len(slot) + 1:]: (key, tensor) for key, tensor in parts[slot].items()}
                missing, unexpected = copy_into(module, own, source=str(source))
                if slot == "bridge":  # native files store the trainable state: frozen bridge parts come from its build
                    frozen = frozen_parameter_names(module)
                    missing = [key for key in missing if key not in frozen]
            elif isinstance(module, LoadsForeignCheckpoints):
                missing, unexpected = module.load_foreign_state_dict(parts[slot], layout)
            else:
                raise CheckpointError(
                    f"{source}: holds {layout} weights for the {slot} component, but "
                    f"{type(module).__name__} cannot read that layout (no load_foreign_state_dict)"
                )
            report.unexpected += unexpected
            if slot in still_missing:
                still_missing[slot] &= set(missing)
            else:
                still_missing[slot] = set(missing)
            report.loaded_slots.add(slot)
    report.missing = {slot: sorted(keys) for slot, keys in still_missing.items()}
    problems = any(report.missing.values()) or report.unexpected
    if problems and strict:
        raise CheckpointError(f"checkpoint does not match the model:\n{report.summary()}")
    if problems:
        log.warning("checkpoint does not fully match the model:\n%s", report.summary())
    return report
