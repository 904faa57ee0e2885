"""The hooks a plugin implements (pluggy project name ``blip2core``).

Each ``register_*`` hook receives a ``register`` callback with the signature::

    register(name: str, factory: Callable, *, options: type[pydantic.BaseModel] | None = None,
             description: str = "")

``factory`` is called later, when a pipeline names the component, with the validated options
instance (or ``None`` when ``options`` is ``None``) plus the keyword context listed in each hook.

A plugin module looks like::

    from blip2core import hookimpl

    @hookimpl
    def register_vision_encoders(register):
        register("my-vit", build_my_vit, options=MyVitOptions, description="My ViT-B/16")
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT_NAME = "blip2core"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., None]


@hookspec
def register_vision_encoders(register: Register) -> None:
    """Register VisionEncoder factories: ``factory(options) -> VisionEncoder``."""


@hookspec
def register_bridges(register: Register) -> None:
    """Register Bridge factories: ``factory(options, vision_width=C, llm_hidden_size=D) -> Bridge``."""


@hookspec
def register_language_models(register: Register) -> None:
    """Register LanguageModel factories: ``factory(options) -> LanguageModel``."""


@hookspec
def register_preprocessors(register: Register) -> None:
    """Register Preprocessor factories: ``factory(options, preprocess_config=cfg) -> Preprocessor``."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register Task factories: ``factory(options) -> Task``."""


@hookspec
def register_losses(register: Register) -> None:
    """Register Loss factories: ``factory(options) -> Loss``."""


@hookspec
def register_quantizers(register: Register) -> None:
    """Register Quantizer factories: ``factory(options) -> Quantizer``."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``blip2`` CLI; ``cli`` is its ``click.Group``."""


#: hook name -> component kind it registers
COMPONENT_HOOKS: dict[str, str] = {
    "register_vision_encoders": "vision_encoder",
    "register_bridges": "bridge",
    "register_language_models": "language_model",
    "register_preprocessors": "preprocessor",
    "register_tasks": "task",
    "register_losses": "loss",
    "register_quantizers": "quantizer",
}
