"""Folders of images through a DataLoader: worker processes decode and resize, failures travel along.

    loader = folder_loader("photos/", preprocessor, batch_size=64, num_workers=4)
    for batch in loader:                      # BatchResult
        use(batch.pixel_values, batch.names)  # [G, 3, S, S]
        log(batch.failures)                   # [(index, path, message), ...]

``pin_memory`` defaults to ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from blip2core.preprocess import transforms
from blip2core.preprocess.preprocessor import BatchResult, Failure, ImagePreprocessor
from blip2core.preprocess.sources import Source
from blip2core.preprocess_config import PreprocessConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")

#: what one dataset item is: (index, name, uint8 [3, S, S] or None, error message or None)
Item = tuple[int, str, "torch.Tensor | None", "str | None"]


def list_images(
    root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True
) -> list[Path]:
    """Image files under ``root`` (by extension, case-insensitive), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    wanted = {e.lower() for e in extensions}
    pattern = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in pattern if p.suffix.lower() in wanted and p.is_file())


class ImageFolderDataset(Dataset):
    """Files (a folder, or a list of paths) -> per item (index, name, uint8 [3, S, S] | None, message | None)."""

    def __init__(
        self,
        files: str | os.PathLike | Sequence[str | os.PathLike],
        preprocessor: ImagePreprocessor,
        *,
        train: bool = False,
    ) -> None:
        is_folder = isinstance(files, (str, os.PathLike))
        self.paths = [Path(p) for p in (list_images(files) if is_folder else files)]
        self.preprocessor = preprocessor
        self.train = train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        path = str(self.paths[index])
        try:
            image = self.preprocessor.load_uint8(Source(path, path, index), train=self.train)
        except Exception as exc:  # reported by the collate, the other images go on
            return index, path, None, getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return index, path, image, None


class BatchCollator:
    """DataLoader collate: items -> ``BatchResult`` (normalised float32, failures carried through)."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def __call__(self, items: list[Item]) -> BatchResult:
        good = [(i, name, image) for i, name, image, _ in items if image is not None]
        failures = [Failure(i, name, message) for i, name, image, message in items if image is None]
        size = self.config.image_size
        stacked = torch.stack([g[2] for g in good]) if good else torch.empty(0, 3, size, size, dtype=torch.uint8)
        return BatchResult(
            transforms.normalize(stacked, self.config), [g[0] for g in good], [g[1] for g in good], failures
        )


def folder_loader(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    preprocessor: ImagePreprocessor,
    *,
    batch_size: int = 32,
    num_workers: int | None = None,
    train: bool = False,
    shuffle: bool | None = None,
    pin_memory: bool | None = None,
    **loader_kwargs: Any,
) -> DataLoader:
    """A DataLoader over a folder / list of image files yielding ``BatchResult``.

    num_workers: default min(8, CPU count - 1). shuffle: default ``train``.
    pin_memory: default ``torch.cuda.is_available()``.
    """
    dataset = ImageFolderDataset(files, preprocessor, train=train)
    if num_workers is None:
        num_workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if shuffle is None else shuffle,
        num_workers=num_workers,
        collate_fn=BatchCollator(preprocessor.config),
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=False,
        **loader_kwargs,
    )


def iter_folder(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    preprocessor: ImagePreprocessor,
    *,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
    **loader_kwargs: Any,
) -> Iterator[BatchResult]:
    """``folder_loader`` with a tqdm bar (images done, failures so far)."""
    loader = folder_loader(files, preprocessor, batch_size=batch_size, num_workers=num_workers, **loader_kwargs)
    failed = 0
    with tqdm(total=len(loader.dataset), unit="img", desc="preprocess", disable=not progress) as bar:
        for batch in loader:
            failed += len(batch.failures)
            bar.update(len(batch.indices) + len(batch.failures))
            if failed:
                bar.set_postfix(failed=failed)
            yield batch
