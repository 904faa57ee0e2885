"""``PipelineWorker``: the callable class of ``map_batches``, one loaded pipeline per Ray actor.

Each call gets a batch of rows {"name": [N], "path": [N]}, reads the images (unreadable ones
become error rows, named by path, while the others are processed), runs the job on the readable
ones, writes the batch as one shard (atomically) and returns a summary {"name", "error" (empty
when it worked), "shard"} per image, which is all that travels back to the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from blip2core.plugin_api import load_batch, load_pipeline, pipeline_fingerprint

from blip2_ray.identity import with_fingerprint
from blip2_ray.shards import write_shard
from blip2_ray.tasks import Job


class PipelineWorker:
    """Loads the pipeline once (``load_pipeline(model, **load)``) and checks that its fingerprint
    is the one the output folder's shards record (``expected``; None for a new folder)."""

    def __init__(self, model: Any, load: dict[str, Any], job: Job, run: dict[str, Any], out: str,
                 expected: dict[str, Any] | None) -> None:
        self.pipe = load_pipeline(model, **load)
        self.run = with_fingerprint(run, pipeline_fingerprint(self.pipe), expected, out)
        self.job = job
        self.out = Path(out)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [str(n) for n in batch["name"]]
        paths = [str(p) for p in batch["path"]]
        loaded = load_batch(self.pipe, paths)
        errors: list[str | None] = [None] * len(names)
        for failure in loaded.failures:
            errors[failure.index] = failure.message
        results = self.job.columns(self.pipe, loaded.pixel_values) if loaded.indices else {}
        shard = write_shard(self.out, names, paths, errors, results, self.run)
        return {"name": np.array(names, dtype=object), "error": np.array([e or "" for e in errors], dtype=object),
                "shard": np.array([shard.name] * len(names), dtype=object)}
