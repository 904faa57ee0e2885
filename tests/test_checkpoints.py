"""Checkpoint formats: LAVIS key names, native save / load round trip, retrieval folders,
sharded files, hub ids from the local cache, and the errors for checkpoints that do not fit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import Blip2ForConditionalGeneration

from blip2core import CheckpointError, load_pipeline
from blip2core.checkpoints.hub import resolve_hub_id
from blip2core.loading import resolve_spec
from hf_models import IMAGE_SIZE, blip2_config, hf_prompt_ids, save_generation_model, save_retrieval_model
from lavis_names import hf_blip2_to_lavis

ATOL = 1e-4


@pytest.fixture(scope="module")
def hf_opt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-opt")
    return folder, save_generation_model(folder, "opt", seed=5)


def pixels(batch=2, seed=7):
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def prompt(hf, seed=8):
    text = torch.randint(3, 100, (2, 5), generator=torch.Generator().manual_seed(seed))
    return hf_prompt_ids(text, hf.config.text_config.bos_token_id)


def assert_same_logits(pipe, hf):
    input_ids = prompt(hf)
    with torch.no_grad():
        expected = hf(pixel_values=pixels(), input_ids=input_ids).logits
        got = pipe(pixels(), input_ids).logits
    assert (got - expected).abs().max() <= ATOL


def lavis_file(hf, path, drop=()):
    state = hf_blip2_to_lavis(hf.state_dict())
    for key in drop:
        del state[key]
    torch.save({"model": state, "epoch": 3}, path)
    return path


def test_lavis_key_names_load_to_the_same_numbers(hf_opt, tmp_path):
    folder, hf = hf_opt
    spec = resolve_spec(folder).model_copy(update={"weights": []})  # the architecture only
    pipe = load_pipeline(spec, weights=[lavis_file(hf, tmp_path / "blip2_lavis.pth")])
    assert pipe.load_report.sources[0][1] == "lavis"
    assert_same_logits(pipe, hf)


def test_missing_keys_are_named_and_strict_false_only_warns(hf_opt, tmp_path, caplog):
    folder, hf = hf_opt
    dropped = "Qformer.bert.encoder.layer.0.output_query.dense.weight"
    path = lavis_file(hf, tmp_path / "partial.pth", drop=[dropped])
    spec = resolve_spec(folder).model_copy(update={"weights": []})
    with pytest.raises(CheckpointError, match=r"bridge: 1 missing key\(s\): encoder\.layers\.0\.") as refused:
        load_pipeline(spec, weights=[path])
    assert f"from {path} (lavis layout)" in str(refused.value)  # the file is named
    pipe = load_pipeline(spec, weights=[path], strict=False)
    assert len(pipe.load_report.missing["bridge"]) == 1
    assert "missing key" in caplog.text


def test_pickled_objects_are_refused(tmp_path, hf_opt):
    folder, _ = hf_opt

    class Payload:
        def __reduce__(self):
            return (print, ("this would run on load",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"query_tokens": Payload()}}, path)
    spec = resolve_spec(folder).model_copy(update={"weights": []})
    with pytest.raises(CheckpointError, match=r"evil\.pth: cannot be read as a weights-only torch checkpoint"):
        load_pipeline(spec, weights=[path])


def test_save_then_load_round_trip_keeps_outputs_and_stores_only_trainable_tensors(hf_opt, tmp_path):
    folder, _ = hf_opt
    pipe = load_pipeline(folder)
    with torch.no_grad():  # stand-in for training: the bridge moves away from the HF weights
        for parameter in pipe.bridge.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    saved = pipe.save(tmp_path / "mine")
    assert sorted(p.name for p in saved.iterdir()) == ["pipeline.yaml", "trainable.safetensors"]
    tensors = load_file(saved / "trainable.safetensors")
    assert tensors and all(key.startswith("bridge.") for key in tensors)
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in pipe.bridge.parameters())

    again = load_pipeline(saved)
    assert again.spec.weights == [str(folder.resolve()), "trainable.safetensors"]
    mine, reloaded = pipe.bridge.state_dict(), again.bridge.state_dict()
    assert mine.keys() == reloaded.keys() and all(torch.equal(mine[k], reloaded[k]) for k in mine)
    with torch.no_grad():  # to float32 rounding: oneMKL's sums depend on where the weights sit in memory
        ids = torch.randint(3, 100, (2, 6))
        torch.testing.assert_close(pipe(pixels(), ids).logits, again(pixels(), ids).logits, rtol=1e-5, atol=1e-6)


def test_saving_a_reloaded_pipeline_does_not_depend_on_the_first_save(hf_opt, tmp_path):
    folder, _ = hf_opt
    first = load_pipeline(folder).save(tmp_path / "first")
    second = load_pipeline(first).save(tmp_path / "second")
    shutil.rmtree(first)
    again = load_pipeline(second)
    assert again.spec.weights == [str(folder.resolve()), "trainable.safetensors"]


def test_sharded_safetensors_folder(hf_opt, tmp_path):
    _, hf = hf_opt
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert_same_logits(load_pipeline(tmp_path / "sharded"), hf)


def test_retrieval_folder_gives_hf_itm_and_itc_scores(tmp_path):
    hf = save_retrieval_model(tmp_path / "itm")
    pipe = load_pipeline(tmp_path / "itm")
    assert pipe.llm is None and pipe.spec.llm is None
    images = pixels()
    input_ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    with torch.no_grad():
        itm = hf(pixel_values=images, input_ids=input_ids, attention_mask=attention_mask,
                 use_image_text_matching_head=True).logits_per_image
        itc = hf(pixel_values=images, input_ids=input_ids, attention_mask=attention_mask,
                 use_image_text_matching_head=False).logits_per_image
        vision_tokens = pipe.encode_images(images).vision_tokens
        ours_itm = pipe.bridge.itm_logits(vision_tokens, input_ids, attention_mask)
        ours_itc = pipe.bridge.itc_scores(vision_tokens, input_ids, attention_mask)
    assert (ours_itm - itm).abs().max() <= ATOL
    assert (ours_itc - itc).abs().max() <= ATOL
    with pytest.raises(Exception, match="no language model"):
        pipe.generate(images)


def test_opt_with_narrow_input_embeddings_is_refused_with_the_shape(tmp_path):
    """transformers sizes language_projection by text hidden_size, but OPT's input embeddings are
    word_embed_proj_dim wide: such a folder cannot be right, and the error says why."""
    config = blip2_config("opt")
    config.text_config.word_embed_proj_dim = 16
    Blip2ForConditionalGeneration(config).save_pretrained(tmp_path / "narrow")
    with pytest.raises(CheckpointError, match=r"'language_projection\.(weight|bias)'.*expected shape \[16.*found \[32"):
        load_pipeline(tmp_path / "narrow")


def test_hub_id_resolves_from_the_local_cache_offline(hf_opt, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    folder, hf = hf_opt
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-blip2" / "snapshots" / "0123abcd"
    shutil.copytree(folder, snapshot)
    (cache / "models--acme--tiny-blip2" / "refs").mkdir()
    (cache / "models--acme--tiny-blip2" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_hub_id("acme/tiny-blip2") == snapshot
    assert_same_logits(load_pipeline("acme/tiny-blip2"), hf)
    with pytest.raises(CheckpointError, match=r"acme/absent: no such local file or folder, and cannot resolve it as a hub id \(HF_HUB_OFFLINE is set"):
        load_pipeline("acme/absent")


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda d: d.mkdir(), "not a model folder"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text("{")), "not valid JSON"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text(json.dumps({"model_type": "blip-2"}))),
         "missing field 'vision_config'"),
    ],
)
def test_bad_folders_are_named(tmp_path, make, expected):
    folder = tmp_path / "model"
    make(folder)
    with pytest.raises(Exception, match=expected) as excinfo:
        load_pipeline(folder)
    assert str(folder) in str(excinfo.value)
