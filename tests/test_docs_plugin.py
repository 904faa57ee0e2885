"""docs/writing-a-plugin.md installs and works exactly as written: its two packages (a vision
encoder, and a Qwen2 language model that makes HF BLIP-2 folders load) and their tests."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from blip2core import PipelineSpec, load_pipeline
from blip2core.plugins import Plugins, reset_plugins

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def block_with(language: str, text: str) -> str:
    (block,) = [b for b in code_blocks(language) if text in b]
    return block


def install(site: Path, pyproject_text: str, plugin_source: str) -> None:
    """Lay a documented package out as pip would install it: <package>/plugin.py and its dist-info."""
    project = tomllib.loads(pyproject_text)["project"]
    entry_points = project["entry-points"]["blip2core"]
    package = site / next(iter(entry_points.values())).split(".")[0]
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(plugin_source)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("[blip2core]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


def run_documented_tests(path_comment: str, tmp_path: Path) -> int:
    """Execute the python block that starts with ``# tests/...`` and call its test functions."""
    namespace: dict = {}
    exec(compile(block_with("python", path_comment), path_comment, "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    for test in tests:
        test(tmp_path) if test.__code__.co_argcount else test()
    return len(tests)


@pytest.fixture
def installed_doc_plugin(tmp_path, monkeypatch):
    """The documented packages, installed; the process-wide plugins rediscovered with them, and after."""
    site = tmp_path / "site"
    install(site, code_blocks("toml")[0], code_blocks("python")[0])
    install(site, block_with("toml", 'name = "acme-qwen2"'), block_with("python", "def register_hf_configs"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("BLIP2_PLUGINS", raising=False)
    monkeypatch.delenv("BLIP2_DISABLE_PLUGINS", raising=False)
    reset_plugins()
    yield
    reset_plugins()
    for name in [n for n in list(importlib.sys.modules) if n.startswith(("acme_vit", "acme_qwen2"))]:
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


def test_documented_plugins_use_only_blip2core_and_its_sdk():
    for source in (code_blocks("python")[0], block_with("python", "def register_hf_configs")):
        imported = set(re.findall(r"^\s*(?:from|import) (blip2core[\w.]*)", source, flags=re.M))
        assert imported <= {"blip2core", "blip2core.plugin_api"}, imported


def test_documented_vision_encoder_test_passes(installed_doc_plugin, tmp_path):
    assert run_documented_tests("# tests/test_acme_vit.py", tmp_path) == 1


def test_documented_llm_plugin_loads_hf_blip2_folders_with_its_text_model(installed_doc_plugin, tmp_path):
    info = next(i for i in Plugins().infos if i.distribution == "acme-qwen2")
    assert info.status == "ok" and [(c.part, c.model_type) for c in info.hf_configs] == [("text", "qwen2")]
    assert run_documented_tests("# tests/test_acme_qwen2.py", tmp_path) == 1


def test_documented_vision_encoder_serves_captioning_retrieval_features_and_training(installed_doc_plugin, tmp_path):
    """The documented acme-vit, written only against the SDK, under every job of the pipeline: captions,
    retrieval (ITC + ITM), features of each mode, and a few training steps of the runner."""
    from PIL import Image

    from blip2_runner.testing import tiny_run_config
    from blip2_runner.trainer import Trainer

    config = tiny_run_config(tmp_path, task="vqa", steps=3, batch_size=4, train_limit=8, eval_limit=4)
    config["pipeline"]["vision"] = {"name": "acme-vit", "options": {"image_size": 32, "patch_size": 8, "width": 32}}
    config["output_dir"] = str(tmp_path / "out")
    pipe = load_pipeline(PipelineSpec.from_dict(config["pipeline"]), registry=Plugins().registry)
    images = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue")]
    texts = ["a red square", "a blue square", "a green circle"]

    captions = pipe.caption(images, max_new_tokens=3)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    found = pipe.retrieve(images, texts, k=2)
    assert len(found["image_to_text"]) == 2 and all(len(row) == 2 for row in found["image_to_text"])
    image_features = pipe.extract_features(images, mode="image")
    assert image_features.image_embeds.shape == (2, 8, 32)  # [B, Q, H]: 8 queries of the Q-Former's width
    text_features = pipe.extract_features(texts=texts, mode="text")
    assert text_features.text_embeds.shape[0] == 3
    both = pipe.extract_features(images, texts[:2], mode="multimodal")
    assert both.multimodal_embeds.shape[:2] == (2, 8)

    trainer = Trainer(config)
    assert type(trainer.pipeline.vision).__module__ == "acme_vit.plugin"
    before = {k: v.clone() for k, v in trainer.pipeline.bridge.state_dict().items()}
    result = trainer.train()
    assert result.step == 3 and result.skipped_steps == 0
    after = trainer.pipeline.bridge.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())
