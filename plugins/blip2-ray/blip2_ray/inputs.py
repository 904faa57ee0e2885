"""The images of a run, each with the name its row is stored (and resumed) under.

``images`` may be a folder (its image files, recursively, named by their path relative to it), a
manifest (a ``.txt`` file: one image path per line, relative ones relative to the manifest's
folder; blank lines and ``#`` comments skipped; each named by its line as written), one image
file, or a list of files and folders (named as ``blip2 features`` names them). The names do not
depend on how the folder was spelt, so a run resumed with ``./photos`` or ``/abs/photos`` skips
what an earlier one wrote.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from blip2core.plugin_api import FeatureInput, InputError, feature_inputs

MANIFEST_SUFFIXES = (".txt",)


def image_inputs(images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[FeatureInput]:
    """``images`` (see the module docstring) -> the images to read, in order, each name once.

    Raises:
        InputError: no images, a folder without image files, a manifest that cannot be read, or
            two different files that would be stored under one name.
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            return manifest_inputs(path)
        arguments: list[str | os.PathLike] = [path]
    else:
        arguments = list(images)
    if not arguments:
        raise InputError("no images given: pass a folder, a manifest (.txt, one path per line) or a list of paths")
    try:
        return feature_inputs(arguments)
    except InputError:
        raise
    except Exception as exc:  # a folder without images (Blip2Error), two files under one name (ValueError)
        raise InputError(str(exc)) from None


def manifest_inputs(manifest: Path) -> list[FeatureInput]:
    """The images a manifest lists (one path per line), each named by its line as written."""
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest}: cannot read this manifest ({exc}); expected UTF-8 text, "
                         "one path a line") from None
    out: dict[str, FeatureInput] = {}
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry) if Path(entry).is_absolute() else manifest.parent / entry
        out.setdefault(PurePath(entry).as_posix(), FeatureInput(str(path), PurePath(entry).as_posix()))
    if not out:
        raise InputError(f"{manifest}: the manifest lists no image (expected one path per line)")
    return list(out.values())
