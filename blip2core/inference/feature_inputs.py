"""The images ``blip2 features`` reads, each with the name its entry is stored (and resumed) under.

An entry's name does not depend on how the input was typed: an image found in a folder argument
is named by its path relative to that folder (``sub/cat.jpg``, ``/`` separators), a file
argument by its file name. So ``photos/``, ``./photos`` and ``/abs/path/photos`` name the same
entries, and a run resumed with any of them skips what an earlier one wrote.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from blip2core.errors import Blip2Error


@dataclass(frozen=True)
class FeatureInput:
    """One image to read (``path``, as found) and the entry name it is stored under (``name``)."""

    path: str
    name: str


def feature_inputs(arguments: Sequence[str | os.PathLike]) -> list[FeatureInput]:
    """Folder and file arguments -> the images to read, in argument order (a folder's sorted).

    The same file reached twice under one name is kept once.

    Raises:
        ValueError: two different files would be stored under one name (e.g. ``a/x.jpg`` and
            ``b/x.jpg`` given as two folders); the message names both and how to avoid it.
        Blip2Error: a folder holds no image file (as for the other commands).
    """
    from blip2core.preprocess import IMAGE_EXTENSIONS, list_images

    out: dict[str, FeatureInput] = {}
    for argument in arguments:
        root = Path(argument)
        if root.is_dir():
            found = [FeatureInput(str(p), PurePath(p.relative_to(root)).as_posix()) for p in list_images(root)]
            if not found:
                raise Blip2Error(f"{argument}: no image files in this folder or below it "
                                 f"(looked for {' '.join(IMAGE_EXTENSIONS)})")
        else:  # a file, or a path that is missing (reported later by name)
            found = [FeatureInput(str(root), root.name or str(root))]
        for item in found:
            earlier = out.setdefault(item.name, item)
            if earlier is not item and not _same_file(earlier.path, item.path):
                raise ValueError(
                    f"{earlier.path} and {item.path} would both be stored as entry {item.name!r} (entries are named "
                    "relative to the folder given, or by file name); give their common parent folder instead"
                )
    return list(out.values())


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
