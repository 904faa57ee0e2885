"""Transformers configs from the free-form ``config:`` mappings of specs, checked field by field.

A spec may give a component the fields of its transformers config (``llm.options.config`` of
``opt`` / ``llama``, ``vision.options.config`` of ``hf-clip-vision``). transformers would take
such a mapping with two surprises: YAML reads ``1e-6`` (no dot) as a *string*, which its strict
config dataclasses refuse with a traceback; and a key the class does not know (``layer_norm_eps``
for Llama, which calls it ``rms_norm_eps``) is stored as an attribute the model never reads.
Here a numeric string becomes a number where the field is numeric, an unknown key is refused by
name (with the closest field), and every other refusal names its field.

Public API:
    config_problems(config_class, fields) -> (fields with numbers coerced, [(key or "", message)])
    check_config_fields(config_class, fields)  the coerced fields, or a pydantic ValidationError
        whose errors sit under each key (for a ``field_validator`` of an options model)
    hf_config_from_fields(config_class, fields, path)  the config object, or a SpecError naming
        ``path.key`` for each problem
    known_fields_only(config_class, fields)  the fields without those the class would ignore (for
        readers of ``config.json`` files written by other transformers versions)
    import_config_class("transformers.LlamaConfig")  the class, imported on first use
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from blip2core.errors import SpecError

#: keys that name the config class (checked against it) instead of setting a field
_CONSUMED = ("model_type",)


def import_config_class(dotted: str) -> type:
    """``"transformers.LlamaConfig"`` -> the class (the module is imported here, not before)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def config_problems(config_class: type, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Coerce numeric strings, then try the config; returns (coerced fields, problems).

    Each problem is ``(key, message)``; ``key`` is ``""`` for one about the whole mapping. Keys
    the class does not know are problems only once the fields construct (a type error first).
    """
    field_types = _field_types(config_class)
    coerced = {key: _coerce(value, field_types.get(key)) for key, value in fields.items()}
    problems: list[tuple[str, str]] = []
    model_type = coerced.get("model_type")
    expected = getattr(config_class, "model_type", None)
    if model_type is not None and expected and model_type != expected:
        problems.append(("model_type", f"{model_type!r} is not {expected!r}: choose the component of that family"))
        return coerced, problems
    config, error = _construct(config_class, coerced)
    if error is not None:
        problems.append(error)
        return coerced, problems
    for key in _ignored_keys(config_class, config, coerced):
        if key in _generation_params():
            problems.append((key, f"a generation setting, not a field of {config_class.__name__} (transformers drops it)"))
            continue
        close = difflib.get_close_matches(key, [k for k in field_types if not k.startswith("_")], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append((key, f"not a field of {config_class.__name__}, which would ignore it{hint}"))
    return coerced, problems


def check_config_fields(config_class: type, fields: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """For a pydantic ``field_validator``: the coerced fields, or a ValidationError whose errors
    sit under the field's location plus each key (``llm.options.config.layer_norm_eps``)."""
    if fields is None:
        return None
    from pydantic import ValidationError
    from pydantic_core import InitErrorDetails, PydanticCustomError

    coerced, problems = config_problems(config_class, fields)
    if not problems:
        return coerced
    details = [
        InitErrorDetails(
            type=PydanticCustomError("hf_config", "{message}", {"message": message}),
            loc=(key,) if key else (),
            input=fields.get(key) if key else dict(fields),
        )
        for key, message in problems
    ]
    raise ValidationError.from_exception_data(config_class.__name__, details)


def hf_config_from_fields(config_class: type, fields: Mapping[str, Any], path: str = "config") -> Any:
    """The config object; a SpecError with one ``path.key: message`` line per problem."""
    coerced, problems = config_problems(config_class, fields)
    if problems:
        raise SpecError("\n".join(f"{path}.{key}: {msg}" if key else f"{path}: {msg}" for key, msg in problems))
    return config_class(**{key: value for key, value in coerced.items() if key not in _CONSUMED})


def known_fields_only(config_class: type, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` without the keys ``config_class`` would store unread (a ``config.json`` of an
    older transformers carries many); unchanged when the fields do not construct."""
    config, error = _construct(config_class, dict(fields))
    if error is not None:
        return dict(fields)
    ignored = set(_ignored_keys(config_class, config, fields))
    return {key: value for key, value in fields.items() if key not in ignored}


def _construct(config_class: type, fields: dict[str, Any]) -> tuple[Any, tuple[str, str] | None]:
    """(config, None), or (None, (key or "", why)) with the field transformers refused."""
    kwargs = {k: v for k, v in fields.items() if k not in _CONSUMED}
    try:
        return config_class(**kwargs), None
    except Exception as exc:  # transformers' strict dataclasses raise their own types, others ValueError
        return None, _describe(config_class, exc)


def _describe(config_class: type, exc: Exception) -> tuple[str, str]:
    """transformers' refusal as (field or "", one line)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = " ".join(str(cause).split())
    match = re.match(r"Validation error for field '(\w+)'", str(exc))
    if match:
        key = match.group(1)
        text = re.sub(rf"^Field '{key}' ", "", text)
        return key, text
    return "", f"not a valid {config_class.__name__}: {text}"


def _ignored_keys(config_class: type, config: Any, fields: Mapping[str, Any]) -> list[str]:
    """Keys the model never reads: kept as plain attributes (neither a field nor consumed while
    constructing, as ``rope_theta`` is), or generation settings transformers drops."""
    known = set(_field_types(config_class)) | _default_attributes(config_class) | set(_CONSUMED)
    known |= set(getattr(config_class, "attribute_map", {}) or {})
    attributes = vars(config)
    return [key for key in fields if key not in known and (key in attributes or key in _generation_params())]


@functools.cache
def _generation_params() -> frozenset[str]:
    """What transformers' configs drop as generation settings (``num_beams``, ``max_length``, ...)."""
    try:
        from transformers import GenerationConfig

        return frozenset(GenerationConfig._get_default_generation_params())
    except (ImportError, AttributeError):  # another transformers version: nothing known to be dropped
        return frozenset()


@functools.cache
def _default_attributes(config_class: type) -> frozenset[str]:
    try:
        return frozenset(vars(config_class()))
    except Exception:  # a class without defaults: its fields alone are known
        return frozenset()


@functools.cache
def _field_types(config_class: type) -> dict[str, Any]:
    if dataclasses.is_dataclass(config_class):
        return {f.name: f.type for f in dataclasses.fields(config_class)}
    import inspect

    try:
        parameters = inspect.signature(config_class.__init__).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.annotation
        for name, p in parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _coerce(value: Any, annotation: Any) -> Any:
    """A string such as ``"1e-6"`` or ``"64"`` as a number when the field takes numbers, not text."""
    if not isinstance(value, str) or annotation is None:
        return value
    parts = _annotation_parts(annotation)
    if "str" in parts or not {"int", "float"} & parts:
        return value
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return value
    if "int" in parts and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if "float" in parts:
        return number
    return int(number) if number.is_integer() else value  # "1e3" for an int field


def _annotation_parts(annotation: Any) -> set[str]:
    """``float | int | None`` or ``"int | None"`` -> {"float", "int", "None"}: the names of the alternatives."""
    if isinstance(annotation, str):
        return {part.strip() for part in annotation.split("|")}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {name for arg in typing.get_args(annotation) for name in _annotation_parts(arg)}
    if annotation is type(None):
        return {"None"}
    return {getattr(annotation, "__name__", str(annotation))}
