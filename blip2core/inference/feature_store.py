"""Feature files that can be resumed: safetensors or parquet, one entry per image name.

While a run goes, each batch is written at once, atomically, as a part file in
``<out>.parts/``; ``finish`` merges the finished file (if a previous run left one), the parts,
and writes ``<out>`` atomically, then removes the parts. A run that stops half-way leaves its
parts behind, and the next run skips every name they (or ``<out>``) already hold.

Every file (parts too) records the ``Fingerprint`` of the pipeline that wrote it
(``blip2core.inference.fingerprint``); a store opened with another one refuses to resume, naming
both, so one file never holds two models' features. A file that cannot be read is named in a
one-line ``FeatureFileError``.

Layouts (N entries; per-entry shapes such as image_embeds [Q, H]):

- ``.safetensors``: one tensor per field, [N, ...] float32; header metadata ``names`` (a JSON
  list, entry order), ``format`` = ``blip2core.features/1`` and ``fingerprint`` (JSON).
- ``.parquet``: a ``name`` string column and one column per field holding the flattened
  float32 values (fixed-size lists); schema metadata ``blip2core.shapes`` = JSON {field: shape}
  and ``blip2core.fingerprint``.

``read_features(path)`` reads either back to (names, {field: tensor [N, ...]}). Nothing is ever
unpickled.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from blip2core.atomic import atomic_file
from blip2core.errors import Blip2Error
from blip2core.inference.fingerprint import Fingerprint
from blip2core.inference.memory import is_out_of_memory

FORMAT_TAG = "blip2core.features/1"
FORMATS = {".safetensors": "safetensors", ".parquet": "parquet"}
SHAPES_KEY = b"blip2core.shapes"
FINGERPRINT_KEY = "fingerprint"
PARQUET_FINGERPRINT_KEY = b"blip2core.fingerprint"


class FeatureFileError(Blip2Error):
    """A feature file (the output or a part) that cannot be read, or that another pipeline wrote."""

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

    Args:
        path: the final file.
        fingerprint: the pipeline's; when given, every file already there must carry the same
            one (else FeatureFileError naming both), and what is written records it. It can also
            be given later with ``use_fingerprint`` (e.g. once the model is loaded).
        overwrite: start afresh: the parts a stopped run left are removed, and ``path`` (kept
            until ``finish``) is replaced instead of merged.

    Attributes:
        path: the final file.
        parts_dir: where batches wait until ``finish``.
        done: names already stored (in ``path`` or in parts), which a run should skip.
    """

    def __init__(
        self, path: str | os.PathLike, fingerprint: Fingerprint | None = None, *, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.fingerprint: Fingerprint | None = None
        self._keep_existing = not overwrite
        if overwrite and self.parts_dir.is_dir():
            shutil.rmtree(self.parts_dir)
        self._stored: dict[Path, str | None] = {}  # file -> the fingerprint JSON it records
        self.done: set[str] = set()
        for existing in self._existing():
            names, self._stored[existing] = read_header(existing)
            self.done.update(names)
        self._next = len(self._parts())
        if fingerprint is not None:
            self.use_fingerprint(fingerprint)

    def _existing(self) -> list[Path]:
        return ([self.path] if self._keep_existing and self.path.exists() else []) + self._parts()

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.safetensors")) if self.parts_dir.is_dir() else []

    def use_fingerprint(self, fingerprint: Fingerprint) -> None:
        """Check that every file already there was written by the pipeline of ``fingerprint``
        (FeatureFileError naming both fingerprints otherwise), and record it in what is written."""
        for existing, stored in self._stored.items():
            check_fingerprint(existing, stored, fingerprint, self.path)
        self.fingerprint = fingerprint

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
        _write_safetensors(part, names, tensors, self.fingerprint)
        self._stored[part] = self.fingerprint.to_json() if self.fingerprint else None
        self._next += 1
        self.done.update(names)

    def finish(self) -> int:
        """Merge everything into ``path`` (atomically), remove the parts; returns the entry count."""
        parts = self._parts()
        if not parts and self.path.exists() and self._keep_existing:
            return len(read_header(self.path)[0])
        pieces = [read_features(p) for p in self._existing()]
        names, tensors = merge(pieces, self.path)
        if self.format == "safetensors":
            _write_safetensors(self.path, names, tensors, self.fingerprint)
        else:
            _write_parquet(self.path, names, tensors, self.fingerprint)
        if self.parts_dir.is_dir():
            shutil.rmtree(self.parts_dir)
        return len(names)


def check_fingerprint(path: Path, stored: str | None, expected: Fingerprint, out: Path) -> None:
    """FeatureFileError unless ``stored`` (a file's fingerprint JSON, None when it has none) is
    ``expected``; the message names both and what differs, and how to go on."""
    how = f"choose another --out, or pass --overwrite to replace {out.name} (and its parts)"
    if stored is None:
        raise FeatureFileError(
            f"{path}: records no pipeline fingerprint (written before blip2core stored one), so resuming "
            f"cannot tell whether the same model wrote it; {how}"
        )
    try:
        found = Fingerprint.from_json(stored)
    except ValueError as exc:
        raise FeatureFileError(f"{path}: unreadable pipeline fingerprint {stored!r} ({exc}); {how}") from None
    differ = found.differences(expected)
    if differ:
        raise FeatureFileError(
            f"{path}: written by another pipeline ({' and '.join(differ)} differ): stored [{found}], "
            f"this run [{expected}]; resuming would mix two models' features: {how}"
        )


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
    return read_header(Path(path))[0]


def read_header(path: Path) -> tuple[list[str], str | None]:
    """(entry names, fingerprint JSON or None) of a feature file, without reading its tensors
    when the format allows. FeatureFileError naming the file when it cannot be read."""
    with _readable(path):
        if output_format(path) == "safetensors":
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            return _names_from_metadata(metadata, path), metadata.get(FINGERPRINT_KEY)
        pq = _pyarrow_parquet()
        metadata = pq.read_schema(path).metadata or {}
        names = [str(n) for n in pq.read_table(path, columns=["name"]).column("name").to_pylist()]
        fingerprint = metadata.get(PARQUET_FINGERPRINT_KEY)
        return names, fingerprint.decode() if fingerprint is not None else None


def read_features(path: str | os.PathLike) -> Entries:
    """(names [N], {field: float32 tensor [N, ...]}) of a file written by ``FeatureStore``;
    FeatureFileError naming the file when it cannot be read."""
    path = Path(path)
    with _readable(path):
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


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn any failure to read ``path`` (corrupt, truncated, not ours) into one FeatureFileError
    line that names it and says what to do."""
    try:
        yield
    except Blip2Error:
        raise
    except Exception as exc:
        if is_out_of_memory(exc) or getattr(exc, "errno", None) == errno.ENOMEM:
            raise  # the file may be fine: never advise removing it
        if path.parent.name.endswith(".parts"):
            hint = "remove this part file (its images are computed again on the next run)"
        else:
            hint = "remove it (or move it away) or choose another --out"
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise FeatureFileError(f"{path}: not a readable feature file, truncated or corrupt "
                               f"({type(exc).__name__}: {detail}); {hint}") from None


def _names_from_metadata(metadata: dict[str, str] | None, path: Path) -> list[str]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT_TAG or "names" not in metadata:
        raise FeatureFileError(f"{path}: not a blip2core feature file (no '{FORMAT_TAG}' names in its metadata)")
    names = json.loads(metadata["names"])
    if not isinstance(names, list):
        raise FeatureFileError(f"{path}: its 'names' metadata is not a JSON list")
    return [str(name) for name in names]


def _write_safetensors(
    path: Path, names: list[str], tensors: dict[str, torch.Tensor], fingerprint: Fingerprint | None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {field: tensor.detach().to("cpu", torch.float32).contiguous() for field, tensor in tensors.items()}
    metadata = {"format": FORMAT_TAG, "names": json.dumps(names)}
    if fingerprint is not None:
        metadata[FINGERPRINT_KEY] = fingerprint.to_json()
    with atomic_file(path) as tmp:
        save_file(data, str(tmp), metadata=metadata)


def _write_parquet(
    path: Path, names: list[str], tensors: dict[str, torch.Tensor], fingerprint: Fingerprint | None
) -> None:
    pq = _pyarrow_parquet()
    import pyarrow as pa

    columns = {"name": pa.array(names, type=pa.string())}
    shapes = {}
    for field, tensor in tensors.items():
        values = tensor.detach().to("cpu", torch.float32).reshape(len(names), -1)
        shapes[field] = list(tensor.shape[1:])
        flat = pa.array(values.reshape(-1).numpy(), type=pa.float32())
        columns[field] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    metadata = {SHAPES_KEY: json.dumps(shapes).encode()}
    if fingerprint is not None:
        metadata[PARQUET_FINGERPRINT_KEY] = fingerprint.to_json().encode()
    table = pa.table(columns).replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise Blip2Error("parquet feature files need pyarrow (pip install pyarrow); or write .safetensors") from None
    return pq
