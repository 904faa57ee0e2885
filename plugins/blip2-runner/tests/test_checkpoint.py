"""Checkpoints: safetensors + JSON only, atomic, last K kept; metrics.jsonl truncation on resume."""

from __future__ import annotations

import json

import pytest
import torch

from blip2core.errors import CheckpointError
from blip2_runner.checkpoint import (
    clean_partial,
    list_checkpoints,
    load_checkpoint,
    load_trainable,
    resolve_checkpoint,
    save_checkpoint,
)
from blip2_runner.tracking import MetricsLog, read_metrics, write_plots


def trained_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.05)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_state(tmp_path):
    model, opt = trained_optimizer()
    weights = {f"bridge.{k}": v for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path, 3, weights, opt.state_dict(), {"cursors": {"0:vqa": 12}}, keep=2)
    assert path.name == "step-00000003" and sorted(p.name for p in path.iterdir()) == [
        "optimizer.safetensors", "rng.safetensors", "state.json", "trainable.safetensors"]
    ckpt = load_checkpoint(tmp_path)  # a run folder resolves to its newest checkpoint
    assert ckpt.step == 3 and ckpt.state["cursors"] == {"0:vqa": 12}
    assert all(torch.equal(ckpt.trainable[k], v) for k, v in weights.items())
    # a fresh optimizer loaded from the files continues exactly like the original
    model2 = torch.nn.Linear(3, 2)
    model2.load_state_dict({k[len("bridge."):]: v for k, v in ckpt.trainable.items()})
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.05)
    opt2.load_state_dict(ckpt.optimizer)
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    assert torch.equal(model.weight, model2.weight) and torch.equal(model.bias, model2.bias)


def test_only_complete_checkpoints_are_listed_and_last_k_kept(tmp_path):
    model, opt = trained_optimizer()
    weights = dict(model.state_dict())
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, weights, opt.state_dict(), {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    # an interrupted write leaves a hidden temp folder: never listed, removed by clean_partial
    partial = tmp_path / "checkpoints" / ".tmp-step-00000005-999"
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"half")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    assert resolve_checkpoint(tmp_path).name == "step-00000004"
    assert clean_partial(tmp_path) == [partial] and not partial.exists()
    # re-saving an existing step replaces it whole
    save_checkpoint(tmp_path, 4, weights, opt.state_dict(), {"again": True}, keep=2)
    assert load_checkpoint(tmp_path).state["again"] is True


def test_unreadable_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        resolve_checkpoint(tmp_path)
    model, opt = trained_optimizer()
    path = save_checkpoint(tmp_path, 1, dict(model.state_dict()), opt.state_dict(), {}, keep=1)
    (path / "trainable.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="trainable.safetensors: not a readable safetensors file"):
        load_trainable(path)
    (path / "rng.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint, rng.safetensors is missing"):
        load_checkpoint(path)


def test_metrics_log_truncates_records_after_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step, "lr": 1e-3})
    log.write({"kind": "eval", "step": 4, "eval/vqa/vqa_accuracy": 50.0})
    log.write({"kind": "train", "step": 6, "loss": float("nan")})
    with open(log.path, "a") as handle:
        handle.write('{"kind": "train", "st')  # torn last line of a killed process
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 4, 6]
    assert read_metrics(tmp_path)[-1]["loss"] == "nan"  # JSON has no NaN: written as a string
    assert log.truncate_after(3) == 5
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    written = write_plots(tmp_path)
    assert {p.name for p in written} == {"loss.png", "lr.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert json.loads(log.path.read_text().splitlines()[0])["step"] == 1
