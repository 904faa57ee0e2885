"""The training loop on a tiny real pipeline and easy-vqa: outputs, frozen parts, NaN handling,
resume, feature cache, bad images, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from blip2core.plugins import get_registry
from blip2core.registry import Component, Registry
from blip2_runner.checkpoint import list_checkpoints
from blip2_runner.losses import LMLoss
from blip2_runner.options import LMOptions
from blip2_runner.tracking import read_metrics
from blip2_runner.trainer import NonFiniteLossError, Trainer


def train_losses(output_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(output_dir) if r.get("kind") == "train" and "loss" in r}


def test_run_outputs_and_frozen_parts_stay_bit_identical(make_run):
    config = make_run("vqa", steps=6, batch_size=4, checkpoint_every=2, keep_checkpoints=2,
                      eval_every=3, eval_examples=4)
    trainer = Trainer(config)
    frozen = {k: v.clone() for k, v in trainer.pipeline.state_dict().items() if not k.startswith("bridge.")}
    bridge_before = {k: v.clone() for k, v in trainer.pipeline.bridge.state_dict().items()}
    result = trainer.train()
    out = Path(config["output_dir"])
    assert result.step == 6 and result.skipped_steps == 0
    after = trainer.pipeline.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # vision + LLM untouched, bit for bit
    assert any(not torch.equal(trainer.pipeline.bridge.state_dict()[k], v) for k, v in bridge_before.items())
    assert not trainer.pipeline.vision.training and not trainer.pipeline.llm.training

    records = read_metrics(out)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "loss/lm", "lr", "grad_norm", "samples_per_s"} <= set(r) for r in train)
    assert train[0]["lr"] == pytest.approx(1e-5) and train[2]["lr"] == pytest.approx(1e-3)  # 2 warmup steps from 1% of lr
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert 0 <= evals[0]["eval/vqa/vqa_accuracy"] <= 100 and evals[0]["eval/vqa/num_examples"] == 4
    assert {p.name for p in (out / "plots").iterdir()} == {"loss.png", "lr.png", "eval_vqa.png"}
    assert [p.name for p in list_checkpoints(out)] == ["step-00000004", "step-00000006"]
    weights = load_file(str(out / "checkpoints/step-00000006/trainable.safetensors"))
    assert set(weights) == set(trainer.pipeline.trainable_state_dict())  # trainable parameters only
    assert all(k.startswith("bridge.") for k in weights)
    assert yaml.safe_load((out / "run.yaml").read_text())["seed"] == config["seed"]


class NanOnSteps:
    """The real LM loss, turned NaN on chosen steps (fault injection)."""

    def __init__(self, steps):
        self.steps = set(steps)
        self.inner = LMLoss()

    def __call__(self, pipeline, batch):
        loss = self.inner(pipeline, batch)
        return loss * float("nan") if batch["context"].step in self.steps else loss


def registry_with_nan_lm(steps) -> Registry:
    registry = Registry()
    for component in get_registry():
        registry.components[component.kind][component.name] = component
    registry.components["loss"]["lm"] = Component("loss", "lm", lambda options: NanOnSteps(steps), LMOptions, "", "test")
    return registry


def test_nan_loss_skips_the_step_with_a_warning(make_run):
    config = make_run("vqa", steps=6, batch_size=4, max_nonfinite_steps=3)
    messages = []
    trainer = Trainer(config, registry=registry_with_nan_lm({1, 2}), log=messages.append)
    result = trainer.train()
    assert result.step == 6 and result.skipped_steps == 2
    warnings = [r for r in read_metrics(config["output_dir"]) if r["kind"] == "warning"]
    assert [w["step"] for w in warnings] == [1, 2]
    assert "step 2: non-finite loss" in warnings[0]["message"] and "step skipped" in warnings[0]["message"]
    assert any("non-finite loss" in m for m in messages)
    assert sorted(train_losses(config["output_dir"])) == [1, 4, 5, 6]  # skipped steps log no loss
    records = [r for r in read_metrics(config["output_dir"]) if r["kind"] == "train"]
    assert [r.get("skipped_steps", 0) for r in records] == [0, 1, 1, 0, 0, 0]
    assert all(torch.isfinite(p).all() for p in trainer.pipeline.bridge.parameters())


def test_too_many_nan_steps_in_a_row_stop_the_run(make_run):
    config = make_run("vqa", steps=8, batch_size=4, max_nonfinite_steps=3, checkpoint_every=1)
    trainer = Trainer(config, registry=registry_with_nan_lm({2, 3, 4, 5, 6, 7}), log=lambda m: None)
    with pytest.raises(NonFiniteLossError, match=r"NaN/Inf for 3 steps in a row \(steps 3\.\.5\)"):
        trainer.train()
    # checkpoints exist only for the good steps: the NaN steps changed nothing
    assert [p.name for p in list_checkpoints(config["output_dir"])][-1] == "step-00000004"
    weights = load_file(str(Path(config["output_dir"]) / "checkpoints/step-00000004/trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_resume_continues_the_exact_trajectory(make_run, tmp_path):
    config = make_run("vqa", steps=6, batch_size=4, grad_accum=2, checkpoint_every=3)
    Trainer(config, log=lambda m: None).train()
    full = train_losses(config["output_dir"])
    # pretend the run died after step 4: drop the final checkpoint, keep the step-3 one
    out = Path(config["output_dir"])
    shutil.rmtree(out / "checkpoints" / "step-00000006")
    messages = []
    Trainer(config, log=messages.append).train()
    assert any("resumed from" in m and "step 3" in m for m in messages)
    assert any("dropped 4 metrics.jsonl line(s) written after step 3" in m for m in messages)  # train 4-6 + checkpoint 6
    resumed = train_losses(out)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert resumed == pytest.approx(full, abs=1e-6)


def test_feature_cache_serves_the_same_features(make_run):
    config = make_run("vqa", steps=2, batch_size=4)
    config["feature_cache"] = {"enabled": True}
    first = Trainer(config, log=lambda m: None)
    first.train(resume=False)
    cache_files = list((Path(config["output_dir"]) / "feature_cache").rglob("*.safetensors"))
    assert first.cache.misses > 0 and len(cache_files) == first.cache.misses  # one file per distinct image
    losses = train_losses(config["output_dir"])
    second = Trainer(config, log=lambda m: None)
    second.train(resume=False)
    assert second.cache.hits > 0 and second.cache.misses == 0
    assert train_losses(config["output_dir"]) == pytest.approx(losses, abs=1e-6)


def test_a_corrupt_image_among_many_is_reported_and_skipped(make_run, tmp_path):
    import easy_vqa

    folder = tmp_path / "shapes"
    folder.mkdir()
    paths = easy_vqa.get_test_image_paths()
    rows = []
    for i in range(8):
        shutil.copy(paths[i], folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "question": "what shape is it?", "answer": "circle"})
    (folder / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_run("vqa", steps=4, batch_size=4)
    config["datasets"]["train"] = {"format": "folder", "path": str(folder)}
    messages = []
    Trainer(config, log=messages.append).train()
    warnings = [r["message"] for r in read_metrics(config["output_dir"]) if r["kind"] == "warning"]
    assert len(warnings) == 1 and "3.png" in warnings[0] and "unreadable image" in warnings[0]
    assert len(train_losses(config["output_dir"])) == 4


def run_cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "blip2core.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_bad_run_file_is_one_clear_line(tmp_path, make_run):
    config = make_run("vqa")
    config["training"]["batch_size"] = 0
    config["datasets"]["train"]["limit"] = -1
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and "training.batch_size" in result.stderr and "datasets.train.limit" in result.stderr
    config = make_run("vqa")
    config["datasets"]["train"] = {"format": "coco-caption", "annotations": str(tmp_path / "nope.json")}
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path))
    assert result.returncode == 1 and "nope.json: no such file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written for a run that could not start


def test_cli_train_then_eval_with_checkpoint(tmp_path, make_run):
    config = make_run("vqa", steps=2, batch_size=4, eval_examples=4)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path))
    assert result.returncode == 0, result.stderr
    assert "trained 2 steps" in result.stdout
    result = run_cli("eval", str(path), "--checkpoint", config["output_dir"], "--output", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    base = {"eval/vqa/vqa_accuracy", "eval/vqa/exact_match", "eval/vqa/num_examples"}
    per_type = set(metrics) - base  # easy-vqa labels its questions: exact match per question type
    assert base <= set(metrics) and per_type
    assert {k.rsplit("/", 1)[1] for k in per_type} <= {"colour", "shape", "yes-no", "negated-yes-no"}
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    again = run_cli("train", str(path))  # a finished run is not trained or evaluated twice
    assert again.returncode == 0 and "already holds a run trained to step 2" in again.stderr
    assert [r["step"] for r in read_metrics(config["output_dir"]) if r["kind"] == "train"] == [1, 2]
