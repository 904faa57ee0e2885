"""Exceptions with messages written for the person who has to fix the input."""

from __future__ import annotations


class Blip2Error(Exception):
    """Base class: the CLI prints these as one clear line, without a traceback."""


class SpecError(Blip2Error):
    """A pipeline spec (file or dict) is unreadable or invalid."""


class UnknownComponentError(SpecError):
    """A spec names a component that no loaded plugin registered."""


class DuplicateComponentError(Blip2Error):
    """Two plugins registered the same (kind, name)."""


class PluginError(Blip2Error):
    """A plugin failed to import or raised inside one of its hooks."""


class CheckpointError(Blip2Error):
    """A checkpoint is missing, unreadable, or does not match the model."""


class InputError(Blip2Error, ValueError):
    """A request the inputs cannot satisfy (a prompt longer than the language model's context, a
    setting out of range). A ValueError too, for callers that catch that."""


class Blip2Warning(UserWarning):
    """A warning the CLI prints as one ``warning: ...`` line."""


class PluginSelectionWarning(Blip2Warning):
    """BLIP2_PLUGINS / BLIP2_DISABLE_PLUGINS name a distribution that is not installed."""
