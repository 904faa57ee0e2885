"""``blip2 ray-batch TASK IMAGES... --model M --out DIR``: a Ray Data batch job from the command line.

Connects to a running cluster with ``--address`` or starts a local Ray instance (``--num-cpus``
limits it), shows a progress bar (images), and ends with one line: images done, skipped, failed,
the output folder. Unreadable images are listed on stderr by path; exit code 1 when any failed.
"""

from __future__ import annotations

import click

from blip2core.plugin_api import DTYPE_CHOICES, parse_quantize, quantize_option


@click.command("ray-batch")
@click.argument("task", type=click.Choice(["caption", "answer", "features"]))
@click.argument("images", nargs=-1, required=True, metavar="DIR_MANIFEST_OR_FILES...")
@click.option("--model", required=True, metavar="NAME_OR_PATH",
              help="Named model, HF folder, saved pipeline folder or spec file (anything load_pipeline takes).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder of Parquet shards (on a cluster: a path every node sees).")
@click.option("--question", default=None, help="The question asked of every image (task answer).")
@click.option("--num-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray actors, one model each.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per batch (one forward pass, one shard).")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=None,
              help="CPUs Ray reserves per actor (default: the cluster's CPUs / --num-workers).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0, show_default=True)
@click.option("--address", default=None,
              help="Ray cluster to join (auto, host:6379, ray://host:10001); default: start a local instance.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the local Ray instance (default: all of this machine's).")
@click.option("--overwrite", is_flag=True, help="Remove the folder's shards first instead of resuming.")
@click.option("--device", default=None, help="Where each worker runs its model, e.g. cpu, cuda.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default=None)
@quantize_option
@click.option("--style", default=None, help="caption: a named prompt style.")
@click.option("--prompt", default=None, help="caption: text the caption continues from.")
@click.option("--num-beams", type=click.IntRange(min=1), default=None, help="caption / answer: beam width.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="caption / answer.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def ray_batch_command(task, images, model, out, question, num_workers, batch_size, cpus_per_worker,
                      gpus_per_worker, address, num_cpus, overwrite, device, dtype, quantize, style, prompt,
                      num_beams, max_new_tokens, progress) -> None:
    """Caption, answer or extract features of every image in DIR_MANIFEST_OR_FILES on Ray.

    Rows go to Parquet shards in --out (one per batch, written atomically); a rerun skips the
    images that already have rows, and refuses a folder written by another model, task or
    question. A manifest is a .txt file with one image path per line.
    """
    from blip2_ray.run import run_batch

    options = {k: v for k, v in {"style": style, "prompt": prompt, "num_beams": num_beams,
                                 "max_new_tokens": max_new_tokens}.items() if v is not None}
    source = images[0] if len(images) == 1 else list(images)
    summary = run_batch(task, source, model=model, out=out, num_workers=num_workers, batch_size=batch_size,
                        question=question, resume=not overwrite, cpus_per_worker=cpus_per_worker,
                        gpus_per_worker=gpus_per_worker, device=device, dtype=dtype,
                        quantize=parse_quantize(quantize) or None, progress=progress, address=address,
                        num_cpus=num_cpus, **options)
    for name, error in summary.failed:
        click.echo(f"error: {name}: {error}", err=True)
    click.echo(summary.line())
    if summary.failed:
        click.get_current_context().exit(1)
