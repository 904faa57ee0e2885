"""``blip2 quantize-report SPEC_OR_MODEL [--quantize COMPONENT=METHOD ...] [--json]``."""

from __future__ import annotations

import json

import click

from blip2core.plugin_api import DTYPE_CHOICES, parse_quantize, quantize_option


@click.command("quantize-report")
@click.argument("source", metavar="SPEC_OR_MODEL")
@quantize_option
@click.option("--device", default=None, help="Where to run (default: the spec's).")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default=None,
              help="Precision of the frozen parts (default: the spec's, else auto).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per encoding call (real sample photos).")
@click.option("--new-tokens", type=click.IntRange(min=1), default=20, show_default=True,
              help="Tokens generated for the latency and identical-sequence checks.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Timed calls (median).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def quantize_report_command(source, quantize, device, dtype, batch_size, new_tokens, runs, as_json) -> None:
    """Per component: bytes before / after; peak RSS at load; encoding and generation latency; and
    agreement with the unquantized pipeline (feature and logits cosine, next-token top-1, identical
    generations). SPEC_OR_MODEL: a spec file, saved pipeline folder, HF folder or hub id."""
    from blip2core import PipelineSpec
    from blip2core.plugin_api import resolve_spec
    from blip2_quant.report import format_report, quantize_report

    spec = resolve_spec(source)
    overrides = {"quantize": {**spec.model_dump()["quantize"], **parse_quantize(quantize)}}
    if device is not None:
        overrides["device"] = device
    if dtype is not None or "dtype" not in spec.model_fields_set:
        overrides["dtype"] = dtype or "auto"
    base_dir = spec._base_dir
    spec = PipelineSpec.from_dict({**spec.model_dump(), **overrides}, source=source)
    spec._base_dir = base_dir
    if not spec.quantize:
        raise click.UsageError(f"{source}: nothing to compare: the spec quantizes nothing; add --quantize COMPONENT=METHOD")
    report = quantize_report(spec, source=source, batch_size=batch_size, new_tokens=new_tokens, runs=runs)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
