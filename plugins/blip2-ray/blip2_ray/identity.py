"""What a run's rows depend on, as JSON data stored in every shard (``blip2_ray.shards``).

The driver knows, without loading the model: the task and its options, the model's spec (a
digest of ``resolve_spec(model)``, with every string naming an existing file or folder counted as
``"<path>"``, so a model folder that moved is still the same model) and the load options
(dtype, quantize). A worker adds the loaded pipeline's ``Fingerprint`` (blip2core: digests of the
vision / bridge spec and weights and of the preprocessing), which only a loaded model can tell.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from blip2core.plugin_api import Fingerprint, resolve_spec

from blip2_ray.shards import RUN_FORMAT, ResumeRefused
from blip2_ray.tasks import Job


def run_identity(job: Job, model: Any, load: dict[str, Any]) -> dict[str, Any]:
    """The driver's part of the identity (no ``fingerprint`` yet). Resolving the spec reads no
    weights; an unknown model raises the core's one-line error here, before the cluster works."""
    spec = resolve_spec(model).model_dump(mode="json")
    spec.pop("device", None)  # where it runs does not change the rows
    text = json.dumps(_portable(spec), sort_keys=True, separators=(",", ":"), default=str)
    return {"format": RUN_FORMAT, "job": job.identity(),
            "model": {"spec": hashlib.sha256(text.encode()).hexdigest()[:16],
                      "dtype": load.get("dtype"), "quantize": load.get("quantize") or {}}}


def with_fingerprint(run: dict[str, Any], fingerprint: Fingerprint, expected: dict[str, Any] | None,
                     out: str) -> dict[str, Any]:
    """``run`` with the loaded pipeline's fingerprint; ResumeRefused when the shards already in
    ``out`` record another one (``expected``)."""
    found = json.loads(fingerprint.to_json())
    if expected is not None and expected != found:
        stored = Fingerprint(**expected)
        differ = " and ".join(stored.differences(fingerprint))
        raise ResumeRefused(f"{out}: its shards were written by another pipeline ({differ} differ): stored "
                            f"[{stored}], this run [{fingerprint}]; resuming would mix two models' rows: choose "
                            "another output folder, or start afresh (resume=False, --overwrite)")
    return {**run, "fingerprint": found}


def _portable(value: Any) -> Any:
    """JSON data with every string that names an existing file or folder as ``"<path>"``."""
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item) for item in value]
    if isinstance(value, str) and value and os.path.exists(value):
        return "<path>"
    return value
