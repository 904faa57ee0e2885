"""Keeping an untrusted spec inside its folder: every local file it reads must lie in that folder.

A spec (a ``pipeline.yaml`` from a model folder someone sent) names files: ``weights``, and
component options such as an LLM's ``path``, a ``tokenizer`` folder, a Q-Former's ``init_from``.
By default these are followed wherever they lead, through ``..`` and symlinks, like any path a user
types. ``load_pipeline(folder, confine_to=folder)`` refuses a spec that would read a local file
outside the folder, after resolving every symlink: a symlink ``trainable.safetensors -> ~/.ssh/id_rsa``
or ``weights: [/etc/shadow]`` is refused by name instead of being opened.

Which option values are paths: every string (also inside lists and mappings) that names an
existing file or folder, relative to the spec's folder or absolute. Hub ids (``facebook/opt-2.7b``)
name nothing local and are not affected; downloads are governed by ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blip2core.errors import SpecError
from blip2core.spec import PipelineSpec


def local_paths(spec: PipelineSpec) -> Iterator[tuple[str, Path]]:
    """(spec field, path) for every local file or folder the spec names: ``weights`` entries (even
    missing ones) and option strings that name something that exists."""
    for i, path in enumerate(spec.weight_paths()):
        yield f"weights.{i}", path
    base = spec._base_dir or Path.cwd()
    components = {slot: getattr(spec, slot) for slot in ("vision", "bridge", "llm", "preprocessor")}
    components.update({f"quantize.{k}": v for k, v in spec.quantize.items()})
    for slot, component in components.items():
        if component is not None:
            yield from _option_paths(component.options, f"{slot}.options", base)


def _option_paths(value: Any, field: str, base: Path) -> Iterator[tuple[str, Path]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _option_paths(item, f"{field}.{key}", base)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _option_paths(item, f"{field}.{i}", base)
    elif isinstance(value, str) and value and "\x00" not in value:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if os.path.lexists(path):
            yield field, path


def check_confined(spec: PipelineSpec, root: str | Path) -> None:
    """SpecError naming the first spec field whose file or folder lies outside ``root`` once every
    symlink is resolved (for a folder: also any symlink inside it that leads out)."""
    root = Path(os.path.realpath(root))
    for field, path in local_paths(spec):
        for inner in _with_contents(path):
            real = Path(os.path.realpath(inner))
            if real != root and root not in real.parents:
                via = f" (a symlink to {real})" if real != Path(os.path.abspath(inner)) else ""
                raise SpecError(
                    f"{field}: {inner}{via} is outside {root}, which the spec was confined to "
                    "(confine_to: only files inside the model folder are read)"
                )


def _with_contents(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir():
        for folder, subfolders, files in os.walk(path):
            for name in subfolders + files:
                yield Path(folder) / name
