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


@pytest.fixture
def make_run(assets, tmp_path):
    """make_run(task=..., **training) -> a RUN config dict writing into tmp_path/out."""
    from blip2_runner.testing import tiny_run_config

    def make(task: str = "vqa", *, out: str = "out", **kwargs):
        config = tiny_run_config(assets, task=task, **kwargs)
        config["output_dir"] = str(tmp_path / out)
        return copy.deepcopy(config)

    return make
