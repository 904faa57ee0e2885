"""Fine-tuning a released model and using what training produced: ``pipeline:`` takes anything
``load_pipeline`` takes (an HF BLIP-2 folder saved from random weights stands in for a released
checkpoint; a named model from a plugin made on the fly), the run folder and its step folders load as
models on the command line and in ``load_pipeline``, ``blip2 export`` writes HF and native folders,
and the schedule's defaults make short runs train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from blip2core import load_pipeline
from blip2core.cli.main import main
from blip2core.plugins import reset_plugins
from blip2_runner.config import RunConfig, ScheduleConfig
from blip2_runner.schedule import warmup_cosine_lr
from plugin_factory import write_distribution

OPT_TEXT = dict(model_type="opt", vocab_size=321, hidden_size=32, word_embed_proj_dim=32, ffn_dim=48,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256, bos_token_id=2,
                eos_token_id=2, pad_token_id=1, dropout=0.0)
STEP_1, STEP_2 = "checkpoints/step-00000001", "checkpoints/step-00000002"


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A Hugging Face BLIP-2 folder (random weights + tokenizer), as ``save_pretrained`` writes one."""
    from blip2core.testing import save_hf_blip2_folder, save_tiny_tokenizer

    folder = tmp_path_factory.mktemp("released") / "blip2-tiny"
    save_tiny_tokenizer(folder, vocab_size=320)
    save_hf_blip2_folder(folder, OPT_TEXT)
    return folder


def run_yaml(folder: Path, pipeline: str, steps: int = 2) -> Path:
    """A RUN.yaml fine-tuning ``pipeline`` on 8 easy-vqa questions; numbers written as users write them."""
    text = f"""
pipeline: {pipeline}
datasets:
  train: {{format: easy-vqa, split: train, limit: 8}}
tasks:
  - {{name: vqa, options: {{num_beams: 1, max_new_tokens: 3}}, train: train}}
optimizer: {{lr: 1e-3}}
training: {{steps: {steps}, batch_size: 2, checkpoint_every: 1, log_every: 1, progress: false, augment: false}}
output_dir: runs/vqa
"""
    path = folder / "RUN.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trained(released, tmp_path_factory) -> Path:
    """``blip2 train RUN.yaml`` with ``pipeline: ./blip2-tiny`` (a relative HF folder); the run folder."""
    work = released.parent
    main(["train", str(run_yaml(work, "./blip2-tiny"))])
    return work / "runs" / "vqa"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def trainable_file(step: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(step / "trainable.safetensors"))


def same_bridge(pipe, tensors: dict[str, torch.Tensor]) -> bool:
    own = pipe.trainable_state_dict()
    return own.keys() == tensors.keys() and all(own[k].equal(tensors[k]) for k in own)


def test_yaml_numbers_and_schedule_defaults_make_a_short_run_train(released):
    run = RunConfig.from_file(run_yaml(released.parent, "./blip2-tiny"))
    assert run.optimizer.lr == 1e-3  # "1e-3" without a dot is a number, not a string
    assert run.schedule.resolved(1e-3) == {"warmup_steps": 0, "warmup_start_lr": 1e-5, "min_lr": 1e-4}
    assert warmup_cosine_lr(0, base_lr=1e-3, total_steps=1, **run.schedule.resolved(1e-3)) == 1e-3
    warm = ScheduleConfig(warmup_steps=10).resolved(1e-3)
    assert warmup_cosine_lr(0, base_lr=1e-3, total_steps=1, **warm) == pytest.approx(1e-5)  # never 0
    with pytest.raises(ValueError, match="greater than 0"):
        ScheduleConfig(warmup_start_lr=0)


def test_train_from_an_hf_folder_then_the_run_and_its_steps_load_as_models(trained, released):
    lrs = [json.loads(line)["lr"] for line in (trained / "metrics.jsonl").read_text().splitlines()
           if json.loads(line).get("kind") == "train"]
    assert lrs == pytest.approx([1e-3, 1e-4])  # optimizer.lr, then the default min_lr (10%) at the last step
    newest, older = trainable_file(trained / STEP_2), trainable_file(trained / STEP_1)
    assert not same_bridge(load_pipeline(released), newest)  # training changed the bridge
    assert same_bridge(load_pipeline(trained), newest)  # the run folder is its newest checkpoint
    assert same_bridge(load_pipeline(trained / STEP_1), older)
    assert same_bridge(load_pipeline(trained / "checkpoints"), newest)


def test_every_inference_command_takes_a_run_or_step_folder(trained, image, capsys):
    for model in (trained, trained / STEP_1):
        main(["caption", str(image), "--model", str(model), "--num-beams", "1", "--max-new-tokens", "3", "--json"])
        assert len(json.loads(capsys.readouterr().out)["results"]) == 1
        main(["ask", str(image), "what shape?", "--model", str(model), "--num-beams", "1", "--json"])
        assert json.loads(capsys.readouterr().out)["results"][0]["question"] == "what shape?"


def test_a_checkpoint_without_its_own_spec_loads_through_the_runs_run_yaml(trained, tmp_path):
    import shutil

    copy = tmp_path / "old-run"
    shutil.copytree(trained, copy)
    (copy / STEP_2 / "pipeline.yaml").unlink()  # as checkpoints were written before they carried it
    assert same_bridge(load_pipeline(copy), trainable_file(trained / STEP_2))


def test_export_writes_an_hf_folder_transformers_loads_and_a_native_one(trained, tmp_path, capsys):
    from transformers import Blip2ForConditionalGeneration

    main(["export", str(trained), str(tmp_path / "hf")])
    assert "hf folder" in capsys.readouterr().out
    newest = trainable_file(trained / STEP_2)
    hf = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert hf.query_tokens.detach().equal(newest["bridge.query_tokens"])
    assert hf.language_projection.weight.detach().equal(newest["bridge.llm_projection.weight"])
    assert same_bridge(load_pipeline(tmp_path / "hf"), newest)

    main(["export", str(trained), str(tmp_path / "native"), "--format", "native"])
    assert same_bridge(load_pipeline(tmp_path / "native"), newest)
    with pytest.raises(SystemExit) as exit_code:
        main(["export", str(trained), str(tmp_path / "native")])
    assert exit_code.value.code == 1 and "exists and is not an empty folder" in capsys.readouterr().err


def test_train_from_a_named_model_a_plugin_registers(released, tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "acme-models", f'''
        from blip2core import hookimpl
        from blip2core.plugin_api import resolve_spec


        @hookimpl
        def register_presets(register):
            register("acme-blip2-tiny", spec=lambda: resolve_spec({str(released)!r}), description="tiny",
                     tasks=("vqa",))
    ''')
    monkeypatch.syspath_prepend(str(site))
    reset_plugins()
    try:
        main(["train", str(run_yaml(tmp_path, "acme-blip2-tiny", steps=1))])
        run = yaml.safe_load((tmp_path / "runs/vqa/run.yaml").read_text())
        assert run["pipeline"]["weights"] == [str(released)]  # the named model, resolved and written out
        step = tmp_path / "runs/vqa/checkpoints/step-00000001"
        assert same_bridge(load_pipeline(tmp_path / "runs/vqa"), trainable_file(step))
        assert not same_bridge(load_pipeline("acme-blip2-tiny"), trainable_file(step))
    finally:
        reset_plugins()


def test_a_pipeline_that_names_nothing_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["train", str(run_yaml(tmp_path, "no-such-model"))])
    err = capsys.readouterr().err
    assert exit_code.value.code == 1 and "Traceback" not in err
    assert f"{tmp_path / 'RUN.yaml'}: pipeline: no-such-model: no such spec file" in err
