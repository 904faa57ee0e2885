"""The training loop behind ``blip2 train`` (one process, or several under torchrun).

Reproducibility: everything random is seeded from (seed, step): the example order of each task
(:class:`~blip2_runner.data.ExampleOrder`), the task drawn for each micro-step, the augmentation of
each example (seeded by its global position), the ITM negatives and the torch generator (dropout)
at the start of each step. Resuming from a checkpoint therefore continues the exact trajectory,
and N processes at per-process batch b follow the same trajectory as one process at batch N*b
(bit-for-bit up to float summation order, as long as the bridge has no dropout).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blip2core.plugin_api import Blip2Error, Registry, SpecError, dump_yaml, get_registry, load_pipeline

from blip2_runner import distributed as dist
from blip2_runner.checkpoint import (
    clean_partial,
    list_checkpoints,
    load_checkpoint,
    load_trainable,
    load_trainable_into,
    loadable_spec,
    restore_rng,
    save_checkpoint,
)
from blip2_runner.config import RunConfig, load_run_config
from blip2_runner.data import BadImages, Dataset, DataError, ExampleOrder, concat_datasets, load_dataset, stable_hash
from blip2_runner.feature_cache import FeatureCache
from blip2_runner.losses import BatchContext
from blip2_runner.schedule import WarmupCosine
from blip2_runner.tracking import MetricsLog, write_plots


class NonFiniteLossError(Blip2Error):
    """Too many consecutive steps had a NaN/Inf loss or gradient."""


@dataclass
class TaskRuntime:
    """A configured task with its losses, data and example order."""

    index: int
    name: str
    task: Any
    losses: dict[str, Any]
    loss_weights: dict[str, float]
    weight: float
    train_data: Dataset | None
    eval_data: Dataset | None
    order: ExampleOrder | None
    bad_images: BadImages = field(default_factory=BadImages)

    @property
    def key(self) -> str:
        return f"{self.index}:{self.name}"


@dataclass
class TrainResult:
    step: int
    last_loss: float | None
    output_dir: Path
    skipped_steps: int


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed_everything(value: int) -> None:
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)


def build_tasks(run: RunConfig, registry: Registry, warn: Callable[[str], None]) -> list[TaskRuntime]:
    """Every task of the run with its losses and data sets, all checked (names, options, data files,
    the fields each task needs) without building the model."""
    datasets: dict[str, Dataset] = {}

    def dataset(name: str) -> Dataset:
        if name not in datasets:
            datasets[name] = load_dataset(name, run.datasets[name], run.base_dir)
        return datasets[name]

    runtimes = []
    for i, cfg in enumerate(run.tasks):
        where = f"tasks.{i}"
        component = registry.get("task", cfg.name, path=f"{where}.name")
        task = component.build(cfg.options, path=f"{where}.options")
        weights = dict(task.losses)
        unknown = sorted(set(cfg.loss_weights) - set(weights))
        if unknown:
            raise SpecError(f"{where}.loss_weights: task {cfg.name!r} has no loss {', '.join(unknown)} "
                            f"(its losses: {', '.join(weights)})")
        weights.update(cfg.loss_weights)
        losses = {}
        for loss_name in weights:
            loss_component = registry.get("loss", loss_name, path=f"{where} (loss of task {cfg.name!r})")
            losses[loss_name] = loss_component.build({}, path=f"{where}.losses.{loss_name}")
        train_data = eval_data = None
        if cfg.train_sets:
            train_data = concat_datasets("+".join(cfg.train_sets), [dataset(n) for n in cfg.train_sets])
            check_fields(where + ".train", cfg.name, task, train_data)
        if cfg.eval is not None:
            eval_data = dataset(cfg.eval)
            check_fields(where + ".eval", cfg.name, task, eval_data)
        order = None
        if train_data is not None:
            order = ExampleOrder(len(train_data), run.seed, f"{i}:{cfg.name}")
        runtimes.append(TaskRuntime(i, cfg.name, task, losses, weights, cfg.weight, train_data, eval_data, order,
                                    BadImages(warn)))
    return runtimes


def check_fields(where: str, name: str, task: Any, data: Dataset) -> None:
    missing = [f for f in task.data_fields if f not in data.fields]
    if missing:
        raise DataError(f"{where}: task {name!r} needs field(s) {', '.join(missing)}, but data set "
                        f"{data.name!r} ({data.format}, {data.source}) has {', '.join(data.fields)}")


def check_run(run: RunConfig | str | Path | Mapping[str, Any], *, registry: Registry | None = None) -> list[str]:
    """Validate a RUN.yaml as ``train`` would before building the model: the file, the pipeline
    spec's components and options, every task, loss and data set. Returns one line per task."""
    config = load_run_config(run) if not isinstance(run, Mapping) else load_run_config(dict(run))
    registry = registry if registry is not None else get_registry()
    config.pipeline_spec().check_components(registry)
    lines = []
    for runtime in build_tasks(config, registry, _echo):
        sizes = [f"train {len(runtime.train_data)}" if runtime.train_data is not None else "",
                 f"eval {len(runtime.eval_data)}" if runtime.eval_data is not None else ""]
        lines.append(f"{runtime.name}: losses {', '.join(runtime.loss_weights)}; examples "
                     + ", ".join(x for x in sizes if x))
    return lines


class Trainer:
    """Builds the pipeline, tasks, losses and data of a RunConfig; ``train()`` / ``evaluate()``."""

    def __init__(
        self,
        run: RunConfig | str | Path | Mapping[str, Any],
        *,
        registry: Registry | None = None,
        log: Callable[[str], None] = _echo,
        setup_distributed: bool = True,
    ) -> None:
        self.run = load_run_config(run) if not isinstance(run, Mapping) else load_run_config(dict(run))
        self.registry = registry if registry is not None else get_registry()
        self.log = log
        spec = self.run.pipeline_spec()
        self.dist = dist.init(spec.device) if setup_distributed else dist.info()
        device = spec.device
        if self.dist.enabled and device.startswith("cuda"):
            device = f"cuda:{self.dist.local_rank}"
        self.device = device
        self.output_dir = self.run.output_path
        self._check_batch_size()
        self.tasks = build_tasks(self.run, self.registry, self._warn)  # names/options/data before the (slow) pipeline
        seed_everything(self.run.seed)
        self.pipeline = load_pipeline(spec, device=device, registry=self.registry)
        if self.run.init_weights:
            self._load_init_weights(self.run.resolve(self.run.init_weights))
        dist.broadcast_parameters(self.pipeline.bridge)
        for runtime in self.tasks:
            runtime.task.warn = self._warn
        self.cache = None
        if self.run.feature_cache.enabled:
            root = self.run.resolve(self.run.feature_cache.dir) if self.run.feature_cache.dir else self.output_dir / "feature_cache"
            self.cache = FeatureCache(root, self.pipeline, self.run.feature_cache.dtype)

    # -- setup -----------------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")
        if self.dist.is_main and hasattr(self, "metrics_log"):
            self.metrics_log.write({"kind": "warning", "step": getattr(self, "step", 0), "message": message})

    def _check_batch_size(self) -> None:
        t = self.run.training
        if t.batch_size % self.dist.world_size:
            raise SpecError(f"training.batch_size ({t.batch_size}) must be divisible by the number of processes "
                            f"({self.dist.world_size})")

    def _load_init_weights(self, path: Path) -> None:
        weights = load_trainable(path)
        own = self.pipeline.trainable_state_dict()
        usable = {k: v for k, v in weights.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        if not usable:
            raise SpecError(f"init_weights: {path} has no tensor that fits this pipeline's bridge")
        state = {k[len("bridge."):]: v for k, v in usable.items()}
        missing, _ = self.pipeline.bridge.load_state_dict(state, strict=False)
        skipped = sorted(set(weights) - set(usable))
        self.log(f"init_weights: loaded {len(usable)} tensors from {path}"
                 + (f"; kept {len(missing)} of the bridge's own" if missing else "")
                 + (f"; ignored {len(skipped)} that do not fit" if skipped else ""))

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.run.optimizer
        decay, no_decay = [], []
        for name, parameter in self.pipeline.bridge.named_parameters():
            if not parameter.requires_grad:
                continue
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)

    # -- batches ---------------------------------------------------------------------------------
    def _preprocess(self, images: list[Any], train: bool, seeds: list[int]) -> torch.Tensor:
        """Images through the preprocessor, each with its own seeded augmentation."""
        pre = self.pipeline.preprocessor
        if hasattr(pre, "load_uint8") and hasattr(pre, "normalize"):  # the standard preprocessor
            return pre.normalize(torch.stack([pre.load_uint8(img, train=train, seed=s) for img, s in zip(images, seeds)]))
        out = []
        py_state = random.getstate()
        try:
            for image, seed_value in zip(images, seeds):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed_value)
                    random.seed(seed_value)
                    out.append(pre([image], train=train)[0])
        finally:
            random.setstate(py_state)
        return torch.stack(out)

    def build_batch(self, runtime: TaskRuntime, positions: list[int], indices: list[int], ctx: BatchContext) -> dict[str, Any]:
        """Examples at ``indices`` (global stream positions ``positions``) -> a batch for the losses."""
        data = runtime.train_data
        used, images = [], []
        for index in indices:
            actual, image = runtime.bad_images.load(data, index)
            used.append(actual)
            images.append(image)
        examples = [data[i] for i in used]
        batch: dict[str, Any] = dict(runtime.task.text_batch(examples))
        augment = self.run.training.augment and self.cache is None
        if self.pipeline.preprocessor is None:
            raise SpecError("the pipeline has no preprocessor; training needs one (spec 'preprocessor')")
        if self.cache is not None:
            features: dict[str, torch.Tensor | None] = {}
            first_index: dict[str, int] = {}
            for i, e in enumerate(examples):
                key = str(e["image"])
                if key not in features:
                    features[key] = self.cache.get(key)
                    first_index[key] = i
            missing = [k for k, v in features.items() if v is None]
            if missing:
                pixels = self._preprocess([images[first_index[k]] for k in missing], False, [0] * len(missing))
                with torch.no_grad():
                    tokens = self.pipeline.encode_vision(pixels)
                for j, key in enumerate(missing):
                    self.cache.put(key, tokens[j])
                    features[key] = tokens[j].to(self.cache.dtype).float().cpu()
            batch["vision_tokens"] = torch.stack([features[str(e["image"])] for e in examples])
        else:
            seeds = [stable_hash("augment", self.run.seed, runtime.key, p) for p in positions]
            batch["pixel_values"] = self._preprocess(images, augment, seeds)
        batch["context"] = ctx
        return batch

    def _choose_task(self, step: int, micro: int, train_tasks: list[TaskRuntime]) -> TaskRuntime:
        if len(train_tasks) == 1:
            return train_tasks[0]
        generator = random.Random(stable_hash("task", self.run.seed, step, micro))
        return generator.choices(train_tasks, weights=[t.weight for t in train_tasks], k=1)[0]

    # -- checkpoints -----------------------------------------------------------------------------
    def _state(self, step: int, cursors: dict[str, int], nonfinite: int, skipped: int) -> dict[str, Any]:
        return {
            "cursors": cursors,
            "scheduler": self.scheduler.state_dict(),
            "consecutive_nonfinite": nonfinite,
            "skipped_steps": skipped,
            "digest": self.run.digest(),
            "world_size": self.dist.world_size,
            "bad_images": {r.key: sorted(r.bad_images.paths) for r in self.tasks},
        }

    def _save(self, step: int, cursors: dict[str, int], nonfinite: int, skipped: int) -> None:
        if self.dist.is_main:
            path = save_checkpoint(self.output_dir, step, self.pipeline.trainable_state_dict(),
                                   self.optimizer.state_dict(), self._state(step, cursors, nonfinite, skipped),
                                   keep=self.run.training.keep_checkpoints,
                                   metadata={"spec": self.pipeline.spec.model_dump_json(), "step": str(step)},
                                   spec=loadable_spec(self.pipeline.spec))
            self.metrics_log.write({"kind": "checkpoint", "step": step, "path": str(path)})
        dist.barrier()

    def _resume(self) -> tuple[int, dict[str, int], int, int]:
        if self.dist.is_main:
            for leftover in clean_partial(self.output_dir):
                self.log(f"removed an interrupted checkpoint write: {leftover}")
        dist.barrier()
        found = list_checkpoints(self.output_dir)
        if not found:
            return 0, {}, 0, 0
        ckpt = load_checkpoint(found[-1])
        if ckpt.state.get("digest") != self.run.digest():
            self.log(f"warning: resuming from {ckpt.path}, written by a run with a different configuration "
                     f"(digest {ckpt.state.get('digest')} vs {self.run.digest()}); the trajectory will differ")
        load_trainable_into(self.pipeline, ckpt.trainable, source=str(ckpt.path))
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.state["scheduler"])
        restore_rng(ckpt.rng_tensors, ckpt.state.get("rng", {}))
        for runtime in self.tasks:
            for path in ckpt.state.get("bad_images", {}).get(runtime.key, []):
                runtime.bad_images.paths.setdefault(path, "unreadable (before resume)")
        self.log(f"resumed from {ckpt.path} (step {ckpt.step})")
        return (ckpt.step, {k: int(v) for k, v in ckpt.state.get("cursors", {}).items()},
                int(ckpt.state.get("consecutive_nonfinite", 0)), int(ckpt.state.get("skipped_steps", 0)))

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, step: int | None = None, limit: int | None = None) -> dict[str, float]:
        """Every task with eval data; returns ``{"eval/<task>/<metric>": value}`` (main process only)."""
        results: dict[str, float] = {}
        if not self.dist.is_main:
            return results
        was_training = self.pipeline.training
        self.pipeline.eval()
        try:
            for runtime in self.tasks:
                if runtime.eval_data is None:
                    continue
                examples = runtime.eval_data.examples
                if limit is not None:
                    examples = examples[:limit]
                runtime.task.progress = self.run.training.progress
                with torch.no_grad():
                    scores = runtime.task.evaluate(self.pipeline, examples)
                label = runtime.name if sum(r.name == runtime.name for r in self.tasks) == 1 else runtime.key
                results.update({f"eval/{label}/{k}": float(v) for k, v in scores.items()})
        finally:
            self.pipeline.train(was_training)
        return results

    # -- training --------------------------------------------------------------------------------
    def train(self, resume: bool = True) -> TrainResult:
        run, t = self.run, self.run.training
        train_tasks = [r for r in self.tasks if r.train_data is not None]
        if not train_tasks:
            raise SpecError("no task has training data: give at least one task a 'train' data set")
        world, rank = self.dist.world_size, self.dist.rank
        local_batch = t.batch_size // world
        self.optimizer = self._optimizer()
        self.scheduler = WarmupCosine(self.optimizer, base_lr=run.optimizer.lr, total_steps=t.steps,
                                      **run.schedule.resolved(run.optimizer.lr))
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        self.metrics_log = MetricsLog(self.output_dir) if self.dist.is_main else None
        start, cursors, nonfinite, skipped = self._resume() if resume else (0, {}, 0, 0)
        if self.dist.is_main:
            dropped = self.metrics_log.truncate_after(start)
            if dropped:
                self.log(f"dropped {dropped} metrics.jsonl line(s) written after step {start} by an interrupted run")
            self._write_run_files()
        for r in train_tasks:
            cursors.setdefault(r.key, 0)
        if start >= t.steps:
            self.log(f"{self.output_dir} already holds a run trained to step {start} (training.steps is {t.steps}); "
                     "nothing to do (raise training.steps to continue, or use --no-resume / another output_dir)")
            return TrainResult(start, None, self.output_dir, skipped)
        self.pipeline.train()
        params = [p for p in self.pipeline.bridge.parameters() if p.requires_grad]
        autocast_device = torch.device(self.pipeline.device).type
        use_bf16 = t.precision == "bf16"
        plot_every = t.plot_every
        last_loss = None
        window: dict[str, list[float]] = {}
        window_start = time.perf_counter()
        window_samples = 0
        window_skipped = 0
        self.step = start
        from tqdm.auto import tqdm

        bar = tqdm(total=t.steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.dist.is_main and t.progress), file=sys.stderr)
        try:
            for step in range(start, t.steps):
                self.step = step
                lr = self.scheduler.apply()
                self.optimizer.zero_grad(set_to_none=True)
                torch.manual_seed(stable_hash("step", run.seed, step, rank))
                step_values: dict[str, float] = {}
                step_finite = True
                chosen = []
                for micro in range(t.grad_accum):
                    runtime = self._choose_task(step, micro, train_tasks)
                    chosen.append(runtime.name)
                    cursor = cursors[runtime.key]
                    global_indices = runtime.order.indices(cursor, t.batch_size)
                    lo, hi = rank * local_batch, (rank + 1) * local_batch
                    positions = list(range(cursor + lo, cursor + hi))
                    cursors[runtime.key] = cursor + t.batch_size
                    ctx = BatchContext(step=step, micro=micro, seed=run.seed, offset=lo, global_size=t.batch_size)
                    batch = self.build_batch(runtime, positions, global_indices[lo:hi], ctx)
                    with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=use_bf16):
                        parts = {name: fn(self.pipeline, batch) for name, fn in runtime.losses.items()}
                        total = sum(runtime.loss_weights[n] * v for n, v in parts.items())
                    values = torch.stack([total.detach().float()] + [v.detach().float() for v in parts.values()])
                    values = dist.all_reduce(values.clone(), "sum") / world
                    if not bool(torch.isfinite(values).all()):
                        step_finite = False
                    else:
                        (total / t.grad_accum).backward()
                    names = ["loss"] + [f"loss/{n}" for n in parts]
                    for name, value in zip(names, values.tolist()):
                        step_values[name] = step_values.get(name, 0.0) + value / t.grad_accum
                grad_norm = None
                if step_finite:
                    dist.average_gradients(params)
                    if t.grad_clip is not None:
                        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip))
                    else:
                        grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
                    if not math.isfinite(grad_norm):
                        step_finite = False
                if step_finite:
                    self.optimizer.step()
                    nonfinite = 0
                    last_loss = step_values["loss"]
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                    nonfinite += 1
                    skipped += 1
                    window_skipped += 1
                    what = "gradient" if all(math.isfinite(v) for v in step_values.values()) else "loss"
                    message = (f"step {step + 1}: non-finite {what} "
                               f"({', '.join(f'{k}={v}' for k, v in step_values.items())}); step skipped "
                               f"({nonfinite} in a row, the limit is {t.max_nonfinite_steps})")
                    self._warn(message)
                self.scheduler.step()
                done = step + 1
                self.step = done
                window_samples += t.batch_size * t.grad_accum
                if step_finite:
                    for k, v in step_values.items():
                        window.setdefault(k, []).append(v)
                bar.update(1)
                if step_finite:
                    bar.set_postfix(loss=f"{step_values['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                if nonfinite >= t.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"stopping: the loss or gradient was NaN/Inf for {nonfinite} steps in a row "
                        f"(steps {done - nonfinite + 1}..{done}); last checkpoint kept in {self.output_dir}. "
                        "Lower optimizer.lr, set training.grad_clip, or use precision fp32.")
                if done % t.log_every == 0 or done == t.steps:
                    elapsed = time.perf_counter() - window_start
                    record = {"kind": "train", "step": done, "lr": lr, "grad_norm": grad_norm,
                              "tasks": sorted(set(chosen)),
                              "samples_per_s": window_samples / elapsed if elapsed > 0 else None}
                    record.update({k: sum(v) / len(v) for k, v in window.items()})
                    if window_skipped:
                        record["skipped_steps"] = window_skipped
                    if self.dist.is_main:
                        self.metrics_log.write(record)
                    window, window_samples, window_skipped, window_start = {}, 0, 0, time.perf_counter()
                wrote = False
                if t.eval_every and done % t.eval_every == 0 and done < t.steps:
                    self._eval_and_log(done)
                    wrote = True
                if t.checkpoint_every and done % t.checkpoint_every == 0 and done < t.steps:
                    self._save(done, cursors, nonfinite, skipped)
                    wrote = True
                if self.dist.is_main and ((plot_every and done % plot_every == 0) or (wrote and not plot_every)):
                    self._plots()
            self.step = t.steps
            if t.eval_every:
                self._eval_and_log(t.steps)
            self._save(t.steps, cursors, nonfinite, skipped)
            if self.dist.is_main:
                self._plots()
        finally:
            bar.close()
        return TrainResult(t.steps, last_loss, self.output_dir, skipped)

    def _eval_and_log(self, step: int) -> None:
        results = self.evaluate(step, limit=self.run.training.eval_examples)
        if self.dist.is_main and results:
            self.metrics_log.write({"kind": "eval", "step": step, **results})
            self.log(f"eval at step {step}: " + ", ".join(f"{k.split('/', 1)[1]}={v:.4g}" for k, v in results.items()))
        dist.barrier()

    def _plots(self) -> None:
        try:
            write_plots(self.output_dir)
        except Exception as exc:  # plotting must never stop training
            self.log(f"warning: could not draw plots: {type(exc).__name__}: {exc}")

    def _write_run_files(self) -> None:
        data = self.run.model_dump(mode="json")
        spec = self.run.pipeline_spec()
        data["pipeline"] = spec.model_dump(mode="json")
        data["pipeline"]["weights"] = [str(p.resolve()) for p in spec.weight_paths()]  # valid from any folder
        text = dump_yaml(data)  # number-like strings ("1e-6" names, prompts) stay strings
        from blip2_runner.checkpoint import atomic_write_text

        atomic_write_text(self.output_dir / "run.yaml", text)


def train(run: RunConfig | str | Path | Mapping[str, Any], *, resume: bool = True, registry: Registry | None = None,
          log: Callable[[str], None] = _echo) -> TrainResult:
    """Train as a RUN.yaml says; resumes from the output folder's newest checkpoint by default."""
    trainer = Trainer(run, registry=registry, log=log)
    try:
        return trainer.train(resume=resume)
    finally:
        dist.destroy()


def evaluate(run: RunConfig | str | Path | Mapping[str, Any], checkpoint: str | Path | None = None, *,
             limit: int | None = None, registry: Registry | None = None,
             log: Callable[[str], None] = _echo) -> dict[str, float]:
    """Metrics of every task with eval data, with the bridge weights of ``checkpoint``."""
    trainer = Trainer(run, registry=registry, log=log)
    try:
        if checkpoint is not None:
            load_trainable_into(trainer.pipeline, load_trainable(checkpoint), source=str(checkpoint))
        if not any(r.eval_data is not None for r in trainer.tasks):
            raise SpecError("no task has eval data: give a task an 'eval' data set")
        return trainer.evaluate(limit=limit if limit is not None else trainer.run.training.eval_examples)
    finally:
        dist.destroy()
