"""The table of components the loaded plugins registered, keyed by (kind, name)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from blip2core.errors import Blip2Error, DuplicateComponentError, SpecError, UnknownComponentError

KINDS = (
    "vision_encoder",
    "bridge",
    "language_model",
    "preprocessor",
    "task",
    "loss",
    "quantizer",
)


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per problem, each starting with its dotted path: ``bridge.options.x: msg``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        lines.append(f"{path}: {item['msg']}" if path else item["msg"])
    return "\n".join(lines)


@dataclass(frozen=True)
class Component:
    """One registered factory.

    Attributes:
        kind: one of KINDS.
        name: what a spec writes to select it.
        factory: called with the validated options instance (and per-kind keyword context).
        options: pydantic model of its options, or None when it takes none.
        description: one line for ``blip2 plugins``.
        plugin: the distribution that registered it.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[BaseModel] | None
    description: str
    plugin: str

    def validate_options(self, options: dict[str, Any] | BaseModel | None, path: str = "") -> BaseModel | None:
        """Validate raw options against this component's model; errors name ``path``."""
        if self.options is None:
            if options:
                raise SpecError(f"{path}: component {self.name!r} takes no options, got {sorted(dict(options))}")
            return None
        if isinstance(options, self.options):
            return options
        if isinstance(options, BaseModel):
            options = options.model_dump()
        try:
            return self.options.model_validate(options or {})
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, path)) from None

    def build(self, options: dict[str, Any] | BaseModel | None = None, path: str = "", **context: Any) -> Any:
        """Validate options and call the factory."""
        return self.factory(self.validate_options(options, path), **context)


@dataclass
class Registry:
    """Components by kind and name, plus the name clashes found while registering."""

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, component: Component) -> None:
        """Add a component; a second one with the same (kind, name) is recorded as a clash."""
        existing = self.components[component.kind].get(component.name)
        if existing is not None:
            owners = self.clashes.setdefault((component.kind, component.name), [existing.plugin])
            owners.append(component.plugin)
            raise DuplicateComponentError(self._clash_message(component.kind, component.name))
        self.components[component.kind][component.name] = component

    def _clash_message(self, kind: str, name: str) -> str:
        owners = self.clashes[(kind, name)]
        return (
            f"{kind.replace('_', ' ')} {name!r} is registered by more than one plugin: "
            f"{' and '.join(repr(o) for o in owners)}; uninstall one or disable it with "
            f"BLIP2_DISABLE_PLUGINS"
        )

    def get(self, kind: str, name: str, path: str = "") -> Component:
        """The component, or an error listing what is registered and the closest name."""
        if kind not in self.components:
            raise Blip2Error(f"unknown component kind {kind!r} (known: {', '.join(KINDS)})")
        if (kind, name) in self.clashes:
            raise DuplicateComponentError(self._clash_message(kind, name))
        try:
            return self.components[kind][name]
        except KeyError:
            pass
        known = sorted(self.components[kind])
        where = f"{path}: " if path else ""
        message = f"{where}unknown {kind.replace('_', ' ')} {name!r}."
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        if close:
            message += f" Did you mean {close[0]!r}?"
        message += f" Registered: {', '.join(known) if known else '(none: is its plugin installed?)'}"
        raise UnknownComponentError(message)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self.components[kind][n] for n in sorted(self.components[kind]))
