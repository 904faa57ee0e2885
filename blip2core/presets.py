"""Named models (presets) that plugins contribute through the ``register_presets`` hook.

A preset is a name users type (``load_pipeline("blip2-opt-2.7b")``, ``--model mini``) with what it
resolves to (a Hugging Face hub id, a LAVIS ``(name, model_type)`` pair, or a pipeline spec plus
weights) and what ``blip2 models`` shows: description, download size, licence, tasks and the
providing plugin. Models registered through the older ``register_models`` hook are listed as
spec presets too.

The table is collected once per loaded plugin set (``blip2core.plugins.get_plugins()``), one
plugin at a time: a plugin whose hook raises loses only its own presets, and the error is shown by
``blip2 plugins``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blip2core.checkpoints.hub import HUB_ID
from blip2core.errors import Blip2Error, DuplicateComponentError, SpecError
from blip2core.plugins import Plugins, get_plugins


@dataclass(frozen=True)
class Preset:
    """One named model.

    Attributes:
        name: what users type.
        plugin: the distribution that registered it.
        hub_id, revision: a Hugging Face BLIP-2 repository (and branch / tag / commit), or None.
        lavis: a LAVIS ``(name, model_type)`` pair, or None.
        spec: a PipelineSpec, a mapping in its shape, or a callable returning either; or None.
        weights: checkpoints appended to the spec's own ``weights``.
        description, download_size, licence, tasks: what ``blip2 models`` shows.
    """

    name: str
    plugin: str
    hub_id: str | None = None
    revision: str | None = None
    lavis: tuple[str, str] | None = None
    spec: Any = None
    weights: tuple[str, ...] = ()
    description: str = ""
    download_size: str | None = None
    licence: str | None = None
    tasks: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``hub``, ``lavis`` or ``spec``."""
        return "hub" if self.hub_id is not None else "lavis" if self.lavis is not None else "spec"

    @property
    def target(self) -> str:
        """What it resolves to, as one short text."""
        if self.hub_id is not None:
            return self.hub_id + (f"@{self.revision}" if self.revision else "")
        if self.lavis is not None:
            return f"LAVIS {self.lavis[0]}/{self.lavis[1]}"
        return "spec" + (f" + {len(self.weights)} weight file(s)" if self.weights else "")

    def spec_data(self) -> Any:
        """The spec of a spec preset (the callable called), its ``weights`` appended."""
        made = self.spec() if callable(self.spec) else self.spec
        if not self.weights:
            return made
        data = made.model_dump() if hasattr(made, "model_dump") else dict(made)
        data["weights"] = [*list(data.get("weights") or []), *self.weights]
        return data


def make_preset(
    name: str,
    plugin: str,
    *,
    hub_id: str | None = None,
    revision: str | None = None,
    lavis: Sequence[str] | None = None,
    spec: Any = None,
    weights: Sequence[str | Path] = (),
    description: str = "",
    download_size: str | None = None,
    licence: str | None = None,
    tasks: Sequence[str] = (),
) -> Preset:
    """A checked Preset (the ``register`` callback of ``register_presets`` calls this).

    Raises:
        SpecError: not exactly one target, a malformed hub id or LAVIS pair, or an empty name.
    """
    where = f"preset {name!r}"
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SpecError(f"{where}: a preset name is a non-empty word without '/', e.g. 'blip2-opt-2.7b'")
    targets = [t for t, value in (("hub_id", hub_id), ("lavis", lavis), ("spec", spec)) if value is not None]
    if len(targets) != 1:
        raise SpecError(f"{where}: give exactly one of hub_id, lavis or spec (got {', '.join(targets) or 'none'})")
    if hub_id is not None and (not HUB_ID.match(hub_id) or "/" not in hub_id):
        raise SpecError(f"{where}: hub_id {hub_id!r} is not 'owner/name'")
    if lavis is not None:
        if isinstance(lavis, str) or len(lavis) != 2 or not all(isinstance(x, str) and x for x in lavis):
            raise SpecError(f"{where}: lavis must be a (name, model_type) pair, got {lavis!r}")
        lavis = (lavis[0], lavis[1])
    if weights and spec is None:
        raise SpecError(f"{where}: weights go with a spec preset")
    return Preset(
        name=name, plugin=plugin, hub_id=hub_id, revision=revision, lavis=lavis, spec=spec,
        weights=tuple(str(w) for w in weights), description=description, download_size=download_size,
        licence=licence, tasks=tuple(tasks),
    )


@dataclass
class PresetTable:
    """Presets by name, and the names more than one plugin registered (which then load nothing)."""

    presets: dict[str, Preset] = field(default_factory=dict)
    clashes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, preset: Preset) -> None:
        existing = self.presets.get(preset.name)
        if existing is not None:
            self.clashes.setdefault(preset.name, [existing.plugin]).append(preset.plugin)
            raise DuplicateComponentError(self._clash_message(preset.name))
        self.presets[preset.name] = preset

    def _clash_message(self, name: str) -> str:
        owners = " and ".join(repr(o) for o in self.clashes[name])
        return (f"preset {name!r} is registered by more than one plugin: {owners}; uninstall one or disable "
                "it with BLIP2_DISABLE_PLUGINS")

    def get(self, name: str) -> Preset | None:
        """The preset, None when no plugin registered ``name``.

        Raises:
            DuplicateComponentError: more than one plugin registered it.
        """
        if name in self.clashes:
            raise DuplicateComponentError(self._clash_message(name))
        return self.presets.get(name)

    def names(self) -> list[str]:
        return sorted(self.presets)

    def __iter__(self):
        return (self.presets[name] for name in self.names())


def collect_presets(plugins: Plugins) -> PresetTable:
    """Call every plugin's ``register_presets`` (one plugin at a time) and add the models of
    ``register_models`` as spec presets; a plugin's failure is recorded on its ``PluginInfo``."""
    table = PresetTable()
    for info in plugins.infos:
        module = plugins.manager.get_plugin(f"{info.distribution}:{info.module}")
        if module is None:
            continue  # it failed to load: its error is recorded already
        made: list[Preset] = []

        def register(name: str, _plugin: str = info.distribution, **fields: Any) -> None:
            made.append(make_preset(name, _plugin, **fields))

        others = plugins.manager.get_plugins() - {module}
        try:
            plugins.manager.subset_hook_caller("register_presets", remove_plugins=others)(register=register)
        except Exception as exc:  # a broken plugin must not break the others
            info.add_error(f"register_presets raised {type(exc).__name__}: {exc}")
            continue
        for preset in made:
            _add_reporting(table, preset, info)
    for component in plugins.registry.components["model"].values():
        if component.name in table.presets:
            continue  # a plugin that registers both hooks: the preset says more
        preset = Preset(name=component.name, plugin=component.plugin, spec=_model_factory(component.factory),
                        description=component.description)
        table.add(preset)
    return table


def _add_reporting(table: PresetTable, preset: Preset, info: Any) -> None:
    try:
        table.add(preset)
    except DuplicateComponentError as exc:
        info.add_error(str(exc))


def _model_factory(factory: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: factory(None)


_lock = threading.Lock()
_tables: weakref.WeakKeyDictionary[Plugins, PresetTable] = weakref.WeakKeyDictionary()


def get_presets(plugins: Plugins | None = None) -> PresetTable:
    """The presets of ``plugins`` (default: the process-wide plugin set), collected on first use."""
    plugins = plugins if plugins is not None else get_plugins()
    with _lock:
        table = _tables.get(plugins)
        if table is None:
            table = _tables[plugins] = collect_presets(plugins)
        return table


def unknown_name_hint(name: str) -> str:
    """`` (did you mean 'x'? registered models: a, b; blip2 models describes them)`` for errors."""
    import difflib

    names = get_presets().names()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f" ({guess}registered models: {', '.join(names) or 'none'}; blip2 models describes them)"


def require_preset(name: str) -> Preset:
    """The preset ``name``, or a Blip2Error listing the known ones."""
    preset = get_presets().get(name)
    if preset is None:
        raise Blip2Error(f"{name}: no such registered model{unknown_name_hint(name)}")
    return preset
