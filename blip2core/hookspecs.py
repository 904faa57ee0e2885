"""The hooks a plugin implements (pluggy project name ``blip2core``).

blip2core calls every hook with keyword arguments (``pm.hook.register_bridges(register=...)``),
once per plugin, so a plugin that raises loses only what that one hook registered. pluggy checks
each implementation against the specs below when the plugin is registered (an argument the spec
does not have is refused) and ``PluginManager.check_pending`` refuses a hook name that is not here.

A plugin module looks like::

    from blip2core import hookimpl

    @hookimpl
    def register_vision_encoders(register):
        register("my-vit", build_my_vit, options=MyVitOptions, description="My ViT-B/16")

A component's ``factory`` is called later, when a pipeline names the component, with the
validated options instance (or ``None`` when ``options`` is ``None``) plus the keyword context
listed in each hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pluggy

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

PROJECT_NAME = "blip2core"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The ``register`` callback every ``register_<components>`` hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        options: type[BaseModel] | None = None,
        description: str = "",
    ) -> None:
        """Register one component.

        :param name: what a spec writes to select it (``vision: {name: my-vit}``); unique per kind
            across every installed plugin.
        :param factory: builds the component; called with the validated options instance (or
            ``None``) and the hook's keyword context.
        :param options: the pydantic model of the component's options, or ``None`` when it takes none.
        :param description: the one line ``blip2 plugins`` shows.
        """


#: which sub-config of a Hugging Face BLIP-2 ``config.json`` a reader turns into a component
HFConfigPart = Literal["vision", "text"]


@dataclass(frozen=True)
class HFConfigSource:
    """Where a Hugging Face BLIP-2 sub-config comes from, for readers of ``register_hf_configs``.

    Attributes:
        folder: the checkpoint folder (its weights become the spec's ``weights``; the components
            need not load them).
        config_file: ``folder / "config.json"``, to start error messages with.
        config: the whole BLIP-2 config (``num_query_tokens``, ``image_token_index``, ...).
        has_tokenizer: the folder holds tokenizer files (then a language model can take its
            ``tokenizer`` from ``folder``).
    """

    folder: Path
    config_file: Path
    config: Mapping[str, Any]
    has_tokenizer: bool


class HFConfigReader(Protocol):
    """Turns one sub-config (``vision_config`` or ``text_config``) into a component spec."""

    def __call__(self, sub_config: Mapping[str, Any], source: HFConfigSource) -> Mapping[str, Any]:
        """The component spec, ``{"name": ..., "options": {...}}``, that rebuilds ``sub_config``.

        :param sub_config: the ``vision_config`` / ``text_config`` dict of ``config.json``.
        :param source: the folder and the whole config, for options and error messages.
        :raises blip2core.CheckpointError: the sub-config asks for something the component cannot
            build; start the message with ``source.config_file``.
        """


class RegisterHFConfig(Protocol):
    """The ``register`` callback of ``register_hf_configs``."""

    def __call__(self, part: HFConfigPart, model_type: str, reader: HFConfigReader) -> None:
        """Claim the sub-configs of one transformers ``model_type``.

        :param part: ``"vision"`` (``vision_config``) or ``"text"`` (``text_config``).
        :param model_type: the sub-config's ``model_type`` (``"blip_2_vision_model"``, ``"opt"``,
            ``"qwen2"``); one plugin per (part, model_type).
        :param reader: turns the sub-config into the component spec.
        """


@hookspec
def register_vision_encoders(register: Register) -> None:
    """Register VisionEncoder factories: ``factory(options) -> VisionEncoder``.

    :param register: call it once per encoder (see ``Register``).
    """


@hookspec
def register_bridges(register: Register) -> None:
    """Register Bridge factories: ``factory(options, vision_width=C, llm_hidden_size=D) -> Bridge``.

    :param register: call it once per bridge (see ``Register``); ``llm_hidden_size`` is None
        for pipelines without a language model.
    """


@hookspec
def register_language_models(register: Register) -> None:
    """Register LanguageModel factories: ``factory(options) -> LanguageModel``.

    :param register: call it once per language model (see ``Register``).
    """


@hookspec
def register_preprocessors(register: Register) -> None:
    """Register Preprocessor factories: ``factory(options, preprocess_config=cfg) -> Preprocessor``.

    :param register: call it once per preprocessor (see ``Register``); ``cfg`` is the vision
        encoder's ``PreprocessConfig``.
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Register Task factories: ``factory(options) -> Task``.

    :param register: call it once per task (see ``Register``).
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register Loss factories: ``factory(options) -> Loss``.

    :param register: call it once per loss (see ``Register``).
    """


@hookspec
def register_quantizers(register: Register) -> None:
    """Register Quantizer factories: ``factory(options) -> Quantizer``.

    :param register: call it once per quantizer (see ``Register``).
    """


@hookspec
def register_models(register: Register) -> None:
    """Register named models: ``load_pipeline(name)``, ``blip2 ask --model name``.

    ``factory(None)`` returns the model's ``PipelineSpec`` (or a mapping in its shape) with its
    weights referenced by absolute path (e.g. files shipped inside the plugin's package).

    :param register: call it once per model (see ``Register``; models take no ``options``).
    """


class RegisterPreset(Protocol):
    """The ``register`` callback of ``register_presets``."""

    def __call__(
        self,
        name: str,
        *,
        hub_id: str | None = None,
        revision: str | None = None,
        lavis: tuple[str, str] | None = None,
        spec: Any = None,
        weights: Sequence[str | Path] = (),
        description: str = "",
        download_size: str | None = None,
        licence: str | None = None,
        tasks: Sequence[str] = (),
    ) -> None:
        """Register one named model, what ``load_pipeline(name)`` and ``--model name`` load.

        Give exactly one of ``hub_id``, ``lavis`` or ``spec``.

        :param name: what users type (``blip2-opt-2.7b``); unique across every installed plugin.
        :param hub_id: a Hugging Face BLIP-2 repository (``Salesforce/blip2-opt-2.7b``), fetched by
            ``blip2 download NAME`` into the standard Hugging Face cache; ``revision`` pins a
            branch, tag or commit.
        :param lavis: a LAVIS ``(name, model_type)`` pair, resolved by ``blip2core.compat.lavis``.
        :param spec: a ``PipelineSpec``, a mapping in its shape, or a callable returning either
            (called on use, so registering stays cheap); ``weights`` are appended to its own.
        :param description: one line for ``blip2 models``.
        :param download_size: what ``blip2 download`` fetches, as text (``"~15 GB"``); None: unknown.
        :param licence: the licence of the weights (``"MIT"``); None: not stated.
        :param tasks: what it is good for (``caption``, ``vqa``, ``match``, ``features``, ...).
        """


@hookspec
def register_presets(register: RegisterPreset) -> None:
    """Register named models with what they resolve to (see ``RegisterPreset``).

    ``blip2 models`` lists them (size, licence, cached or not, providing plugin); ``blip2 download
    NAME`` fetches a hub preset; ``load_pipeline(NAME)`` loads one (downloading on first use
    unless offline). Register a preset in the plugin whose installation makes it loadable.

    :param register: call it once per preset.
    """


@hookspec
def register_hf_configs(register: RegisterHFConfig) -> None:
    """Claim the sub-configs of Hugging Face BLIP-2 folders that your components rebuild.

    When ``load_pipeline`` meets a folder (or hub id) whose ``config.json`` has
    ``model_type: blip-2``, the core builds the Q-Former itself and asks the reader registered for
    ``("vision", vision_config.model_type)`` and ``("text", text_config.model_type)`` for the
    other two components. LAVIS model names resolve to such folders (``blip2core.compat.lavis``).

    :param register: call it once per (part, model_type) you understand (see ``RegisterHFConfig``).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``blip2`` CLI.

    :param cli: the root ``click.Group``; add commands with ``@cli.command()``.
    """


#: hook name -> component kind it registers
COMPONENT_HOOKS: dict[str, str] = {
    "register_vision_encoders": "vision_encoder",
    "register_bridges": "bridge",
    "register_language_models": "language_model",
    "register_preprocessors": "preprocessor",
    "register_tasks": "task",
    "register_losses": "loss",
    "register_quantizers": "quantizer",
    "register_models": "model",
}
