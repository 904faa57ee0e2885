"""Plugin discovery: the core's built-in plugins plus every entry point in group ``blip2core``.

Environment:
    BLIP2_PLUGINS=a,b          load only these distributions (the built-ins always load)
    BLIP2_DISABLE_PLUGINS=x,y  skip these distributions

A plugin that fails to import, implements an unknown hook, or raises inside a hook is recorded
with its error; everything else keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import re
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from blip2core import hookspecs
from blip2core.errors import DuplicateComponentError
from blip2core.registry import Component, Registry

BUILTIN_DISTRIBUTION = "blip2core"
BUILTIN_MODULES = ("blip2core.bridges.plugin", "blip2core.preprocess.plugin")


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, so ``Blip2_OPT`` and ``blip2-opt`` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names_from_env(variable: str) -> set[str] | None:
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return None
    return {normalize_name(part.strip()) for part in raw.split(",") if part.strip()}


@dataclass
class PluginInfo:
    """What ``blip2 plugins`` shows for one plugin module.

    Attributes:
        distribution: the installed package that declared it (``blip2core`` for built-ins).
        version: that package's version.
        module: the module the entry point names.
        error: None when it loaded and all its hooks ran; otherwise what went wrong.
        components: what it registered.
    """

    distribution: str
    version: str
    module: str
    error: str | None = None
    components: list[Component] = field(default_factory=list)

    def add_error(self, message: str) -> None:
        self.error = message if self.error is None else f"{self.error}; {message}"

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "components": [
                {"kind": c.kind, "name": c.name, "description": c.description} for c in self.components
            ],
        }


class Plugins:
    """The loaded plugins, their pluggy manager and the component registry they filled."""

    def __init__(self, *, include: set[str] | None = None, exclude: set[str] | None = None) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.infos: list[PluginInfo] = []
        for module_name in BUILTIN_MODULES:
            self._load(PluginInfo(BUILTIN_DISTRIBUTION, _version(BUILTIN_DISTRIBUTION), module_name))
        for entry_point in metadata.entry_points(group=hookspecs.PROJECT_NAME):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else entry_point.name
            key = normalize_name(dist_name)
            if key == BUILTIN_DISTRIBUTION:
                continue  # the core's own modules are loaded above
            if (include is not None and key not in include) or (exclude and key in exclude):
                continue
            version = dist.version if dist is not None else "?"
            self._load(PluginInfo(dist_name, version, entry_point.value), entry_point)

    @classmethod
    def from_environment(cls) -> "Plugins":
        return cls(
            include=_names_from_env("BLIP2_PLUGINS"),
            exclude=_names_from_env("BLIP2_DISABLE_PLUGINS"),
        )

    def _load(self, info: PluginInfo, entry_point: metadata.EntryPoint | None = None) -> None:
        self.infos.append(info)
        try:
            module = entry_point.load() if entry_point is not None else importlib.import_module(info.module)
        except Exception as exc:  # a broken plugin must not break the others
            info.add_error(f"import failed: {type(exc).__name__}: {exc}")
            return
        plugin_name = f"{info.distribution}:{info.module}"
        try:
            self.manager.register(module, name=plugin_name)
            self._check_hook_names(module)
        except Exception as exc:
            info.add_error(f"invalid plugin: {exc}")
            if self.manager.is_registered(module):
                self.manager.unregister(module)
            return
        self._collect_components(info, module)

    @staticmethod
    def _check_hook_names(module: ModuleType) -> None:
        known = {name for name in dir(hookspecs) if name.startswith("register_")}
        for name in dir(module):
            if getattr(getattr(module, name), hookspecs.PROJECT_NAME + "_impl", None) is not None and name not in known:
                raise ValueError(f"{name!r} is not a blip2core hook (known: {', '.join(sorted(known))})")

    def _collect_components(self, info: PluginInfo, module: ModuleType) -> None:
        """Run each component hook; a hook's components are added only if the whole hook succeeds."""
        for hook_name, kind in hookspecs.COMPONENT_HOOKS.items():
            function = getattr(module, hook_name, None)
            if function is None:
                continue
            registered: list[Component] = []

            def register(
                name: str,
                factory: Any,
                *,
                options: Any = None,
                description: str = "",
                _kind: str = kind,
            ) -> None:
                registered.append(Component(_kind, name, factory, options, description, info.distribution))

            try:
                function(register)
            except Exception as exc:
                info.add_error(f"{hook_name} raised {type(exc).__name__}: {exc}")
                continue
            for component in registered:
                try:
                    self.registry.add(component)
                except DuplicateComponentError as exc:
                    info.add_error(str(exc))
                    first_owner = self._info_of(component.kind, component.name, exclude=info)
                    if first_owner is not None:
                        first_owner.add_error(str(exc))
                    continue
                info.components.append(component)

    def _info_of(self, kind: str, name: str, exclude: PluginInfo) -> PluginInfo | None:
        for other in self.infos:
            if other is not exclude and any(c.kind == kind and c.name == name for c in other.components):
                return other
        return None

    def call_register_commands(self, cli: Any) -> list[str]:
        """Let each plugin add CLI commands; returns errors instead of raising."""
        errors = []
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli)
            except Exception as exc:
                errors.append(f"{impl.plugin_name}: register_commands raised {type(exc).__name__}: {exc}")
        return errors


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "source"


_lock = threading.Lock()
_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use from the environment."""
    global _plugins
    with _lock:
        if _plugins is None:
            _plugins = Plugins.from_environment()
        return _plugins


def get_registry() -> Registry:
    return get_plugins().registry


def reset_plugins() -> None:
    """Forget the loaded plugins: the next ``get_plugins()`` discovers them again."""
    global _plugins
    with _lock:
        _plugins = None
