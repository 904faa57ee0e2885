"""``run_batch``: caption / answer / features over an image set on Ray Data, resumable.

The driver lists the images (``blip2_ray.inputs``), skips those the output folder already has rows
for, checks that the folder was written by the same run (``blip2_ray.identity``), and hands the
rest to ``ray.data``: one block per batch, ``map_batches`` with a pool of ``PipelineWorker``
actors (one loaded model each), each batch written by its worker as one Parquet shard. Only a
short summary per image comes back to the driver.

The output folder must be reachable under the same path by every worker: a local folder for a
one-machine Ray, a shared file system (NFS, a mounted bucket) on a cluster.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blip2core.plugin_api import InputError

from blip2_ray.identity import run_identity
from blip2_ray.inputs import image_inputs
from blip2_ray.shards import OutputFolder, ResumeRefused, list_shards
from blip2_ray.tasks import make_job


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        out: the output folder.
        total: images in the input.
        done: images processed by this run (rows written, errors included).
        skipped: images that already had rows (resumed).
        failed: (name, error) of the images this run could not read.
        shards: shards this run wrote.
        seconds: wall time of the whole call; startup_seconds: from submitting the work to the
            first finished batch (actor start-up, model loading, the first batch).
    """

    out: Path
    total: int
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    shards: int = 0
    seconds: float = 0.0
    startup_seconds: float | None = None

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        return (f"{self.out}: {self.done - len(self.failed)} images done, {self.skipped} skipped (already there), "
                f"{len(self.failed)} failed, {self.shards} shards written in {self.seconds:.1f}s")


def run_batch(
    task: str,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    model: Any,
    out: str | os.PathLike,
    num_workers: int = 1,
    batch_size: int = 16,
    question: str | None = None,
    resume: bool = True,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float = 0,
    device: str | None = None,
    dtype: str | None = None,
    quantize: dict[str, str] | None = None,
    progress: bool | Callable[[int], None] = False,
    address: str | None = None,
    num_cpus: int | None = None,
    **options: Any,
) -> RunSummary:
    """Run ``task`` ("caption", "answer" or "features") over ``images`` on Ray, into Parquet shards.

    Args:
        images: a folder, a manifest (.txt, one path per line), an image file, or a list of paths
            and folders (``blip2_ray.inputs``).
        model: anything ``load_pipeline`` accepts (a named model, a folder, a spec file or dict).
        out: the output folder (``blip2_ray.shards`` describes its Parquet schema).
        num_workers: actors, each with its own model (at most one per batch of work).
        batch_size: images per ``map_batches`` batch = per forward pass = per shard.
        question: the question asked of every image (answer only).
        resume: skip images that already have rows in ``out``; False removes its shards first.
        cpus_per_worker: CPUs Ray reserves per actor (default: the cluster's CPUs / num_workers,
            at least 1, when gpus_per_worker is 0; else 1).
        gpus_per_worker: GPUs per actor (e.g. 1 with device="cuda").
        device, dtype, quantize: passed to ``load_pipeline`` in every worker.
        progress: True for a tqdm bar on stderr, or a callable given the images finished per batch.
        options: the task's (``blip2_ray.tasks.make_job``): style / prompt / template and decoding.

        address, num_cpus: where to run when Ray is not initialised yet (``connect``): the
            cluster at ``address``, else a local instance with ``num_cpus`` CPUs (default: all).
            Ray is started only when there is work: the checks above come first.

    Raises:
        InputError: a bad task, option or image list (before anything runs).
        ResumeRefused: ``out`` holds rows of another run (model, task, question, options).
    """
    started = time.perf_counter()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise InputError(f"num_workers must be a positive int, got {num_workers!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if address is not None and num_cpus is not None:
        raise InputError("num_cpus (--num-cpus) limits a local Ray instance; a cluster at an address uses its own")
    job = make_job(task, question, **options)
    load = {k: v for k, v in {"device": device, "dtype": dtype, "quantize": quantize}.items() if v}
    run = run_identity(job, model, load)
    inputs = image_inputs(images)
    out = Path(out)
    if not resume:
        for shard in list_shards(out):
            shard.unlink()
    folder = OutputFolder.scan(out)
    expected = folder.check_run(run)
    todo = [item for item in inputs if item.name not in folder.done]
    summary = RunSummary(out=out, total=len(inputs), skipped=len(inputs) - len(todo))
    if todo:
        out.mkdir(parents=True, exist_ok=True)
        connect(address, num_cpus)
        _execute(summary, todo, model, load, job, run, expected, num_workers, batch_size, cpus_per_worker,
                 gpus_per_worker, progress, started)
    summary.seconds = time.perf_counter() - started
    return summary


def _execute(summary: RunSummary, todo: list[Any], model: Any, load: dict[str, Any], job: Any, run: dict[str, Any],
             expected: dict[str, Any] | None, num_workers: int, batch_size: int, cpus_per_worker: float | None,
             gpus_per_worker: float, progress: bool | Callable[[int], None], started: float) -> None:
    import ray
    import ray.data
    from tqdm.auto import tqdm

    from blip2_ray.worker import PipelineWorker

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours (tqdm below) counts images, Ray's count blocks
    context.print_on_execution_start = False
    batches = math.ceil(len(todo) / batch_size)
    workers = min(num_workers, batches)
    if cpus_per_worker is None:
        cpus_per_worker = 1 if gpus_per_worker else max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
    rows = [{"name": item.name, "path": item.path} for item in todo]
    dataset = ray.data.from_items(rows, override_num_blocks=batches).map_batches(
        PipelineWorker,
        fn_constructor_kwargs={"model": model, "load": load, "job": job, "run": run, "out": str(summary.out),
                               "expected": expected},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
        batch_format="numpy",
    )
    bar = tqdm(total=summary.total, initial=summary.skipped, unit="img", desc=f"ray {job.task}",
               disable=progress is not True, file=sys.stderr)
    shards: set[str] = set()
    submitted = time.perf_counter()
    try:
        for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if summary.startup_seconds is None:
                summary.startup_seconds = time.perf_counter() - submitted
            count = len(result["name"])
            summary.done += count
            summary.failed += [(str(n), str(e)) for n, e in zip(result["name"], result["error"], strict=True) if e]
            shards.update(str(s) for s in result["shard"])
            bar.update(count)
            if callable(progress):
                progress(count)
    except Exception as exc:
        refusal = _refusal_in(exc)
        if refusal is not None:
            raise ResumeRefused(refusal) from None
        raise
    finally:
        bar.close()
        summary.shards = len(shards)


def _refusal_in(exc: BaseException) -> str | None:
    """The message of a ResumeRefused raised in a worker (Ray wraps it, maybe several times)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ResumeRefused):
            return str(item)
        stack += [item.__cause__, item.__context__, getattr(item, "cause", None)]
    marker = f"{ResumeRefused.__name__}: "
    text = str(exc)
    if marker in text:
        return text.split(marker, 1)[1].strip().splitlines()[0]
    return None


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001``, ``host:6379``), or start a
    local instance limited to ``num_cpus`` CPUs; nothing when Ray is initialised already."""
    import ray

    if ray.is_initialized():
        return
    if address is not None and num_cpus is not None:
        raise InputError("--num-cpus limits a local Ray instance; with --address the cluster's own CPUs are used")
    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
