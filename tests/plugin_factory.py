"""Create installed-looking third-party plugin distributions on the fly for tests.

A distribution here is what pip would leave in site-packages: a ``<name>.dist-info`` folder
with ``METADATA`` and ``entry_points.txt``, next to the plugin module itself.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path


def write_distribution(site: Path, dist_name: str, module_source: str, *, version: str = "0.1.0") -> str:
    """Write a one-module plugin distribution into ``site``; returns the module name.

    The module name is unique per call, so tests never see each other's cached imports.
    """
    module_name = f"{dist_name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[blip2core]\n{dist_name} = {module_name}\n")
    importlib.invalidate_caches()
    return module_name


def forget_modules(prefix: str) -> None:
    for name in [n for n in sys.modules if n.startswith(prefix)]:
        del sys.modules[name]


TINY_VIT_PLUGIN = '''
    """A third-party vision encoder package, exactly as docs/writing-a-plugin.md describes."""
    import torch
    from pydantic import BaseModel
    from torch import nn

    from blip2core import PreprocessConfig, hookimpl


    class TinyViTOptions(BaseModel):
        width: int = 24
        patch_size: int = 8
        image_size: int = 32


    class TinyViT(nn.Module):
        """pixel_values [B,3,S,S] -> tokens [B,(S/P)^2,width] through one transformer layer."""

        def __init__(self, options):
            super().__init__()
            self.width = options.width
            self.preprocess_config = PreprocessConfig(image_size=options.image_size)
            self.patch = nn.Conv2d(3, options.width, options.patch_size, options.patch_size)
            self.layer = nn.TransformerEncoderLayer(options.width, 4, 2 * options.width, batch_first=True)

        def forward(self, pixel_values):
            tokens = self.patch(pixel_values).flatten(2).transpose(1, 2)
            return self.layer(tokens)


    @hookimpl
    def register_vision_encoders(register):
        register("tiny-vit", TinyViT, options=TinyViTOptions, description="a tiny ViT for tests")
'''


QWEN2_PLUGIN = '''
    """A third-party language-model package for Qwen2, written against blip2core.plugin_api only:
    with it installed, Hugging Face BLIP-2 folders whose text model is Qwen2 load."""
    from blip2core import hookimpl
    from blip2core.plugin_api import LanguageModelOptions, load_language_model, text_config_reader


    class Qwen2Options(LanguageModelOptions):
        """path / gguf_file / config, as every transformers-backed language model."""


    def build_qwen2(options):
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return load_language_model(options, config_class=Qwen2Config, model_class=Qwen2ForCausalLM)


    @hookimpl
    def register_language_models(register):
        register("qwen2", build_qwen2, options=Qwen2Options, description="Qwen2 causal LM")


    @hookimpl
    def register_hf_configs(register):
        register("text", "qwen2", text_config_reader("qwen2"))
'''
