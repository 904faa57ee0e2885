"""RUN.yaml validation: every error names the file and the field."""

from __future__ import annotations

import pytest
import yaml

from blip2core.errors import SpecError
from blip2_runner.config import RunConfig


def write(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {
    "pipeline": {"vision": {"name": "eva-vit"}, "bridge": {"name": "qformer"}, "llm": {"name": "opt", "options": {"path": "x"}}},
    "datasets": {"shapes": {"format": "easy-vqa", "split": "train"}},
    "tasks": [{"name": "vqa", "train": "shapes"}],
    "training": {"steps": 10, "batch_size": 4},
    "output_dir": "runs/a",
}


def test_valid_file_resolves_paths_against_its_folder(tmp_path):
    config = RunConfig.from_file(write(tmp_path, BASE))
    assert config.output_path == tmp_path / "runs/a"
    assert config.optimizer.betas == (0.9, 0.98) and config.optimizer.weight_decay == 0.05
    assert config.training.precision == "fp32" and config.train_tasks[0].train_sets == ["shapes"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["training"].update(stepz=3), "training.stepz: Extra inputs are not permitted"),
        (lambda d: d["training"].pop("steps"), "training.steps: Field required"),
        (lambda d: d["training"].update(precision="fp8"), "training.precision"),
        (lambda d: d.update(optimizer={"betas": [0.9, 1.5]}), "each beta must be in [0, 1)"),
        (lambda d: d["tasks"][0].update(train="nope"), "tasks.0.train: unknown data set 'nope' (defined: shapes)"),
        (lambda d: d["datasets"].update(coco={"format": "coco-caption"}), "format 'coco-caption' needs annotations"),
        (lambda d: d["datasets"]["shapes"].update(split="val"), "easy-vqa split must be 'train' or 'test'"),
        (lambda d: d.update(tasks=[]), "tasks: List should have at least 1 item"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path, change, expected):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        RunConfig.from_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file_and_bad_yaml_and_missing_pipeline_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        RunConfig.from_file(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        RunConfig.from_file(bad)
    data = dict(BASE, pipeline="pipeline.yaml")
    with pytest.raises(SpecError, match="pipeline: no such spec file"):
        RunConfig.from_file(write(tmp_path, data))


def test_digest_ignores_logging_cadence_but_not_the_trajectory(tmp_path):
    a = RunConfig.from_dict(BASE)
    b = RunConfig.from_dict({**BASE, "training": {**BASE["training"], "log_every": 1, "checkpoint_every": 2}})
    c = RunConfig.from_dict({**BASE, "seed": 7})
    assert a.digest() == b.digest() != c.digest()
