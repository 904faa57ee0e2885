"""``load_pipeline``: one entry point for every way of naming a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip2core.checkpoints.hf_blip2 import read_hf_config, spec_from_hf_config
from blip2core.checkpoints.hub import looks_like_hub_id, resolve_hub_id
from blip2core.checkpoints.native import SPEC_FILE, is_native_folder
from blip2core.checkpoints.run_folders import (
    CHECKPOINTS_DIR,
    is_run_folder,
    is_step_folder,
    legacy_step_spec,
    newest_step,
)
from blip2core.compose import build_pipeline
from blip2core.confinement import check_confined
from blip2core.errors import SpecError
from blip2core.lavis_names import resolve as resolve_lavis
from blip2core.pipeline import Pipeline
from blip2core.plugins import get_registry
from blip2core.presets import Preset, get_presets, unknown_name_hint
from blip2core.registry import Registry
from blip2core.spec import PipelineSpec

SPEC_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

Source = PipelineSpec | dict[str, Any] | str | Path


def resolve_spec(source: Source, registry: Registry | None = None) -> PipelineSpec:
    """Turn any accepted source into a PipelineSpec (weights are referenced, not read).

    Accepted: a PipelineSpec; a dict in its shape; a YAML/JSON/TOML spec file; a folder written
    by ``Pipeline.save``; a Hugging Face BLIP-2 folder; a training run's output folder (its newest
    checkpoint) or one of its ``checkpoints/step-N`` folders; a named model (preset) a plugin
    registered (``blip2 models``: ``"mini"``, ``"blip2-opt-2.7b"``; an existing path of that name
    wins); a Hugging Face hub id (downloaded on first use unless offline).
    """
    return _resolve(source, registry, frozenset())


def _resolve(source: Source, registry: Registry | None, seen: frozenset[str]) -> PipelineSpec:
    if isinstance(source, PipelineSpec):
        return source
    if isinstance(source, dict):
        return PipelineSpec.from_dict(source)
    path = Path(source)
    if path.is_dir():
        return _spec_from_folder(path, registry)
    if not path.exists() and "/" not in str(source) and "\\" not in str(source):
        preset = get_presets().get(str(source))
        if preset is not None:
            return preset_spec(preset, registry, seen)
        registry = registry if registry is not None else get_registry()
        if str(source) in registry.names("model"):
            return registered_model_spec(registry, str(source))
    if path.suffix.lower() in SPEC_SUFFIXES:
        return PipelineSpec.from_file(path)
    if path.suffix.lower() in WEIGHT_SUFFIXES:
        raise SpecError(
            f"{source}: a weights file alone does not say which encoder and LLM to build; name it in a "
            f"spec's 'weights' list, or pass it as load_pipeline(spec, weights=[{str(source)!r}])"
        )
    if looks_like_hub_id(str(source)):
        return _spec_from_folder(resolve_hub_id(str(source)), registry)
    raise SpecError(
        f"{source}: no such spec file, checkpoint folder, registered model or hub id{unknown_name_hint(str(source))}"
    )


def preset_spec(preset: Preset, registry: Registry | None = None, seen: frozenset[str] = frozenset()) -> PipelineSpec:
    """The spec a named model resolves to; a hub preset is downloaded first unless cached (offline:
    an error naming the missing files and ``blip2 download NAME``)."""
    if preset.name in seen:
        raise SpecError(f"named model {preset.name!r} resolves to itself (through {', '.join(sorted(seen))})")
    if preset.hub_id is not None:
        return _spec_from_folder(resolve_hub_id(preset.hub_id, preset.revision, name=preset.name), registry)
    if preset.lavis is not None:
        target, _, _ = resolve_lavis(*preset.lavis)
        return _resolve(target, registry, seen | {preset.name})
    made = preset.spec_data()
    if isinstance(made, PipelineSpec):
        return made
    return PipelineSpec.from_dict(made, source=f"named model {preset.name!r} (plugin {preset.plugin})")


def registered_model_spec(registry: Registry, name: str) -> PipelineSpec:
    """The spec a ``register_models`` factory returns for ``name``."""
    component = registry.get("model", name)
    made = component.factory(None)
    return made if isinstance(made, PipelineSpec) else PipelineSpec.from_dict(made, source=f"model {name!r}")


def _spec_from_folder(folder: Path, registry: Registry | None = None) -> PipelineSpec:
    if is_native_folder(folder):
        return PipelineSpec.from_file(folder / SPEC_FILE)
    config = read_hf_config(folder)
    if config is not None:
        return spec_from_hf_config(folder, config, registry)
    if is_step_folder(folder):
        return legacy_step_spec(folder)
    if is_run_folder(folder) or folder.name == CHECKPOINTS_DIR:
        return _spec_from_folder(newest_step(folder), registry)
    raise SpecError(
        f"{folder}: not a model folder (expected {SPEC_FILE} written by Pipeline.save, a Hugging Face "
        "BLIP-2 config.json with model_type 'blip-2', or a training run's folder with checkpoints/step-N)"
    )


def load_pipeline(
    source: Source,
    *,
    device: str | None = None,
    dtype: str | None = None,
    weights: list[str | Path] | None = None,
    quantize: dict[str, Any] | None = None,
    strict: bool = True,
    registry: Registry | None = None,
    confine_to: str | Path | None = None,
) -> Pipeline:
    """Compose a Pipeline and load its weights.

    Args:
        source: see ``resolve_spec``.
        device, dtype: override the spec's ``device`` / ``dtype`` (e.g. ``"cuda"``, ``"bfloat16"``).
        weights: extra checkpoints applied after the spec's own (e.g. a LAVIS ``.pth``).
        quantize: per component, a quantizer name or ``{name, options}`` that replaces the spec's
            entry for that component, e.g. ``{"llm": "int8-weight-only", "vision": "int8-dynamic"}``.
        strict: missing or unexpected checkpoint keys raise CheckpointError (else: a warning).
        registry: components to use (default: every discovered plugin).
        confine_to: a folder the spec may read local files from, and nowhere else (symlinks
            resolved): for a model folder from someone you do not trust (``blip2core.confinement``).
            The ``weights`` given here are the caller's own and are not checked.
    """
    registry = registry if registry is not None else get_registry()
    spec = resolve_spec(source, registry)
    if confine_to is not None:
        check_confined(spec, confine_to)
    overrides: dict[str, Any] = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if quantize:
        overrides["quantize"] = {**spec.model_dump()["quantize"], **quantize}  # validated below
    if weights:
        overrides["weights"] = [str(p) for p in spec.weight_paths()] + [str(Path(w).resolve()) for w in weights]
    if overrides:
        base_dir = spec._base_dir
        spec = PipelineSpec.from_dict({**spec.model_dump(), **overrides})
        spec._base_dir = base_dir
    return build_pipeline(spec, registry, strict=strict)
