"""``PipelineSpec``: which components make a pipeline, with their options.

A spec file (YAML, JSON or TOML)::

    vision: {name: eva-vit, options: {num_hidden_layers: 39}}
    bridge: {name: qformer, options: {num_query_tokens: 32}}
    llm: {name: opt, options: {path: facebook/opt-2.7b}}
    dtype: bfloat16
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from blip2core.errors import SpecError, UnknownComponentError
from blip2core.precision import DType
from blip2core.registry import Registry, format_validation_error
from blip2core.structure_limits import check_structure

QuantizeTarget = Literal["vision", "bridge", "llm"]
QUANTIZE_TARGETS: tuple[str, ...] = ("vision", "bridge", "llm")

#: spec field -> registry kind
SLOT_KINDS: dict[str, str] = {
    "vision": "vision_encoder",
    "bridge": "bridge",
    "llm": "language_model",
    "preprocessor": "preprocessor",
}


class ComponentSpec(BaseModel):
    """A component by registered name, with its options (validated by the component's model)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(BaseModel):
    """Everything needed to compose a Pipeline.

    Attributes:
        vision, bridge, llm: the three components; ``llm`` may be left out for feature-extraction
            and retrieval pipelines (vision encoder + Q-Former only).
        preprocessor: how images become pixel_values; default: the built-in ``standard`` one
            following the encoder's PreprocessConfig.
        quantize: per component (``vision`` / ``bridge`` / ``llm``), a quantizer and its options; a
            bare string is shorthand for ``{name: ...}`` (``quantize: {llm: int8-weight-only}``).
        weights: checkpoints applied after composition, in order (later ones win): files or folders
            in blip2core, Hugging Face or LAVIS layout. Relative paths are relative to the spec file.
        image_token_id: the LLM token that marks where the image's soft prompt goes in prompts
            tokenised the Hugging Face way (``<image>`` x Q); None: the soft prompt is prepended.
        bos_for_empty_prompt: what a generation with an empty prompt starts from when the LLM's
            tokenizer adds no BOS (SmolLM2's): True = the LLM config's ``bos_token_id`` after the
            image (what transformers' ``Blip2ForConditionalGeneration.generate`` does without
            ``input_ids``; Hugging Face BLIP-2 folders set it); False = the image alone, which is
            how ``blip2 train`` trains prompt-less captions (the text follows the image directly).
        styles: extra named caption prompts (``caption(style=...)``).
        device, dtype: where and in which precision the frozen parts run; ``dtype: auto`` picks
            what the device runs natively (``blip2core.precision``).
        seed: seeds the random initialisation of each component (an untrained bridge, an encoder
            or LLM built without weights), so that every load gives the same weights; the global
            torch random state is left unchanged. None: drawn from the global random state.
    """

    model_config = ConfigDict(extra="forbid")

    vision: ComponentSpec
    bridge: ComponentSpec
    llm: ComponentSpec | None = None
    preprocessor: ComponentSpec | None = None
    quantize: dict[QuantizeTarget, ComponentSpec] = Field(default_factory=dict)
    weights: list[str] = Field(default_factory=list)
    image_token_id: int | None = None
    bos_for_empty_prompt: bool = False
    styles: dict[str, str] = Field(default_factory=dict)
    device: str = "cpu"
    dtype: DType = "float32"
    seed: int | None = Field(None, ge=0, le=2**63 - 1, strict=True)

    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("quantize", mode="before")
    @classmethod
    def _quantize_shorthand(cls, value: Any) -> Any:
        return normalise_quantize(value)

    @field_validator("weights", mode="before")
    @classmethod
    def _one_weights_entry(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def weight_paths(self) -> list[Path]:
        """``weights`` as paths, relative ones resolved against the spec file's folder."""
        base = self._base_dir or Path.cwd()
        return [path if path.is_absolute() else base / path for path in map(Path, self.weights)]

    @classmethod
    def from_dict(cls, data: Any, source: str = "spec") -> "PipelineSpec":
        """Validate a mapping; errors read ``<source>: bridge.options: ...``."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"{source}: invalid pipeline spec\n{format_validation_error(exc)}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "PipelineSpec":
        """Read a .yaml/.yml, .json or .toml spec file."""
        spec = cls.from_dict(read_structured_file(path), source=str(path))
        spec._base_dir = Path(path).resolve().parent
        return spec

    def check_components(self, registry: Registry) -> dict[str, BaseModel | None]:
        """Check every named component exists and its options validate; returns the options.

        Keys of the result are dotted spec paths (``vision``, ``quantize.llm``, ...). Every problem
        is reported at once: one error, one line per problem.
        """
        refs: list[tuple[str, str, ComponentSpec]] = [
            (slot, kind, getattr(self, slot)) for slot, kind in SLOT_KINDS.items() if getattr(self, slot) is not None
        ]
        refs += [(f"quantize.{target}", "quantizer", ref) for target, ref in self.quantize.items()]
        checked: dict[str, BaseModel | None] = {}
        errors: list[SpecError] = []
        for path, kind, ref in refs:
            try:
                component = registry.get(kind, ref.name, path=f"{path}.name")
                checked[path] = component.validate_options(ref.options, path=f"{path}.options")
            except SpecError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            kind = UnknownComponentError if all(isinstance(e, UnknownComponentError) for e in errors) else SpecError
            raise kind("\n".join(str(e) for e in errors))
        return checked

    def to_file(self, path: str | Path) -> None:
        """Write as YAML or JSON (by suffix)."""
        path = Path(path)
        data = self.model_dump(mode="json", exclude_defaults=False)
        if path.suffix == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n")
        else:
            path.write_text(dump_yaml(data))


def normalise_quantize(value: Any) -> Any:
    """``{llm: "int8-weight-only"}`` -> ``{llm: {name: "int8-weight-only"}}``; an unknown component
    key is an error listing the known ones (other shapes are left to pydantic to report)."""
    if not isinstance(value, dict):
        return value
    unknown = [str(key) for key in value if key not in QUANTIZE_TARGETS]
    if unknown:
        raise ValueError(
            f"unknown component {', '.join(map(repr, unknown))} to quantize; known: {', '.join(QUANTIZE_TARGETS)}"
        )
    return {key: {"name": ref} if isinstance(ref, str) else ref for key, ref in value.items()}


class NumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does: ``1e-6``, ``5E3`` and ``+2e-4`` are
    floats (YAML 1.1, PyYAML's default, wants a dot and makes them strings)."""


class NumberDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting the strings ``NumberLoader`` would read as numbers (``"1e-6"``,
    a component or style named ``"0E0"``), so that a spec written by ``to_file`` reads back equal."""


for _yaml_class in (NumberLoader, NumberDumper):
    _yaml_class.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )


#: the largest spec / run config file read (they are a few KiB)
MAX_STRUCTURED_FILE_BYTES = 16 * 2**20


def dump_yaml(data: Any) -> str:
    """YAML text that ``read_structured_file`` reads back equal: number-like strings (``"1e-6"``)
    stay strings (``NumberDumper``); keys keep their order."""
    return yaml.dump(data, Dumper=NumberDumper, sort_keys=False)


def read_structured_file(path: str | Path) -> Any:
    """Parse YAML, JSON or TOML by suffix; every failure names the file. A document that is too
    large, nested too deeply, recursive, or that expands to too many values through YAML aliases is
    refused (``blip2core.structure_limits``)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:  # a pipe (<(...)) is fine; /dev/zero stops at the cap
            raw = file.read(MAX_STRUCTURED_FILE_BYTES + 1)
        if len(raw) > MAX_STRUCTURED_FILE_BYTES:
            raise SpecError(f"{path}: over {MAX_STRUCTURED_FILE_BYTES // 2**20} MiB, not a spec or run config")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.load(text, Loader=NumberLoader)  # noqa: S506 - a SafeLoader subclass
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = None
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to parse") from None
    if suffix in (".yaml", ".yml", ".json", ".toml"):
        problem = check_structure(data)
        if problem:
            raise SpecError(f"{path}: {problem}")
        return data
    raise SpecError(f"{path}: unsupported spec format {suffix!r} (use .yaml, .yml, .json or .toml)")


def spec_json_schema(registry: Registry) -> dict[str, Any]:
    """JSON schema of PipelineSpec where each component slot lists its registered components
    with their option schemas (``anyOf`` of ``{name: const, options: <schema>}``)."""
    schema = copy.deepcopy(PipelineSpec.model_json_schema())
    defs = schema.setdefault("$defs", {})

    def variants(kind: str) -> list[dict[str, Any]]:
        out = []
        for name in registry.names(kind):
            component = registry.components[kind][name]
            if component.options is not None:
                option_schema = component.options.model_json_schema(ref_template="#/$defs/{model}")
                defs.update(option_schema.pop("$defs", {}))
            else:
                option_schema = {"type": "object", "maxProperties": 0}
            out.append(
                {
                    "type": "object",
                    "description": component.description,
                    "properties": {"name": {"const": name}, "options": option_schema},
                    "required": ["name"],
                    "additionalProperties": False,
                }
            )
        return out or [{"$ref": "#/$defs/ComponentSpec"}]

    for slot, kind in SLOT_KINDS.items():
        one_of = {"anyOf": variants(kind)}
        schema["properties"][slot] = (
            {"anyOf": [one_of, {"type": "null"}], "default": None} if slot == "preprocessor" else one_of
        )
    schema["properties"]["quantize"] = {
        "type": "object",
        "propertyNames": {"enum": ["vision", "bridge", "llm"]},
        "additionalProperties": {"anyOf": variants("quantizer")},
    }
    return schema
