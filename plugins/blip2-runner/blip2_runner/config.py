"""``RunConfig``: everything ``blip2 train RUN.yaml`` needs, validated with pydantic.

A RUN.yaml::

    pipeline: pipeline.yaml            # the spec inline (vision/bridge/llm/...), or anything load_pipeline
                                       # takes: spec file, named model (blip2 models), hub id, HF BLIP-2
                                       # folder, folder written by Pipeline.save, a run folder
    datasets:
      shapes_train: {format: easy-vqa, split: train, limit: 512}
      shapes_test:  {format: easy-vqa, split: test, limit: 64}
    tasks:
      - name: vqa                      # a registered task (``blip2 plugins`` lists them)
        options: {prompt: "Question: {} Answer:"}
        train: shapes_train
        eval: shapes_test
        weight: 1.0                    # sampling weight among the tasks
    optimizer: {lr: 1.0e-4, betas: [0.9, 0.98], weight_decay: 0.05}
    schedule: {warmup_steps: 200, min_lr: 1e-5}  # defaults: warmup_start_lr 1% of lr, min_lr 10%
    training:
      steps: 2000
      batch_size: 32                   # global, per micro-step, over all processes
      grad_accum: 1
      precision: bf16                  # fp32 | bf16 (autocast)
      grad_clip: 1.0
      log_every: 10
      eval_every: 500
      checkpoint_every: 500
      keep_checkpoints: 3
    seed: 42
    output_dir: runs/vqa

Relative paths (the pipeline file, data files, output_dir, feature cache) are resolved against the
folder of the RUN.yaml file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from blip2core.plugin_api import (
    Blip2Error,
    PipelineSpec,
    SpecError,
    format_validation_error,
    read_structured_file,
    resolve_spec,
)


#: a ``pipeline:`` string ending so names a spec file (anything else may be a named model or hub id)
SPEC_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Strict):
    """One data set.

    Formats:
        coco-caption: ``annotations`` is a JSON file, either COCO's own (``images`` + ``annotations``
            with ``file_name`` / ``caption``) or a list of ``{image, caption}`` records (caption may
            be a list); ``images`` is the image folder.
        vqav2: ``questions`` + ``annotations`` (VQAv2's two files; images named by
            ``image_template``), or ``annotations`` alone as a list of
            ``{image, question, answer}`` records (answer: a string or a list).
        folder: ``path`` is a folder holding ``file`` (default: the single ``*.csv`` / ``*.jsonl`` in
            it) with columns ``image`` and ``text`` (captions) or ``image``, ``question``,
            ``answer``; image paths are relative to the folder.
        easy-vqa: the ``easy-vqa`` package's data, ``split`` train or test; ``view: questions`` gives
            one example per question (fields image, question, answers, caption), ``view: captions`` one
            per image with a caption made from its answers ("a blue circle").

    ``limit`` keeps the first N examples.
    """

    format: Literal["coco-caption", "vqav2", "folder", "easy-vqa"]
    path: str | None = None
    file: str | None = None
    annotations: str | None = None
    questions: str | None = None
    images: str | None = None
    image_template: str = "COCO_{split}2014_{image_id:012d}.jpg"
    split: str = "train"
    view: Literal["questions", "captions"] = "questions"
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _needed_fields(self) -> "DatasetConfig":
        needs = {
            "coco-caption": ("annotations",),
            "vqav2": ("annotations",),
            "folder": ("path",),
            "easy-vqa": (),
        }[self.format]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"format {self.format!r} needs {', '.join(missing)}")
        if self.format == "easy-vqa" and self.split not in ("train", "test"):
            raise ValueError(f"easy-vqa split must be 'train' or 'test', got {self.split!r}")
        return self


class TaskConfig(_Strict):
    """A task to train and/or evaluate: a registered task, its options, and its data."""

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    train: str | list[str] | None = None
    eval: str | None = None
    weight: float = Field(default=1.0, gt=0)
    loss_weights: dict[str, float] = Field(default_factory=dict)

    @property
    def train_sets(self) -> list[str]:
        if self.train is None:
            return []
        return [self.train] if isinstance(self.train, str) else list(self.train)


class OptimizerConfig(_Strict):
    """AdamW; weight decay is not applied to 0-/1-D parameters (biases, norms, temperature)."""

    lr: float = Field(default=1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = Field(default=0.05, ge=0)
    eps: float = Field(default=1e-8, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value


#: defaults relative to ``optimizer.lr``: BLIP-2's own ratios (LAVIS warms up from 1e-6 to 1e-4, the
#: paper decays 1e-4 to 1e-5)
WARMUP_START_FRACTION = 0.01
MIN_LR_FRACTION = 0.1


class ScheduleConfig(_Strict):
    """Linear warmup from ``warmup_start_lr`` to ``optimizer.lr`` over ``warmup_steps`` steps, then
    half a cosine down to ``min_lr``, reached at the last step.

    Defaults: no warmup; ``warmup_start_lr`` = 1% of ``optimizer.lr``; ``min_lr`` = 10% of it. So
    every step trains: step 0 runs at ``warmup_start_lr`` (> 0) with warmup, at ``optimizer.lr``
    without, and a 1-step run trains at ``optimizer.lr``. ``min_lr: 0`` is allowed (the last step
    then runs at lr 0); ``warmup_start_lr: 0`` is refused, it would make step 0 a no-op.
    """

    warmup_steps: int = Field(default=0, ge=0)
    warmup_start_lr: float | None = Field(default=None, gt=0, description="default: 1% of optimizer.lr")
    min_lr: float | None = Field(default=None, ge=0, description="default: 10% of optimizer.lr")

    def resolved(self, lr: float) -> dict[str, float | int]:
        """``warmup_steps``, ``warmup_start_lr`` and ``min_lr`` with the defaults filled in for ``lr``."""
        return {
            "warmup_steps": self.warmup_steps,
            "warmup_start_lr": self.warmup_start_lr if self.warmup_start_lr is not None else WARMUP_START_FRACTION * lr,
            "min_lr": self.min_lr if self.min_lr is not None else MIN_LR_FRACTION * lr,
        }


class TrainingConfig(_Strict):
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="examples per micro-step, summed over all processes")
    grad_accum: int = Field(default=1, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_clip: float | None = Field(default=1.0, gt=0)
    log_every: int = Field(default=10, ge=1)
    eval_every: int | None = Field(default=None, ge=1)
    eval_examples: int | None = Field(default=None, ge=1)
    eval_batch_size: int = Field(default=16, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    plot_every: int | None = Field(default=None, ge=1, description="default: every eval / checkpoint")
    max_nonfinite_steps: int = Field(default=5, ge=1, description="stop after this many NaN/Inf steps in a row")
    augment: bool = True
    progress: bool = True


class FeatureCacheConfig(_Strict):
    """Keep the frozen vision encoder's outputs on disk (safetensors, one file per image).

    When enabled, training images are preprocessed without augmentation (eval transform), so a
    cached feature is exactly what the encoder would compute again.
    """

    enabled: bool = False
    dir: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class RunConfig(_Strict):
    pipeline: PipelineSpec | str = Field(description="a spec (inline), or anything load_pipeline takes: spec file, "
                                         "named model, hub id, HF BLIP-2 folder, saved or run folder")
    datasets: dict[str, DatasetConfig]
    tasks: list[TaskConfig] = Field(min_length=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig
    feature_cache: FeatureCacheConfig = Field(default_factory=FeatureCacheConfig)
    seed: int = 0
    output_dir: str
    init_weights: str | None = None

    #: folder against which relative paths are resolved (not part of the file)
    _base_dir: Path = PrivateAttr(default=Path("."))
    #: where it was read from, to start error messages with
    _source: str = PrivateAttr(default="run config")
    #: ``pipeline`` resolved once (a named model may download on first use)
    _spec: PipelineSpec | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @model_validator(mode="after")
    def _references(self) -> "RunConfig":
        problems = []
        for i, task in enumerate(self.tasks):
            for name in task.train_sets:
                if name not in self.datasets:
                    problems.append(f"tasks.{i}.train: unknown data set {name!r} (defined: {', '.join(sorted(self.datasets)) or 'none'})")
            if task.eval is not None and task.eval not in self.datasets:
                problems.append(f"tasks.{i}.eval: unknown data set {task.eval!r} (defined: {', '.join(sorted(self.datasets)) or 'none'})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- paths ---------------------------------------------------------------------------------
    def resolve(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def output_path(self) -> Path:
        return self.resolve(self.output_dir)

    def pipeline_spec(self) -> PipelineSpec:
        """``pipeline`` as a spec: inline, or resolved as ``load_pipeline`` resolves its source (a
        relative path against the RUN.yaml's folder when it exists there).

        Raises:
            SpecError / CheckpointError: it names nothing loadable; the message starts with the file.
        """
        if isinstance(self.pipeline, PipelineSpec):
            return self.pipeline
        if self._spec is None:
            local = self.resolve(self.pipeline)
            source = str(local) if local.exists() else self.pipeline
            try:
                self._spec = resolve_spec(source)
            except Blip2Error as exc:
                raise type(exc)(f"{self._source}: pipeline: {exc}") from None
        return self._spec

    @property
    def train_tasks(self) -> list[TaskConfig]:
        return [t for t in self.tasks if t.train_sets]

    def digest(self) -> str:
        """Hash of what makes a training trajectory (not the logging/eval/checkpoint cadence)."""
        data = self.model_dump(mode="json")
        for key in ("log_every", "eval_every", "eval_examples", "eval_batch_size", "checkpoint_every",
                    "keep_checkpoints", "plot_every", "progress"):
            data["training"].pop(key, None)
        data.pop("output_dir", None)
        if not isinstance(self.pipeline, PipelineSpec):
            data["pipeline"] = self.pipeline_spec().model_dump(mode="json")
        data["pipeline"].pop("device", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "run config", base_dir: Path | None = None) -> "RunConfig":
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"{source}: invalid run config\n{format_validation_error(exc)}") from None
        config._base_dir = Path(base_dir) if base_dir is not None else Path(".")
        config._source = source
        if isinstance(config.pipeline, str):
            local = config.resolve(config.pipeline)
            if local.suffix.lower() in SPEC_SUFFIXES and not local.exists():
                raise SpecError(f"{source}: pipeline: no such spec file {str(local)!r}")
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        return cls.from_dict(read_structured_file(path), source=str(path), base_dir=path.resolve().parent)


def load_run_config(source: RunConfig | dict[str, Any] | str | Path, base_dir: Path | None = None) -> RunConfig:
    """A RunConfig from an instance, a mapping, or a YAML/JSON/TOML file."""
    if isinstance(source, RunConfig):
        return source
    if isinstance(source, dict):
        return RunConfig.from_dict(source, base_dir=base_dir)
    return RunConfig.from_file(source)
