"""blip2-ray: caption / answer / features over large image sets on Ray Data, written as resumable
Parquet shards (docs/scaling.md).

``run_batch(task, images, model=..., out=...)`` runs a job; ``read_results(out)`` reads every row
back as one pyarrow Table; ``connect(address=None, num_cpus=None)`` joins or starts Ray. Importing
this package imports neither ray nor torch (``blip2 --help`` loads the plugin); the names load on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"run_batch": "blip2_ray.run", "RunSummary": "blip2_ray.run", "connect": "blip2_ray.run",
            "read_results": "blip2_ray.shards", "ResumeRefused": "blip2_ray.shards"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'blip2_ray' has no attribute {name!r}")
