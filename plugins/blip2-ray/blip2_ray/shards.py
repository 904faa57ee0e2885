"""The output folder: Parquet shards, one per batch, written atomically, read back to resume.

Layout: ``<out>/part-<digest>.parquet``, where the digest is of the batch's image names. Every
shard holds one row per image of its batch:

- ``name`` (string): the image's entry name (``blip2_ray.inputs``), the key a rerun skips by;
- ``path`` (string): the file as it was read;
- ``error`` (string, null when it worked): why the image could not be read;
- the result, null on error rows: ``caption`` or ``answer`` (string), or for features
  ``image_embeds`` / ``image_embeds_proj`` (fixed-size lists of float32, flattened [Q, H] / [Q, E];
  the per-row shapes are in the schema metadata ``blip2core.shapes``, as in ``blip2 features``
  Parquet files).

Schema metadata ``blip2_ray.run`` holds the run's identity as JSON (``RUN_FORMAT``; task,
question, options, the model's spec digest and load options, and the pipeline ``Fingerprint``),
so a resume with another model / task / question is refused instead of mixing two runs' rows.

A shard appears whole (``atomic_file``: a ``.tmp-`` name, then a rename) or not at all, so a
killed run loses at most the batches that were not written yet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from blip2core.plugin_api import Blip2Error, atomic_file, is_leftover

RUN_FORMAT = "blip2-ray/1"
RUN_KEY = b"blip2_ray.run"
SHAPES_KEY = b"blip2core.shapes"
SHARD_GLOB = "part-*.parquet"


class ResumeRefused(Blip2Error):
    """The output folder holds rows of another run (model, task, question or options), or a
    shard that cannot be read."""


def shard_path(out: Path, names: list[str]) -> Path:
    """``<out>/part-<16 hex digits of SHA-256 over the names>.parquet``: the same batch, the same file."""
    digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]
    return out / f"part-{digest}.parquet"


def list_shards(out: Path) -> list[Path]:
    """The finished shards of ``out`` (not the temporary files of a write in progress)."""
    return sorted(p for p in out.glob(SHARD_GLOB) if not is_leftover(p)) if out.is_dir() else []


def write_shard(out: Path, names: list[str], paths: list[str], errors: list[str | None],
                results: dict[str, Any], run: dict[str, Any]) -> Path:
    """Write one batch's rows (N of them) atomically; returns the shard's path.

    Args:
        errors: [N], None for the images that worked.
        results: {column: values for the G rows whose error is None}: lists of strings, or
            float32 tensors [G, ...] (features).
        run: the run's identity (stored as schema metadata).
    """
    ok = [i for i, error in enumerate(errors) if error is None]
    columns = {"name": pa.array(names, pa.string()), "path": pa.array(paths, pa.string()),
               "error": pa.array(errors, pa.string())}
    shapes = {}
    for column, values in results.items():
        if isinstance(values, torch.Tensor):
            shapes[column] = list(values.shape[1:])
            columns[column] = _vectors(values, ok, len(names))
        else:
            full: list[Any] = [None] * len(names)
            for i, value in zip(ok, values, strict=True):
                full[i] = value
            columns[column] = pa.array(full, pa.string())
    metadata = {RUN_KEY: json.dumps(run, sort_keys=True).encode()}
    if shapes:
        metadata[SHAPES_KEY] = json.dumps(shapes).encode()
    table = pa.table(columns).replace_schema_metadata(metadata)
    out.mkdir(parents=True, exist_ok=True)
    target = shard_path(out, names)
    with atomic_file(target) as tmp:
        pq.write_table(table, tmp)
    return target


def _vectors(values: torch.Tensor, ok: list[int], rows: int) -> pa.FixedSizeListArray:
    """values [G, ...] for rows ``ok`` of ``rows`` -> a fixed-size float32 list column (null elsewhere)."""
    width = int(values[0].numel()) if len(values) else 0
    flat = torch.zeros(rows, width, dtype=torch.float32)
    flat[ok] = values.reshape(len(ok), width)
    good = set(ok)
    mask = pa.array([i not in good for i in range(rows)])
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1).numpy()), width, mask=mask)


@dataclass
class OutputFolder:
    """What an output folder already holds.

    Attributes:
        done: entry names with a row in some shard (error rows too: a rerun does not retry them).
        runs: {shard: its run identity (JSON data)}.
    """

    path: Path
    done: set[str] = field(default_factory=set)
    runs: dict[Path, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def scan(cls, out: str | Path) -> OutputFolder:
        """Read every shard's names and run identity (not its results); ResumeRefused naming a
        shard that cannot be read."""
        folder = cls(Path(out))
        for shard in list_shards(folder.path):
            try:
                metadata = pq.read_schema(shard).metadata or {}
                names = pq.read_table(shard, columns=["name"]).column("name").to_pylist()
                run = json.loads(metadata[RUN_KEY])
            except Exception as exc:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                raise ResumeRefused(f"{shard}: not a readable blip2-ray shard ({type(exc).__name__}: {detail}); "
                                    "remove it (its images are computed again on the next run)") from None
            folder.runs[shard] = run
            folder.done.update(names)
        return folder

    def check_run(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """ResumeRefused unless every shard was written by a run like ``run`` (all but the
        fingerprint, which only a loaded model can tell); returns the stored fingerprint (None
        for an empty folder)."""
        fingerprint = None
        for shard, stored in self.runs.items():
            differ = [key for key in sorted(set(run) | set(stored)) if key != "fingerprint"
                      and stored.get(key) != run.get(key)]
            if differ:
                found = "; ".join(f"{key}: stored {_short(stored.get(key))}, this run {_short(run.get(key))}"
                                  for key in differ)
                raise ResumeRefused(f"{shard}: written by another run ({found}); resuming would mix two runs' "
                                    f"rows: choose another output folder, or start afresh (resume=False, "
                                    f"--overwrite removes its shards)")
            fingerprint = fingerprint or stored.get("fingerprint")
        return fingerprint


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def read_results(out: str | Path) -> pa.Table:
    """Every row of an output folder, one table (shards in name order); ResumeRefused naming a
    shard that cannot be read."""
    shards = list_shards(Path(out))
    if not shards:
        raise Blip2Error(f"{out}: no result shards ({SHARD_GLOB}) in this folder")
    tables = []
    for shard in shards:
        try:
            tables.append(pq.read_table(shard))
        except Exception as exc:
            raise ResumeRefused(f"{shard}: not a readable blip2-ray shard ({type(exc).__name__}: {exc})") from None
    return pa.concat_tables(tables, promote_options="default")
