"""Shared fixtures: tiny real pipelines (eva-vit, qformer, opt at toy sizes) and easy-vqa run configs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Path:
    """A folder with the easy-vqa BPE tokenizer (for the random tiny OPT)."""
    from blip2_runner.testing import save_easy_vqa_tokenizer

    folder = tmp_path_factory.mktemp("assets")
    save_easy_vqa_tokenizer(folder / "easy-vqa-bpe")
    return folder


@pytest.fixture(scope="session")
def pretrained_opt(tmp_path_factory) -> Path:
    """A tiny OPT pre-trained for a few seconds on easy-vqa's question/answer text (see testing.py)."""
    from blip2_runner.testing import pretrain_tiny_opt

    return pretrain_tiny_opt(tmp_path_factory.mktemp("tiny-opt") / "opt")


@pytest.fixture(scope="session")
def make_tiny_pipeline(tmp_path_factory):
    """make_tiny_pipeline(**bridge_options) -> a tiny real pipeline (seed 0, bridge initializer_range 0.1
    so images differ visibly); each test module builds its own with a module-scoped fixture."""
    import torch

    from blip2core import load_pipeline
    from blip2_runner.testing import tiny_pipeline_spec

    def make(**bridge_options):
        torch.manual_seed(0)
        spec = tiny_pipeline_spec(tmp_path_factory.mktemp("spec"))
        spec["bridge"]["options"].update(initializer_range=0.1, **bridge_options)
        return load_pipeline(spec)

    return make


@pytest.fixture
def make_run(assets, tmp_path):
    """make_run(task=..., **training) -> a RUN config dict writing into tmp_path/out."""
    from blip2_runner.testing import tiny_run_config

    def make(task: str = "vqa", *, out: str = "out", **kwargs):
        config = tiny_run_config(assets, task=task, **kwargs)
        config["output_dir"] = str(tmp_path / out)
        return copy.deepcopy(config)

    return make
