"""The table of components the loaded plugins registered, keyed by (kind, name), and of the
Hugging Face BLIP-2 sub-configs they claimed, keyed by (part, model_type)."""

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
    "model",
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


@dataclass(frozen=True)
class HFConfigClaim:
    """One plugin's reader of a Hugging Face BLIP-2 sub-config (hook ``register_hf_configs``).

    Attributes:
        part: ``vision`` (``vision_config``) or ``text`` (``text_config``).
        model_type: the sub-config's ``model_type`` it understands.
        reader: ``reader(sub_config, source) -> {"name": ..., "options": {...}}``.
        plugin: the distribution that registered it.
    """

    part: str
    model_type: str
    reader: Callable[..., Any]
    plugin: str


#: sub-config part -> the config key it reads, and the component kind its reader names
HF_CONFIG_PARTS: dict[str, tuple[str, str]] = {
    "vision": ("vision_config", "vision_encoder"),
    "text": ("text_config", "language_model"),
}


@dataclass
class Registry:
    """Components by kind and name, plus the name clashes found while registering; and the
    Hugging Face sub-config readers by (part, model_type), with their own clashes.

    ``failed_plugins`` (distribution -> what went wrong, e.g. ``failed to import: ...``) and
    ``skipped_plugins`` (why -> distributions left out by the environment) explain, in the error
    for an unknown name, why a component may be missing.
    """

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    hf_configs: dict[tuple[str, str], HFConfigClaim] = field(default_factory=dict)
    hf_config_clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    failed_plugins: dict[str, str] = field(default_factory=dict)
    skipped_plugins: dict[str, list[str]] = field(default_factory=dict)

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
        message += "".join(f" Plugin {dist!r} {why}." for dist, why in self.failed_plugins.items())
        message += "".join(f" Not loaded ({why}): {', '.join(dists)}." for why, dists in self.skipped_plugins.items())
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        if close:
            message += f" Did you mean {close[0]!r}?"
        message += f" Registered: {', '.join(known) if known else '(none: is its plugin installed?)'}"
        raise UnknownComponentError(message)

    def add_hf_config(self, claim: HFConfigClaim) -> None:
        """Add a sub-config reader; a second one for the same (part, model_type) is a clash."""
        if claim.part not in HF_CONFIG_PARTS:
            raise Blip2Error(
                f"unknown Hugging Face config part {claim.part!r} (known: {', '.join(HF_CONFIG_PARTS)})"
            )
        key = (claim.part, claim.model_type)
        existing = self.hf_configs.get(key)
        if existing is not None:
            owners = self.hf_config_clashes.setdefault(key, [existing.plugin])
            owners.append(claim.plugin)
            raise DuplicateComponentError(self._hf_config_clash_message(*key))
        self.hf_configs[key] = claim

    def _hf_config_clash_message(self, part: str, model_type: str) -> str:
        owners = self.hf_config_clashes[(part, model_type)]
        return (
            f"{HF_CONFIG_PARTS[part][0]}.model_type {model_type!r} is claimed by more than one plugin: "
            f"{' and '.join(repr(o) for o in owners)}; uninstall one or disable it with BLIP2_DISABLE_PLUGINS"
        )

    def hf_config(self, part: str, model_type: str) -> HFConfigClaim | None:
        """The reader claiming (part, model_type), None when no plugin does.

        Raises:
            DuplicateComponentError: more than one plugin claims it.
        """
        if (part, model_type) in self.hf_config_clashes:
            raise DuplicateComponentError(self._hf_config_clash_message(part, model_type))
        return self.hf_configs.get((part, model_type))

    def hf_config_types(self, part: str) -> list[str]:
        """The model types claimed for ``part``, sorted."""
        return sorted(model_type for p, model_type in self.hf_configs if p == part)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self.components[kind][n] for n in sorted(self.components[kind]))
