"""One rule for hub ids and for downloads being off (``blip2core.checkpoints.hub``), as whole
models (``load_pipeline``) and language models / tokenizers / GGUF files (``blip2core.llm.sources``)
see it."""

from __future__ import annotations

import huggingface_hub.constants as hub_constants
import pytest

from blip2core import load_pipeline
from blip2core.checkpoints.hub import hub_offline, looks_like_hub_id
from blip2core.errors import CheckpointError, SpecError
from blip2core.llm.sources import resolve_folder, resolve_gguf
from blip2core.loading import resolve_spec


def test_hub_ids_have_an_owner_unless_bare_names_are_allowed(tmp_path, monkeypatch):
    assert looks_like_hub_id("Salesforce/blip2-opt-2.7b")
    assert not looks_like_hub_id("gpt2") and looks_like_hub_id("gpt2", bare_names=True)
    for path in ("/data/opt", "./opt", "~/opt", "a/b/c", "../x", "acme/.hidden", "acme/"):
        assert not looks_like_hub_id(path) and not looks_like_hub_id(path, bare_names=True), path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "local").mkdir()
    assert not looks_like_hub_id("acme/local")  # an existing path is a path


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
@pytest.mark.parametrize("value,offline", [("1", True), ("true", True), ("ON", True), ("yes", True), ("0", False), ("", False)])
def test_offline_follows_either_variable(monkeypatch, variable, value, offline):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(variable, value)
    assert hub_offline() is offline


@pytest.fixture
def transformers_offline_only(monkeypatch, tmp_path):
    """Downloads off through TRANSFORMERS_OFFLINE alone, with an empty hub cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_a_whole_model_follows_the_offline_rule(transformers_offline_only):
    with pytest.raises(CheckpointError, match=r"acme/absent: no such local file or folder, and cannot resolve it as a hub id \(HF_HUB_OFFLINE is set"):
        load_pipeline("acme/absent")


def test_a_language_model_follows_the_same_offline_rule(transformers_offline_only):
    with pytest.raises(CheckpointError, match=r"'acme/absent'.*not in the local cache while HF_HUB_OFFLINE=1"):
        resolve_folder("acme/absent")
    with pytest.raises(CheckpointError, match=r"'gpt2'.*not in the local cache"):
        resolve_folder("gpt2")  # a bare legacy id is a hub id for a language model
    with pytest.raises(CheckpointError, match=r"'acme/absent'.*HF_HUB_OFFLINE=1.*'m\.gguf'"):
        resolve_gguf("acme/absent", "m.gguf")


def test_a_bare_unknown_model_name_is_not_sent_to_the_hub():
    with pytest.raises(SpecError, match=r"not-a-model-xyz: no such spec file, checkpoint folder, registered model or hub id"):
        resolve_spec("not-a-model-xyz")
    with pytest.raises(CheckpointError, match=r"\./nowhere: no such model folder"):
        resolve_folder("./nowhere")
