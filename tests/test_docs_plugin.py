"""docs/writing-a-plugin.md installs and works exactly as written."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from blip2core import PipelineSpec, load_pipeline
from blip2core.plugins import Plugins

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def installed_doc_plugin(tmp_path, monkeypatch):
    """Lay the documented package out as pip would install it."""
    pyproject = tomllib.loads(code_blocks("toml")[0])
    site = tmp_path / "site"
    package = site / "acme_vit"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(code_blocks("python")[0])
    info = site / "acme_vit-0.1.0.dist-info"
    info.mkdir()
    project = pyproject["project"]
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["blip2core"].items())
    (info / "entry_points.txt").write_text("[blip2core]\n" + entry_points)
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in [n for n in list(importlib.sys.modules) if n.startswith("acme_vit")]:
        del importlib.sys.modules[name]


def test_documented_plugin_composes_with_the_documented_spec(installed_doc_plugin):
    plugins = Plugins()
    info = next(i for i in plugins.infos if i.distribution == "acme-vit")
    assert info.status == "ok" and [c.name for c in info.components] == ["acme-vit"]
    spec = PipelineSpec.from_dict(yaml.safe_load(code_blocks("yaml")[0]))
    pipe = load_pipeline(spec, registry=plugins.registry)
    encoding = pipe.encode_images(torch.randn(2, 3, 64, 64))
    assert encoding.vision_tokens.shape == (2, 17, 96)
    assert encoding.llm_inputs.shape == (2, 8, 32)
    assert pipe.vision.preprocess_config.interpolation == "bilinear"
