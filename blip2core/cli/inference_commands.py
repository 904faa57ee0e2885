"""``blip2 caption | ask | features | match | classify``: the inference API on the command line.

Every command loads its model from ``--spec FILE`` or ``--model NAME_OR_PATH`` (HF folder, hub
id, folder written by ``Pipeline.save``), takes ``--device`` / ``--dtype`` / ``--quantize
COMPONENT=METHOD`` (repeatable), and prints JSON to
stdout with ``--json``. Images that cannot be read are reported by path (stderr, and under
``"failures"`` in JSON) while the others are processed. Exit code: 0 when everything worked,
1 when anything failed, 2 for a usage error.

Heavy imports (torch, the pipeline) happen inside the commands, so ``blip2 --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import click

from blip2core.precision import DTYPE_CHOICES


def parse_quantize(values: tuple[str, ...]) -> dict[str, str]:
    """``("llm=int8-weight-only", "vision=int8-dynamic")`` -> ``{"llm": ..., "vision": ...}``.

    Component and method names are checked when the pipeline is built (one error listing what
    exists); here only the ``COMPONENT=METHOD`` shape is.
    """
    out: dict[str, str] = {}
    for value in values:
        target, sep, method = value.partition("=")
        if not sep or not target.strip() or not method.strip():
            raise click.BadParameter(
                f"{value!r}: expected COMPONENT=METHOD, e.g. llm=int8-weight-only (components: vision, bridge, llm)",
                param_hint="--quantize",
            )
        out[target.strip()] = method.strip()
    return out


def quantize_option(command: Callable) -> Callable:
    return click.option(
        "--quantize", "quantize", multiple=True, metavar="COMPONENT=METHOD",
        help="Quantize a component, e.g. --quantize llm=int8-weight-only --quantize vision=int8-dynamic "
             "(methods: blip2 plugins, kind quantizer). Repeatable.",
    )(command)


def model_options(command: Callable) -> Callable:
    """--spec / --model / --device / --dtype / --quantize / --json, shared by every inference command."""
    command = click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")(command)
    return loading_options(command)


def loading_options(command: Callable) -> Callable:
    """--spec / --model / --device / --dtype / --quantize: which model, where, how (``load_model``)."""
    options = [
        click.option("--spec", "spec", type=click.Path(dir_okay=False), help="Pipeline spec file (YAML/JSON/TOML)."),
        click.option("--model", "model", metavar="NAME_OR_PATH",
                     help="HF hub id, HF BLIP-2 folder or saved pipeline folder."),
        click.option("--device", default=None, help="Where to run, e.g. cpu, cuda, cuda:1 (default: the spec's)."),
        click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default=None,
                     help="Precision of the frozen parts (default: the spec's, else auto = what the device "
                          "runs natively; blip2 env shows it)."),
        quantize_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def load_model(
    spec: str | None, model: str | None, device: str | None, dtype: str | None, quantize: tuple[str, ...] = ()
) -> Any:
    """The pipeline of --spec / --model. Without --dtype, a spec that does not set ``dtype`` runs in
    ``auto``; ``--quantize`` entries replace the spec's for those components."""
    from blip2core.loading import load_pipeline, resolve_spec
    from blip2core.torchrun import local_device

    if (spec is None) == (model is None):
        raise click.UsageError("give exactly one of --spec FILE or --model NAME_OR_PATH")
    quantize_map = parse_quantize(quantize)
    resolved = resolve_spec(spec if spec is not None else model)
    if dtype is None and "dtype" not in resolved.model_fields_set:
        dtype = "auto"
    return load_pipeline(resolved, device=local_device(device), dtype=dtype, quantize=quantize_map or None)


def expand_images(inputs: tuple[str, ...]) -> list[str]:
    """Arguments -> image paths: a folder gives its image files (sorted, recursive); a file (or a
    path that does not exist, reported later by name) stays as given; repeats are dropped.

    Raises:
        click.ClickException: a folder holds no image file (exit code 1, the folder named).
    """
    from blip2core.preprocess import IMAGE_EXTENSIONS, list_images

    out: list[str] = []
    for item in inputs:
        if not os.path.isdir(item):
            out.append(item)
            continue
        found = [str(p) for p in list_images(item)]
        if not found:
            raise click.ClickException(
                f"{item}: no image files in this folder or below it (looked for {' '.join(IMAGE_EXTENSIONS)})"
            )
        out += found
    return list(dict.fromkeys(out))


#: plain-text output: one line per result, columns separated by tabs; inside a column these
#: characters are written as escapes (the JSON output holds the texts as they are)
PLAIN_TEXT_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def plain_text(value: object) -> str:
    """One column of a plain-text line: backslash, tab, newline and carriage return escaped as
    ``\\\\``, ``\\t``, ``\\n``, ``\\r``, so that each result stays one line of tab-separated columns."""
    return "".join(PLAIN_TEXT_ESCAPES.get(char, char) for char in str(value))


def echo_columns(*columns: object) -> None:
    """Print one plain-text result line: the columns escaped (``plain_text``), joined by tabs."""
    click.echo("\t".join(plain_text(column) for column in columns))


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_reporting(pipe: Any, paths: list[str], failures: list[dict[str, str]]) -> Any:
    """``load_batch(pipe, paths)``; each unreadable image is appended to failures by path."""
    from blip2core.inference.images import load_batch

    batch = load_batch(pipe, paths)
    failures += [{"image": f.name, "error": f.message} for f in batch.failures]
    return batch


def readable_batches(pipe: Any, paths: list[str], size: int, failures: list[dict[str, str]]) -> Iterator[Any]:
    """Batches of the image files (``expand_images``) that could be read; the others go to failures."""
    for chunk in batches(paths, size):
        batch = load_reporting(pipe, chunk, failures)
        if batch.indices:
            yield batch


def report_failures(failures: list[dict[str, str]]) -> None:
    for failure in failures:
        click.echo(f"error: {failure['image']}: {failure['error']}", err=True)


def finish(as_json: bool, document: dict[str, Any], failures: list[dict[str, str]]) -> None:
    """Print the JSON document (with --json), report failures on stderr; exit 1 when any."""
    if as_json:
        click.echo(json.dumps({**document, "failures": failures}, indent=2, ensure_ascii=False))
    report_failures(failures)
    if failures:
        click.get_current_context().exit(1)


def usage_errors(call: Callable[[], Any]) -> Any:
    """Run ``call``; a ValueError / TypeError from the API (bad option values) is a usage error."""
    try:
        return call()
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None


def batch_size_option(default: int) -> Callable:
    return click.option("--batch-size", type=click.IntRange(min=1), default=default, show_default=True,
                        help="Images per forward pass.")


# ------------------------------------------------------------------------------------- caption
@click.command("caption")
@click.argument("images", nargs=-1, required=True)
@click.option("--style", default=None, help="Named prompt: short (default), detailed, or one the spec adds.")
@click.option("--prompt", default=None, help="Text the caption continues from (overrides --style).")
@click.option("--num-beams", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--min-new-tokens", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--sample", is_flag=True, help="Nucleus sampling (top-p 0.9) instead of beam search.")
@click.option("--seed", type=int, default=None, help="Seed for --sample.")
@batch_size_option(8)
@model_options
def caption_command(images, style, prompt, num_beams, max_new_tokens, min_new_tokens, sample, seed, batch_size,
                    spec, model, device, dtype, quantize, as_json) -> None:
    """Caption IMAGES (files or folders)."""
    from blip2core.inference.captioning import caption_pixels
    from blip2core.inference.generation import GenerationSettings
    from blip2core.inference.memory import BatchFitter
    from blip2core.inference.prompts import caption_prompt

    settings = usage_errors(lambda: GenerationSettings(
        num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=sample, seed=seed
    ))
    paths = expand_images(images)  # an empty folder is an error before the model loads
    pipe = load_model(spec, model, device, dtype, quantize)
    text = usage_errors(lambda: caption_prompt(style, prompt, pipe.spec.styles))
    results, failures = [], []
    fit = BatchFitter(batch_size)
    for batch in readable_batches(pipe, paths, batch_size, failures):
        pixels = batch.pixel_values
        parts = fit.run(lambda a, b: caption_pixels(pipe, pixels[a:b], text, settings), len(pixels))  # noqa: B023
        for name, caption in zip(batch.names, [c for part in parts for c in part], strict=True):
            results.append({"image": name, "caption": caption})
            if not as_json:
                echo_columns(name, caption)
    finish(as_json, {"prompt": text, "results": results}, failures)


# ----------------------------------------------------------------------------------------- ask
@click.command("ask")
@click.argument("image")
@click.argument("questions", nargs=-1, required=True)
@click.option("--template", default="Question: {} Answer:", show_default=True, help="Prompt around each question.")
@click.option("--num-beams", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=10, show_default=True)
@model_options
def ask_command(image, questions, template, num_beams, max_new_tokens, spec, model, device, dtype, quantize,
                as_json) -> None:
    """Answer QUESTIONS about IMAGE (the image is encoded once; its LLM prefix is cached)."""
    from blip2core.inference.generation import VQA_DEFAULTS
    from blip2core.inference.prompts import format_questions
    from blip2core.inference.vqa import answer_pixels

    settings = usage_errors(lambda: VQA_DEFAULTS.with_(num_beams=num_beams, max_new_tokens=max_new_tokens))
    prompts = usage_errors(lambda: format_questions(template, list(questions)))
    pipe = load_model(spec, model, device, dtype, quantize)
    failures: list[dict[str, str]] = []
    batch = load_reporting(pipe, [image], failures)
    results = []
    if batch.indices:
        answers = answer_pixels(pipe, batch.pixel_values, prompts, settings, instructions=list(questions))
        results = [{"question": q, "answer": a} for q, a in zip(questions, answers, strict=True)]
        if not as_json:
            for item in results:
                echo_columns(item["question"], item["answer"])
    finish(as_json, {"image": image, "results": results}, failures)


# ------------------------------------------------------------------------------------ features
@click.command("features")
@click.argument("inputs", nargs=-1, required=True, metavar="DIR_OR_FILES...")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file: .safetensors or .parquet (under torchrun: one file per rank).")
@click.option("--overwrite", is_flag=True,
              help="Replace --out (and the parts a stopped run left) instead of resuming it.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@batch_size_option(16)
@model_options
def features_command(inputs, out, overwrite, progress, batch_size, spec, model, device, dtype, quantize,
                     as_json) -> None:
    """Q-Former image features of every image in DIR_OR_FILES, written to --out.

    Entries are named by their path relative to the folder given (a file given alone: by its
    name). Resumable: images already in the output (or in the parts a stopped run left in
    <out>.parts/) are skipped; a resume with another pipeline (spec, weights or preprocessing)
    is refused. Under torchrun each rank takes every W-th image and writes
    <stem>.rank<r>-of-<W><suffix>.
    """
    import torch
    from tqdm.auto import tqdm

    from blip2core.inference.feature_inputs import feature_inputs
    from blip2core.inference.feature_store import FeatureStore, output_format, shard_path
    from blip2core.inference.features import features_from_pixels
    from blip2core.inference.fingerprint import pipeline_fingerprint
    from blip2core.inference.memory import BatchFitter
    from blip2core.inference.ranks import shard
    from blip2core.torchrun import process_group

    usage_errors(lambda: _check_format(out))
    images = usage_errors(lambda: feature_inputs(inputs))
    with process_group() as (rank, world):
        store = FeatureStore(shard_path(out, rank, world), overwrite=overwrite)  # unreadable files: before loading
        pipe = load_model(spec, model, device, dtype, quantize)
        store.use_fingerprint(pipeline_fingerprint(pipe))  # even with nothing to do: "already there" must be true
        mine = shard(images, rank, world)
        todo = [image for image in mine if image.name not in store.done]
        failures: list[dict[str, str]] = []
        written = 0
        fit = BatchFitter(batch_size)
        with tqdm(total=len(mine), initial=len(mine) - len(todo), unit="img", desc=f"features[{rank}]",
                  disable=not progress) as bar:
            for chunk in batches(todo, batch_size):
                batch = load_reporting(pipe, [image.path for image in chunk], failures)
                if batch.indices:
                    pixels = batch.pixel_values
                    parts = fit.run(lambda a, b: features_from_pixels(pipe, pixels[a:b], [], "image").to_dict(),  # noqa: B023
                                    len(pixels))
                    features = {field: torch.cat([part[field] for part in parts]) for field in parts[0]}
                    store.write([chunk[i].name for i in batch.indices], features)
                    written += len(batch.indices)
                bar.update(len(chunk))
        total = store.finish()
    document = {"out": str(store.path), "format": output_format(store.path), "rank": rank, "world_size": world,
                "entries": total, "written": written, "skipped": len(mine) - len(todo)}
    if not as_json:
        click.echo(f"{store.path}: {total} entries ({written} new, {document['skipped']} already there, "
                   f"{len(failures)} failed)")
    finish(as_json, document, failures)


def _check_format(out: str) -> None:
    from blip2core.inference.feature_store import output_format

    try:
        output_format(out)
    except Exception as exc:
        raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------------------- match
@click.command("match")
@click.argument("image")
@click.argument("texts", nargs=-1, required=True)
@click.option("--method", type=click.Choice(["itm", "itc"]), default="itm", show_default=True,
              help="itm: match probability; itc: cosine similarity.")
@model_options
def match_command(image, texts, method, spec, model, device, dtype, quantize, as_json) -> None:
    """Score how well each of TEXTS describes IMAGE."""
    from blip2core.inference.matching import match_pixels

    pipe = load_model(spec, model, device, dtype, quantize)
    failures: list[dict[str, str]] = []
    batch = load_reporting(pipe, [image], failures)
    results = []
    if batch.indices:
        scores = match_pixels(pipe, batch.pixel_values, list(texts), method).tolist()
        results = [{"text": t, "score": s} for t, s in zip(texts, scores, strict=True)]
        if not as_json:
            for item in results:
                echo_columns(f"{item['score']:.6f}", item["text"])
    finish(as_json, {"image": image, "method": method, "results": results}, failures)


# ------------------------------------------------------------------------------------ classify
@click.command("classify")
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", required=True, help="Comma-separated class names, e.g. cat,dog,car.")
@click.option("--template", default="a photo of {}", show_default=True, help="Text around each label.")
@click.option("--method", type=click.Choice(["itc", "itm"]), default="itc", show_default=True)
@batch_size_option(16)
@model_options
def classify_command(images, labels, template, method, batch_size, spec, model, device, dtype, quantize,
                     as_json) -> None:
    """Zero-shot classification of IMAGES (files or folders) into --labels."""
    from blip2core.inference.memory import BatchFitter
    from blip2core.inference.retrieval import classify_pixels

    label_list = [label.strip() for label in labels.split(",") if label.strip()]
    if not label_list:
        raise click.UsageError("--labels needs at least one label")
    paths = expand_images(images)
    pipe = load_model(spec, model, device, dtype, quantize)
    results, failures = [], []
    fit = BatchFitter(batch_size)
    for batch in readable_batches(pipe, paths, batch_size, failures):
        pixel_values = batch.pixel_values
        parts = fit.run(lambda a, b: usage_errors(  # noqa: B023
            lambda: classify_pixels(pipe, pixel_values[a:b], label_list, template, method)), len(pixel_values))  # noqa: B023
        outcome = [item for part in parts for item in part]
        for name, item in zip(batch.names, outcome, strict=True):
            results.append({"image": name, **item})
            if not as_json:
                echo_columns(name, item["label"], f"{item['scores'][item['label']]:.4f}")
    finish(as_json, {"labels": label_list, "results": results}, failures)


INFERENCE_COMMANDS = (caption_command, ask_command, features_command, match_command, classify_command)


def add_inference_commands(group: click.Group) -> None:
    """Register every inference command on the root ``blip2`` group."""
    for command in INFERENCE_COMMANDS:
        group.add_command(command)
