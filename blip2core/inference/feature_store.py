"""Feature files that can be resumed: safetensors or parquet, one entry per image name.

While a run goes, each batch is written at once, atomically, as a part file in
``<out>.parts/``; ``finish`` merges the finished file (if a previous run left one), the parts,
and writes ``<out>`` atomically, then removes the parts. A run that stops half-way leaves its
parts behind, and the next run skips every name they (or ``<out>``) already hold.

Layouts (N entries; per-entry shapes such as image_embeds [Q, H]):

- ``.safetensors``: one tensor per field, [N, ...] float32; header metadata ``names`` (a JSON
  list, entry order) and ``format`` = ``blip2core.features/1``.
- ``.parquet``: a ``name`` string column and one column per field holding the flattened
  float32 values (fixed-size lists); schema metadata ``blip2core.shapes`` = JSON {field: shape}.

``read_features(path)`` reads either back to (names, {field: tensor [N, ...]}). Nothing is ever
unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from blip2core.atomic import atomic_file
from blip2core.errors import Blip2Error

FORMAT_TAG = "blip2core.features/1"
FORMATS = {".safetensors": "safetensors", ".parquet": "parquet"}
SHAPES_KEY = b"blip2core.shapes"

Entries = tuple[list[str], dict[str, torch.Tensor]]


def output_format(path: str | os.PathLike) -> str:
    """``"safetensors"`` or ``"parquet"`` from the suffix; Blip2Error naming the file otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise Blip2Error(f"{path}: unsupported feature file type {suffix or '(none)'!r}; use .safetensors or .parquet")
    return FORMATS[suffix]


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """The file rank ``rank`` of ``world_size`` writes: ``out`` itself for one process, else
    ``<stem>.rank<r>-of-<w><suffix>`` next to it."""
    out = Path(out)
    if world_size <= 1:
        return out
    return out.with_name(f"{out.stem}.rank{rank}-of-{world_size}{out.suffix}")


class FeatureStore:
    """One output file being written, resumably.

    Attributes:
        path: the final file.
        parts_dir: where batches wait until ``finish``.
        done: names already stored (in ``path`` or in parts), which a run should skip.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.done: set[str] = set()
        if self.path.exists():
            self.done.update(read_names(self.path))
        for part in self._parts():
            self.done.update(read_names(part))
        self._next = len(self._parts())

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.safetensors")) if self.parts_dir.is_dir() else []

    def write(self, names: list[str], tensors: dict[str, torch.Tensor]) -> None:
        """Store one batch: names [G] and tensors {field: [G, ...]} (moved to CPU float32)."""
        if not names:
            return
        for field, tensor in tensors.items():
            if tensor.shape[0] != len(names):
                raise ValueError(f"{field}: {tensor.shape[0]} rows for {len(names)} names")
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        while (part := self.parts_dir / f"part-{self._next:06d}.safetensors").exists():
            self._next += 1
        _write_safetensors(part, names, tensors)
        self._next += 1
        self.done.update(names)

    def finish(self) -> int:
        """Merge everything into ``path`` (atomically), remove the parts; returns the entry count."""
        parts = self._parts()
        if not parts and self.path.exists():
            return len(read_names(self.path))
        pieces = ([read_features(self.path)] if self.path.exists() else []) + [read_features(p) for p in parts]
        names, tensors = merge(pieces, self.path)
        if self.format == "safetensors":
            _write_safetensors(self.path, names, tensors)
        else:
            _write_parquet(self.path, names, tensors)
        if self.parts_dir.is_dir():
            shutil.rmtree(self.parts_dir)
        return len(names)


def merge(pieces: list[Entries], where: Path) -> Entries:
    """Concatenate (names, tensors) pieces; a name seen twice keeps its first entry. Fields and
    per-entry shapes must agree (else Blip2Error naming ``where``: a resumed run with another model?)."""
    names: list[str] = []
    columns: dict[str, list[torch.Tensor]] = {}
    seen: set[str] = set()
    for piece_names, piece in pieces:
        if columns and set(piece) != set(columns):
            raise Blip2Error(f"{where}: stored fields {sorted(columns)} differ from new ones {sorted(piece)}; "
                             "was it written by another model? Remove it or choose another --out")
        keep = [i for i, name in enumerate(piece_names) if name not in seen]
        seen.update(piece_names)
        names += [piece_names[i] for i in keep]
        for field, tensor in piece.items():
            stored = columns.setdefault(field, [])
            if stored and stored[0].shape[1:] != tensor.shape[1:]:
                raise Blip2Error(f"{where}: {field} has per-entry shape {list(stored[0].shape[1:])} in one part and "
                                 f"{list(tensor.shape[1:])} in another; was it written by another model?")
            stored.append(tensor[keep])
    return names, {field: torch.cat(parts) for field, parts in columns.items()}


def read_names(path: Path) -> list[str]:
    """The entry names of a feature file, without reading its tensors when the format allows."""
    if output_format(path) == "safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return _names_from_metadata(handle.metadata(), path)
    pq = _pyarrow_parquet()
    return [str(n) for n in pq.read_table(path, columns=["name"]).column("name").to_pylist()]


def read_features(path: str | os.PathLike) -> Entries:
    """(names [N], {field: float32 tensor [N, ...]}) of a file written by ``FeatureStore``."""
    path = Path(path)
    if output_format(path) == "safetensors":
        with safe_open(str(path), framework="pt") as handle:
            names = _names_from_metadata(handle.metadata(), path)
        return names, load_file(str(path))
    pq = _pyarrow_parquet()
    table = pq.read_table(path)
    shapes = json.loads((table.schema.metadata or {}).get(SHAPES_KEY, b"{}"))
    names = [str(n) for n in table.column("name").to_pylist()]
    tensors = {}
    for field, shape in shapes.items():
        flat = table.column(field).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        tensors[field] = torch.from_numpy(flat.copy()).view(len(names), *shape)
    return names, tensors


def _names_from_metadata(metadata: dict[str, str] | None, path: Path) -> list[str]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT_TAG or "names" not in metadata:
        raise Blip2Error(f"{path}: not a blip2core feature file (no '{FORMAT_TAG}' names in its metadata)")
    return list(json.loads(metadata["names"]))


def _write_safetensors(path: Path, names: list[str], tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {field: tensor.detach().to("cpu", torch.float32).contiguous() for field, tensor in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(data, str(tmp), metadata={"format": FORMAT_TAG, "names": json.dumps(names)})


def _write_parquet(path: Path, names: list[str], tensors: dict[str, torch.Tensor]) -> None:
    pq = _pyarrow_parquet()
    import pyarrow as pa

    columns = {"name": pa.array(names, type=pa.string())}
    shapes = {}
    for field, tensor in tensors.items():
        values = tensor.detach().to("cpu", torch.float32).reshape(len(names), -1)
        shapes[field] = list(tensor.shape[1:])
        flat = pa.array(values.reshape(-1).numpy(), type=pa.float32())
        columns[field] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    table = pa.table(columns).replace_schema_metadata({SHAPES_KEY: json.dumps(shapes).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise Blip2Error("parquet feature files need pyarrow (pip install pyarrow); or write .safetensors") from None
    return pq
