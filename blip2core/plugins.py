"""Plugin discovery: the core's built-in plugins plus every entry point in group ``blip2core``.

Environment:
    BLIP2_PLUGINS=a,b          load only these distributions (the built-ins always load)
    BLIP2_DISABLE_PLUGINS=x,y  skip these distributions
A name in either that is no installed plugin distribution is a PluginSelectionWarning naming the
closest installed one.

A plugin that fails to import, implements an unknown hook, or raises inside a hook is recorded
with its error; everything else keeps working. The registry keeps those failures, and the
distributions the environment left out, so that "unknown vision encoder" says why. Hooks are called through pluggy
(``manager.hook.register_*(register=...)``), one plugin at a time.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from blip2core import hookspecs
from blip2core.errors import Blip2Error, DuplicateComponentError, PluginSelectionWarning
from blip2core.registry import Component, HFConfigClaim, Registry

if TYPE_CHECKING:
    from pydantic import BaseModel

BUILTIN_DISTRIBUTION = "blip2core"
BUILTIN_MODULES = ("blip2core.bridges.plugin", "blip2core.preprocess.plugin")
SELECTION_VARIABLES = ("BLIP2_PLUGINS", "BLIP2_DISABLE_PLUGINS")


#: what a plugin's import or hook may raise without taking blip2 down: any error, and a
#: ``sys.exit()`` (a KeyboardInterrupt is the user's, and still stops everything)
PLUGIN_FAILURES = (Exception, SystemExit)


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
        hf_configs: the Hugging Face BLIP-2 sub-configs it claimed (``register_hf_configs``).
    """

    distribution: str
    version: str
    module: str
    error: str | None = None
    components: list[Component] = field(default_factory=list)
    hf_configs: list[HFConfigClaim] = field(default_factory=list)

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
            "hf_configs": [{"part": c.part, "model_type": c.model_type} for c in self.hf_configs],
        }


class Plugins:
    """The loaded plugins, their pluggy manager and the component registry they filled."""

    def __init__(self, *, include: set[str] | None = None, exclude: set[str] | None = None) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.infos: list[PluginInfo] = []
        #: every installed plugin distribution, loaded or not, by normalised name
        self.installed: set[str] = {BUILTIN_DISTRIBUTION}
        for module_name in BUILTIN_MODULES:
            self._load(PluginInfo(BUILTIN_DISTRIBUTION, _version(BUILTIN_DISTRIBUTION), module_name))
        skipped: set[str] = set()
        for entry_point in metadata.entry_points(group=hookspecs.PROJECT_NAME):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else entry_point.name
            key = normalize_name(dist_name)
            self.installed.add(key)
            if key == BUILTIN_DISTRIBUTION:
                continue  # the core's own modules are loaded above
            if (include is not None and key not in include) or (exclude and key in exclude):
                skipped.add(dist_name)
                continue
            version = dist.version if dist is not None else "?"
            self._load(PluginInfo(dist_name, version, entry_point.value), entry_point)
        if skipped:
            self.registry.skipped_plugins[" / ".join(SELECTION_VARIABLES)] = sorted(skipped)

    @classmethod
    def from_environment(cls) -> "Plugins":
        """The plugins BLIP2_PLUGINS / BLIP2_DISABLE_PLUGINS select; a name in them that is not
        installed is a PluginSelectionWarning (``blip2`` prints it as one ``warning:`` line)."""
        include, exclude = (_names_from_env(variable) for variable in SELECTION_VARIABLES)
        plugins = cls(include=include, exclude=exclude)
        for variable, names in zip(SELECTION_VARIABLES, (include, exclude)):
            for message in plugins.unknown_names(variable, names or set()):
                warnings.warn(message, PluginSelectionWarning, stacklevel=2)
        return plugins

    def unknown_names(self, variable: str, names: set[str]) -> list[str]:
        """One message per name in ``names`` (from ``variable``) that is no installed plugin
        distribution, with the closest installed one."""
        messages = []
        installed = sorted(self.installed)
        for name in sorted(names - self.installed):
            close = difflib.get_close_matches(name, installed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            messages.append(
                f"{variable} names {name!r}, which is not an installed blip2core plugin distribution{hint} "
                f"Installed: {', '.join(installed)}"
            )
        return messages

    def _load(self, info: PluginInfo, entry_point: metadata.EntryPoint | None = None) -> None:
        self.infos.append(info)
        try:
            module = entry_point.load() if entry_point is not None else importlib.import_module(info.module)
        except PLUGIN_FAILURES as exc:  # a broken plugin must not break the others
            info.add_error(f"import failed: {type(exc).__name__}: {exc}")
            self._record_failure(info, f"failed to import: {type(exc).__name__}: {exc}")
            return
        plugin_name = f"{info.distribution}:{info.module}"
        try:
            # pluggy validates each hookimpl's arguments against its spec here ...
            self.manager.register(module, name=plugin_name)
            # ... and refuses hooks that have no spec here
            self._check_pending(module)
        except Exception as exc:
            info.add_error(f"invalid plugin: {exc}")
            self._record_failure(info, f"is not a valid plugin: {exc}")
            if self.manager.is_registered(module):
                self.manager.unregister(module)
            return
        self._call_component_hooks(info, module)
        self._call_hf_config_hook(info, module)

    def _record_failure(self, info: PluginInfo, why: str) -> None:
        """Keep why ``info``'s components may be missing, for the registry's unknown-name errors."""
        failures = self.registry.failed_plugins
        failures[info.distribution] = f"{failures[info.distribution]}; {why}" if info.distribution in failures else why

    def _check_pending(self, module: ModuleType) -> None:
        """``PluginManager.check_pending``, its error phrased with the hook names a user can fix.

        Earlier plugins with unknown hooks were unregistered, so an unknown hook is ``module``'s.
        """
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = sorted(c.name for c in self.manager.get_hookcallers(exc.plugin) or () if not c.has_spec())
            if exc.plugin is not module or not unknown:
                raise
            raise ValueError(
                f"{unknown[0]!r} is not a blip2core hook (known: {', '.join(self.hook_names())})"
            ) from None

    def hook_names(self) -> list[str]:
        """The hooks a plugin may implement (those with a spec in ``blip2core.hookspecs``), sorted."""
        return sorted(name for name, caller in vars(self.manager.hook).items() if caller.has_spec())

    def _hook_of(self, hook_name: str, plugin: object) -> pluggy.HookCaller:
        """The hook ``hook_name`` restricted to one plugin: a plugin that raises loses only its own
        registrations, and the others still run."""
        others = self.manager.get_plugins() - {plugin}
        return self.manager.subset_hook_caller(hook_name, remove_plugins=others)

    def _call_component_hooks(self, info: PluginInfo, module: ModuleType) -> None:
        """Run each component hook; a hook's components are added only if the whole hook succeeds."""
        for hook_name, kind in hookspecs.COMPONENT_HOOKS.items():
            registered: list[Component] = []

            def add(
                name: str,
                factory: Callable[..., Any],
                *,
                options: type[BaseModel] | None = None,
                description: str = "",
                _kind: str = kind,
            ) -> None:
                registered.append(Component(_kind, name, factory, options, description, info.distribution))

            register: hookspecs.Register = add
            try:
                self._hook_of(hook_name, module)(register=register)
            except PLUGIN_FAILURES as exc:
                info.add_error(f"{hook_name} raised {type(exc).__name__}: {exc}")
                self._record_failure(info, f"raised in {hook_name}: {type(exc).__name__}: {exc}")
                continue
            for component in registered:
                try:
                    self.registry.add(component)
                except DuplicateComponentError as exc:
                    info.add_error(str(exc))
                    first_owner = self._owner_of(lambda i: any(
                        c.kind == component.kind and c.name == component.name for c in i.components), exclude=info)
                    if first_owner is not None:
                        first_owner.add_error(str(exc))
                    continue
                info.components.append(component)

    def _call_hf_config_hook(self, info: PluginInfo, module: ModuleType) -> None:
        """Run ``register_hf_configs``; its claims are added only if the whole hook succeeds."""
        claims: list[HFConfigClaim] = []

        def claim(part: hookspecs.HFConfigPart, model_type: str, reader: hookspecs.HFConfigReader) -> None:
            claims.append(HFConfigClaim(part, model_type, reader, info.distribution))

        register: hookspecs.RegisterHFConfig = claim
        try:
            self._hook_of("register_hf_configs", module)(register=register)
        except PLUGIN_FAILURES as exc:
            info.add_error(f"register_hf_configs raised {type(exc).__name__}: {exc}")
            return
        for claim in claims:
            try:
                self.registry.add_hf_config(claim)
            except DuplicateComponentError as exc:
                info.add_error(str(exc))
                first_owner = self._owner_of(lambda i: any(
                    (c.part, c.model_type) == (claim.part, claim.model_type) for c in i.hf_configs), exclude=info)
                if first_owner is not None:
                    first_owner.add_error(str(exc))
                continue
            except Blip2Error as exc:
                info.add_error(f"register_hf_configs: {exc}")
                continue
            info.hf_configs.append(claim)

    def _owner_of(self, owns: Callable[[PluginInfo], bool], exclude: PluginInfo) -> PluginInfo | None:
        return next((other for other in self.infos if other is not exclude and owns(other)), None)

    def call_register_commands(self, cli: Any) -> list[str]:
        """Let each plugin add CLI commands; returns errors instead of raising."""
        errors = []
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                self._hook_of("register_commands", impl.plugin)(cli=cli)
            except PLUGIN_FAILURES as exc:
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
