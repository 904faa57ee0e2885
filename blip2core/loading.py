"""``load_pipeline``: one entry point for every way of naming a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip2core.compose import build_pipeline
from blip2core.errors import SpecError
from blip2core.pipeline import Pipeline
from blip2core.plugins import get_registry
from blip2core.registry import Registry
from blip2core.spec import PipelineSpec

SPEC_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def resolve_spec(source: PipelineSpec | dict[str, Any] | str | Path) -> PipelineSpec:
    """Turn a spec object, a mapping or a spec file path into a PipelineSpec."""
    if isinstance(source, PipelineSpec):
        return source
    if isinstance(source, dict):
        return PipelineSpec.from_dict(source)
    path = Path(source)
    if path.suffix.lower() in SPEC_SUFFIXES:
        return PipelineSpec.from_file(path)
    if not path.exists():
        raise SpecError(f"{source}: no such spec file, checkpoint folder or known model name")
    raise SpecError(f"{source}: not a spec file (expected one of {', '.join(SPEC_SUFFIXES)})")


def load_pipeline(
    source: PipelineSpec | dict[str, Any] | str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    registry: Registry | None = None,
) -> Pipeline:
    """Compose a Pipeline.

    Args:
        source: a PipelineSpec, a dict in its shape, or the path of a YAML/JSON/TOML spec file.
        device, dtype: override the spec's ``device`` / ``dtype`` (e.g. ``"cuda"``, ``"bfloat16"``).
        registry: components to use (default: every discovered plugin).
    """
    spec = resolve_spec(source)
    overrides = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if overrides:
        spec = PipelineSpec.from_dict({**spec.model_dump(), **overrides})
    return build_pipeline(spec, registry if registry is not None else get_registry())
