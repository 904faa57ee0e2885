"""``LanguageModelOptions``: how a language-model component finds its architecture and weights.

Every transformers-backed LLM component (``opt``, ``llama``, ...) takes these options or a
subclass of them. Exactly one source of weights is used:

- ``path`` (a local folder or a Hugging Face hub id): ``from_pretrained`` weights;
- ``gguf_file`` (a GGUF file inside ``path``, or a full path to a ``.gguf``): dequantised
  weights, cached as safetensors after the first load;
- ``config`` (a dict of transformers config fields): the architecture with random weights, for a
  checkpoint that brings its own (``load_foreign_state_dict`` / ``blip2core.checkpoints``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blip2core.hf_config import check_config_fields, import_config_class
from blip2core.precision import DType as TorchDType


class LanguageModelOptions(BaseModel):
    """Options shared by the transformers-backed language models.

    Attributes:
        path: a local folder written by ``save_pretrained``, or a hub id such as
            ``facebook/opt-2.7b``. With ``HF_HUB_OFFLINE=1`` a hub id must already be in the local
            Hugging Face cache. With ``config`` it only names where the tokenizer is.
        gguf_file: a GGUF file name inside ``path`` (local folder or hub repo), or the full path of
            a ``.gguf`` file. Its dequantised weights are cached as safetensors under
            ``$BLIP2_CACHE`` (default ``~/.cache/blip2core``), keyed by the file's path, size and
            modification time, so only the first load pays for dequantising.
        config: transformers config fields (``hidden_size``, ``num_hidden_layers``, ...) to build
            the architecture with random weights instead of loading any. When a subclass names its
            ``config_class``, the fields are checked while validating (``blip2 spec validate``):
            a numeric string (YAML's ``1e-6``) becomes a number where the field is numeric, and a
            key the config class does not know is an error naming it (``blip2core.hf_config``).
        tokenizer: folder or hub id of the tokenizer; default: ``path`` (or the GGUF file).
        revision: hub revision (branch, tag or commit) for hub ids.
        torch_dtype: precision to load in; ``auto`` keeps the checkpoint's (float32 for GGUF and
            for ``config``). The pipeline casts to its own ``dtype`` afterwards anyway.
    """

    model_config = ConfigDict(extra="forbid")

    #: the transformers config class of ``config``, as ``"transformers.LlamaConfig"`` (imported only
    #: when a ``config`` is validated); None: checked when the component is built
    config_class: ClassVar[str | None] = None

    path: str | None = Field(None, min_length=1)
    gguf_file: str | None = Field(None, min_length=1)
    config: dict[str, Any] | None = None
    tokenizer: str | None = Field(None, min_length=1)
    revision: str | None = Field(None, min_length=1)
    torch_dtype: TorchDType = "auto"

    @field_validator("config")
    @classmethod
    def _config_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or cls.config_class is None:
            return value
        return check_config_fields(import_config_class(cls.config_class), value)

    @model_validator(mode="after")
    def _one_source(self) -> "LanguageModelOptions":
        if self.config is not None and self.gguf_file is not None:
            raise ValueError("give either config (random weights) or gguf_file, not both")
        if self.path is None and self.gguf_file is None and self.config is None:
            raise ValueError("give path (folder or hub id), gguf_file, or config")
        return self
