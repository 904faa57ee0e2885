"""Seeded construction: what ``PipelineSpec.seed`` does.

A component built without pretrained weights (an untrained bridge, an encoder or LLM built from
a bare config) is initialised from torch's random generator. With a seed, each component is
built inside ``seeded_construction(seed, slot)``: torch's CPU generator is seeded from the seed
and the component's slot (so the vision encoder's weights do not depend on which LLM follows),
and restored afterwards, so loading a pipeline leaves the caller's random state as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: each slot draws from its own stream: seed + offset
SLOT_OFFSETS: dict[str, int] = {"vision": 0, "llm": 1, "bridge": 2}


def slot_seed(seed: int, slot: str) -> int:
    """The seed of one component's construction (a 64-bit value)."""
    return (seed + SLOT_OFFSETS[slot]) % 2**64


@contextmanager
def seeded_construction(seed: int | None, slot: str) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded for ``slot``; restore its state afterwards.

    ``seed`` None: nothing changes (the block draws from the global random state, as usual).
    Only the CPU generator is seeded (components are built on the CPU, then moved); CUDA
    generators are not touched."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(slot_seed(seed, slot))
        yield
